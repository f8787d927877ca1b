"""The public orchestration: ``fit_prior`` and ``segment`` (and their generator forms).

Array layouts: images are ``(Y, X)`` grayscale, ``(Y, X, 3|4)`` RGB(A), or 3-D with an
explicit ``channel_axis``. The prior comes back in the same layout as the image (RGBA
loses its alpha channel); labels and the spread are always ``(Y, X)``.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass, field
from typing import Any, Callable, Generator, Optional, Union

import numpy as np

from . import _cluster, _fit, _image, _refine, _workers
from ._fit import FitProgress
from .settings import Settings, make_settings

ProgressCallback = Callable[[FitProgress], Any]


@dataclass(frozen=True)
class PriorResult:
    """The prior of one image, with the ensemble's spread and how it was made.

    Attributes
    ----------
    prior : ndarray, float32 in [0, 1]
        Same layout as the input image (``(Y, X)`` or channels where the input had them).
    spread : ndarray, shape (Y, X), float32
        Per-pixel standard deviation across the ensemble members (mean over channels): an
        uncertainty map, high where the fits disagree.
    metadata : dict
        Settings actually used (the seed included), device, package versions.
    channel_axis : int or None
        Where the channels of ``prior`` are (None for grayscale).

    ``np.asarray(result)`` gives ``result.prior``.
    """

    prior: np.ndarray
    spread: np.ndarray
    metadata: dict = field(default_factory=dict)
    channel_axis: Optional[int] = None

    def __array__(self, dtype=None, copy=None):
        return self.prior if dtype is None else self.prior.astype(dtype)

    @property
    def shape(self) -> tuple:
        return self.prior.shape

    def channels_first(self) -> np.ndarray:
        """The prior as ``(C, Y, X)``."""
        if self.prior.ndim == 2:
            return self.prior[None]
        return np.moveaxis(self.prior, -1 if self.channel_axis is None else
                           self.channel_axis, 0)


@dataclass(frozen=True)
class SegmentResult:
    """Labels with the prior they came from (None for ``method='kanezaki'`` with
    ``use_prior=False``) and the metadata of the run."""

    labels: np.ndarray
    prior: Optional[PriorResult]
    metadata: dict


def versions() -> dict:
    """Versions of the packages that determine a result."""
    import sklearn
    import torch

    from . import __version__

    return {"napari_dsp": __version__, "torch": torch.__version__, "numpy": np.__version__,
            "scikit-learn": sklearn.__version__, "python": platform.python_version()}


def draw_seed() -> int:
    """A fresh random seed in [0, 2**32)."""
    return int(np.random.SeedSequence().entropy % (2**32))


def member_seeds(seed: int, n_runs: int) -> list[int]:
    """The seeds of the ensemble members, derived from the run's seed."""
    return [int(s) for s in np.random.SeedSequence(seed).generate_state(n_runs)]


def iter_fit_prior(image, settings: Optional[Settings] = None, *,
                   channel_axis: Optional[int] = None, batch_size: Optional[int] = None,
                   _normalized: bool = False, **overrides: Any
                   ) -> Generator[FitProgress, None, PriorResult]:
    """Fit the prior step by step: yields :class:`FitProgress`, returns a
    :class:`PriorResult` (``StopIteration.value``; ``yield from`` hands it over).

    Previews (``FitProgress.preview``) are in the image's layout. Stop early by simply
    no longer iterating (``close()`` the generator). Parameters as :func:`fit_prior`.
    """
    settings = make_settings(settings, **overrides)
    chw = _image.to_channels_first(image, channel_axis)
    ndim = np.ndim(image)
    data = chw if _normalized else _image.normalize(chw)
    device = _fit.resolve_device(settings.device)
    seed = draw_seed() if settings.seed is None else int(settings.seed)
    full_shape = data.shape[1:]
    tile = _tile_size(data.shape[0], settings, device)
    work, radius = _working_shape(data, settings, tile)
    if work != full_shape:
        data = _image.resize(data, work)
    tiles = _image.tiles(work, tile, TILE_OVERLAP)
    info: dict = {}
    if len(tiles) == 1:
        gen = _iter_fit_plane(data, settings, seed, device, batch_size, info)
    else:
        gen = _iter_fit_tiles(data, tiles, settings, seed, device, batch_size, info)

    def in_image_layout(p: FitProgress) -> FitProgress:
        if p.preview is None:
            return p
        preview = _image.resize(p.preview, full_shape)
        return FitProgress(p.step, p.total,
                           _image.from_channels_first(preview, ndim, channel_axis), p.loss)

    median, spread = yield from _relay(gen, in_image_layout)
    if work != full_shape:
        median = _image.resize(median, full_shape)
        spread = _image.resize(spread[None], full_shape)[0]
    metadata = {"settings": settings.replace(seed=seed).to_dict(),
                "working_shape": tuple(int(v) for v in work), "tiles": len(tiles),
                "object_radius": radius,
                "device": _describe_device(device), "workers": info.get("workers"),
                "members_per_group": info.get("batch_size"), "versions": versions(),
                "input_shape": tuple(int(s) for s in np.shape(image)),
                "input_dtype": str(np.asarray(image).dtype), "channel_axis": channel_axis}
    prior = _image.from_channels_first(median, ndim, channel_axis)
    out_axis = None if ndim == 2 else (-1 if channel_axis is None else channel_axis)
    return PriorResult(prior, spread, metadata, out_axis)


