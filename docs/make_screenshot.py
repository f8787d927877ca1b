"""Regenerate docs/screenshot.png: the plugin in use, in a real napari window.

Run under a virtual display on a headless machine:

    xvfb-run -a -s "-screen 0 1600x1000x24" python docs/make_screenshot.py [out.png] [width]

Opens the synthetic nuclei sample, opens the widget from the plugin manifest, runs the fit
with the default settings (seed 0, with the spread layer) and saves the whole window
(1500 x 900 unless a width is given). Only the widget's public surface is used; the
layers are left as the widget leaves them (image and labels shown, prior and spread
hidden), except that the labels are drawn half transparent.
"""

import sys
import time
from pathlib import Path

import napari
from qtpy.QtWidgets import QApplication


def settle(seconds: float = 1.0) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        QApplication.processEvents()
        time.sleep(0.05)


def main(out: Path, width: int = 1500) -> int:
    viewer = napari.Viewer(show=True)
    viewer.window.resize(width, 900)
    viewer.open_sample("napari-dsp", "nuclei")
    _, widget = viewer.window.add_plugin_dock_widget("napari-dsp", "Deep Segmentation Prior")
    widget.image_layer = viewer.layers["synthetic nuclei"]
    widget.set_values(seed=0)
    widget.show_spread = True
    worker = widget.run()
    if worker is None:
        print(f"the run was refused: {widget.status}")
        return 1
    t0 = time.monotonic()
    while widget.running and time.monotonic() - t0 < 600:
        QApplication.processEvents()
        time.sleep(0.05)
    viewer.layers["synthetic nuclei labels"].opacity = 0.5
    settle()
    viewer.window.screenshot(str(out), canvas_only=False)
    print(f"wrote {out} ({widget.status})")
    print("layers (name, visible):", [(x.name, x.visible) for x in viewer.layers])
    viewer.close()
    return 0


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name(
        "screenshot.png")
    sys.exit(main(target, int(sys.argv[2]) if len(sys.argv) > 2 else 1500))
