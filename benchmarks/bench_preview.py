"""Time from **Run** to the first live preview in the widget, in a real napari viewer.

A fresh process opens a napari viewer (run it under Xvfb where there is no display),
adds a grayscale image (the synthetic nuclei field of ``bench_segment.py``), docks the
plugin's widget with its default settings (seed 0), waits until the widget's warm-up has
loaded torch (as a user who opens the widget and then picks an image), presses Run and
measures the wall time until the running prior's layer is shown, then the time to the
end of the run. Repeated ``--repeats`` times, each in a fresh process.

    xvfb-run -a python benchmarks/bench_preview.py [--sizes 512] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def child(size: int) -> None:
    import napari
    from qtpy.QtWidgets import QApplication

    from bench_segment import make_image

    viewer = napari.Viewer()
    viewer.add_image(make_image("nuclei", size), name="nuclei")
    _, widget = viewer.window.add_plugin_dock_widget("napari-dsp", "Deep Segmentation Prior")
    widget.set_values(seed=0)
    app = QApplication.instance()

    def pump(seconds: float, until=lambda: False) -> bool:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            app.processEvents()
            if until():
                return True
            time.sleep(0.002)
        return False

    pump(5.0)  # the widget's warm-up (torch's first optimiser import) runs meanwhile
    names = {layer.name for layer in viewer.layers}
    t0 = time.perf_counter()
    widget.run()
    shown = pump(120, lambda: any(layer.name not in names and "running" in layer.name
                                  for layer in viewer.layers))
    first = time.perf_counter() - t0 if shown else None
    pump(600, lambda: not widget.running)
    total = time.perf_counter() - t0
    print(json.dumps({"first_preview": first, "total": total, "status": widget.status}))
    viewer.close()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[512])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    print("| size | first preview (best / worst) | whole run | status |")
    print("|---|---|---|---|")
    for size in args.sizes:
        runs = []
        for _ in range(args.repeats):
            out = subprocess.run([sys.executable, __file__, "--child", str(size)],
                                 capture_output=True, text=True, check=True).stdout
            runs.append(json.loads(out.strip().splitlines()[-1]))
        firsts = [r["first_preview"] for r in runs if r["first_preview"] is not None]
        print(f"| {size}² | {min(firsts):.2f} s / {max(firsts):.2f} s | "
              f"{min(r['total'] for r in runs):.1f} s | {runs[-1]['status']} |", flush=True)
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(int(sys.argv[2]))
    else:
        sys.exit(main())
