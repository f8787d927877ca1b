"""napari reader for label images (``*_labels.tif``, as napari-dsp writes them): opens
them as a Labels layer with the file's pixel size, axes and unit, where napari's own
reader would give an Image layer.

napari offers this reader beside its built-in one for such files; choose "Deep
Segmentation Prior" (and "remember" it) in napari's reader dialog, or from Python
``viewer.open(path, plugin="napari-dsp")``. A file that does not hold integer ids in one
channel (an RGB picture, a float image that happens to be called ``*_labels.tif``, a file
that cannot be read) is declined from its header, so napari's own reader opens it.
"""

from __future__ import annotations

import inspect
from pathlib import Path

from . import io as _io

PATTERNS = ("_labels.tif", "_labels.tiff")


def get_reader(path):
    """npe2 reader hook: a reader for one or more ``*_labels.tif`` files that hold label
    images (see :func:`holds_labels`), else None."""
    paths = list(path) if isinstance(path, (list, tuple)) else [path]
    if not paths or not all(str(p).lower().endswith(PATTERNS) for p in paths):
        return None
    if not all(holds_labels(Path(p)) for p in paths):
        return None
    return read_labels


def holds_labels(path: Path) -> bool:
    """From the header alone: one channel of integer (or boolean) ids, whatever other
    axes (T, Z) it has. RGB(A) samples, several channels, real numbers, or a file that
    cannot be read are not labels."""
    try:
        info = _io.read_info(path)
    except (_io.ImageFileError, OSError, ValueError):
        return False
    if info.alpha or info.dtype.kind not in "biu":
        return False
    axes = info.axes or ""
    if len(axes) == len(info.shape):
        return not any(a in "CS" and n > 1 for a, n in zip(axes, info.shape))
    return not (len(info.shape) >= 3 and info.shape[-1] in (3, 4))  # no axes: RGB(A)?


def read_labels(path) -> list:
    """Layer data of label files: ``[(data, kwargs, "labels"), ...]``."""
    paths = list(path) if isinstance(path, (list, tuple)) else [path]
    return [_layer(Path(p)) for p in paths]


def _layer(path: Path) -> tuple:
    info = _io.read_info(path)
    data = _io.read_pixels(info)
    axes = info.axes if info.axes and len(info.axes) == data.ndim else None
    kwargs: dict = {
        "name": path.stem,
        "metadata": {
            "source_file": str(path),
            "format": info.format,
            "axes": info.axes,
            "pixel_size": info.pixel_size,
            "unit": info.unit,
            "written_by_napari_dsp": info.written_by_us,
        },
    }
    if axes:
        kwargs["scale"] = tuple(float(info.pixel_size.get(a, 1.0)) for a in axes)
        accepted = _layer_parameters()
        if "axis_labels" in accepted:
            kwargs["axis_labels"] = tuple(a.lower() for a in axes)
        if "units" in accepted and info.unit and info.pixel_size:
            kwargs["units"] = tuple(
                _pint_unit(info.unit) if a in info.pixel_size else "pixel" for a in axes
            )
    return data, kwargs, "labels"


def _layer_parameters() -> set:
    """Keyword arguments napari's layers take (``units`` and ``axis_labels`` arrived
    in napari 0.6)."""
    try:
        from napari.layers import Labels

        return set(inspect.signature(Labels.__init__).parameters)
    except Exception:  # pragma: no cover - napari missing or changed
        return set()


def _pint_unit(unit: str) -> str:
    return {"µm": "micrometer", "nm": "nanometer", "mm": "millimeter", "m": "meter"}.get(unit, unit)
