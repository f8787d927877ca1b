"""Is there anything to segment? The test behind an empty result, for foreground /
background.

K-means always splits the prior in two, even the prior of pure camera noise: the fit
smooths the noise into gentle blobs, and the split follows them. So the split is tested
against the image's own noise before it is believed:

- the noise level ``sigma`` of every channel is estimated from the pixels
  (:func:`noise_sigma`: Immerkaer's Laplacian-difference estimator, with the median
  absolute deviation instead of the mean, so edges and texture hardly move it);
- the image is smoothed with a Gaussian of :data:`SMOOTH` pixels, which divides white
  noise by ``2 * sqrt(pi) * SMOOTH``; the statistic is the difference between the two
  classes' medians of the smoothed image, in units of that smoothed noise, the largest
  over channels (:func:`separation`).

Measured on noise-only fields (Poisson 10 and 100, Gaussian; 96-128 pixels): 1.2-1.5,
because classes cut out of the noise's own smooth blobs differ by about one smoothed-noise
unit. On fields with real objects, the three shared real cases and the synthetic stress
images (textured, low contrast, dim and small, uneven illumination): 6 and above. A split
is believed from :data:`MIN_SEPARATION` = 3.

When it is not believed, pixels that stand out from the background on their own (a robust
z-score above :data:`MIN_Z`, or above what Gaussian noise reaches anywhere in the image
with a 1 % chance where that is more; counts are Anscombe-transformed first) are the
foreground (:func:`outliers`): one bright spot on a dark field gives that spot. With none,
the result is empty. Nothing here imports napari, Qt or torch.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np
from scipy import ndimage as ndi

#: Gaussian smoothing (pixels) of the image before the classes' medians are compared.
SMOOTH = 2.0
#: Smallest separation (in smoothed-noise units) for which the prior's split is believed.
MIN_SEPARATION = 3.0
#: Robust z-score from which a single pixel stands out from the noise by itself.
MIN_Z = 6.0
#: Immerkaer's mask: second differences in both directions; white noise of standard
#: deviation s gives responses of standard deviation 6 s.
_MASK = np.array([[1.0, -2.0, 1.0], [-2.0, 4.0, -2.0], [1.0, -2.0, 1.0]])


def noise_sigma(plane: np.ndarray) -> float:
    """Standard deviation of the white noise of a 2-D plane (0 where there is none)."""
    response = ndi.convolve(np.asarray(plane, np.float64), _MASK, mode="reflect")
    inner = response[1:-1, 1:-1] if min(response.shape) > 2 else response
    return float(np.median(np.abs(inner)) / 0.6745 / 6.0)


def floor_sigma(raw: np.ndarray, scale: float = 1.0) -> float:
    """The smallest noise a plane of this dtype can have: its quantisation (one count over
    sqrt(12) for integers), or a millionth of the value range for floats (in units of
    ``scale``, see :func:`value_scale`)."""
    if raw.dtype.kind in "biu":
        return 1.0 / math.sqrt(12.0) / scale
    span = float(np.max(raw)) / scale - float(np.min(raw)) / scale if raw.size else 0.0
    return max(span * 1e-6, np.finfo(np.float64).tiny)


def value_scale(raws: list) -> float:
    """A power of two that brings the planes' largest magnitude under 2**64: 1 for any
    ordinary image; for values near the float limits (a float32 image at +-3e38, a
    float64 one at +-1e308), whose differences and sums overflow, the noise test works in
    units of it. A power of two keeps every value exact, and the test is scale-free."""
    peak = max((float(np.max(np.abs(np.asarray(r, np.float64)))) for r in raws), default=0.0)
    if not math.isfinite(peak) or peak <= 2.0**64:
        return 1.0
    return 2.0 ** (math.ceil(math.log2(peak)) - 64)


def separation(raws: list, foregrounds: list) -> dict:
    """How far apart the two classes are, compared with the noise.

    Parameters
    ----------
    raws : list of ndarray (C, Y, X)
        The image's planes as given (before normalisation, which clips).
    foregrounds : list of bool ndarray (Y, X)
        The prior's foreground per plane.

    Returns
    -------
    dict
        ``statistic`` (the separation in smoothed-noise units, the largest over
        channels), ``threshold``, ``separated`` (bool), ``noise_sigma`` (per channel, in
        the image's units).
    """
    n_fg = sum(int(f.sum()) for f in foregrounds)
    n_all = sum(f.size for f in foregrounds)
    channels = raws[0].shape[0]
    sigmas, stats = [], []
    reduction = 1.0 / (2.0 * math.sqrt(math.pi) * SMOOTH)
    scale = value_scale(raws)
    for c in range(channels):
        planes = [np.asarray(r[c], np.float64) / scale for r in raws]
        sigma = max(
            float(np.median([noise_sigma(p) for p in planes])),
            floor_sigma(np.asarray(raws[0][c]), scale),
        )
        sigmas.append(sigma * scale)
        if n_fg == 0 or n_fg == n_all:
            stats.append(0.0)
            continue
        smooth = [ndi.gaussian_filter(p, SMOOTH, mode="reflect") for p in planes]
        inside = np.concatenate([s[f] for s, f in zip(smooth, foregrounds)])
        outside = np.concatenate([s[~f] for s, f in zip(smooth, foregrounds)])
        stats.append(
            abs(float(np.median(inside)) - float(np.median(outside))) / (sigma * reduction)
        )
    statistic = max(stats)
    return {
        "statistic": round(statistic, 3),
        "threshold": MIN_SEPARATION,
        "separated": bool(statistic >= MIN_SEPARATION),
        "noise_sigma": [float(f"{s:.4g}") for s in sigmas],
    }


def outliers(raws: list) -> list:
    """Pixels that stand out from the background by themselves, per plane: the robust
    z-score of the channel mean beyond :func:`z_threshold` (either sign). Counts
    (non-negative integers) are first made Gaussian-like with Anscombe's transform, so a
    Poisson field's long upper tail is not taken for spots."""
    limits = outlier_limits(raws)
    return [outliers_of(r, limits) for r in raws]


def _channel_mean(raw: np.ndarray, counts: bool, scale: float = 1.0) -> np.ndarray:
    m = (np.asarray(raw, np.float64) / scale).mean(0)
    return 2.0 * np.sqrt(m + 0.375) if counts else m


def outlier_limits(raws: list, n_pixels: Optional[int] = None) -> dict:
    """The centre and the limit of :func:`outliers`, from ``raws`` (all planes, or a
    sample of them standing for ``n_pixels`` pixels)."""
    counts = all(np.asarray(r).dtype.kind in "bu" for r in raws)
    scale = value_scale(raws)
    means = [_channel_mean(r, counts, scale) for r in raws]
    pooled = np.concatenate([m.reshape(-1) for m in means])
    centre = float(np.median(pooled))
    # the larger of the two robust estimates: the values' own spread (right for a field
    # of noise, where this test runs) and the pixel-to-pixel one; never below quantisation
    spread = 1.4826 * float(np.median(np.abs(pooled - centre)))
    sigma = max(
        spread,
        float(np.median([noise_sigma(m) for m in means])),
        floor_sigma(np.asarray(raws[0]), scale),
    )
    limit = z_threshold(pooled.size if n_pixels is None else n_pixels) * sigma
    return {"centre": centre, "limit": limit, "counts": counts, "scale": scale}


def outliers_of(raw: np.ndarray, limits: dict) -> np.ndarray:
    """The outlying pixels of one ``(C, Y, X)`` plane under :func:`outlier_limits`."""
    mean = _channel_mean(raw, limits["counts"], limits.get("scale", 1.0))
    return np.abs(mean - limits["centre"]) > limits["limit"]


def z_threshold(n_pixels: int) -> float:
    """:data:`MIN_Z`, or more for large images: the z-score Gaussian noise exceeds
    somewhere in ``n_pixels`` pixels with a chance of 1 %."""
    from scipy.stats import norm

    return max(MIN_Z, float(norm.isf(0.01 / (2.0 * max(n_pixels, 1)))))


def decide(raws: list, foregrounds: list) -> tuple[list, dict]:
    """The prior's foregrounds where the data support them; else the outliers, or
    nothing. Returns ``(foregrounds, decision)``: ``decision`` is :func:`separation`'s
    dict plus ``result`` (``"prior"``, ``"outliers"`` or ``"empty"``) and, unless the
    prior's split was kept, ``message`` (a sentence for the user)."""
    decision = separation(raws, foregrounds)
    if decision["separated"]:
        return list(foregrounds), dict(decision, result="prior")
    spots = outliers(raws)
    n = sum(int(s.sum()) for s in spots)
    why = (
        f"the two classes of the prior differ by {decision['statistic']:.1f} noise "
        f"units ({MIN_SEPARATION:g} needed)"
    )
    if n:
        decision.update(
            result="outliers",
            message=(
                f"nothing but {n} pixel(s) stands out from the image's noise ({why}); those "
                f"pixels are the foreground"
            ),
        )
        return spots, decision
    decision.update(
        result="empty",
        message=(
            f"nothing in this image stands out from its noise ({why}); the labels are "
            f"empty. If it has objects, check the image (is it the right channel?), or use "
            f"more classes (n_classes=3)"
        ),
    )
    return [np.zeros_like(f, dtype=bool) for f in foregrounds], decision
