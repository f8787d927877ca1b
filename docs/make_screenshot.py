"""Regenerate docs/screenshot.png: the plugin in use, in a real napari window.

Run under a virtual display on a headless machine:

    xvfb-run -a -s "-screen 0 1600x1000x24" python docs/make_screenshot.py

Opens the synthetic nuclei sample, opens the widget from the plugin manifest, runs the fit
with the default settings (seed 0) and saves the whole window.
"""

import sys
import time
from pathlib import Path

import napari
from qtpy.QtWidgets import QApplication


def main(out: Path) -> int:
    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1500, 900)
    viewer.open_sample("napari-dsp", "nuclei")
    _, widget = viewer.window.add_plugin_dock_widget("napari-dsp", "Deep Segmentation Prior")
    widget._image.value = viewer.layers["synthetic nuclei"]
    widget._seed.value = 0
    widget._show_spread.value = True
    done = []
    worker = widget.run()
    worker.finished.connect(lambda: done.append(True))
    t0 = time.monotonic()
    while not done and time.monotonic() - t0 < 600:
        QApplication.processEvents()
        time.sleep(0.05)
    viewer.layers["synthetic nuclei spread"].visible = False
    viewer.layers["synthetic nuclei prior"].visible = False
    viewer.layers["synthetic nuclei labels"].opacity = 0.5
    viewer.layers.selection.active = viewer.layers["synthetic nuclei"]
    for _ in range(20):
        QApplication.processEvents()
        time.sleep(0.05)
    viewer.window.screenshot(str(out), canvas_only=False)
    print(f"wrote {out} ({widget._status.value})")
    viewer.close()
    return 0


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name(
        "screenshot.png")
    sys.exit(main(target))
