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
from .core.prior import iter_volume_prior
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
    """Segment a stack step by step: the generator form of :func:`segment_stack`.

    Arguments are checked at the call; closing the generator stops the work within an
    iteration and leaves no partial output.

    Parameters
    ----------
    image : array_like, shape (..., Y, X) with at most two leading axes
        As for :func:`segment_stack`.
    channel_axis : int, optional
        Axis of the channels, if any.
    settings : Settings, optional
        Defaults for every parameter (``Settings()`` when omitted).
    spacing : tuple of 3 floats (z, y, x), optional
        Voxel size, as for :func:`segment_stack`.
    out : str or Path ending in ``.zarr``, optional
        Segment plane by plane into this zarr array, as for :func:`segment_stack`.
    overwrite : bool, default False
        With ``out``: replace an existing ``out`` that napari-dsp wrote.
    **overrides
        Any setting of :class:`Settings` by name, replacing the value of ``settings``.

    Yields
    ------
    FitProgress
        One report per iteration, with ``plane`` and ``n_planes`` set.

    Returns
    -------
    SegmentResult
        Labels, priors and metadata of the stack; with ``out``, labels read lazily from
        that zarr array and no prior.

    Raises
    ------
    TypeError
        For an image or a setting of the wrong type.
    ValueError
        As :func:`segment_stack` raises it.
    """
    settings = make_settings(settings, **overrides)
    image = _image.from_torch(image)
    _image.refuse_masked(image)
    if out is not None:
        from .large import iter_segment_stack_to_zarr

        if spacing is not None:
            raise ValueError(
                "spacing is used by volumetric=True (one 3-D prior), which out= does "
                "not do: the zarr path segments plane by plane; leave spacing out"
            )

        return iter_segment_stack_to_zarr(
            image, out, channel_axis=channel_axis, settings=settings, overwrite=overwrite
        )
    _pipeline.refuse_per_image(settings)
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


class _StepsAfter:
    """The progress steps the planes after plane ``i`` will take, from plane ``i``'s own
    steps per iteration and each plane's planned iterations
    (:func:`napari_dsp.pipeline.planned_iterations`); remembers the steps of the plane
    reported last."""

    def __init__(self, iterations: list):
        self.iterations = iterations
        self.after = [sum(iterations[k + 1 :]) for k in range(len(iterations))]
        self.plane_total = 0

    def __call__(self, i: int, plane_total: int) -> int:
        self.plane_total = plane_total
        return round(plane_total / self.iterations[i] * self.after[i])


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
        priors, spreads, iterations, settled, starts = [], [], [], [], []  # per plane
        carry: dict = {}  # each plane starts from where the plane before ended
        done = 0  # progress steps of the planes fitted
        later = _StepsAfter([_pipeline.planned_iterations(j, s) for j in range(n)])
        for i, plane in enumerate(normed):
            if i % _pipeline.ANCHOR_EVERY == 0:  # pipeline.fit_order: an anchor
                carry = {}
            fit = _pipeline.iter_fit(plane, s, carry)
            median, spread, plane_info = yield from relay(
                fit,
                # step of total count the whole stack (FitProgress's units), as the
                # out-of-core path does: a bar does not fill at the end of each plane;
                # planes that start from their neighbour take fewer iterations
                lambda p, i=i, done=done: clock.stamp(
                    p.replace(
                        preview=stack.plane_layout(p.preview),
                        plane=i,
                        n_planes=n,
                        step=done + p.step,
                        total=done + p.total + later(i, p.total),
                    )
                ),
            )
            done += later.plane_total
            priors.append(median)
            spreads.append(spread)
            iterations.append(plane_info["iterations"])
            settled.append(plane_info["settled"])
            starts.append(plane_info.pop("start"))
            fit_info = {
                **plane_info,
                "iterations": iterations,
                "settled": all(settled),
                "warm_iter": s.warm_iter,
                "start": starts,
            }
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
    channel_axis : int, optional
        Axis of the channels, if any.
    settings : Settings, optional
        Defaults for every parameter (``Settings()`` when omitted; ``method='kmeans'``
        only).
    spacing : tuple of 3 floats (z, y, x), optional
        Voxel size (e.g. a napari layer's ``scale``); used by ``volumetric=True``, where
        ONE 3-D prior is fitted to a Z stack with stages that follow the anisotropy (see
        ``napari_dsp.core.nets``), and by 3-D instance labelling. Default isotropic.
    progress : callable, optional
        Called with a :class:`FitProgress` (``plane`` and ``n_planes`` set) after every
        iteration.
    full_output : bool, default False
        Return a :class:`SegmentResult` whose prior and spread are stacks too.
    out : str or Path ending in ``.zarr``, optional
        Segment plane by plane with bounded memory into this zarr array (for stacks
        larger than memory; one plane's fit in memory at a time): the classes are learnt
        from a sample of 8 evenly spaced planes (all of them in a shorter stack, which
        then gives the in-memory result), every plane is written as it finishes, and the
        result appears under ``out`` only when every plane is done. The labels returned
        are a dask array read from it (no prior is kept). ``method='kmeans'`` without
        ``volumetric``. Needs ``pip install "napari-dsp[distributed]"`` (dask, zarr).
    overwrite : bool, default False
        With ``out``: replace an existing ``out`` (never an input: an ``out`` that is,
        contains or lies inside the stack read is refused).
    **overrides
        Any setting of :class:`Settings` by name (``n_classes=``, ``instances=``,
        ``volumetric=``, ``seed=``, ...), replacing the value of ``settings``.

    Returns
    -------
    ndarray or dask.array.Array or SegmentResult
        The labels, shape (..., Y, X): ``uint8`` classes (0 = background), or ``uint32``
        object ids unique over the stack with ``instances=True`` (numbered plane by
        plane); a dask array read from ``out`` when given. A :class:`SegmentResult`
        with ``full_output=True``.

    Warns
    -----
    NothingToSegmentWarning
        As :func:`~napari_dsp.segment`: nothing in the stack stands out from its noise.

    Raises
    ------
    TypeError
        For an image or a setting of the wrong type.
    ValueError
        For more than two leading axes, a bad ``channel_axis``, ``method='kanezaki'``,
        ``volumetric=True`` on anything but a Z stack, and as :func:`~napari_dsp.segment`.

    Examples
    --------
    >>> import numpy as np
    >>> from napari_dsp import segment_stack
    >>> rng = np.random.default_rng(0)
    >>> stack = rng.normal(0.3, 0.1, (4, 64, 64)).astype(np.float32)
    >>> stack[:, 16:48, 16:48] += 0.4
    >>> labels = segment_stack(stack, n_members=3, n_iter=10, seed=0)
    >>> labels.shape
    (4, 64, 64)

    A stack larger than memory, plane by plane into a zarr array on disk:

    >>> labels = segment_stack(stack, out="labels.zarr", n_members=3)  # doctest: +SKIP
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
