"""Stacks and time-lapses: :func:`segment_stack` and :func:`iter_segment_stack`.

Every plane (an index of the leading Z, T or T x Z axes) gets its own prior, or one
volumetric prior covers a Z stack; the K-means centres, the class order, the foreground
decision and the refinement's class models are shared over the planes, so a class id
means the same thing in every plane. The stack is read once, plane by plane (dask and
zarr stay lazy until then), and normalised as a whole.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any, Optional

import numpy as np

from .api import _Clock, _quiet
from .core import cluster as _cluster
from .core import image as _image
from .core import plan as _plan
from .core import postprocess as _post
from .core.prior import iter_planned_prior, iter_volume_prior
from .foreground import foreground_or_nothing, object_min_size, warn_if_nothing
from .progress import FitProgress, ProgressCallback, check_callback, drain, relay
from .results import PriorResult, SegmentResult, make_metadata, resolve_seed
from .settings import Settings, make_settings
from .stackmodel import refuse_texture


class _Stack:
    """A stack's axes, checked: the leading (plane) axes, the channel axis, and a
    plane's layout."""

    def __init__(self, image, channel_axis: Optional[int]):
        self.shape = shape = tuple(int(v) for v in np.shape(image))
        ndim = len(shape)
        if channel_axis is not None:
            _image.check_axis_type(channel_axis)
            if not -ndim <= channel_axis < ndim:
                raise ValueError(f"image has shape {shape}: channel_axis={channel_axis} is "
                                 f"out of range for an image with {ndim} dimensions")
            channel_axis = int(channel_axis) % ndim
        self.channel_axis = channel_axis
        spatial_ndim = 2 + (channel_axis is not None)
        if ndim < spatial_ndim:
            raise ValueError(f"image has shape {shape}: a stack needs at least "
                             f"{spatial_ndim} dimensions")
        others = [a for a in range(ndim) if a != channel_axis]
        self.lead_axes = others[:-2]
        if len(self.lead_axes) > 2:
            raise ValueError(f"image has {ndim} dimensions (shape {shape}); stacks up to "
                             f"T x Z x Y x X (plus a channel axis) are supported; split the "
                             f"rest first, or pass channel_axis=...")
        self.lead = tuple(shape[a] for a in self.lead_axes)
        self.planes = list(np.ndindex(*self.lead)) if self.lead else [()]
        # A plane keeps the channel axis where it was among the remaining axes.
        self.plane_axis = None if channel_axis is None else \
            sum(1 for a in range(channel_axis) if a not in self.lead_axes)
        self.check_pixels(image)

    def check_pixels(self, image) -> None:
        """What can be told before reading planes: the dtype, the plane size and, for
        data in memory, NaN and infinities (lazy data is checked as it is read)."""
        dtype = np.dtype(image.dtype if hasattr(image, "dtype") else np.asarray(image).dtype)
        if dtype.kind not in "biuf":
            raise TypeError(f"image has dtype {dtype}; pass a boolean, integer or real "
                            f"floating-point stack (for complex data, pass np.abs(image))")
        h, w = self.plane_shape
        if min(h, w) < _image.MIN_SIDE:
            raise ValueError(f"planes are {h}x{w} pixels; at least {_image.MIN_SIDE}x"
                             f"{_image.MIN_SIDE} is needed (if an axis is channels, pass "
                             f"channel_axis=...)")
        if isinstance(image, np.ndarray) and dtype.kind == "f" and \
                not np.isfinite(image).all():
            raise ValueError("image contains NaN or infinite values; replace them first, "
                             "e.g. np.nan_to_num(image, nan=0.0)")

    def read(self, image) -> tuple[list, list]:
        """Every plane once as ``(C, Y, X)`` (lazy data: one read per plane): normalised
        together, so an intensity means the same in every plane (per-plane stretching
        would turn an empty plane's noise into "objects"), and as read (the noise test
        of :mod:`napari_dsp.core.decide` needs the unclipped values)."""
        arr = image if is_lazy(image) else np.asarray(image)
        raw = [self.raw_plane(arr, index) for index in self.planes]
        h = raw[0].shape[1]
        normed = _image.normalize(np.concatenate(raw, axis=1))  # (C, n * Y, X)
        return [normed[:, i * h:(i + 1) * h] for i in range(len(self.planes))], raw

    @property
    def plane_shape(self) -> tuple:
        """``(Y, X)`` of a plane, from the shape alone."""
        return tuple(self.shape[a] for a in range(len(self.shape))
                     if a != self.channel_axis)[-2:]

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
    return not isinstance(image, np.ndarray) and hasattr(image, "shape") \
        and hasattr(image, "__getitem__") and hasattr(image, "dtype")


def iter_segment_stack(image, *, channel_axis: Optional[int] = None,
                       settings: Optional[Settings] = None,
                       spacing: Optional[tuple] = None, **overrides: Any
                       ) -> Generator[FitProgress, None, SegmentResult]:
    """Generator form of :func:`segment_stack`: yields progress (``plane`` and
    ``n_planes`` set), returns a :class:`SegmentResult` of stacks. Arguments are
    checked at the call."""
    settings = make_settings(settings, **overrides)
    refuse_texture(settings)
    if settings.method != "kmeans":
        raise ValueError("segment_stack supports method='kmeans' only in this version; "
                         "run method='kanezaki' plane by plane")
    stack = _Stack(image, channel_axis)
    if settings.volumetric and len(stack.lead) != 1:
        raise ValueError(f"volumetric=True needs a Z stack (Z, Y, X), plus a channel axis "
                         f"if any; got {len(stack.lead)} leading axes (shape "
                         f"{stack.shape}); pass one time point, e.g. image[t]")
    spacing = check_spacing(spacing)
    settings = settings.replace(seed=resolve_seed(settings.seed))
    device = _plan.resolve_device(settings.device)
    return _segment_stack(image, stack, settings, device, spacing)


