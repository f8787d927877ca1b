"""Soak test: many cancel/restart cycles of the widget in a real napari viewer.

Reports resident memory before and after (after a warm-up), the number of errors shown
as notifications, and whether the viewer holds only the user's layer at the end.
Run under a virtual display on a headless machine:

    xvfb-run -a python benchmarks/soak_cancel.py [--cycles 200] [--threads N]
"""

from __future__ import annotations

import argparse
import gc
import sys
import threading
import time

import numpy as np
import psutil


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=200)
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU fitting threads per fit (default: automatic)")
    parser.add_argument("--size", type=int, default=96)
    args = parser.parse_args(argv)

    import napari
    from napari.utils.notifications import notification_manager
    from qtpy.QtWidgets import QApplication

    from napari_dsp._qt.widget import DSPWidget

    errors = []
    notification_manager.notification_ready.connect(
        lambda n: errors.append(str(n.message)) if str(n.severity).lower().endswith(
            "error") else None)
    viewer = napari.Viewer(show=False)
    image = np.random.default_rng(0).random((args.size, args.size)).astype(np.float32)
    viewer.add_image(image, name="cells")
    widget = DSPWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.set_values(n_iter=3000, n_members=3, n_threads=args.workers, preview_every=1)
    proc = psutil.Process()
    rng = np.random.default_rng(1)

    def pump(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            QApplication.processEvents()
            time.sleep(0.005)

    def cycle() -> None:
        widget.run()
        pump(float(rng.uniform(0.0, 0.5)))
        widget.cancel()
        t0 = time.monotonic()
        while widget.running and time.monotonic() - t0 < 10:
            pump(0.01)
        if widget.running:
            raise RuntimeError("a cancelled fit did not stop within 10 s")

    for _ in range(10):  # warm-up: imports, allocator pools, first previews
        cycle()
    gc.collect()
    before = proc.memory_info().rss
    t0 = time.monotonic()
    for _ in range(args.cycles):
        cycle()
    gc.collect()
    pump(0.5)
    after = proc.memory_info().rss
    names = [layer.name for layer in viewer.layers]
    children = proc.children(recursive=True)
    fitting = [t for t in threading.enumerate() if t.name.startswith("napari-dsp-fit")]
    print(f"{args.cycles} cancel/restart cycles in {time.monotonic() - t0:.0f} s; "
          f"RSS {before / 1e6:.0f} MB -> {after / 1e6:.0f} MB "
          f"({(after - before) / 1e6:+.0f} MB); errors: {len(errors)}; layers at the end: "
          f"{names}; child processes: {len(children)}; fitting threads left: "
          f"{len(fitting)}")
    viewer.close()
    ok = not errors and names == ["cells"] and not children and not fitting
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
