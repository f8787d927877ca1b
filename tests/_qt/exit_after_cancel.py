"""Run by test_widget.py in a fresh process: start a fit in the dock widget on one of
the widget's paths, cancel it as soon as it reports, close the viewer at once and let the
interpreter exit. The test checks that the process ends (a fit left waiting on its
threads kept it alive for ever)."""

import sys
import time

import numpy as np

PATHS = ("image", "stack", "lazy stack")


def main(path: str) -> None:
    import napari
    from qtpy.QtWidgets import QApplication

    from tests.fast import TINY
    from tests.synthetic import nuclei

    viewer = napari.Viewer(show=False)
    _, widget = viewer.window.add_plugin_dock_widget("napari-dsp", "Deep Segmentation Prior")
    widget.set_values(**dict(TINY, n_iter=3000, n_members=2, n_threads=2))
    planes = np.stack([nuclei((48, 48), n=3, radius=(5, 8), seed=i)[0] for i in range(4)])
    if path == "image":
        layer = viewer.add_image(planes[0], name="image")
    elif path == "stack":
        layer = viewer.add_image(planes, name="stack")
        widget.planes = "all planes"
    else:
        import dask.array as da

        layer = viewer.add_image(da.from_array(planes, chunks=(1, 48, 48)), name="lazy")
        widget.planes = "all planes"
    widget.image_layer = layer
    worker = widget.run()
    assert worker is not None, widget.status
    deadline = time.monotonic() + 120
    while not any(word in widget.status for word in ("iteration", "plane ")):
        QApplication.processEvents()
        time.sleep(0.01)
        if time.monotonic() > deadline:
            sys.exit(f"no report within 120 s; status: {widget.status!r}")
    widget.cancel()
    viewer.close()
    print("closed", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
