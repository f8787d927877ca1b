"""Regenerate the screenshots of docs/napari-guide.md, in a real napari window.

Run under a virtual display on a headless machine (a few minutes on a CPU):

    xvfb-run -a -s "-screen 0 1600x1000x24" python docs/make_guide_screenshots.py [out_dir]

Writes into ``docs/images/`` (or ``out_dir``):

- ``guide-stack-running.png``: a 5-plane Z stack while *all planes* are fitted (the live
  prior half transparent over the plane being fitted, the status line in planes,
  members and iterations);
- ``guide-stack-done.png``: the same stack once done (labels over the image);
- ``guide-zcyx.png``: a ZCYX OME-TIFF opened with napari's own reader (one 4-D layer), the
  *channels* row preset from the file's axes, segmented as Z planes with both channels;
- ``guide-source-and-labels.png``: a calibrated TIFF opened with napari's own reader and
  the labels the command line wrote for it, opened with napari-dsp: they line up.

Only the widget's public surface, ``viewer.open`` and the command line are used, as a
user would. The data are synthetic (no downloads).
"""

import sys
import tempfile
import time
from pathlib import Path

import napari
import numpy as np
import tifffile
from qtpy.QtWidgets import QApplication

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.synthetic
from tests.synthetic import nuclei  # noqa: E402

SIZE = (1500, 900)
FIT = dict(seed=0, n_iter=40, n_members=4)


def settle(seconds: float = 1.0) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        QApplication.processEvents()
        time.sleep(0.05)


def wait(condition, limit: float = 900) -> bool:
    t0 = time.monotonic()
    while not condition() and time.monotonic() - t0 < limit:
        QApplication.processEvents()
        time.sleep(0.05)
    return condition()


def new_viewer():
    viewer = napari.Viewer(show=True)
    viewer.window.resize(*SIZE)
    return viewer


def open_widget(viewer):
    _, widget = viewer.window.add_plugin_dock_widget("napari-dsp", "Deep Segmentation Prior")
    widget.set_values(**FIT)
    return widget


def shot(viewer, out: Path, what: str) -> None:
    settle()
    viewer.window.screenshot(str(out), canvas_only=False)
    print(f"wrote {out}: {what}")


def nuclei_stack(n: int = 5, side: int = 160) -> np.ndarray:
    return np.stack([nuclei((side, side), n=14, seed=i)[0] for i in range(n)])


def stack_run(out_dir: Path) -> None:
    viewer = new_viewer()
    viewer.add_image(nuclei_stack(), name="nuclei stack")
    widget = open_widget(viewer)
    widget.planes = "all planes"
    widget.set_values(preview_every=2)
    widget.run()
    ok = wait(lambda: "plane 2/5" in widget.status and "left" in widget.status)
    viewer.dims.set_point(0, 1)  # look at the plane being fitted
    if ok:
        shot(viewer, out_dir / "guide-stack-running.png", widget.status)
    wait(lambda: not widget.running)
    viewer.layers["nuclei stack labels"].opacity = 0.6
    shot(viewer, out_dir / "guide-stack-done.png", widget.status)
    viewer.close()


def write_zcyx(folder: Path) -> Path:
    """Nuclei and a cytoplasm stain around them (dimmer, wider), 2.0 um apart in Z."""
    from scipy import ndimage as ndi

    rng = np.random.default_rng(1)
    nuc, cyto = [], []
    for z in range(6):
        image, mask = nuclei((160, 160), n=14, seed=z)
        cell = ndi.binary_dilation(mask > 0, iterations=6)
        stain = 400 + 2500 * ndi.gaussian_filter(cell.astype(float), 2)
        nuc.append(image)
        cyto.append(np.clip(stain + rng.normal(0, 60, stain.shape), 0, 65535))
    data = np.stack([np.stack(nuc), np.stack(cyto).astype(np.uint16)], axis=1)  # Z, C, Y, X
    path = folder / "embryo.ome.tif"
    tifffile.imwrite(
        path,
        data,
        metadata={"axes": "ZCYX", "PhysicalSizeZ": 2.0, "PhysicalSizeY": 0.2, "PhysicalSizeX": 0.2},
    )
    return path


def zcyx_run(out_dir: Path, folder: Path) -> None:
    viewer = new_viewer()
    layer = viewer.open(write_zcyx(folder))[0]  # napari's own reader: one 4-D layer
    layer.colormap = "gray"
    widget = open_widget(viewer)
    widget.planes = "all planes"
    widget.run()
    wait(lambda: not widget.running)
    viewer.layers[f"{layer.name} labels"].opacity = 0.5
    viewer.dims.set_point(0, 2)
    shot(viewer, out_dir / "guide-zcyx.png", widget.status)
    viewer.close()


def source_and_labels(out_dir: Path, folder: Path) -> None:
    from napari_dsp.cli import main

    image = nuclei((200, 260), n=20, seed=7)[0]
    source = folder / "cells.tif"
    tifffile.imwrite(
        source, image, imagej=True, resolution=(1 / 0.2, 1 / 0.2), metadata={"unit": "micron"}
    )
    flags = ["--seed", "0", "--iterations", "40", "--members", "4", "--quiet"]
    assert main(["segment", str(source), "-o", str(folder / "out"), *flags]) == 0
    viewer = new_viewer()
    viewer.open(source)  # napari's own reader (scale 1)
    labels = viewer.open(folder / "out" / "cells_labels.tif", plugin="napari-dsp")[0]
    labels.opacity = 0.6
    viewer.reset_view()
    shot(viewer, out_dir / "guide-source-and-labels.png", labels.metadata.get("placed_on", ""))
    viewer.close()


def main(out_dir: Path) -> int:
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        stack_run(out_dir)
        zcyx_run(out_dir, folder)
        source_and_labels(out_dir, folder)
    return 0


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("images")
    sys.exit(main(target))
