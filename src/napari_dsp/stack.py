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

from . import pipeline as _pipeline
from .core import image as _image
from .core import plan as _plan
from .core.prior import iter_planned_prior, iter_volume_prior
from .core.progress import (
    Clock,
    FitProgress,
    ProgressCallback,
    check_callback,
    drain,
    relay,
)
from .planes import StackLayout, is_lazy
from .results import PriorResult, SegmentResult, make_metadata, resolve_seed
from .settings import Settings, make_settings, without_unwatched_previews


def iter_segment_stack(
    image,
    *,
    channel_axis: Optional[int] = None,
    settings: Optional[Settings] = None,
    spacing: Optional[tuple] = None,
    out=None,
    overwrite: bool = False,
    **overrides: Any,
) -> Generator[FitProgress, None, SegmentResult]:
    """Generator form of :func:`segment_stack`: yields progress (``plane`` and
    ``n_planes`` set), returns a :class:`SegmentResult` of stacks (with ``out``, labels
    read lazily from that zarr array and no prior). Arguments are checked at the call."""
    settings = make_settings(settings, **overrides)
    image = _image.from_torch(image)
    if out is not None:
        from .large import iter_segment_stack_to_zarr

        return iter_segment_stack_to_zarr(
            image, out, channel_axis=channel_axis, settings=settings, overwrite=overwrite
        )
    _pipeline.refuse_texture(settings)
    if settings.method != "kmeans":
        raise ValueError(
            "segment_stack supports method='kmeans' only in this version; "
            "run method='kanezaki' plane by plane"
        )
    stack = StackLayout(image, channel_axis)
    if settings.volumetric and len(stack.lead) != 1:
        raise ValueError(
            f"volumetric=True needs a Z stack (Z, Y, X), plus a channel axis "
            f"if any; got {len(stack.lead)} leading axes (shape "
            f"{stack.shape}); pass one time point, e.g. image[t]"
        )
    spacing = check_spacing(spacing)
    settings = settings.replace(seed=resolve_seed(settings.seed))
    device = _plan.resolve_device(settings.device)
    return _segment_stack(image, stack, settings, device, spacing)


def _segment_stack(image, stack: StackLayout, settings: Settings, device, spacing: tuple):
    clock = Clock()
    normed, raw = stack.read(image)
    dtype = raw[0].dtype
    n = len(normed)
    s = settings
    fit_info: dict = {}
    if s.volumetric:
        volume = np.stack(normed, 1)
        precision = _plan.resolve_precision(s.precision, device)
        threads = _plan.plan_volume_threads(
            volume.shape, n_members=s.n_members, device=device, n_threads=s.n_threads
        )
        fit = iter_volume_prior(
            volume,
            spacing,
            seed=s.seed,
            n_members=s.n_members,
            n_iter=s.n_iter,
            learning_rate=s.learning_rate,
            precision=precision,
            device=device,
            threads=threads,
            preview_every=s.preview_every,
        )
        median, spread, stages = yield from relay(
            fit, lambda p: clock.stamp(p.replace(preview=stack.plane_layout(p.preview)))
        )
        priors = [median[:, z] for z in range(n)]
        spreads = list(spread)
        fit_info = {
            "device": _plan.describe_device(device),
            "volumetric": True,
            "spacing": list(spacing),
            "z_stages": stages,
            "threads": threads,
            "precision": precision,
            "iterations": s.n_iter,
            "settle": 0.0,
            "settled": False,
        }  # no stop
    else:
        priors, spreads, iterations, settled = [], [], [], []  # per plane
        for i, plane in enumerate(normed):
            fit = iter_planned_prior(plane, device=device, **s.fit_values())
            median, spread, plane_info = yield from relay(
                fit,
                # step of total count the whole stack (FitProgress's units), as the
                # out-of-core path does: a bar does not fill at the end of each plane
                lambda p, i=i: clock.stamp(
                    p.replace(
                        preview=stack.plane_layout(p.preview),
                        plane=i,
                        n_planes=n,
                        step=i * p.total + p.step,
                        total=n * p.total,
                    )
                ),
            )
            priors.append(median)
            spreads.append(spread)
            iterations.append(plane_info["iterations"])
            settled.append(plane_info["settled"])
            fit_info = {**plane_info, "iterations": iterations, "settled": all(settled)}
    model, clustered = _pipeline.learn(priors, raw, normed, s)
    labels = [_pipeline.apply(model, *plane) for plane in zip(priors, raw, normed, clustered)]
    info = model.metadata()
    if s.instances:
        labels, counts = _pipeline.number_objects(labels, model, spacing if s.volumetric else None)
        info["count"] = int(sum(counts))
        if not s.volumetric:
            info["counts_per_plane"] = counts
    prior_stack = stack.stacked([stack.plane_layout(p) for p in priors])
    if stack.channel_axis is not None:
        prior_stack = np.moveaxis(prior_stack, -1, stack.channel_axis)
    meta = make_metadata(
        settings,
        device=_plan.describe_device(device),
        image_shape=stack.shape,
        image_dtype=dtype,
        channel_axis=stack.channel_axis,
        fit=fit_info,
        clustering=info,
        stack={"n_planes": n, "plane_axes": stack.lead_axes},
    )
    prior = PriorResult(prior_stack, stack.stacked(spreads), meta, stack.channel_axis)
    return SegmentResult(stack.stacked(labels), prior, meta)


