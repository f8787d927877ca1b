"""The prior of one normalised plane or volume: the plan carried out.

:func:`iter_planned_prior` plans a plane's fit (``plan.plan_fit``, the precision) and
carries it out, returning the plan's description with the iterations fitted.
:func:`iter_plane_prior` takes a ``(C, Y, X)`` plane in [0, 1] and a
:class:`~napari_dsp.core.plan.FitPlan`: it scales the plane to the working shape, fits
it whole or in overlapping tiles blended with linear ramps, runs the ensemble in threads
(CPU) or in one grouped model (GPU, retried with smaller groups when the device runs out
of memory), and returns the median and spread at the plane's own size.
:func:`iter_volume_prior` does the same for a ``(C, Z, Y, X)`` volume with the 3-D
generator. Both yield progress reports whose previews are ``(C, Y, X)`` medians.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import numpy as np

from . import fit as _fit
from . import image as _image
from . import nets
from .heap import trimmed_heap
from .plan import TILE_OVERLAP, FitPlan, plan_fit, resolve_precision
from .progress import FitProgress, relay


def member_seeds(seed: int, n_members: int) -> list[int]:
    """The seeds of the ensemble members, derived from the run's seed."""
    return [int(s) for s in np.random.SeedSequence(seed).generate_state(n_members)]


def iter_planned_prior(
    data: np.ndarray,
    *,
    device,
    seed: int,
    n_members: int,
    n_iter: int,
    learning_rate: float,
    precision: str,
    preview_every: int,
    settle: float,
    working_size: Optional[int],
    n_threads: Optional[int],
    batch_size: Optional[int] = None,
    warm: Optional[_fit.WarmStart] = None,
):
    """Plan (:func:`napari_dsp.core.plan.plan_fit`) and fit the prior of a normalised
    ``(C, Y, X)`` plane: yields progress, returns ``(median, spread, fit_info)``, the
    plan's description with the iterations fitted. ``warm``: see
    :class:`napari_dsp.core.fit.WarmStart`."""
    plan = plan_fit(
        data,
        n_members=n_members,
        device=device,
        working_size=working_size,
        n_threads=n_threads,
        batch_size=batch_size,
        together=settle > 0,
    )
    precision = resolve_precision(precision, plan.device)
    info: dict = {}
    median, spread = yield from iter_plane_prior(
        data,
        plan,
        seed=seed,
        n_members=n_members,
        n_iter=n_iter,
        learning_rate=learning_rate,
        precision=precision,
        preview_every=preview_every,
        settle=settle,
        info=info,
        warm=warm,
    )
    fit_info = plan.describe()
    its = info["iterations"]
    fit_info.update(
        precision=precision,
        n_iter=n_iter,
        settle=info["settle"],
        iterations=its[0] if len(its) == 1 else its,
        settled=all(info["settled"]) if info["settled"] else False,
    )
    return median, spread, fit_info


def iter_plane_prior(
    data: np.ndarray,
    plan: FitPlan,
    *,
    seed: int,
    n_members: int,
    n_iter: int,
    learning_rate: float,
    precision: str,
    preview_every: int,
    settle: float = 0.0,
    info: Optional[dict] = None,
    warm: Optional[_fit.WarmStart] = None,
):
    """Fit the prior of a normalised ``(C, Y, X)`` plane as ``plan`` says; yields
    progress (previews as ``(C, Y, X)`` medians at the plane's size), returns
    ``(median (C, Y, X), spread (Y, X))``.

    ``settle > 0`` ends each fit once the prior has settled (see
    :func:`napari_dsp.core.fit.until_settled`); ``info`` (a dict) then gets
    ``iterations`` (fitted, one per tile) and ``settled``."""
    info = {} if info is None else info
    shape = tuple(data.shape[1:])
    work = tuple(plan.working_shape)
    if work != shape:
        data = _image.resize(data, work)
    fit_kwargs = dict(
        seeds=member_seeds(seed, n_members),
        n_iter=n_iter,
        learning_rate=learning_rate,
        precision=precision,
    )
    if warm is not None:
        fit_kwargs["warm"] = warm
    settle = settle if settle_applies(plan, n_members) else 0.0
    info.update(settle=settle, iterations=[], settled=[])
    if len(plan.tiles) == 1:

        def full_size(p: FitProgress) -> FitProgress:
            if p.preview is None or work == shape:
                return p
            return p.replace(preview=_image.resize(p.preview, shape))

        median, spread = yield from relay(
            _iter_ensemble(data, plan, preview_every, fit_kwargs, settle, info), full_size
        )
    else:
        median, spread = yield from _iter_tiles(data, plan, fit_kwargs, settle, info)
    if work != shape:
        median = _image.resize(median, shape)
        spread = _image.resize(spread[None], shape)[0]
    return median, spread


