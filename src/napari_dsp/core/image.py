"""Image layouts and intensities: channel axis, dtype -> float32 in [0, 1], padding,
resizing, tile blending weights, and the object-size estimate behind the working size.

Layouts: the public functions take images as ``(Y, X)``, ``(Y, X, C)`` (RGB/RGBA, the
layout napari and scikit-image use for colour) or any 3-D array with an explicit
``channel_axis``. Inside the package the image is ``(C, Y, X)`` float32, normalised once
per run by :func:`normalize`.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

#: Smallest accepted side: three stride-2 stages with reflection padding need 16 pixels.
MIN_SIDE = 16
#: Height and width are padded to a multiple of this (three stride-2 stages).
MULTIPLE = 8
#: Percentiles used for robust intensity normalisation.
LOW_PERCENTILE, HIGH_PERCENTILE = 0.1, 99.9


def check_axis_type(channel_axis) -> None:
    """``channel_axis`` must be an integer (numpy integers too, booleans not)."""
    if isinstance(channel_axis, bool) or not isinstance(channel_axis, (int, np.integer)):
        raise TypeError(f"channel_axis must be an integer or None, got {channel_axis!r}")


def from_torch(image):
    """A torch tensor as a numpy array: detached from any graph (``requires_grad``), on
    the CPU, bfloat16 as float32 (numpy has no bfloat16); anything else as it is. Every
    entry point takes tensors alike."""
    if isinstance(image, np.ma.MaskedArray):
        return image  # refused where it is read, with what to do
    if type(image).__module__.startswith("torch") and hasattr(image, "detach"):
        import torch

        if getattr(image, "is_meta", False):
            raise TypeError(
                "image is a torch tensor on the 'meta' device, which holds no data: pass "
                "a tensor with data (on 'cpu' or 'cuda') or a numpy array"
            )
        tensor = image.detach().cpu()
        if tensor.dtype == torch.bfloat16:
            tensor = tensor.float()
        return tensor.numpy()
    return image


def refuse_masked(image) -> None:
    """A masked array is refused (TypeError), by every entry point alike: the
    segmentation reads the data under the mask too."""
    if isinstance(image, np.ma.MaskedArray):
        raise TypeError(
            "image is a masked array; its mask would be ignored: pass image.filled(value) "
            "(a value the background has), or the plain data"
        )


def to_channels_first(image, channel_axis: Optional[int] = None) -> np.ndarray:
    """Validate ``image`` and return it as a ``(C, Y, X)`` array (no dtype change).

    A 2-D array is grayscale. A 3-D array needs ``channel_axis`` unless its last axis has
    3 or 4 entries (RGB/RGBA, alpha dropped).
    """
    image = from_torch(image)
    refuse_masked(image)
    if hasattr(image, "__array__") and not isinstance(image, np.ndarray):
        image = np.asarray(image)
    if not isinstance(image, np.ndarray):
        raise TypeError(f"image must be a numpy array (or array-like), got {type(image).__name__}")
    if image.dtype.kind not in "biuf":
        raise TypeError(
            f"image has dtype {image.dtype}; pass a boolean, integer or real "
            f"floating-point image (for complex data, pass np.abs(image))"
        )
    if image.size == 0:
        raise ValueError(f"image is empty (shape {image.shape}); pass an image with pixels")
    if channel_axis is not None:
        check_axis_type(channel_axis)
        if image.ndim != 3:
            raise ValueError(
                f"channel_axis={channel_axis} needs a 3-D image (Y, X and "
                f"channels); this image has shape {image.shape}"
            )
        if not -3 <= channel_axis < 3:
            raise ValueError(
                f"channel_axis={channel_axis} is out of range for a 3-D image; use 0, 1, 2 or -1"
            )
        chw = np.moveaxis(image, channel_axis, 0)
    elif image.ndim == 2:
        chw = image[None]
    elif image.ndim == 3 and image.shape[-1] in (3, 4):
        chw = np.moveaxis(image[..., :3], -1, 0)
    elif image.ndim == 3:
        raise ValueError(
            f"image has shape {image.shape}: a 3-D image needs channel_axis=... (for example "
            f"channel_axis=0 for a (C, Y, X) multichannel image); only a last axis of 3 or 4 "
            f"is taken as RGB(A) by itself. For a z-stack or time-lapse use segment_stack() "
            f"(command line: --stack)"
        )
    else:
        raise ValueError(
            f"image has {image.ndim} dimensions (shape {image.shape}); pass a 2-D image "
            f"(Y, X), an RGB(A) image (Y, X, 3|4) or a 3-D multichannel image with "
            f"channel_axis=...; for stacks and time-lapses use segment_stack() (command "
            f"line: --stack) or pass one plane, e.g. image[0]"
        )
    if min(chw.shape[1:]) < MIN_SIDE:
        raise ValueError(
            f"image is {chw.shape[1]}x{chw.shape[2]} pixels; at least "
            f"{MIN_SIDE}x{MIN_SIDE} is needed (upsample it or pick a larger "
            f"region); if this is a channel axis, pass channel_axis=..."
        )
    return chw


def normalize(chw: np.ndarray) -> np.ndarray:
    """Map a ``(C, Y, X)`` image to float32 in [0, 1] robustly.

    Booleans map to {0, 1}. Everything else is stretched between its 0.1 and 99.9
    percentiles (taken over all channels together, so colours keep their balance) and
    clipped; a 16-bit image with values in 33,000-35,000 therefore uses the full range.
    NaN/Inf and constant images raise ``ValueError``.
    """
    if chw.dtype == bool:
        out = chw.astype(np.float32)
        if out.min() == out.max():
            raise ValueError("image is constant (all pixels the same); there is nothing to segment")
        return out
    data = chw.astype(np.float64) if chw.dtype.kind in "iu" else chw
    if chw.dtype.kind == "f" and not np.all(np.isfinite(chw)):
        bad = int(np.size(chw) - np.count_nonzero(np.isfinite(chw)))
        raise ValueError(
            f"image contains {bad} NaN or infinite value(s); replace them "
            f"first, e.g. np.nan_to_num(image, nan=0.0)"
        )
    if data.dtype.kind == "f":
        peak = max(abs(float(np.min(data))), abs(float(np.max(data))))
        if peak > HUGE:  # differences of values near the float limits overflow
            data = np.asarray(data, np.float64) / peak
    lo, hi = (float(v) for v in np.percentile(_subsample(data), [LOW_PERCENTILE, HIGH_PERCENTILE]))
    if not hi > lo:
        lo, hi = float(np.min(data)), float(np.max(data))
        if not hi > lo:
            raise ValueError(
                f"image is constant (every pixel is {lo:g}); there is nothing to segment"
            )
    out = (np.asarray(data, dtype=np.float64) - lo) / (hi - lo)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


#: Beyond this magnitude, differences of values (a percentile's interpolation, a range)
#: can overflow float32 or float64: such data is divided by its peak first.
HUGE = 1e30


def stretch_limits(planes: list) -> tuple[float, float]:
    """The 0.1 and 99.9 percentiles :func:`normalize` stretches between, over several
    ``(C, Y, X)`` planes (a sample of a stack too large to hold): finite values only."""
    data = np.concatenate([np.asarray(p, np.float64).reshape(-1) for p in planes])
    data = data[np.isfinite(data)]
    if data.size == 0:
        raise ValueError(
            "the planes hold no finite values; replace NaN and infinities "
            "first, e.g. np.nan_to_num(image, nan=0.0)"
        )
    peak = max(abs(float(data.min())), abs(float(data.max())))
    scale = peak if peak > HUGE else 1.0
    data = data / scale
    lo, hi = (float(v) for v in np.percentile(_subsample(data), [LOW_PERCENTILE, HIGH_PERCENTILE]))
    if not hi > lo:
        lo, hi = float(data.min()), float(data.max())
    return lo * scale, hi * scale


def stretch(chw: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """A ``(C, Y, X)`` plane stretched between ``lo`` and ``hi`` (see
    :func:`stretch_limits`) to float32 in [0, 1]; NaN/Inf raise ``ValueError``."""
    data = np.asarray(chw, np.float64)
    if not np.all(np.isfinite(data)):
        bad = int(data.size - np.count_nonzero(np.isfinite(data)))
        raise ValueError(
            f"a plane contains {bad} NaN or infinite value(s); replace them "
            f"first, e.g. np.nan_to_num(image, nan=0.0)"
        )
    if not hi > lo:
        return np.zeros(data.shape, np.float32)
    peak = max(abs(lo), abs(hi))
    if peak > HUGE:  # (hi - lo) itself may overflow: work in units of the peak
        data, lo, hi = data / peak, lo / peak, hi / peak
    return np.clip((data - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def _subsample(data: np.ndarray, limit: int = 2_000_000) -> np.ndarray:
    flat = data.reshape(-1)
    if flat.size <= limit:
        return flat
    return flat[:: flat.size // limit + 1]


def pad_to_multiple(chw: np.ndarray, multiple: int = MULTIPLE) -> tuple[np.ndarray, tuple]:
    """Reflect-pad Y and X up to a multiple of ``multiple``; return the crop to undo it."""
    _, h, w = chw.shape
    ph, pw = (-h) % multiple, (-w) % multiple
    top, left = ph // 2, pw // 2
    padded = np.pad(chw, ((0, 0), (top, ph - top), (left, pw - left)), mode="reflect")
    return padded, (slice(top, top + h), slice(left, left + w))


def from_channels_first(chw: np.ndarray, like_ndim: int, channel_axis: Optional[int]) -> np.ndarray:
    """Return ``(C, Y, X)`` results in the caller's layout: ``(Y, X)`` for grayscale,
    channels where the input had them otherwise."""
    if like_ndim == 2:
        return chw[0]
    if channel_axis is None:
        return np.moveaxis(chw, 0, -1)
    return np.moveaxis(chw, 0, channel_axis)


def object_radius(chw: np.ndarray, analysis_size: int = 2048) -> float:
    """Typical radius (pixels) of the blobs in a normalised ``(C, Y, X)`` image: the scale
    where the scale-normalised Laplacian of Gaussian responds most strongly (its 99th
    percentile over the image), on a copy at most ``analysis_size`` pixels square.
    Texture and noise answer at the smallest scales, so they never make it larger.

    Each scale ``s`` from 2 px up is measured on a copy reduced by the power of two
    ``f`` that brings ``s / f`` into [2, 4) (the scale-normalised response does not
    change with the pixel size): ten times faster than full-size kernels at 1024 x 1024,
    with the same answers on synthetic blobs of known radius."""
    from scipy import ndimage as ndi

    gray = chw.mean(0, dtype=np.float32)
    h, w = gray.shape
    d = max(1.0, np.sqrt(h * w) / analysis_size)
    if d > 1:
        gray = resize(gray[None], (max(MIN_SIDE, int(h / d)), max(MIN_SIDE, int(w / d))))[0]
    sigmas = 2.0 ** np.arange(0.0, 6.01, 0.5)
    reduced: dict = {1: gray}
    response = []
    for s in sigmas:
        f = 2 ** max(0, int(np.floor(np.log2(s))) - 1)
        f = int(min(f, max(1, min(gray.shape) // 32)))  # keep 32 pixels a side
        if f not in reduced:
            reduced[f] = resize(
                gray[None], (max(8, round(gray.shape[0] / f)), max(8, round(gray.shape[1] / f)))
            )[0]
        t = s / f
        response.append(np.percentile(np.abs(t * t * ndi.gaussian_laplace(reduced[f], t)), 99))
    return float(sigmas[int(np.argmax(response))] * np.sqrt(2.0) * d)


def blend_weights(tile: tuple[slice, slice], shape: tuple[int, int], overlap: int) -> np.ndarray:
    """Weights of one tile: 1 inside, rising linearly across ``overlap`` pixels at every
    edge that has a neighbour (not at the plane's border), so tiles blend without seams."""
    out = []
    for sl, n in zip(tile, shape):
        length = sl.stop - sl.start
        ramp = np.ones(length, np.float32)
        edge = (
            np.linspace(1.0 / (overlap + 1), 1.0, overlap, dtype=np.float32)
            if overlap
            else np.zeros(0, np.float32)
        )
        k = min(overlap, length)
        if sl.start > 0:
            ramp[:k] = np.minimum(ramp[:k], edge[:k])
        if sl.stop < n:
            ramp[length - k :] = np.minimum(ramp[length - k :], edge[:k][::-1])
        out.append(ramp)
    return np.outer(out[0], out[1])


def working_shape(shape: tuple[int, int], working_size: int) -> tuple[int, int]:
    """The ``(Y, X)`` shape the prior is fitted at: ``shape`` scaled down, aspect ratio
    kept, to at most ``working_size ** 2`` pixels (``shape`` itself when it is smaller
    or ``working_size`` is 0). Never below :data:`MIN_SIDE` on either side."""
    h, w = int(shape[0]), int(shape[1])
    if working_size <= 0 or h * w <= working_size * working_size:
        return h, w
    scale = working_size / np.sqrt(h * w)
    return max(MIN_SIDE, int(h * scale)), max(MIN_SIDE, int(w * scale))


def resize(chw: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``(C, Y, X)`` float32 resized to ``shape``: antialiased bilinear when shrinking,
    bilinear when enlarging (torch, bounded memory: one channel at a time)."""
    import torch

    if tuple(chw.shape[1:]) == tuple(shape):
        return chw
    down = shape[0] * shape[1] < chw.shape[1] * chw.shape[2]
    out = np.empty((chw.shape[0],) + tuple(shape), np.float32)
    with torch.no_grad():
        for c in range(chw.shape[0]):
            x = torch.from_numpy(np.ascontiguousarray(chw[c], dtype=np.float32))[None, None]
            out[c] = torch.nn.functional.interpolate(
                x, size=tuple(shape), mode="bilinear", align_corners=False, antialias=down
            )[0, 0].numpy()
    return out


class Layout:
    """Where the user's channels are, to give results back in the user's layout.

    Made from the image as it was passed (``ndim`` and ``channel_axis``): ``(Y, X)``
    grayscale, ``(Y, X, C)`` RGB(A) or any 3-D array with a ``channel_axis``.
    """

    def __init__(self, ndim: int, channel_axis: Optional[int]):
        self.ndim, self.channel_axis = int(ndim), channel_axis

    @property
    def out_axis(self) -> Optional[int]:
        """The channel axis of results (None for grayscale)."""
        if self.ndim == 2:
            return None
        return -1 if self.channel_axis is None else self.channel_axis

    def to_user(self, chw: np.ndarray) -> np.ndarray:
        """``(C, Y, X)`` -> the user's layout (a view, no copy)."""
        return from_channels_first(chw, self.ndim, self.channel_axis)