def _segment_stack(image, stack: _Stack, settings: Settings, device, spacing: tuple):
    clock = _Clock()
    normed, raw = stack.read(image)
    dtype = raw[0].dtype
    n = len(normed)
    s = settings
    fit_info: dict = {}
    if s.volumetric:
        volume = np.stack(normed, 1)
        precision = _plan.resolve_precision(s.precision, device)
        threads = _plan.plan_volume_threads(volume.shape, n_runs=s.n_runs, device=device,
                                            n_workers=s.n_workers)
        fit = iter_volume_prior(volume, spacing, seed=s.seed,
                                n_runs=s.n_runs, n_iter=s.n_iter,
                                learning_rate=s.learning_rate, precision=precision,
                                device=device, threads=threads)
        median, spread, stages = yield from relay(fit, clock.stamp)
        priors = [median[:, z] for z in range(n)]
        spreads = list(spread)
        fit_info = {"device": _plan.describe_device(device), "volumetric": True,
                    "spacing": list(spacing), "z_stages": stages, "threads": threads,
                    "precision": precision,
                    "iterations": s.n_iter, "settle": 0.0, "settled": False}  # no stop
    else:
        priors, spreads, iterations, settled = [], [], [], []  # per plane
        for i, plane in enumerate(normed):
            fit = iter_planned_prior(plane, device=device, **s.fit_values())
            median, spread, plane_info = yield from relay(fit, lambda p, i=i: clock.stamp(
                p.replace(preview=stack.plane_layout(p.preview), plane=i, n_planes=n)))
            priors.append(median)
            spreads.append(spread)
            iterations.append(plane_info["iterations"])
            settled.append(plane_info["settled"])
            fit_info = {**plane_info, "iterations": iterations, "settled": all(settled)}
    labels, info = _cluster.cluster_priors(priors, n_classes=s.n_classes, window=s.window,
                                           seed=s.seed)
    if s.n_classes == 2:
        labels, more = foreground_or_nothing(labels, raw, normed if s.refine else [None] * n,
                                             s)
        info.update(more)
    if s.instances:
        labels, counts = _post.label_objects(labels, object_min_size(info, s),
                                             spacing if s.volumetric else None)
        info["count"] = int(sum(counts))
        if not s.volumetric:
            info["counts_per_plane"] = counts
    prior_stack = stack.stacked([stack.plane_layout(p) for p in priors])
    if stack.channel_axis is not None:
        prior_stack = np.moveaxis(prior_stack, -1, stack.channel_axis)
    meta = make_metadata(settings, device=_plan.describe_device(device),
                         image_shape=stack.shape, image_dtype=dtype,
                         channel_axis=stack.channel_axis, fit=fit_info, clustering=info,
                         stack={"n_planes": n, "plane_axes": stack.lead_axes})
    prior = PriorResult(prior_stack, stack.stacked(spreads), meta, stack.channel_axis)
    return SegmentResult(stack.stacked(labels), prior, meta)


def check_spacing(spacing) -> tuple:
    """``spacing`` as three positive finite floats (z, y, x); isotropic when None."""
    if spacing is None:
        return (1.0, 1.0, 1.0)
    try:
        values = tuple(float(v) for v in spacing)
    except (TypeError, ValueError):
        raise TypeError(f"spacing must be three numbers (z, y, x), got {spacing!r}") from None
    if len(values) != 3 or not all(np.isfinite(v) and v > 0 for v in values):
        raise ValueError(f"spacing must be three positive numbers (z, y, x), e.g. a "
                         f"layer's scale, got {spacing!r}")
    return values


def segment_stack(image, *, channel_axis: Optional[int] = None,
                  settings: Optional[Settings] = None, spacing: Optional[tuple] = None,
                  progress: Optional[ProgressCallback] = None, full_output: bool = False,
                  **overrides: Any):
    """Segment every 2-D plane of a stack or time-lapse with shared classes.

    The last two axes (after removing ``channel_axis``) are Y and X; every index of the
    leading axes (Z, T or T x Z) is a plane with its own prior. K-means centres, the class
    order and the foreground decision are computed once over all planes, so a class id
    means the same thing in every plane.

    Parameters
    ----------
    image : array_like, shape (..., Y, X) with at most two leading axes
        Plus a channel axis anywhere when ``channel_axis`` is given. Lazy arrays (dask,
        zarr) are read one plane at a time.
    channel_axis, settings, progress, overrides
        As for :func:`~napari_dsp.segment` (``method='kmeans'`` only).
    spacing : (z, y, x), optional
        Voxel size (e.g. a napari layer's ``scale``); used by ``volumetric=True``, where
        ONE 3-D prior is fitted to a Z stack with stages that follow the anisotropy (see
        ``napari_dsp.core.nets``), and by 3-D instance labelling. Default isotropic.
    full_output : bool
        Return a :class:`SegmentResult` whose prior and spread are stacks too.

    Returns
    -------
    labels : ndarray, shape (..., Y, X), uint8

    Warns
    -----
    NothingToSegmentWarning
        As :func:`~napari_dsp.segment`: nothing in the stack stands out from its noise.

    Raises
    ------
    TypeError, ValueError
        For more than two leading axes, a bad ``channel_axis``, and as ``segment``.
    """
    check_callback(progress)
    settings = _quiet(make_settings(settings, **overrides), progress)
    result = drain(iter_segment_stack(image, channel_axis=channel_axis, settings=settings,
                                      spacing=spacing), progress)
    warn_if_nothing(result)
    return result if full_output else result.labels