def settle_applies(plan: FitPlan, n_members: int) -> bool:
    """Whether every member of a fit trains at once (one group per thread), which the
    early stop needs: it watches the median of all members, iteration by iteration."""
    return plan.batch_size >= -(-n_members // max(1, plan.threads))


def _iter_tiles(data: np.ndarray, plan: FitPlan, fit_kwargs: dict, settle: float, info: dict):
    """Fit the plan's overlapping tiles one after another (memory bounded by one tile)
    and blend them with linear ramps across the overlaps. Every tile uses the same
    member seeds; no previews."""
    c, h, w = data.shape
    acc = np.zeros((c, h, w), np.float32)
    acc_spread = np.zeros((h, w), np.float32)
    weight = np.zeros((h, w), np.float32)
    n = len(plan.tiles)
    for k, (ys, xs) in enumerate(plan.tiles):
        kwargs = dict(fit_kwargs)
        if "warm" in kwargs:
            kwargs["warm"] = kwargs["warm"].tagged(k)
        fit = _iter_ensemble(np.ascontiguousarray(data[:, ys, xs]), plan, 0, kwargs, settle, info)
        median, spread = yield from relay(
            fit,
            lambda p, k=k: p.replace(
                step=k * p.total + p.step, total=n * p.total, tile=k, n_tiles=n
            ),
        )
        ramp = _image.blend_weights((ys, xs), (h, w), TILE_OVERLAP)
        acc[:, ys, xs] += median * ramp
        acc_spread[ys, xs] += spread * ramp
        weight[ys, xs] += ramp
    return acc / weight, acc_spread / weight


def _iter_ensemble(
    data: np.ndarray, plan: FitPlan, preview_every: int, fit_kwargs: dict, settle: float, info: dict
):
    """One ensemble fit of a normalised ``(C, H, W)`` piece: yields progress (previews as
    ``(C, H, W)`` medians), returns (median, spread); appends the iterations fitted and
    whether the prior settled to ``info``."""
    padded, crop = _image.pad_to_multiple(data)
    c = padded.shape[0]
    device = plan.device

    def make_net(g: int, seeds: Sequence[int]):
        return nets.EnsembleGenerator(g, c, seeds)

    n_iter = fit_kwargs["n_iter"]
    watch = settle > 0 and n_iter > _fit.MIN_SETTLE_ITER
    done = {"iterations": n_iter, "settled": False, "watched": False}

    def start(batch: int):
        fit = _fit.iter_ensemble(
            padded,
            crop,
            threads=plan.threads,
            device=device,
            make_net=make_net,
            batch_size=batch,
            preview_every=1 if watch else preview_every,
            **fit_kwargs,
        )
        if not watch or batch < plan.batch_size:  # smaller groups: no early stop
            done.update(iterations=n_iter, settled=False, watched=False)
            return relay(fit, _preview_median)
        done["watched"] = True
        return _fit.until_settled(fit, settle, preview_every=preview_every, info=done)

    with trimmed_heap(device):
        members = yield from _retry_smaller_groups(start, plan.batch_size, device)
        info["iterations"].append(int(done["iterations"]))
        info["settled"].append(bool(done["settled"]))
        if not done["watched"]:  # the stop did not run (too few iterations, retried)
            info["settle"] = 0.0
        return _fit.summarize(members)


def _preview_median(p: FitProgress) -> FitProgress:
    return p if p.preview is None else p.replace(preview=_fit.median(p.preview))


def _retry_smaller_groups(start, batch_size: int, device):
    """Run ``start(batch_size)``; when the device runs out of memory, start again with
    half as many members trained at once (the same members, so the same prior), down to
    one, then raise a ``ValueError`` that says what to do."""
    while True:
        fit = start(batch_size)
        try:
            return (yield from relay(fit, lambda p: p))
        except _fit.OUT_OF_MEMORY as exc:
            fit.close()
            if batch_size <= 1:
                raise ValueError(
                    f"out of memory on {device} even with one ensemble member at a time "
                    f"({exc}); use device='cpu', or set a smaller working_size"
                ) from None
            batch_size = max(1, batch_size // 2)
            _fit.release_device_memory(device)


def iter_volume_prior(
    volume: np.ndarray,
    spacing: Sequence[float],
    *,
    seed: int,
    n_members: int,
    n_iter: int,
    learning_rate: float,
    precision: str,
    device,
    threads: int,
    batch_size: Optional[int] = 2,
    preview_every: int = 0,
):
    """The volumetric prior of a normalised ``(C, Z, Y, X)`` volume with voxel size
    ``spacing`` (z, y, x): yields progress (every ``preview_every`` iterations with the
    members' median ``(C, Z, Y, X)`` as preview), returns ``(median (C, Z, Y, X),
    spread (Z, Y, X), z stages)``."""
    stages = nets.z_stages(spacing, volume.shape[1])
    padded, crop = nets.pad_volume(volume, stages)
    c = padded.shape[0]

    def make_net(g: int, seeds: Sequence[int]):
        return nets.VolumeGenerator(g, c, seeds, stages)

    target = np.ascontiguousarray(padded, np.float32)

    def start(batch: int):
        return _fit.iter_ensemble(
            target,
            crop,
            threads=threads,
            device=device,
            make_net=make_net,
            seeds=member_seeds(seed, n_members),
            n_iter=n_iter,
            learning_rate=learning_rate,
            precision=precision,
            batch_size=batch,
            preview_every=preview_every,
        )

    with trimmed_heap(device):
        members = yield from relay(
            _retry_smaller_groups(start, batch_size or n_members, device), _preview_median
        )
        median, spread = _fit.summarize(members)
    return median, spread, stages
