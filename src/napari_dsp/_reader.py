"""napari reader for label images (``*_labels.tif``, as napari-dsp writes them): opens
them as a Labels layer, where napari's own reader would give an Image layer.

Where the labels go: on their source. When the viewer already shows the image the
labels were made from (a layer named ``x`` or opened from ``x.tif`` for
``x_labels.tif``, with the same height and width), the labels take that layer's
placement, whichever reader opened it: napari's own reader opens a TIFF at scale 1 (no
pixel size), a calibrated reader at its pixel size, and the labels land on it either way;
an axis the source has and the labels have not (the channels of a ZCYX file) gets a
single entry drawn across every channel. Otherwise the labels get the file's pixel size,
axes and unit, as Fiji or QuPath would open them. Either way the file's pixel size and
unit are in the layer's ``metadata``.

napari offers this reader beside its built-in one for such files; choose "napari-dsp"
(and "remember" it) in napari's reader dialog, or from Python
``viewer.open(path, plugin="napari-dsp")`` (``viewer.open`` without ``plugin`` uses
napari's own reader). A file that does not hold integer ids in one channel (an RGB
picture, a float image that happens to be called ``*_labels.tif``, a file that cannot
be read) is declined from its header, so napari's own reader opens it.
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
    source = _source_in_viewer(path, data.shape)
    if source is not None:
        data, where = _on_source(data, axes, source)
        kwargs.update(where)
        kwargs["metadata"]["placed_on"] = (
            f"layer '{source.name}', as the viewer shows it (the file's own pixel size "
            f"is under 'pixel_size')"
        )
        return data, kwargs, "labels"
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


def _source_in_viewer(path: Path, shape: tuple):
    """The Image layer of the current viewer these labels were made from: named like
    the file without ``_labels`` (napari names a layer after its file) or opened from
    such a file, with the labels' height and width; else None."""
    try:
        from napari import current_viewer
        from napari.layers import Image
    except ImportError:  # pragma: no cover - napari missing
        return None
    viewer = current_viewer()
    if viewer is None:
        return None
    name = path.name
    stem = name[: name.lower().rindex("_labels")]
    for layer in reversed(viewer.layers):
        if not isinstance(layer, Image) or getattr(layer, "multiscale", False):
            continue
        source = getattr(getattr(layer, "source", None), "path", None)
        names = {layer.name, Path(str(source)).name.split(".")[0] if source else None}
        spatial = layer.data.shape[-3:-1] if layer.rgb else layer.data.shape[-2:]
        if stem in names and tuple(spatial) == tuple(shape[-2:]) and _fits(layer, shape):
            return layer
    return None


def _fits(layer, shape: tuple) -> bool:
    lead = layer.ndim - 2
    return len(shape) == layer.ndim or (
        len(shape) == layer.ndim - 1 and _channel_axis(layer) is not None and lead >= 1
    )


def _channel_axis(layer):
    """The source layer's channel axis: named ``c`` in its axis labels or ``C`` in the
    header of the file it was opened from."""
    labels = [str(a).lower() for a in getattr(layer, "axis_labels", ())]
    if "c" in labels:
        return labels.index("c")
    source = getattr(getattr(layer, "source", None), "path", None)
    if not source:
        return None
    try:
        info = _io.read_info(Path(str(source)))
    except (_io.ImageFileError, OSError, ValueError):
        return None
    axes = (info.axes or "").upper()
    if len(axes) == layer.ndim and "C" in axes:
        return axes.index("C")
    return None


def _on_source(data, axes, layer) -> tuple:
    """``data`` and the placement that puts it on ``layer``: the layer's scale and
    translate; a channel axis the labels lack gets one entry spanning all channels."""
    import numpy as np

    scale = np.array(layer.scale, float)
    translate = np.array(layer.translate, float)
    if data.ndim == layer.ndim - 1:
        c = _channel_axis(layer)
        n = layer.data.shape[c]
        data = np.expand_dims(data, c)
        translate[c] += (n - 1) / 2 * scale[c]
        scale[c] *= n
    where = {"scale": tuple(scale), "translate": tuple(translate)}
    units = getattr(layer, "units", None)
    if units is not None and "units" in _layer_parameters():
        where["units"] = tuple(units)
    return data, where
