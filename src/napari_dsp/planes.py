"""The axes of a stack, checked: which axes are planes (Z, T, T x Z), which is the
channel axis, a plane's layout, and reading one plane at a time (dask and zarr stay
lazy until a plane is read). Shared by every path that segments a stack (in memory,
plane by plane into zarr, on a cluster)."""

from __future__ import annotations

from typing import Optional

import numpy as np

from .core import image as _image


class StackLayout:
    """A stack's axes, checked: the leading (plane) axes, the channel axis, and a
    plane's layout."""

    def __init__(self, image, channel_axis: Optional[int]):
        try:
            self.shape = shape = tuple(int(v) for v in np.shape(image))
        except ValueError:  # numpy: "inhomogeneous shape"
            raise ValueError(
                "the planes given have different sizes; pass planes of one height and width "
                "(crop or pad them), or segment them one at a time"
            ) from None
        if 0 in shape:
            raise ValueError(f"image has shape {shape}: a stack needs at least one plane of pixels")
        ndim = len(shape)
        if channel_axis is not None:
            _image.check_axis_type(channel_axis)
            if not -ndim <= channel_axis < ndim:
                raise ValueError(
                    f"image has shape {shape}: channel_axis={channel_axis} is "
                    f"out of range for an image with {ndim} dimensions"
                )
            channel_axis = int(channel_axis) % ndim
        self.channel_axis = channel_axis
        spatial_ndim = 2 + (channel_axis is not None)
        if ndim < spatial_ndim:
            raise ValueError(
                f"image has shape {shape}: a stack needs at least {spatial_ndim} dimensions"
            )
        others = [a for a in range(ndim) if a != channel_axis]
        self.lead_axes = others[:-2]
        if len(self.lead_axes) > 2:
            raise ValueError(
                f"image has {ndim} dimensions (shape {shape}); stacks up to "
                f"T x Z x Y x X (plus a channel axis) are supported; split the "
                f"rest first, or pass channel_axis=..."
            )
        self.lead = tuple(shape[a] for a in self.lead_axes)
        self.planes = list(np.ndindex(*self.lead)) if self.lead else [()]
        # A plane keeps the channel axis where it was among the remaining axes.
        self.plane_axis = (
            None
            if channel_axis is None
            else sum(1 for a in range(channel_axis) if a not in self.lead_axes)
        )
        self.check_pixels(image)

    def check_pixels(self, image) -> None:
        """What can be told before reading planes: the dtype, the plane size and, for
        data in memory, NaN and infinities (lazy data is checked as it is read)."""
        dtype = np.dtype(image.dtype if hasattr(image, "dtype") else np.asarray(image).dtype)
        if dtype.kind not in "biuf":
            raise TypeError(
                f"image has dtype {dtype}; pass a boolean, integer or real "
                f"floating-point stack (for complex data, pass np.abs(image))"
            )
        h, w = self.plane_shape
        if min(h, w) < _image.MIN_SIDE:
            raise ValueError(
                f"planes are {h}x{w} pixels; at least {_image.MIN_SIDE}x"
                f"{_image.MIN_SIDE} is needed (if an axis is channels, pass "
                f"channel_axis=...)"
            )
        if isinstance(image, np.ndarray) and dtype.kind == "f" and not np.isfinite(image).all():
            raise ValueError(
                "image contains NaN or infinite values; replace them first, "
                "e.g. np.nan_to_num(image, nan=0.0)"
            )

    def read(self, image) -> tuple[list, list]:
        """Every plane once as ``(C, Y, X)`` (lazy data: one read per plane): normalised
        together, so an intensity means the same in every plane (per-plane stretching
        would turn an empty plane's noise into "objects"), and as read (the noise test
        of :mod:`napari_dsp.core.decide` needs the unclipped values)."""
        arr = image if is_lazy(image) else np.asarray(image)
        raw = [self.raw_plane(arr, index) for index in self.planes]
        h = raw[0].shape[1]
        normed = _image.normalize(np.concatenate(raw, axis=1))  # (C, n * Y, X)
        return [normed[:, i * h : (i + 1) * h] for i in range(len(self.planes))], raw

    @property
    def plane_shape(self) -> tuple:
        """``(Y, X)`` of a plane, from the shape alone."""
        return tuple(self.shape[a] for a in range(len(self.shape)) if a != self.channel_axis)[-2:]

    def key(self, index: tuple) -> tuple:
        """The index into the image of the plane at ``index`` (of the leading axes)."""
        key = [slice(None)] * len(self.shape)
        for axis, v in zip(self.lead_axes, index):
            key[axis] = v
        return tuple(key)

    def raw_plane(self, arr, index: tuple) -> np.ndarray:
        """The plane at ``index`` as read, ``(C, Y, X)`` (one read of lazy data)."""
        return _image.to_channels_first(np.asarray(arr[self.key(index)]), self.plane_axis)

    def plane_layout(self, chw: Optional[np.ndarray]) -> Optional[np.ndarray]:
        """(C, Y, X) -> (Y, X), or (Y, X, C) with a channel axis."""
        if chw is None:
            return None
        return chw[0] if self.plane_axis is None else np.moveaxis(chw, 0, -1)

    def stacked(self, planes: list) -> np.ndarray:
        return np.stack(planes).reshape(self.lead + planes[0].shape)


def is_lazy(image) -> bool:
    """A dask, zarr or other array-like read on indexing (not a numpy array)."""
    return (
        not isinstance(image, np.ndarray)
        and hasattr(image, "shape")
        and hasattr(image, "__getitem__")
        and hasattr(image, "dtype")
    )


#: An axis with this many entries or fewer may be channels rather than planes.
MAX_CHANNELS = 4


def entries_differ_wildly(image, axis: int, n_lead: int, side: int = 128) -> bool:
    """Whether the entries along ``axis`` (2 to :data:`MAX_CHANNELS` of them) of a stack
    ``image`` (``n_lead`` leading axes, then Y and X) differ as channels do, not as
    neighbouring planes: their pixels are barely correlated (the same structures are not
    in each) and their intensity ranges or levels differ severalfold. Reads one sample:
    the middle of the other leading axes, every few pixels (``side`` x ``side`` at most);
    lazy arrays read only that."""
    shape = tuple(int(v) for v in np.shape(image))
    n = shape[axis]
    if not 2 <= n <= MAX_CHANNELS:
        return False
    key: list = [s // 2 for s in shape[:n_lead]] + [slice(None)] * (len(shape) - n_lead)
    key[axis] = slice(None)
    for k, s in enumerate(shape[n_lead:], start=n_lead):
        key[k] = slice(None, None, max(1, s // side))
    sample = np.asarray(image[tuple(key)], dtype=np.float64)  # (n, y, x)
    sample = sample.reshape(n, -1)
    if not np.isfinite(sample).all():
        sample = np.nan_to_num(sample)
    lo, mid, hi = np.percentile(sample, [1, 50, 99], axis=1)
    ranges = np.maximum(hi - lo, 1e-12)
    span = max(float(hi.max() - lo.min()), 1e-12)
    scale_ratio = float(ranges.max() / ranges.min())
    level_gap = float((mid.max() - mid.min()) / span)
    centred = sample - sample.mean(axis=1, keepdims=True)
    norms = np.sqrt((centred**2).sum(axis=1))
    if (norms == 0).any():
        return scale_ratio > 3 or level_gap > 0.25
    corr = (centred @ centred.T) / np.outer(norms, norms)
    weakest = float(corr[np.triu_indices(n, 1)].min())
    return weakest < 0.5 and (scale_ratio > 3 or level_gap > 0.25)