#: Overlap of neighbouring tiles (pixels of the working plane), blended linearly.
TILE_OVERLAP = 32


def _iter_fit_tiles(data: np.ndarray, tiles: list, settings: Settings, seed: int, device,
                    batch_size: Optional[int], info: dict):
    """Fit overlapping tiles of ``data`` (C, H, W) one after another (memory bounded by
    one tile) and blend them with linear ramps across the overlaps. Every tile uses the
    same member seeds. Yields progress over all tiles; returns (median, spread)."""
    c, h, w = data.shape
    acc = np.zeros((c, h, w), np.float32)
    acc_spread = np.zeros((h, w), np.float32)
    weight = np.zeros((h, w), np.float32)
    quiet = settings.replace(preview_every=0)
    for k, (ys, xs) in enumerate(tiles):
        fit = _iter_fit_plane(np.ascontiguousarray(data[:, ys, xs]), quiet, seed, device,
                              batch_size, info)
        median, spread = yield from _relay(fit, lambda p, k=k: FitProgress(
            k * p.total + p.step, len(tiles) * p.total, None, p.loss,
            f"tile {k + 1}/{len(tiles)}"))
        ramp = _image.blend_weights((ys, xs), (h, w), TILE_OVERLAP)
        acc[:, ys, xs] += median * ramp
        acc_spread[ys, xs] += spread * ramp
        weight[ys, xs] += ramp
    return acc / weight, acc_spread / weight


