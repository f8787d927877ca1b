"""The public functions on 2-D images: :func:`fit_prior` and :func:`segment` (which also
re-clusters a prior: ``segment(image, prior=prior, n_classes=3)``), and their generator
forms :func:`iter_fit_prior`, :func:`iter_segment` (public as
:mod:`napari_dsp.generators`).

Every function validates its arguments eagerly (a bad image or setting raises at the
call, before any fit starts) and then hands back a generator or drains one. The image
is normalised once per run; the prior is given back in the image's layout once.

Array layouts: images are ``(Y, X)`` grayscale, ``(Y, X, 3|4)`` RGB(A), or 3-D with an
explicit ``channel_axis``. The prior comes back in the same layout as the image (RGBA
loses its alpha channel); labels and the spread are always ``(Y, X)``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Generator
from typing import Any, Optional, Union

import numpy as np

from . import pipeline as _pipeline
from .core import image as _image
from .core import modality as _modality
from .core import plan as _plan
from .core import postprocess as _post
from .core.prior import iter_planned_prior
from .core.progress import (
    Clock,
    FitProgress,
    ProgressCallback,
    check_callback,
    drain,
    relay,
)
from .results import (
    PriorResult,
    SegmentResult,
    make_metadata,
    prior_seed,
    resolve_seed,
)
from .settings import PRIOR_SETTINGS, RENAMED, Settings, make_settings, without_unwatched_previews

PriorLike = Union[PriorResult, np.ndarray]


class _Input:
    """The image of a run, validated and normalised once."""

    def __init__(self, image, channel_axis: Optional[int]):
        image = _image.from_torch(image)
        chw = _image.to_channels_first(image, channel_axis)
        self.raw = chw  # (C, Y, X) as given (a view): the noise test needs unclipped values
        self.layout = _image.Layout(np.ndim(image), channel_axis)
        self.shape = tuple(int(s) for s in np.shape(image))
        self.dtype = chw.dtype
        self.channel_axis = channel_axis
        self.data = _image.normalize(chw)  # (C, Y, X) float32 in [0, 1]

    def metadata(self, settings: Settings, device: str, **parts) -> dict:
        return make_metadata(
            settings,
            device=device,
            image_shape=self.shape,
            image_dtype=self.dtype,
            channel_axis=self.channel_axis,
            **parts,
        )


def iter_fit_prior(
    image,
    settings: Optional[Settings] = None,
    *,
    channel_axis: Optional[int] = None,
    batch_size: Optional[int] = None,
    **overrides: Any,
) -> Generator[FitProgress, None, PriorResult]:
    """Fit the prior step by step: the generator form of :func:`fit_prior`.

    Arguments are checked at the call. Stop early by closing the generator
    (``gen.close()``): the fitting threads stop within one iteration.

    Parameters
    ----------
    image : array_like, shape (Y, X), (Y, X, 3|4) or 3-D with ``channel_axis``
        As for :func:`fit_prior`.
    settings : Settings, optional
        Defaults for every parameter (``Settings()`` when omitted).
    channel_axis : int, optional
        Axis of the channels for a multichannel image. Not needed for RGB(A).
    batch_size : int, optional
        Ensemble members trained together in one group (default: as the device and
        memory plan decide).
    **overrides
        Any setting of :class:`Settings` by name, replacing the value of ``settings``.

    Yields
    ------
    FitProgress
        One report per iteration; ``.preview`` (every ``preview_every`` iterations)
        holds the running prior in the image's layout.

    Returns
    -------
    PriorResult
        As :func:`fit_prior` returns it (``StopIteration.value``; ``yield from`` and
        :func:`napari_dsp.generators.run` hand it over).

    Raises
    ------
    TypeError
        For an image or a setting of the wrong type.
    ValueError
        For an unsuitable image or a setting out of its bounds.
    """
    settings = make_settings(settings, **overrides)
    inp = _Input(image, channel_axis)
    _modality.check_channels(settings.modality, inp.data.shape[0])
    settings = settings.replace(seed=resolve_seed(settings.seed))
    device = _plan.resolve_device(settings.device)
    return _fit(inp, settings, device, batch_size)


def _fit(inp: _Input, settings: Settings, device, batch_size=None, start=None):
    clock = Clock(start)
    c = inp.data.shape[0]
    data = inp.data
    if settings.texture:  # the texture channels are fitted with the image, after it
        from .core import texture as _texture

        data = np.concatenate([data, _texture.texture_channels(data, device=device)], 0)
    derived = _modality.derived_channels(settings.modality, inp.data, inp.raw)
    if derived is not None:  # the modality's channels, fitted with the image, after it
        data = np.concatenate([data, derived], 0)
    fit = iter_planned_prior(data, device=device, batch_size=batch_size, **settings.fit_values())
    median, spread, fit_info = yield from relay(
        fit,
        lambda p: clock.stamp(
            p.replace(preview=None if p.preview is None else inp.layout.to_user(p.preview[:c]))
        ),
    )
    if settings.texture:
        fit_info["texture"] = {
            "channels": int(len(median) - c),
            "frequencies": list(_texture.FREQUENCIES),
            "orientations": _texture.ORIENTATIONS,
        }
    if derived is not None:
        fit_info["derived"] = {
            "modality": settings.modality,
            "channels": list(_modality.DERIVED_NAMES[settings.modality]),
        }
    meta = inp.metadata(settings, fit_info["device"], fit=fit_info)
    return PriorResult(
        inp.layout.to_user(median[:c]),
        spread,
        meta,
        inp.layout.out_axis,
        texture=median[c:] if (settings.texture or derived is not None) else None,
    )


def fit_prior(
    image,
    *,
    channel_axis: Optional[int] = None,
    settings: Optional[Settings] = None,
    progress: Optional[ProgressCallback] = None,
    **overrides: Any,
) -> PriorResult:
    """Fit the Deep Segmentation Prior of one 2-D image.

    An ensemble of ``n_members`` small generators is fitted to the image for ``n_iter``
    iterations each, and the per-pixel median of their outputs is the prior: a
    de-textured version of the image in which objects are flat blobs.

    Parameters
    ----------
    image : array_like, shape (Y, X), (Y, X, 3|4) or 3-D with ``channel_axis``
        Any boolean, integer or real dtype. Intensities are stretched between their 0.1 and
        99.9 percentiles to [0, 1]. Any height and width of at least 16 pixels.
    channel_axis : int, optional
        Axis of the channels for a multichannel image. Not needed for RGB(A).
    settings : Settings, optional
        Defaults for every parameter (``Settings()`` when omitted).
    progress : callable, optional
        Called with a :class:`FitProgress` after every iteration.
    **overrides
        Any setting of :class:`Settings` by name (``n_iter=``, ``n_members=``,
        ``seed=``, ``device=``, ``precision=``, ...), replacing the value of
        ``settings``.

    Returns
    -------
    PriorResult
        ``.prior`` float32 in [0, 1], same layout as ``image``; ``.spread`` ``(Y, X)``;
        ``.metadata`` with the seed actually used.

    Raises
    ------
    TypeError
        For an image or a setting of the wrong type; the message says what to change.
    ValueError
        For an image of the wrong shape, with NaN/Inf, constant or too small, or a
        setting out of its bounds; the message says what to change.

    See Also
    --------
    segment : Fit (or reuse) the prior and cluster it into labels.

    Examples
    --------
    >>> import numpy as np
    >>> from napari_dsp import fit_prior
    >>> image = np.zeros((64, 64), np.float32)
    >>> image[16:48, 16:48] = 1.0
    >>> prior = fit_prior(image, n_members=3, n_iter=10, seed=0)
    >>> prior.prior.shape, prior.metadata["settings"]["seed"]
    ((64, 64), 0)
    """
    check_callback(progress)
    settings = without_unwatched_previews(make_settings(settings, **overrides), progress)
    return drain(iter_fit_prior(image, settings, channel_axis=channel_axis), progress)


def iter_segment(
    image=None,
    *,
    prior: Optional[PriorLike] = None,
    channel_axis: Optional[int] = None,
    settings: Optional[Settings] = None,
    scribbles=None,
    **overrides: Any,
) -> Generator[FitProgress, None, SegmentResult]:
    """Segment step by step: the generator form of :func:`segment`.

    Arguments are checked at the call. With ``prior`` given there is no fit; K-means
    then yields nothing, ``method='kanezaki'`` yields its self-training steps. Where
    nothing stands out from the noise, the result says so in
    ``metadata["clustering"]["decision"]["message"]`` and no warning is raised (the
    caller shows it, as the napari widget does).

    Parameters
    ----------
    image : array_like, optional
        As for :func:`segment`.
    prior : PriorResult or ndarray, optional
        A prior computed before: no refit.
    channel_axis : int, optional
        Axis of the channels for a multichannel image. Not needed for RGB(A).
    settings : Settings, optional
        Defaults for every parameter (``Settings()`` when omitted).
    scribbles : ndarray, shape (Y, X), int, optional
        ``method='kanezaki'`` only: user strokes, 0 = unlabelled.
    **overrides
        Any setting of :class:`Settings` by name, replacing the value of ``settings``.

    Yields
    ------
    FitProgress
        One report per iteration of the fit or the self-training.

    Returns
    -------
    SegmentResult
        Labels, prior and metadata (``StopIteration.value``).

    Raises
    ------
    TypeError
        For an image, a prior, scribbles or a setting of the wrong type.
    ValueError
        As :func:`segment` raises it.
    """
    settings = make_settings(settings, **overrides)
    kanezaki = settings.method == "kanezaki"
    if scribbles is not None and not kanezaki:
        raise ValueError(
            "scribbles are used by method='kanezaki' only; pass "
            "method='kanezaki' (or drop the scribbles)"
        )
    if kanezaki and settings.texture and not settings.prior_superpixels:
        raise ValueError(
            "texture=True works through the prior (its texture channels "
            "guide the superpixels); with prior_superpixels=False there is none: "
            "leave texture out, or use the prior"
        )
    if kanezaki and image is None:
        raise ValueError(
            "method='kanezaki' trains on the image itself: pass the image "
            "(and, to skip the fit, its prior)"
        )
    if image is None and prior is None:
        raise ValueError("segment needs an image, a prior, or both")
    inp = _Input(image, channel_axis) if image is not None else None
    if inp is not None:
        _modality.check_channels(settings.modality, inp.data.shape[0])
    if prior is not None:
        prior = _check_texture(_as_prior_result(prior, inp, channel_axis), settings)
        prior, settings = _check_modality(prior, settings)
        if inp is not None:
            _modality.check_channels(settings.modality, inp.data.shape[0])
    if kanezaki:
        scribbles = _check_scribbles(scribbles, inp.data.shape[1:], settings.n_features)
    settings = settings.replace(seed=resolve_seed(settings.seed, prior_seed(prior)))
    device = _plan.resolve_device(settings.device)
    return _segment(inp, prior, settings, device, scribbles)


def _segment(
    inp: Optional[_Input], prior: Optional[PriorResult], settings: Settings, device, scribbles
):
    kanezaki = settings.method == "kanezaki"
    clock = Clock()
    if prior is None and (not kanezaki or settings.prior_superpixels):
        prior = yield from _fit(inp, settings, device, start=clock.start)
    if not kanezaki:
        return _cluster_prior(prior, inp, settings, device)
    from .core.kanezaki import iter_kanezaki

    guide = prior.features() if (prior is not None and settings.prior_superpixels) else None
    s = settings
    labels, info = yield from relay(
        iter_kanezaki(
            inp.data,
            guide,
            seed=s.seed,
            device=device,
            n_features=s.n_features,
            n_conv=s.n_conv,
            learning_rate=s.kanezaki_lr,
            min_labels=s.min_labels,
            max_iter=s.max_iter,
            stabilize_iter=s.stabilize_iter,
            n_superpixels=s.n_superpixels,
            compactness=s.compactness,
            continuity_weight=s.continuity_weight,
            similarity_weight=s.similarity_weight,
            scribbles=scribbles,
            scribble_weight=s.scribble_weight,
            preview_every=s.preview_every,
        ),
        clock.stamp,
    )
    fit = prior.metadata.get("fit") if prior is not None else None
    meta = inp.metadata(
        settings,
        _plan.describe_device(device),
        fit=fit,
        kanezaki=dict(info, scribbles=scribbles is not None),
    )
    dtype = _post.label_dtype(instances=False, n_classes=s.n_features)
    return SegmentResult(labels.astype(dtype), prior, meta)


def _check_scribbles(scribbles, spatial: tuple, n_features: int) -> Optional[np.ndarray]:
    if scribbles is None:
        return None
    arr = np.asarray(_image.from_torch(scribbles))
    if arr.dtype.kind not in "iub":
        raise TypeError(
            f"scribbles must be an integer label image (0 = unlabelled), got dtype {arr.dtype}"
        )
    if arr.shape != tuple(spatial):
        raise ValueError(
            f"scribbles have shape {arr.shape} but the image is "
            f"{spatial[0]}x{spatial[1]}; paint them on a Labels layer of the "
            f"image's size"
        )
    arr = arr.astype(np.int64)
    if arr.min() < 0 or arr.max() >= n_features:
        raise ValueError(
            f"scribble ids must lie in 1..{n_features - 1} (0 = unlabelled); "
            f"got {arr.min()}..{arr.max()}"
        )
    return arr if arr.any() else None


def segment(
    image=None,
    *,
    n_classes: Optional[int] = None,
    prior: Optional[PriorLike] = None,
    channel_axis: Optional[int] = None,
    settings: Optional[Settings] = None,
    progress: Optional[ProgressCallback] = None,
    full_output: bool = False,
    scribbles=None,
    **overrides: Any,
):
    """Segment a 2-D image with the Deep Segmentation Prior.

    The prior (see :func:`fit_prior`) is clustered by K-means over each pixel's
    ``window x window`` neighbourhood of prior values (all channels); for two classes
    the outlines are then re-drawn from the image's pixels where they separate the
    classes. With ``method='kanezaki'`` the number of classes is found by self-training
    on superpixels of the prior instead.

    Parameters
    ----------
    image : array_like, optional
        As for :func:`fit_prior`. May be omitted when ``prior`` is given (no outline
        refinement then).
    n_classes : int, optional
        2 (the default): foreground/background, 0 = background, 1 = foreground. With
        ``modality='auto'`` the background is the class that covers more of the image
        border; if both cover it about equally, the smaller class is the foreground
        (the other modalities know their side: see :class:`Settings`); ``invert=True``
        swaps the two. K > 2: classes 1..K ordered by increasing mean prior intensity.
    prior : PriorResult or ndarray, optional
        A prior computed before: re-clustering it (another ``n_classes``, ``invert``,
        ``instances``...) costs no refit.
    channel_axis : int, optional
        Axis of the channels for a multichannel image. Not needed for RGB(A).
    settings : Settings, optional
        Defaults for every parameter (``Settings()`` when omitted).
    progress : callable, optional
        Called with a :class:`FitProgress` after every iteration.
    full_output : bool, default False
        Return a :class:`SegmentResult` (labels, prior, metadata) instead of the labels.
    scribbles : ndarray, shape (Y, X), int, optional
        ``method='kanezaki'`` only: user strokes, 0 = unlabelled, v = class v; painted
        classes keep their ids in the output.
    **overrides
        Any setting of :class:`Settings` by name (``window=``, ``invert=``,
        ``instances=``, ``method=``, ``seed=``, ...), replacing the value of
        ``settings``.

    Returns
    -------
    ndarray or SegmentResult
        The labels, shape (Y, X): 0/1 for foreground/background, 1..K for K classes,
        object ids with ``instances=True``; uint8 unless the ids need a wider type. A
        :class:`SegmentResult` (labels, prior, metadata) with ``full_output=True``.

    Raises
    ------
    TypeError
        For an image, a prior, scribbles or a setting of the wrong type.
    ValueError
        As for :func:`fit_prior`, and for a prior whose shape does not match the image,
        scribbles without ``method='kanezaki'``, or neither an image nor a prior.

    Warns
    -----
    NothingToSegmentWarning
        Foreground/background only: when the prior's two classes do not stand out from
        the image's noise. The labels are then the pixels that stand out alone (one
        bright spot gives that spot), or empty; the decision and its statistic are in
        ``metadata["clustering"]["decision"]``.

    See Also
    --------
    fit_prior : The prior alone, to re-cluster it later.
    segment_stack : Stacks and time-lapses, with classes shared by the planes.

    Examples
    --------
    >>> import numpy as np
    >>> from napari_dsp import fit_prior, segment
    >>> rng = np.random.default_rng(0)
    >>> image = rng.normal(0.3, 0.1, (64, 64)).astype(np.float32)
    >>> image[16:48, 16:48] += 0.4
    >>> labels = segment(image, n_members=3, n_iter=10, seed=0)
    >>> labels.shape, labels.dtype, int(labels.max())
    ((64, 64), dtype('uint8'), 1)

    Re-cluster a prior without fitting again:

    >>> prior = fit_prior(image, n_members=3, n_iter=10, seed=0)
    >>> three = segment(image, prior=prior, n_classes=3)
    """
    if n_classes is not None:
        overrides["n_classes"] = n_classes
    check_callback(progress)
    settings = without_unwatched_previews(make_settings(settings, **overrides), progress)
    result = drain(
        iter_segment(
            image, prior=prior, channel_axis=channel_axis, settings=settings, scribbles=scribbles
        ),
        progress,
    )
    _pipeline.warn_if_nothing(result.metadata)
    return result if full_output else result.labels


def _check_modality(prior: PriorResult, settings: Settings) -> tuple[PriorResult, Settings]:
    """A prior is clustered with the modality it was fitted for (its derived channels):
    the settings take the prior's modality where they leave it 'auto', and an explicit
    other one is an error, not a silent mix. Clustered into more than two classes (or
    self-trained), a prior fitted for a modality is clustered on the image's channels
    alone, as a plain prior."""
    fitted = ((prior.metadata.get("fit") or {}).get("derived") or {}).get("modality")
    if fitted is None:
        fitted = (prior.metadata.get("settings") or {}).get("modality", "auto")
    if settings.n_classes != 2 or settings.method != "kmeans":
        if fitted in _modality.DERIVED_NAMES:  # the derived channels serve its own rule
            prior = dataclasses.replace(prior, texture=None)
        return prior, settings
    if settings.modality == fitted:
        return prior, settings
    if settings.modality == "auto":
        return prior, settings.replace(modality=fitted)
    if fitted == "auto" and settings.modality == "fluorescence":
        return prior, settings  # fluorescence fits the image alone
    raise ValueError(
        f"this prior was fitted for modality={fitted!r}, not {settings.modality!r}; refit "
        f"with fit_prior(image, modality={settings.modality!r}), or leave the prior out"
    )


def _check_texture(prior: PriorResult, settings: Settings) -> PriorResult:
    """A prior is clustered with the texture channels it was fitted with; asking for
    texture features from a prior without them is an error, not a silent fallback."""
    if settings.texture and prior.texture is None:
        raise ValueError(
            "texture=True needs a prior fitted with texture=True (its "
            "texture channels); refit with fit_prior(image, texture=True), "
            "or leave the prior out"
        )
    return prior


def _cluster_prior(
    prior: PriorResult, inp: Optional[_Input], settings: Settings, device
) -> SegmentResult:
    """K-means on the prior (and its texture channels), then (2 classes) the clean-up
    and the instance ids."""
    # the prior's extra channels: texture energies, or the modality's derived channels
    texture = prior.texture is not None and settings.modality not in _modality.DERIVED_NAMES
    if texture:  # the pixels' two-Gaussian rule sees intensities only
        settings = settings.replace(refine=False)
    features = prior.features()
    separation = None
    if texture and inp is not None:
        from .core.texture import separation as texture_separation

        # on the fit's device; re-clustering: on the one the settings ask for
        on = device or _plan.resolve_device(settings.device)
        separation = lambda two: texture_separation(inp.data, two, on)
    raw, data = (inp.raw, inp.data) if inp is not None else (None, None)
    model, [two] = _pipeline.learn(
        [features],
        None if inp is None else [raw],
        [data],
        settings,
        brightness=prior.channels_first().shape[0],
        texture=separation,
    )
    labels = _pipeline.apply(model, features, raw, data, labels=two)
    info = model.metadata()
    if (
        settings.modality == "auto"
        and settings.n_classes == 2
        and inp is not None
        and inp.channel_axis is None  # grey or RGB(A): what the suggestion knows
    ):
        suggestion = _modality.suggestion(inp.raw, inp.data)
        if suggestion is not None:
            info["suggestion"] = suggestion
    if texture and settings.n_classes == 2:
        info.update(refined=False, refine_skipped="texture features")
    if settings.instances:
        [labels], [info["count"]] = _pipeline.number_objects([labels], model)
    pm = prior.metadata
    inp_meta = pm.get("input", {})
    # the fit's settings are the prior's (this call may say other n_iter, n_members, ...)
    fitted = pm.get("settings")
    if fitted:
        settings = Settings(
            **{
                **settings.to_dict(),
                "settle": 0.0,
                **{
                    RENAMED.get(k, k): v  # a prior written before the names changed
                    for k, v in fitted.items()
                    if RENAMED.get(k, k) in PRIOR_SETTINGS
                },
            }
        )  # older: no stop
    meta = make_metadata(
        settings,
        device=pm.get("device", "cpu"),
        image_shape=inp.shape if inp else inp_meta.get("shape", labels.shape),
        image_dtype=inp.dtype if inp else inp_meta.get("dtype", "float32"),
        channel_axis=inp.channel_axis if inp else inp_meta.get("channel_axis"),
        fit=pm.get("fit"),
        clustering=info,
    )
    return SegmentResult(labels, prior, meta)


def _as_prior_result(prior: PriorLike, inp: Optional[_Input], channel_axis) -> PriorResult:
    if isinstance(prior, PriorResult):
        result = prior
    else:
        arr = np.asarray(_image.from_torch(prior))
        if arr.dtype.kind not in "fiub":
            raise TypeError(f"prior must be a PriorResult or a real array, got dtype {arr.dtype}")
        try:
            chw = _image.to_channels_first(arr, channel_axis)
        except ValueError as exc:  # its messages speak of "image"
            raise ValueError(f"prior: {exc}".replace("image is", "it is")) from None
        if not np.all(np.isfinite(chw)):
            raise ValueError(
                "prior contains NaN or infinite values; pass the prior returned by fit_prior"
            )
        layout = _image.Layout(arr.ndim, channel_axis)
        result = PriorResult(
            arr.astype(np.float32, copy=False),
            np.zeros(chw.shape[1:], np.float32),
            {},
            layout.out_axis,
        )
    if inp is not None:
        spatial = inp.data.shape[1:]
        if result.spread.shape != spatial:
            raise ValueError(
                f"prior covers {result.spread.shape[0]}x{result.spread.shape[1]}"
                f" pixels but the image is {spatial[0]}x{spatial[1]}; pass the "
                f"prior fitted to this image"
            )
    return result
