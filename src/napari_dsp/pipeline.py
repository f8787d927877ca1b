"""One segmentation pipeline over planes, for every path: a 2-D image is one plane, a
stack in memory all of its planes, a stack segmented plane by plane into zarr a sample
of them.

Two steps. :func:`learn` takes the priors of some planes (with the planes as read and
normalised) and learns what every plane shares, as a :class:`StackModel`: the K-means
model (window axes, centres, class order, foreground side), whether the prior's two
classes stand out from the image's noise (the decision: ``"prior"``, ``"outliers"``
or ``"empty"``; with texture features a texture difference counts too), the pixels'
limits of the outliers, and the class models of the outline refinement. :func:`apply`
then segments any one plane under that model alone: assign, decide, refine, clean up.
:func:`number_objects` gives object ids (unique over the stack, numbered plane by
plane; 3-D with a voxel size), :func:`warn_if_nothing` raises the one
:class:`~napari_dsp.results.NothingToSegmentWarning`.

For stacks larger than memory, :func:`iter_learn` reads and fits a sample of planes and
:func:`iter_segment_plane` fits and segments one plane (the two passes of
:mod:`napari_dsp.large`). With every plane in the sample they give the in-memory result.
Nothing here reads or writes files, or knows about napari.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from .core import cluster as _cluster
from .core import decide as _decide
from .core import image as _image
from .core import modality as _modality
from .core import postprocess as _post
from .results import NothingToSegmentWarning
from .settings import Settings

#: Planes the first pass of a stack larger than memory learns the shared model from (all
#: of them in a shorter stack).
SAMPLE_PLANES = 8

#: A plane from scratch every this many planes of a stack (its first one included): the
#: planes between start from their neighbour's fit (``Settings.warm_iter``). It bounds
#: how far one fit is carried, and cuts the stack into runs that can go to different
#: workers. The same positions on every path, so every path fits the same priors.
ANCHOR_EVERY = 32

#: The decision of a run whose planes were not tested against the noise (a prior
#: re-clustered without its image).
UNTESTED = "no image given: not tested"


def refuse_per_image(settings: Settings) -> None:
    """Stacks, in memory or plane by plane, share one model across planes; texture
    features and the modalities' derived channels have none yet
    (:mod:`napari_dsp.core.texture` and :mod:`napari_dsp.core.modality` are per image)."""
    if settings.texture:
        raise ValueError(
            "texture=True is for single 2-D images in this version; segment one plane at a time"
        )
    if settings.modality != "auto":
        raise ValueError(
            f"modality={settings.modality!r} is for single 2-D images in this version; "
            f"segment one plane at a time, or leave modality='auto' for the stack"
        )


@dataclass
class StackModel:
    """What every plane shares (see the module's docstring). ``lo``/``hi``: the
    intensity stretch (planes read later are normalised with it); ``info``: the numbers
    behind the clustering and the refinement, for the metadata; ``sample``: the planes it
    was learnt from (plane by plane)."""

    settings: Settings
    cluster: Any  # core.cluster.ClusterModel
    decision: dict = field(default_factory=dict)
    outlier_limits: Optional[dict] = None
    refine_models: Optional[list] = None
    info: dict = field(default_factory=dict)
    #: the image's channels in a prior's features (the modalities' derived ones follow)
    n_image: Optional[int] = None
    #: modality 'phase': the cut learnt from the prior's three classes
    phase: Optional[_modality.PhaseCut] = None
    lo: float = 0.0
    hi: float = 1.0
    sample: tuple = ()

    @property
    def outliers(self) -> bool:
        return self.decision.get("result") == "outliers"

    def metadata(self) -> dict:
        """The ``clustering`` entry of a result's metadata."""
        return dict(self.info, decision=self.decision) if self.decision else dict(self.info)


def learn(
    priors: list,
    raws: Optional[list],
    normed: Optional[list],
    settings: Settings,
    *,
    brightness: Optional[int] = None,
    n_pixels: Optional[int] = None,
    texture: Optional[Callable[[np.ndarray], float]] = None,
) -> tuple[StackModel, list]:
    """The :class:`StackModel` of the planes whose ``(C, Y, X)`` priors are given, and
    their cluster labels (for :func:`apply`, which then need not assign them again).

    ``raws`` are the same planes as read (the noise test needs the unclipped values;
    None: not tested, the prior is believed), ``normed`` as normalised (the refinement's
    pixels; None: the prior's outlines are kept). ``brightness``: the channels that say
    which class is brighter (the intensity channels of a prior with texture channels).
    ``n_pixels``: the pixels of the whole stack the planes stand for (a sample: the
    outliers' limit grows with it). ``texture``: with texture features, the classes'
    texture separation of a 0/1 map (:func:`napari_dsp.core.texture.separation`).
    """
    s = settings
    mod = s.modality
    n_image = brightness if brightness is not None else priors[0].shape[0]
    feats = [_modality.clustered(mod, p, n_image) for p in priors]
    model, info = _cluster.fit_cluster_model(
        feats,
        n_classes=3 if mod == "phase" else s.n_classes,
        window=s.window,
        seed=s.seed,
        brightness=1 if mod in ("phase", "brightfield-stain") else brightness,
        brighter=mod in ("fluorescence", "brightfield-stain"),
    )
    if mod == "brightfield-stain":
        info = dict(info, foreground_rule="the class with more haematoxylin")
    out = StackModel(s, model, info=dict(info, modality=mod), n_image=n_image)
    two = [model.apply(f) for f in feats]
    if s.n_classes != 2:
        return out, two
    if mod == "phase":
        if normed is None or any(im is None for im in normed):
            raise ValueError(
                "modality='phase' draws the cells from the image's pixels: pass the image "
                "with its prior"
            )
        out.phase = _modality.learn_phase(feats, two, normed)
        out.info.update(
            out.phase.info(),
            foreground_rule="darker than the flat background",
            holes_filled=False,
        )
        fgs = [out.phase.apply(t, im) for t, im in zip(two, normed)]
    else:
        fgs = [t == 1 for t in two]
    if raws is None:
        decision = {"result": "prior", "separated": None, "note": UNTESTED}
    elif mod == "brightfield-stain":
        # tested on what the classes were split by: the haematoxylin density
        decision = _modality.stain_decision([_modality.haematoxylin(r) for r in raws], fgs)
    else:
        _, decision = _decide.decide(raws, fgs)
    if texture is not None:
        decision = _with_texture(decision, texture(two[0]))
    out.decision = decision
    if decision["result"] != "prior":
        # isolated significant pixels are kept whatever min_size says; invert does not
        # turn "nothing" into "everything"
        if decision["result"] == "outliers":
            out.outlier_limits = _decide.outlier_limits(raws, n_pixels=n_pixels)
        out.info.update(refined=False, inverted=False)
        return out, two
    if mod in ("phase", "brightfield-stain"):
        why = {
            "phase": "modality 'phase' draws the cut from the pixels",
            "brightfield-stain": "modality 'brightfield-stain' keeps the prior's outlines",
        }[mod]
        out.info.update(refined=False, refine_skipped=why)
    elif s.refine and normed is not None and all(im is not None for im in normed):
        pixels = [_modality.refine_space(mod, im) for im in normed]
        _, refined = _post.refine_foreground(pixels, fgs)
        out.info.update(refined)
        if refined["refined"]:
            out.refine_models = _post.class_models(pixels, fgs)
    elif s.refine:
        out.info.update(
            refined=False,
            pixel_error=None,
            refine_skipped="no image given: the prior's outlines are kept",
        )
    out.info["inverted"] = s.invert
    return out, two


def _with_texture(decision: dict, separation: float) -> dict:
    """Texture features: a texture difference beyond ``MIN_SEPARATION`` within-class
    standard deviations counts as well as an intensity difference."""
    from .core.texture import MIN_SEPARATION

    decision = dict(
        decision, texture_separation=round(separation, 3), texture_threshold=MIN_SEPARATION
    )
    if decision["result"] != "prior" and separation >= MIN_SEPARATION:
        decision.pop("message", None)
        decision.update(result="prior", note="the classes differ in texture")
    elif "message" in decision:
        decision["message"] += (
            f" (texture features: in texture the classes differ by {separation:.1f} "
            f"within-class standard deviations, {MIN_SEPARATION:g} needed)"
        )
    return decision


def apply(
    model: StackModel,
    prior: np.ndarray,
    raw: Optional[np.ndarray],
    normed: Optional[np.ndarray],
    labels: Optional[np.ndarray] = None,
) -> np.ndarray:
    """One plane under ``model``: its ``(Y, X)`` labels, ``uint8`` (0/1 foreground for two
    classes, else classes 1..K; :func:`~napari_dsp.core.postprocess.label_dtype`).
    ``raw`` (as read) is needed where the decision is ``"outliers"``, ``normed`` where
    the outlines are refined; ``labels``, the plane's cluster labels if known."""
    s = model.settings
    mod = s.modality
    if labels is None:
        n_image = model.n_image if model.n_image is not None else prior.shape[0]
        labels = model.cluster.apply(_modality.clustered(mod, prior, n_image))
    if s.n_classes != 2:
        return labels
    result = model.decision.get("result", "prior")
    if result == "empty":
        fg = np.zeros(labels.shape, bool)
    elif result == "outliers":
        fg = _decide.outliers_of(raw, model.outlier_limits)
        if model.phase is not None:  # phase: cells are dark; a bright pixel is a halo
            fg &= _modality.grey(normed) < model.phase.level
    else:
        fg = model.phase.apply(labels, normed) if model.phase is not None else labels == 1
        if model.refine_models is not None:
            pixels = _modality.refine_space(mod, normed)
            fg = _post.log_odds_of(pixels, model.refine_models) > 0
        # phase: an enclosed gap between touching cells is background, not a hole
        fill = s.fill_holes and model.phase is None
        fg = _post.clean_up(fg, fill=fill, min_size=s.min_size, invert=s.invert)
    return fg.astype(_post.label_dtype(instances=False))


def object_min_size(model: StackModel) -> int:
    """``min_size`` for the object ids: 1 where the foreground is the isolated pixels
    that stand out from the noise (each is significant by itself)."""
    return 1 if model.outliers else model.settings.min_size


def number_objects(
    foregrounds: list, model: StackModel, spacing: Optional[tuple] = None
) -> tuple[list, list]:
    """Object ids of the 0/1 maps of a stack's planes, ``uint32``: unique over the stack,
    numbered plane by plane (the first plane's objects 1..n1, the next n1+1..), or in
    3-D with the voxel ``spacing``. Returns (ids per plane, counts per plane, or the one
    3-D count)."""
    return _post.label_objects(foregrounds, object_min_size(model), spacing)


def plane_objects(foreground: np.ndarray, model: StackModel) -> tuple[np.ndarray, int]:
    """Object ids ``1..n`` of one plane (``uint32``) and ``n``; a stack segmented plane
    by plane numbers them over the stack afterwards (see :func:`number_objects`)."""
    ids = _post.instances(foreground == 1, min_size=object_min_size(model))
    return ids.astype(_post.label_dtype(instances=True)), int(ids.max())


def warn_if_nothing(metadata: dict, stacklevel: int = 3) -> None:
    """Raise the :class:`~napari_dsp.results.NothingToSegmentWarning` of a result whose
    foreground was not the prior's (nothing stood out from the noise, or only isolated
    pixels). The generator forms leave it in the metadata (``clustering.decision``) for
    their caller to show, as the napari widget does with a notification."""
    decision = (metadata.get("clustering") or {}).get("decision") or {}
    if decision.get("message"):
        warnings.warn(
            f"napari-dsp: {decision['message']}", NothingToSegmentWarning, stacklevel=stacklevel
        )


# -- a stack larger than memory: the sample, then one plane at a time -----------------


def sample_indices(planes: Sequence[tuple], n: int = SAMPLE_PLANES) -> tuple:
    """``n`` evenly spaced planes (all of them when there are fewer)."""
    if len(planes) <= n:
        return tuple(planes)
    picks = np.unique(np.round(np.linspace(0, len(planes) - 1, n)).astype(int))
    return tuple(planes[i] for i in picks)


def neighbour_start(settings: Settings, weights: Optional[dict]):
    """How a plane of a stack is fitted after the plane before it (its neighbour in Z or
    T, fitted just before in the same run): from the weights that fit ended with
    (``weights``), for ``settings.warm_iter`` iterations, since neighbours differ by a
    little movement or focus; from scratch, with ``n_iter``, without them (the first
    plane) or with ``warm_iter=0``. Returns the settings of this plane's fit and its
    :class:`~napari_dsp.core.fit.WarmStart` (``None``: nothing carried), which keeps the
    weights this fit ends with for the next plane."""
    if not settings.warm_iter:
        return settings, None
    from .core.fit import WarmStart

    if not weights:
        return settings, WarmStart(keep_at=settings.n_iter)
    warm = WarmStart(start=weights, keep_at=settings.warm_iter)
    # settle stays: it also decides how members are grouped (all together, to watch
    # their median), and a plane's groups must be its neighbour's to take its weights
    return settings.replace(n_iter=settings.warm_iter), warm


def iter_fit(normed: np.ndarray, settings: Settings, carry: Optional[dict] = None):
    """The prior of one normalised ``(C, Y, X)`` plane: yields the fit's
    :class:`~napari_dsp.core.progress.FitProgress` every iteration (so a consumer that
    stops stops the fit within one), returns ``(median (C, Y, X), spread (Y, X),
    fit_info)``.

    ``carry`` is a dict the planes of one stack share when they are fitted in order:
    each plane starts from the weights the plane before it ended with
    (:func:`neighbour_start`), and leaves its own there. ``fit_info["start"]`` says
    which: ``"neighbour"`` or ``"scratch"``."""
    from .core import plan as _plan
    from .core.prior import iter_planned_prior

    device = _plan.resolve_device(settings.device)
    weights = carry.get("weights") if carry is not None else None
    plane_settings, warm = neighbour_start(settings, weights)
    fit = iter_planned_prior(normed, device=device, warm=warm, **plane_settings.fit_values())
    median, spread, info = yield from fit
    if warm is not None and warm.start and set(warm.kept) != set(warm.start):
        # planned in other groups than the plane before (a GPU that ran out of memory
        # retried with smaller ones): groups without carried weights had too few
        # iterations, so this plane is fitted again, from scratch
        plane_settings, warm = neighbour_start(settings, None)
        fit = iter_planned_prior(normed, device=device, warm=warm, **plane_settings.fit_values())
        median, spread, info = yield from fit
    info["start"] = "neighbour" if warm is not None and warm.start else "scratch"
    if carry is not None:
        carry["weights"] = warm.kept if warm is not None else None
    return median, spread, info


def iter_fit_plane(normed: np.ndarray, settings: Settings, carry: Optional[dict] = None):
    """:func:`iter_fit` without previews, returning the median ``(C, Y, X)`` alone."""
    median, _spread, _info = yield from iter_fit(normed, settings.replace(preview_every=0), carry)
    return median


def iter_learn(source, stack, settings: Settings, n_sample: int = SAMPLE_PLANES):
    """The first pass: the :class:`StackModel` learnt (:func:`learn`) from a sample of
    planes of ``source`` (read through ``stack``, a
    :class:`~napari_dsp.planes.StackLayout`). Yields each sampled plane's fit progress,
    with ``plane`` (its position in the sample) and ``n_planes`` (the sample's size) set;
    returns ``(model, fitted)``: ``fitted`` maps the index of each sampled plane that was
    fitted as every path fits it (:func:`fit_order`: an anchor, or the neighbour of the
    sampled plane before it, as all of them are in a short stack) to its prior and the
    weights its fit ended with; the second pass reuses those. The other sampled planes
    are fitted from scratch, for the model alone."""
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
    priors, weights = {}, {}
    by_rule = fitted_by_rule(stack.planes, sample, bool(s.warm_iter))
    position = {index: k for k, index in enumerate(stack.planes)}
    for i, (index, plane) in enumerate(zip(sample, normed)):
        # from where the sampled plane before ended, when that is its neighbour
        after = i > 0 and index in by_rule and position[index] % ANCHOR_EVERY != 0
        carry = {"weights": weights.get(sample[i - 1]) if after else None}
        priors[index] = yield from relay(
            iter_fit_plane(plane, s, carry),
            lambda p, i=i: p.replace(plane=i, n_planes=len(sample)),
        )
        weights[index] = carry["weights"]
    n_pixels = len(stack.planes) * int(np.prod(raws[0].shape[1:]))
    model, _ = learn([priors[i] for i in sample], raws, normed, s, n_pixels=n_pixels)
    model.lo, model.hi, model.sample = lo, hi, sample
    if model.decision.get("message"):  # decided on the sample, for the whole stack
        model.decision["message"] = (
            f"judged on {len(sample)} sampled plane(s) of "
            f"{len(stack.planes)}: {model.decision['message']}"
        )
    return model, {index: (priors[index], weights[index]) for index in sample if index in by_rule}


def fitted_by_rule(planes: Sequence, sample: Sequence, warm: bool) -> set:
    """The sampled planes whose fit in the first pass is the fit every path makes
    (:func:`fit_order`): an anchor, or a plane that starts from its neighbour, which is
    in the sample too and fitted by the rule (all of them in a short stack). The second
    pass reuses their priors and fits the others again."""
    if not warm:
        return set(sample)
    position = {index: k for k, index in enumerate(planes)}
    by_rule: set = set()
    for i, index in enumerate(sample):
        k = position[index]
        if k % ANCHOR_EVERY == 0 or (
            i > 0 and position[sample[i - 1]] == k - 1 and sample[i - 1] in by_rule
        ):
            by_rule.add(index)
    return by_rule


def planned_iterations(position: int, settings: Settings) -> int:
    """The iterations the fit of the plane at ``position`` in a stack takes under
    :func:`fit_order` (the progress of a whole stack is counted with them)."""
    if not settings.warm_iter or position % ANCHOR_EVERY == 0:
        return settings.n_iter
    return settings.warm_iter


def fit_order(planes: Sequence, warm: bool) -> list:
    """The planes of a stack as runs fitted in order, each ``[plane indices]``: a run
    starts at an anchor (every :data:`ANCHOR_EVERY`-th plane, from scratch) and each of
    its other planes starts from the fit of the plane before it. Without warm starts,
    every plane is a run of its own (all from scratch)."""
    planes = list(planes)
    if not warm:
        return [[index] for index in planes]
    return [planes[k : k + ANCHOR_EVERY] for k in range(0, len(planes), ANCHOR_EVERY)]


def iter_segment_plane(
    raw: np.ndarray,
    model: StackModel,
    prior: Optional[np.ndarray] = None,
    carry: Optional[dict] = None,
):
    """The second pass for one ``(C, Y, X)`` plane as read: yields the fit's progress
    (nothing when ``prior`` is given), returns ``(labels (Y, X), count)`` (with
    ``instances``: ids 1..n of this plane and n, numbered over the stack afterwards;
    else foreground pixels or class-1 pixels). ``carry``: as for :func:`iter_fit`, for
    planes segmented in order."""
    s = model.settings
    normed = _image.stretch(raw, model.lo, model.hi)
    if prior is None:
        prior = yield from iter_fit_plane(normed, s, carry)
    labels = apply(model, prior, raw, normed)
    if s.instances and s.n_classes == 2:
        return plane_objects(labels, model)
    return labels, int((labels == 1).sum())


def segment_plane(
    raw: np.ndarray,
    model: StackModel,
    prior: Optional[np.ndarray] = None,
    carry: Optional[dict] = None,
) -> tuple[np.ndarray, int]:
    """:func:`iter_segment_plane` run to its end (planes as tasks on a worker)."""
    from .core.progress import drain

    return drain(iter_segment_plane(raw, model, prior, carry))