def _iter_fit_plane(data: np.ndarray, settings: Settings, seed: int, device,
                    batch_size: Optional[int], info: dict):
    """One ensemble fit of a normalised ``(C, H, W)`` plane: yields progress (previews
    as ``(C, H, W)`` medians), returns (median, spread); ``info`` gets the workers and
    group size used."""
    padded, crop = _image.pad_to_multiple(data)
    n_pixels = padded.shape[1] * padded.shape[2]
    fit_kwargs = dict(n_iter=settings.n_iter, learning_rate=settings.learning_rate,
                      precision=settings.precision)
    seeds = member_seeds(seed, settings.n_runs)
    workers = settings.n_workers
    if device.type != "cpu":
        workers = 0
    elif workers is None:
        workers = _workers.default_workers(settings.n_runs, n_pixels)
    if batch_size is None:
        batch_size = _fit.default_batch_size(settings.n_runs, n_pixels, padded.shape[0],
                                             device)
    if device.type == "cpu":
        if settings.n_workers is None:  # automatic: fewer processes rather than refusing
            while workers > 1 and not _memory_needed(n_pixels, padded.shape[0],
                                                     settings.n_runs, batch_size,
                                                     workers)[2]:
                workers -= 1
        _check_memory(n_pixels, padded.shape[0], settings.n_runs, batch_size, workers)

    def start(batch):
        if workers:
            return _workers.iter_members_parallel(
                padded, crop, n_workers=workers, seeds=seeds,
                preview_every=settings.preview_every, batch_size=batch, **fit_kwargs)
        return _fit.iter_members(padded, crop, seeds=seeds, device=device,
                                 preview_every=settings.preview_every, batch_size=batch,
                                 **fit_kwargs)

    fit = start(batch_size)
    try:
        while True:
            try:
                progress = next(fit)
            except StopIteration as stop:
                median, spread = _fit.summarize(stop.value)
                break
            except _fit.OUT_OF_MEMORY as exc:
                # Device memory ran out: start again with half as many members trained at
                # once (the same members, so the same prior), down to one.
                fit.close()
                if batch_size <= 1:
                    raise ValueError(
                        f"out of memory on {device} even with one ensemble member at a "
                        f"time ({exc}); use device='cpu', or downsample the image") from None
                batch_size = max(1, batch_size // 2)
                _fit.release_device_memory(device)
                fit = start(batch_size)
                continue
            if progress.preview is not None:
                progress = FitProgress(progress.step, progress.total,
                                       _fit.median(progress.preview), progress.loss)
            yield progress
    finally:
        fit.close()
    info.update(workers=workers, batch_size=batch_size)
    return median, spread


def _tile_size(n_channels: int, settings: Settings, device) -> int:
    """Side of the largest plane fitted in one piece: 512 on a CPU, 2048 on CUDA, less
    where the CPU memory estimate says it would not fit (then more, smaller tiles)."""
    size = _image.TILE_SIZE.get(device.type, 512)
    if device.type == "cpu":
        # automatic workers are reduced down to one before a tile is made smaller
        workers = 1 if settings.n_workers is None else settings.n_workers
        batch = _fit.default_batch_size(settings.n_runs, size * size, n_channels, device)
        while size > 64 and not _memory_needed(size * size, n_channels, settings.n_runs,
                                               batch, workers)[2]:
            size = int(size / np.sqrt(2))
    return size


def _working_shape(data: np.ndarray, settings: Settings, size: int
                   ) -> tuple[tuple[int, int], Optional[float]]:
    """The plane shape the prior is fitted at (see ``Settings.working_size``; ``size``
    is the tile side) and the estimated object radius behind an automatic choice."""
    shape = data.shape[1:]
    if settings.working_size is not None:
        return _image.working_shape(shape, settings.working_size), None
    if shape[0] * shape[1] <= size * size:
        return tuple(int(v) for v in shape), None
    radius = _image.object_radius(data)
    # Scale down as far as the objects allow (they keep MIN_RADIUS pixels), but never
    # below one tile: a larger working plane is fitted in tiles.
    factor = min(max(1.0, radius / _image.MIN_RADIUS), np.sqrt(shape[0] * shape[1]) / size)
    side = int(round(np.sqrt(shape[0] * shape[1]) / factor))
    return _image.working_shape(shape, side), round(float(radius), 2)


def _memory_needed(n_pixels: int, n_channels: int, n_runs: int, batch_size: int,
                   workers: int) -> tuple[float, Optional[float], bool]:
    """(bytes needed, bytes available or None, whether it fits)."""
    need = _fit.estimate_bytes(n_pixels, n_channels, n_runs, batch_size, workers)
    have = _fit.available_bytes()
    return need, have, have is None or need <= 0.9 * have


def _check_memory(n_pixels: int, n_channels: int, n_runs: int, batch_size: int,
                  workers: int) -> None:
    """Refuse up front a CPU fit that would not fit in memory (instead of swapping or
    being killed half-way)."""
    need, have, fits = _memory_needed(n_pixels, n_channels, n_runs, batch_size, workers)
    if not fits:
        side = int(np.sqrt(n_pixels))
        raise ValueError(
            f"fitting this {n_pixels / 1e6:.1f}-megapixel image needs about "
            f"{need / 1e9:.1f} GB of memory and {have / 1e9:.1f} GB is available; "
            f"set a working_size (e.g. working_size=512, or None for automatic) to fit "
            f"the prior on fewer pixels, crop a region, or use fewer CPU workers "
            f"(n_workers=1) ({side}x{side}-pixel equivalent)")


def _describe_device(device) -> str:
    if device.type == "cuda":
        import torch

        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


def fit_prior(image, *, channel_axis: Optional[int] = None,
              settings: Optional[Settings] = None,
              progress: Optional[ProgressCallback] = None, **overrides: Any) -> PriorResult:
    """Fit the Deep Segmentation Prior of one 2-D image.

    An ensemble of ``n_runs`` small generators is fitted to the image for ``n_iter``
    iterations each (trained together as one grouped model), and the per-pixel median of
    their outputs is the prior: a de-textured version of the image in which objects are
    flat blobs.

    Parameters
    ----------
    image : array_like, shape (Y, X), (Y, X, 3|4) or 3-D with ``channel_axis``
        Any boolean, integer or real dtype. Intensities are stretched between their 0.1 and
        99.9 percentiles to [0, 1]. Any height and width of at least 16 pixels.
    channel_axis : int, optional
        Axis of the channels for a multichannel image. Not needed for RGB(A).
    settings : Settings, optional
        Defaults for every parameter; keyword ``overrides`` (``n_iter=``, ``n_runs=``,
        ``seed=``, ``device=``, ``precision=``, ...) replace single values.
    progress : callable, optional
        Called with a :class:`FitProgress` after every iteration.

    Returns
    -------
    PriorResult
        ``.prior`` float32 in [0, 1], same layout as ``image``; ``.spread`` ``(Y, X)``;
        ``.metadata`` with the seed actually used.

    Raises
    ------
    TypeError, ValueError
        For an image of the wrong kind or shape, NaN/Inf, a constant image, or invalid
        settings; the message says what to change.
    """
    if progress is not None and not callable(progress):
        raise TypeError(f"progress must be a callable taking a FitProgress, got {progress!r}")
    settings = make_settings(settings, **overrides)
    if progress is None:
        settings = settings.replace(preview_every=0)
    return _drain(iter_fit_prior(image, settings, channel_axis=channel_axis), progress)


def _relay(gen: Generator, transform: Callable[[FitProgress], FitProgress]):
    """Yield ``transform(p)`` for every progress report of ``gen`` and return its value.
    A consumer that stops early closes ``gen`` at once (and its worker processes)."""
    try:
        while True:
            try:
                p = next(gen)
            except StopIteration as stop:
                return stop.value
            yield transform(p)
    finally:
        gen.close()


def _drain(gen: Generator, callback: Optional[ProgressCallback]):
    while True:
        try:
            item = next(gen)
        except StopIteration as stop:
            return stop.value
        if callback is not None:
            callback(item)


PriorLike = Union[PriorResult, np.ndarray]


def iter_segment(image=None, *, prior: Optional[PriorLike] = None,
                 channel_axis: Optional[int] = None, settings: Optional[Settings] = None,
                 scribbles=None, **overrides: Any
                 ) -> Generator[FitProgress, None, SegmentResult]:
    """Generator form of :func:`segment`: yields progress, returns a
    :class:`SegmentResult`. With ``prior`` given there is no fit; K-means then yields
    nothing, ``method='kanezaki'`` yields its self-training steps."""
    settings = make_settings(settings, **overrides)
    kanezaki = settings.method == "kanezaki"
    if scribbles is not None and not kanezaki:
        raise ValueError("scribbles are used by method='kanezaki' only; pass "
                         "method='kanezaki' (or drop the scribbles)")
    if kanezaki and image is None:
        raise ValueError("method='kanezaki' trains on the image itself: pass the image "
                         "(and, to skip the fit, its prior)")
    if image is None and prior is None:
        raise ValueError("segment needs an image, a prior, or both")
    if kanezaki:
        chw = _image.to_channels_first(image, channel_axis)
        scribbles = _check_scribbles(scribbles, chw.shape[1:], settings.n_features)
    result = None
    if prior is not None:
        result = _as_prior_result(prior, image, channel_axis)
    elif not kanezaki or settings.use_prior:
        result = yield from iter_fit_prior(image, settings, channel_axis=channel_axis)
    if not kanezaki:
        return cluster(result, settings, image=image, channel_axis=channel_axis)
    return (yield from _iter_kanezaki(chw, result, settings, scribbles))


def _check_scribbles(scribbles, spatial: tuple, n_features: int) -> Optional[np.ndarray]:
    if scribbles is None:
        return None
    arr = np.asarray(scribbles)
    if arr.dtype.kind not in "iub":
        raise TypeError(f"scribbles must be an integer label image (0 = unlabelled), got "
                        f"dtype {arr.dtype}")
    if arr.shape != tuple(spatial):
        raise ValueError(f"scribbles have shape {arr.shape} but the image is "
                         f"{spatial[0]}x{spatial[1]}; paint them on a Labels layer of the "
                         f"image's size")
    arr = arr.astype(np.int64)
    if arr.min() < 0 or arr.max() >= n_features:
        raise ValueError(f"scribble ids must lie in 1..{n_features - 1} (0 = unlabelled); "
                         f"got {arr.min()}..{arr.max()}")
    if not arr.any():
        return None
    return arr


def _iter_kanezaki(chw: np.ndarray, prior: Optional[PriorResult], settings: Settings,
                   scribbles: Optional[np.ndarray]):
    from . import _kanezaki

    data = _image.normalize(chw)
    seed = settings.seed
    if seed is None:
        seed = (prior.metadata.get("settings", {}).get("seed") if prior else None)
    if seed is None:
        seed = draw_seed()
    device = _fit.resolve_device(settings.device)
    guide = prior.channels_first() if (prior is not None and settings.use_prior) else None
    labels, info = yield from _kanezaki.iter_kanezaki(
        data, guide, seed=int(seed), device=device, n_features=settings.n_features,
        n_conv=settings.n_conv, learning_rate=settings.kanezaki_lr,
        min_labels=settings.min_labels, max_iter=settings.max_iter,
        stabilize_iter=settings.stabilize_iter, n_superpixels=settings.n_superpixels,
        compactness=settings.compactness, continuity_weight=settings.continuity_weight,
        similarity_weight=settings.similarity_weight, scribbles=scribbles,
        scribble_weight=settings.scribble_weight, preview_every=settings.preview_every)
    metadata = dict(prior.metadata) if prior is not None else {}
    used = settings.replace(seed=int(seed)).to_dict()
    metadata.update(settings=used, kanezaki=info, device=_describe_device(device),
                    versions=versions(), scribbles=scribbles is not None)
    dtype = np.uint8 if labels.max() < 256 else np.uint16
    return SegmentResult(labels.astype(dtype), prior, metadata)


def cluster(prior: PriorLike, settings: Optional[Settings] = None, *, image=None,
            channel_axis: Optional[int] = None, **overrides: Any) -> SegmentResult:
    """Cluster an existing prior (no fit): K-means on window features, see :func:`segment`.

    Pass the ``image`` the prior was fitted to (and its ``channel_axis``) to let
    ``refine`` re-draw the outlines from its pixels; without it the prior's own
    outlines are kept.
    """
    settings = make_settings(settings, **overrides)
    result = _as_prior_result(prior, image, channel_axis)
    seed = result.metadata.get("settings", {}).get("seed")
    if settings.seed is not None:
        seed = int(settings.seed)
    if seed is None:
        seed = draw_seed()
    labels, info = _cluster.cluster_prior(result.channels_first(),
                                          n_classes=settings.n_classes,
                                          window=settings.window, seed=seed)
    if settings.n_classes == 2:
        chw = None
        if image is not None:
            chw = _image.normalize(_image.to_channels_first(image, channel_axis))
        [labels], more = _post_process([labels], [chw], settings)
        info.update(more)
    if settings.instances:
        [labels], [info["count"]] = _label_objects([labels], settings.min_size)
    fit_settings = dict(result.metadata.get("settings", {}))
    fit_settings.update(n_classes=settings.n_classes, window=settings.window,
                        invert=settings.invert, seed=seed, instances=settings.instances,
                        min_size=settings.min_size, refine=settings.refine,
                        fill_holes=settings.fill_holes)
    metadata = dict(result.metadata)
    metadata.update(settings=fit_settings, clustering=info)
    metadata.setdefault("versions", versions())
    return SegmentResult(labels, result, metadata)


def _post_process(labels: list, images: list, settings: Settings) -> tuple[list, dict]:
    """Refinement from the pixels (class models shared over planes), hole filling, speck
    removal and ``invert``, for the 0/1 maps of the border rule."""
    info: dict = {}
    fgs = [lab == 1 for lab in labels]
    if settings.refine and all(im is not None for im in images):
        fgs, info = _refine.refine_foreground(images, fgs)
    elif settings.refine:
        info = {"refined": False, "pixel_error": None,
                "refine_skipped": "no image given: the prior's outlines are kept"}
    if settings.fill_holes:
        fgs = [_refine.fill_holes(f) for f in fgs]
    if settings.min_size:
        fgs = [_refine.remove_specks(f, settings.min_size) for f in fgs]
    if settings.invert:  # after the clean-up, which is about the objects the rule found
        fgs = [~f for f in fgs]
    info["inverted"] = settings.invert
    return [f.astype(lab.dtype) for f, lab in zip(fgs, labels)], info


def _as_prior_result(prior: PriorLike, image, channel_axis) -> PriorResult:
    if isinstance(prior, PriorResult):
        result = prior
    else:
        arr = np.asarray(prior)
        if arr.dtype.kind not in "fiub":
            raise TypeError(f"prior must be a PriorResult or a real array, got dtype "
                            f"{arr.dtype}")
        chw = _image.to_channels_first(arr, channel_axis)
        if not np.all(np.isfinite(chw)):
            raise ValueError("prior contains NaN or infinite values; pass the prior "
                             "returned by fit_prior")
        axis = None if arr.ndim == 2 else (-1 if channel_axis is None else channel_axis)
        result = PriorResult(arr.astype(np.float32, copy=False),
                             np.zeros(chw.shape[1:], np.float32), {}, axis)
    if image is not None:
        spatial = _image.to_channels_first(image, channel_axis).shape[1:]
        if result.spread.shape != spatial:
            raise ValueError(f"prior covers {result.spread.shape[0]}x{result.spread.shape[1]}"
                             f" pixels but the image is {spatial[0]}x{spatial[1]}; pass the "
                             f"prior fitted to this image")
    return result


def segment(image=None, *, n_classes: Optional[int] = None,
            prior: Optional[PriorLike] = None, channel_axis: Optional[int] = None,
            settings: Optional[Settings] = None, progress: Optional[ProgressCallback] = None,
            full_output: bool = False, scribbles=None, **overrides: Any):
    """Segment a 2-D image with the Deep Segmentation Prior.

    The prior (see :func:`fit_prior`) is clustered by K-means over each pixel's
    ``window x window`` neighbourhood of prior values (all channels).

    Parameters
    ----------
    image : array_like, optional
        As for :func:`fit_prior`. May be omitted when ``prior`` is given.
    n_classes : int, optional
        2 (default): foreground/background, 0 = background, 1 = foreground. The background
        is the class that covers more of the image border (a band 2 % of the shorter side
        wide); if both cover it about equally, the smaller class is the foreground.
        ``invert=True`` swaps the two. K > 2: classes 1..K ordered by increasing mean
        prior intensity.
    prior : PriorResult or ndarray, optional
        A prior computed before (re-clustering with another ``n_classes`` or ``invert``
        costs no refit).
    channel_axis, settings, progress, overrides
        As for :func:`fit_prior` (``window=``, ``invert=``, ``seed=``, ...).
    full_output : bool
        Return a :class:`SegmentResult` (labels, prior, metadata) instead of the labels.
    scribbles : ndarray, shape (Y, X), int, optional
        ``method='kanezaki'`` only: user strokes, 0 = unlabelled, v = class v; painted
        classes keep their ids in the output.

    With ``method='kanezaki'`` the number of classes is found by self-training on
    superpixels of the prior (see ``Settings``); labels are 1..K, scribbled ids kept, the
    other classes numbered after them by increasing mean intensity.

    Returns
    -------
    labels : ndarray, shape (Y, X), uint8
        Or a :class:`SegmentResult` with ``full_output=True``.

    Raises
    ------
    TypeError, ValueError
        As for :func:`fit_prior`, and for a prior whose shape does not match the image.
    """
    if n_classes is not None:
        overrides["n_classes"] = n_classes
    settings = make_settings(settings, **overrides)
    if progress is not None and not callable(progress):
        raise TypeError(f"progress must be a callable taking a FitProgress, got {progress!r}")
    if progress is None:
        settings = settings.replace(preview_every=0)
    result = _drain(iter_segment(image, prior=prior, channel_axis=channel_axis,
                                 settings=settings, scribbles=scribbles), progress)
    return result if full_output else result.labels


def iter_segment_stack(image, *, channel_axis: Optional[int] = None,
                       settings: Optional[Settings] = None,
                       spacing: Optional[tuple] = None, **overrides: Any
                       ) -> Generator[FitProgress, None, SegmentResult]:
    """Generator form of :func:`segment_stack`: yields progress (``plane`` and
    ``n_planes`` set), returns a :class:`SegmentResult` of stacks."""
    settings = make_settings(settings, **overrides)
    if settings.method != "kmeans":
        raise ValueError("segment_stack supports method='kmeans' only in this version; "
                         "run method='kanezaki' plane by plane")
    shape = tuple(int(v) for v in np.shape(image))
    lazy = not isinstance(image, np.ndarray) and hasattr(image, "shape") \
        and hasattr(image, "__getitem__") and hasattr(image, "dtype")
    arr = image if lazy else np.asarray(image)  # dask, zarr, ...: read plane by plane
    ndim = len(shape)
    if channel_axis is not None:
        _image.check_axis_type(channel_axis)
        if not -ndim <= channel_axis < ndim:
            raise ValueError(f"image has shape {shape}: channel_axis={channel_axis} is "
                             f"out of range for an image with {ndim} dimensions")
        channel_axis = int(channel_axis) % ndim
    spatial_ndim = 2 + (channel_axis is not None)
    if ndim < spatial_ndim:
        raise ValueError(f"image has shape {shape}: a stack needs at least "
                         f"{spatial_ndim} dimensions")
    # The leading (plane) axes: all but the channel axis and the last two other axes.
    others = [a for a in range(ndim) if a != channel_axis]
    lead_axes = others[:-2]
    if len(lead_axes) > 2:
        raise ValueError(f"image has {ndim} dimensions (shape {shape}); stacks up to "
                         f"T x Z x Y x X (plus a channel axis) are supported; split the "
                         f"rest first, or pass channel_axis=...")
    lead = tuple(shape[a] for a in lead_axes)
    planes = list(np.ndindex(*lead)) if lead else [()]
    # A plane keeps the channel axis where it was among the remaining axes.
    plane_axis = None if channel_axis is None else \
        sum(1 for a in range(channel_axis) if a not in lead_axes)
    seed = draw_seed() if settings.seed is None else int(settings.seed)
    settings = settings.replace(seed=seed)
    refine = settings.refine and settings.n_classes == 2
    if settings.volumetric and len(lead) != 1:
        raise ValueError(f"volumetric=True needs a Z stack (Z, Y, X), plus a channel axis "
                         f"if any; got {len(lead)} leading axes (shape {shape}); pass one "
                         f"time point, e.g. image[t]")
    # Read every plane once (lazy data: one chunk read per plane) and normalise the stack
    # as a whole, so an intensity means the same in every plane (per-plane stretching
    # would turn an empty plane's noise into "objects").
    raw = []
    for index in planes:
        key = [slice(None)] * ndim
        for axis, v in zip(lead_axes, index):
            key[axis] = v
        raw.append(_image.to_channels_first(np.asarray(arr[tuple(key)]), plane_axis))
    h = raw[0].shape[1]
    normed = _image.normalize(np.concatenate(raw, axis=1))  # (C, n * Y, X)
    del raw
    normed = [normed[:, i * h:(i + 1) * h] for i in range(len(planes))]
    priors, spreads, meta = [], [], {}
    if settings.volumetric:
        priors, spreads, meta = yield from _iter_volume(normed, settings,
                                                        _check_spacing(spacing))

    def plane_layout(chw: Optional[np.ndarray]) -> Optional[np.ndarray]:
        """(C, Y, X) -> (Y, X), or (Y, X, C) with a channel axis."""
        if chw is None:
            return None
        return chw[0] if plane_axis is None else np.moveaxis(chw, 0, -1)

    for i in range(0 if settings.volumetric else len(planes)):
        fit = iter_fit_prior(normed[i], settings, channel_axis=0, _normalized=True)
        result = yield from _relay(fit, lambda p, i=i: FitProgress(
            p.step, p.total, plane_layout(p.preview), p.loss, p.stage, i, len(planes)))
        priors.append(result.channels_first())
        spreads.append(result.spread)
        meta = result.metadata
    plane_priors = [plane_layout(p) for p in priors]
    images = normed if refine else [None] * len(priors)
    labels, info = _cluster.cluster_priors(priors, n_classes=settings.n_classes,
                                           window=settings.window, seed=seed)
    if settings.n_classes == 2:
        labels, more = _post_process(labels, images, settings)
        info.update(more)
    if settings.instances:
        labels, counts = _label_objects(
            labels, settings.min_size,
            _check_spacing(spacing) if settings.volumetric else None)
        info["count"] = int(sum(counts))
        if not settings.volumetric:
            info["counts_per_plane"] = counts
    labels_stack = np.stack(labels).reshape(lead + labels[0].shape)
    prior_stack = np.stack(plane_priors).reshape(lead + plane_priors[0].shape)
    if channel_axis is not None:
        prior_stack = np.moveaxis(prior_stack, -1, channel_axis)
    spread_stack = np.stack(spreads).reshape(lead + spreads[0].shape)
    metadata = dict(meta, input_shape=tuple(int(v) for v in np.shape(image)),
                    channel_axis=channel_axis, n_planes=len(labels), clustering=info)
    prior_result = PriorResult(prior_stack, spread_stack, metadata, channel_axis)
    return SegmentResult(labels_stack, prior_result, metadata)


def _label_objects(labels: list, min_size: int, spacing: Optional[tuple] = None
                   ) -> tuple[list, list]:
    """One id per object of 0/1 maps: per plane (ids unique over the stack, offset plane
    by plane), or in 3-D over the planes with voxel ``spacing`` when it is given.
    Returns (labels per plane, counts)."""
    from ._instances import instances

    if spacing is not None:
        vol = instances(np.stack(labels) == 1, min_size=min_size, sampling=spacing)
        dtype = np.uint16 if vol.max() < 2**16 else np.int32
        return list(vol.astype(dtype)), [int(vol.max())]
    out, counts, offset = [], [], 0
    for lab in labels:
        ids = instances(lab == 1, min_size=min_size)
        n = int(ids.max())
        out.append(np.where(ids > 0, ids + offset, 0))
        counts.append(n)
        offset += n
    dtype = np.uint16 if offset < 2**16 else np.int32
    return [o.astype(dtype) for o in out], counts


def _check_spacing(spacing) -> tuple:
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


def _iter_volume(planes: list, settings: Settings, spacing: tuple):
    """The volumetric fit of normalised planes ``(C, Y, X)``: yields progress, returns
    (per-plane priors (C, Y, X), per-plane spreads, metadata)."""
    from . import _volume

    volume = np.stack(planes, 1)  # (C, Z, Y, X)
    device = _fit.resolve_device(settings.device)
    members = yield from _volume.iter_volume_members(
        volume, spacing, n_iter=settings.n_iter,
        seeds=member_seeds(int(settings.seed), settings.n_runs),
        learning_rate=settings.learning_rate, device=device)
    median, spread = _fit.summarize(members)  # (C, Z, Y, X), (Z, Y, X)
    nz = volume.shape[1]
    meta = {"settings": settings.to_dict(), "device": _describe_device(device),
            "versions": versions(), "volumetric": True, "spacing": spacing,
            "z_stages": _volume.plan(spacing, nz)}
    return [median[:, z] for z in range(nz)], [spread[z] for z in range(nz)], meta


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
        Plus a channel axis anywhere when ``channel_axis`` is given.
    channel_axis, settings, progress, overrides
        As for :func:`segment` (``method='kmeans'`` only).
    spacing : (z, y, x), optional
        Voxel size (e.g. a napari layer's ``scale``); used by ``volumetric=True``, where
        ONE 3-D prior is fitted to a Z stack with stages that follow the anisotropy (see
        ``napari_dsp._volume``). Default isotropic.
    full_output : bool
        Return a :class:`SegmentResult` whose prior and spread are stacks too.

    Returns
    -------
    labels : ndarray, shape (..., Y, X), uint8

    Raises
    ------
    TypeError, ValueError
        For more than two leading axes, a bad ``channel_axis``, and as :func:`segment`.
    """
    settings = make_settings(settings, **overrides)
    if progress is None:
        settings = settings.replace(preview_every=0)
    result = _drain(iter_segment_stack(image, channel_axis=channel_axis, settings=settings,
                                       spacing=spacing), progress)
    return result if full_output else result.labels
