"""Which axes of an Image layer are channels, planes (Z, T), Y and X, as the dock widget
offers them.

napari's own reader opens a ZCYX OME-TIFF as one 4-D layer with neither axis names nor
pixel size, so the widget looks, in this order, at: the layer's axis labels (``c``,
``z``, ``t``), the header of the file napari opened the layer from (its axes and pixel
size, when the file holds exactly the layer's array), and last the pixels: an axis of 2
to 4 entries that differ wildly from one another is taken as channels and the widget
says so (:func:`napari_dsp.planes.entries_differ_wildly`). The user has the last word in
the form's *channels* row. Y and X are the last two axes; the plane axes are the rest
(the last of two is Z unless the labels say otherwise).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

import numpy as np

from .. import io as _io
from ..planes import entries_differ_wildly

#: The channels row's value for a layer without a channel axis.
NO_CHANNELS = "none"
_NAMES = {"c": "C", "ch": "C", "channel": "C", "channels": "C", "z": "Z", "t": "T", "time": "T"}


def lead_ndim(layer) -> int:
    """Axes before Y and X (and before the colour axis of an RGB layer)."""
    return layer.ndim - 2


def source_info(layer) -> Optional[_io.ImageInfo]:
    """The header of the file napari opened ``layer`` from, when the file holds exactly
    the layer's array with named axes; else None."""
    path = getattr(getattr(layer, "source", None), "path", None)
    if not path or getattr(layer, "multiscale", False) or not os.path.isfile(str(path)):
        return None
    try:
        info = _io.read_info(path)
    except (_io.ImageFileError, OSError, ValueError):
        return None
    axes = info.axes or ""
    if tuple(info.shape) != tuple(np.shape(layer.data)) or len(axes) != len(info.shape):
        return None
    return info


def axis_names(layer) -> tuple[list, str]:
    """Per axis of the layer ``"C"``, ``"Z"``, ``"T"``, ``"Y"``, ``"X"`` or None, and
    where the names come from (``"layer"``, ``"file"`` or ``""``)."""
    ndim = layer.ndim
    labels = [str(a).strip().lower() for a in getattr(layer, "axis_labels", ())][-ndim:]
    names = [_NAMES.get(a) for a in labels] + [None] * (ndim - len(labels))
    if any(names[: lead_ndim(layer)]):
        return names, "layer"
    info = source_info(layer)
    if info is not None and not layer.rgb:
        return [{"S": "C"}.get(a, a) if a in "CZTYXS" else None for a in info.axes.upper()], "file"
    return names, ""


@dataclass
class ChannelGuess:
    """The channels row's default for a layer: an axis (or None) and why."""

    axis: Optional[int]
    why: str = ""


def guess_channel(layer) -> ChannelGuess:
    """The channel axis of ``layer`` as far as it can be told (see the module)."""
    lead = lead_ndim(layer)
    if layer.rgb or lead < 1:
        return ChannelGuess(None)
    names, where = axis_names(layer)
    said = {"layer": "the layer's axis labels say so", "file": "the file's axes say so"}
    for i in range(lead):
        if names[i] == "C":
            return ChannelGuess(i, said[where])
    data = layer.data[-1] if getattr(layer, "multiscale", False) else layer.data
    for i in range(lead):
        if names[i] is None and entries_differ_wildly(data, i, lead):
            n = np.shape(data)[i]
            return ChannelGuess(
                i, f"its {n} entries differ wildly from one another, as channels do"
            )
    return ChannelGuess(None)


def channel_choices(layer) -> list:
    """(label, value) pairs of the channels row: none, or one of the leading axes."""
    if layer is None or layer.rgb:
        return [("none (one channel)", NO_CHANNELS)]
    names, _ = axis_names(layer)
    shape = np.shape(layer.data[0] if getattr(layer, "multiscale", False) else layer.data)
    out = [("none (one channel)", NO_CHANNELS)]
    for i in range(lead_ndim(layer)):
        name = f" ({names[i]})" if names[i] else ""
        out.append((f"axis {i}{name}: {shape[i]} entries", i))
    return out


def describe_axis(layer, axis: int) -> str:
    names, _ = axis_names(layer)
    return f"axis {axis}" + (f" ({names[axis]})" if names[axis] else "")


def file_spacing(layer, axes: tuple) -> Optional[tuple]:
    """The voxel size (z, y, x) at ``axes`` from the layer's source file, for a layer
    napari placed at scale 1 (its reader drops the pixel size); else None."""
    if not np.allclose(np.asarray(layer.scale, float), 1.0):
        return None
    info = source_info(layer)
    if info is None or not info.pixel_size:
        return None
    letters = info.axes.upper()
    sizes = [info.pixel_size.get(letters[a]) for a in axes]
    if any(s is None for s in sizes):
        return None
    return tuple(float(s) for s in sizes)