#: The three ways a run goes: one 2-D image, a stack in memory, a lazy stack plane by
#: plane into zarr on disk (bounded memory).
PATHS = ("image", "stack", "out of core")


def choose_path(data, settings: Settings, *, planes: bool) -> str:
    """Which of :data:`PATHS` a run on ``data`` takes; the napari widget and the command
    line both ask here. ``planes``: whether ``data`` has plane axes (a stack, or the
    widget's *all planes*). A stack goes out of core when it is lazy (dask, zarr: the
    widget's layers of large files; the command line reads files into memory, so its
    stacks stay in memory), dask and zarr are installed, ``method='kmeans'`` and not
    ``volumetric`` (a 3-D prior needs the whole stack)."""
    if not planes:
        return "image"
    if not is_lazy(data) or settings.method != "kmeans" or settings.volumetric:
        return "stack"
    try:
        import dask.array  # noqa: F401
        import zarr  # noqa: F401
    except ImportError:
        return "stack"
    return "out of core"


def check_spacing(spacing) -> tuple:
    """``spacing`` as three positive finite floats (z, y, x); isotropic when None."""
    if spacing is None:
        return (1.0, 1.0, 1.0)
    try:
        values = tuple(float(v) for v in spacing)
    except (TypeError, ValueError):
        raise TypeError(f"spacing must be three numbers (z, y, x), got {spacing!r}") from None
    if len(values) != 3 or not all(np.isfinite(v) and v > 0 for v in values):
        raise ValueError(
            f"spacing must be three positive numbers (z, y, x), e.g. a "
            f"layer's scale, got {spacing!r}"
        )
    return values


def segment_stack(
    image,
    *,
    channel_axis: Optional[int] = None,
    settings: Optional[Settings] = None,
    spacing: Optional[tuple] = None,
    progress: Optional[ProgressCallback] = None,
    full_output: bool = False,
    out=None,
    overwrite: bool = False,
    **overrides: Any,
):
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
    out : path ending in ``.zarr``, optional
        Segment plane by plane with bounded memory into this zarr array (for stacks
        larger than memory; one plane's fit in memory at a time): the classes are learnt
        from a sample of 8 evenly spaced planes (all of them in a shorter stack, which
        then gives the in-memory result), every plane is written as it finishes, and the
        result appears under ``out`` only when every plane is done. The labels returned
        are a dask array read from it (no prior is kept). ``method='kmeans'`` without
        ``volumetric``. Needs ``pip install "napari-dsp[distributed]"`` (dask, zarr).
    overwrite : bool
        With ``out``: replace an existing ``out`` (never an input: an ``out`` that is,
        contains or lies inside the stack read is refused).

    Returns
    -------
    labels : ndarray (dask array with ``out``), shape (..., Y, X)
        ``uint8`` classes (0 = background), or ``uint32`` object ids unique over the
        stack with ``instances=True`` (numbered plane by plane).

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
    settings = without_unwatched_previews(make_settings(settings, **overrides), progress)
    result = drain(
        iter_segment_stack(
            image,
            channel_axis=channel_axis,
            settings=settings,
            spacing=spacing,
            out=out,
            overwrite=overwrite,
        ),
        progress,
    )
    _pipeline.warn_if_nothing(result.metadata)
    return result if full_output else result.labels
