"""The model a stack's planes share, learnt from a sample of them, and one plane
segmented under it alone: the two passes of :mod:`napari_dsp.large`.

Owns :class:`StackModel` and :func:`iter_learn` (the first pass: a sample of planes,
evenly spaced, fitted; from their priors what the in-memory
:func:`napari_dsp.segment_stack` computes over all planes: the intensity stretch, the
K-means model (window axes, centres, class order, foreground side), the noise decision
and the refinement's class models), and :func:`segment_plane` (the second pass: stretch,
fit, assign, clean up one plane). Nothing here reads or writes files.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from .core import decide as _decide
from .core import image as _image
from .core import postprocess as _post
from .settings import Settings

#: Planes the first pass learns the shared model from (all of them in a shorter stack).
SAMPLE_PLANES = 8


def refuse_texture(settings: Settings) -> None:
    """Stacks, in memory or plane by plane, share one model across planes; texture
    features have none yet (:mod:`napari_dsp.core.texture` is per image)."""
    if settings.texture:
        raise ValueError(
            "texture=True is for single 2-D images in this version; segment one plane at a time"
        )


@dataclass
class StackModel:
    """What every plane shares (see the module's docstring)."""

    settings: Settings
    lo: float
    hi: float
    cluster: Any  # core.cluster.ClusterModel
    decision: dict = field(default_factory=dict)
    outlier_limits: Optional[dict] = None
    refine_models: Optional[list] = None
    info: dict = field(default_factory=dict)
    sample: tuple = ()


def sample_indices(planes: Sequence[tuple], n: int = SAMPLE_PLANES) -> tuple:
    """``n`` evenly spaced planes (all of them when there are fewer)."""
    if len(planes) <= n:
        return tuple(planes)
    picks = np.unique(np.round(np.linspace(0, len(planes) - 1, n)).astype(int))
    return tuple(planes[i] for i in picks)


def iter_fit_plane(normed: np.ndarray, settings: Settings):
    """The prior of one normalised ``(C, Y, X)`` plane: yields the fit's
    :class:`~napari_dsp.core.progress.FitProgress` every iteration (so a consumer that stops
    stops the fit within one), returns the median ``(C, Y, X)``."""
    from .core import plan as _plan
    from .core.prior import iter_planned_prior

    device = _plan.resolve_device(settings.device)
    median, _spread, _info = yield from iter_planned_prior(
        normed, device=device, **settings.replace(preview_every=0).fit_values()
    )
    return median


def iter_learn(source, stack, settings: Settings, n_sample: int = SAMPLE_PLANES):
    """The first pass: the :class:`StackModel` learnt from a sample of planes of
    ``source`` (read through ``stack``, a ``napari_dsp.planes.StackLayout``). Yields each
    sampled plane's fit progress, with ``plane`` (its position in the sample) and
    ``n_planes`` (the sample's size) set; returns ``(model, priors)``,
    the sample's priors by plane index (the second pass reuses them)."""
    from .core import cluster as _cluster
    from .core.progress import relay

    s = settings
    sample = sample_indices(stack.planes, n_sample)
    raws = [stack.raw_plane(source, index) for index in sample]
    for raw in raws:
        if raw.dtype.kind == "f" and not np.isfinite(raw).all():
            raise ValueError(
                "the stack contains NaN or infinite values; replace them first, e.g. np.nan_to_num"
            )
    lo, hi = _image.stretch_limits(raws)
    if not hi > lo:
        raise ValueError(
            f"the sampled planes are constant (every pixel is {lo:g}); there is nothing to segment"
        )
    normed = [_image.stretch(r, lo, hi) for r in raws]
    priors = {}
    for i, (index, plane) in enumerate(zip(sample, normed)):
        priors[index] = yield from relay(
            iter_fit_plane(plane, s), lambda p, i=i: p.replace(plane=i, n_planes=len(sample))
        )
    plist = [priors[i] for i in sample]
    model, info = _cluster.fit_cluster_model(
        plist, n_classes=s.n_classes, window=s.window, seed=s.seed
    )
    out = StackModel(s, lo, hi, model, info=dict(info), sample=sample)
    if s.n_classes != 2:
        return out, priors
    fgs = [model.apply(p) == 1 for p in plist]
    _, decision = _decide.decide(raws, fgs)
    if decision.get("message"):  # decided on the sample, for the whole stack
        decision["message"] = (
            f"judged on {len(sample)} sampled plane(s) of "
            f"{len(stack.planes)}: {decision['message']}"
        )
    out.decision = decision
    n_pixels = len(stack.planes) * int(np.prod(raws[0].shape[1:]))
    if decision["result"] == "outliers":
        out.outlier_limits = _decide.outlier_limits(raws, n_pixels=n_pixels)
    elif decision["result"] == "prior" and s.refine:
        _, refine_info = _post.refine_foreground(normed, fgs)
        out.info.update(refine_info)
        if refine_info["refined"]:
            out.refine_models = _post.class_models(normed, fgs)
    return out, priors


def iter_segment_plane(raw: np.ndarray, model: StackModel, prior: Optional[np.ndarray] = None):
    """The second pass for one ``(C, Y, X)`` plane as read: yields the fit's progress
    (nothing when ``prior`` is given), returns ``(labels (Y, X), count)`` (count:
    objects with ``instances``, else foreground pixels or class-1 pixels)."""
    s = model.settings
    normed = _image.stretch(raw, model.lo, model.hi)
    if prior is None:
        prior = yield from iter_fit_plane(normed, s)
    labels = model.cluster.apply(prior)
    if s.n_classes != 2:
        return labels, int((labels == 1).sum())
    result = model.decision.get("result", "prior")
    min_size = s.min_size
    if result == "empty":
        fg = np.zeros(labels.shape, bool)
    elif result == "outliers":
        fg = _decide.outliers_of(raw, model.outlier_limits)
        min_size = 1
    else:
        fg = labels == 1
        if model.refine_models is not None:
            fg = _post.log_odds_of(normed, model.refine_models) > 0
        fg = _post.clean_up(fg, fill=s.fill_holes, min_size=s.min_size, invert=s.invert)
    if s.instances:  # 1..n in this plane: the caller numbers them over the stack
        ids = _post.instances(fg, min_size=min_size)
        return ids.astype(_post.label_dtype(instances=True)), int(ids.max())
    return fg.astype(_post.label_dtype(instances=False)), int(fg.sum())


def segment_plane(
    raw: np.ndarray, model: StackModel, prior: Optional[np.ndarray] = None
) -> tuple[np.ndarray, int]:
    """:func:`iter_segment_plane` run to its end (a plane as a task on a worker)."""
    from .core.progress import drain

    return drain(iter_segment_plane(raw, model, prior))
