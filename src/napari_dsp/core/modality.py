"""Modalities: what the prior is fitted to, and how its classes become the foreground,
for the kind of image a person says they have (``Settings.modality``).

- ``"auto"``: the image's channels; two classes, the foreground the class that covers
  less of the image border (:func:`napari_dsp.core.cluster.choose_foreground`). Nothing
  is assumed about the image.
- ``"fluorescence"``: objects are brighter than the background. The image's channels;
  two classes, the brighter one the foreground (whatever covers the border: a field
  crowded with nuclei keeps its side); the outlines re-drawn from the pixels in
  logarithmic units (:func:`refine_space`), where dim and bright objects have alike
  spreads, so a dim nucleus beside bright ones is one class with them.
- ``"phase"``: phase contrast. Cells are darker than the background, ringed by bright
  halos, and a dense colony is a texture whose mean is the background's. The prior is
  fitted to the intensity and its local contrast (:func:`local_contrast`, the standard
  deviation in a Gaussian window, as PHANTAST uses it); three classes, the one of
  least local contrast the background (flat); every other pixel darker than the
  background by a quarter of the way to the cells' median (and by at least
  :data:`PHASE_MIN_Z` smoothed-noise units) is a cell (:class:`PhaseCut`), so halos and
  the bright gaps between touching cells stay background (holes are not filled).
- ``"brightfield-stain"``: a stained section in transmitted light (H&E, haematoxylin
  and DAB...). The prior is fitted to the stain densities of a colour deconvolution
  (:func:`stain_densities`: optical density against the image's own white, projected
  onto haematoxylin, eosin and DAB with Ruifrok and Johnston's matrix, as scikit-image's
  ``rgb2hed``), next to the colour channels; two classes of the haematoxylin
  channel's prior, the denser one the foreground (nuclei); the prior's outlines are
  kept (re-drawn from the noisy pixel densities they lost more than they gained).

:func:`suggest` says which modality an image looks like (a halo statistic, a stain
colour test); the product suggests it and never switches by itself. Measured on the
evaluation set (``benchmarks/quality.py --evalset``). Nothing here imports napari, Qt
or torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
from scipy import ndimage as ndi

from .decide import noise_sigma, separation

#: The Gaussian window (sigma, pixels) of the local contrast fitted beside a phase image.
LOCAL_SIGMA = 2.0
#: Phase: light smoothing of the pixels before the cut (sigma, pixels).
PHASE_SMOOTH = 0.5
#: Phase: the cut lies this fraction of the way from the background's level to the
#: cells' median (a quarter: the dark core and its rim, not the halo).
PHASE_DEPTH = 0.25
#: Phase: a cell pixel is darker than the background by at least this many units of the
#: smoothed pixel noise.
PHASE_MIN_Z = 3.0
#: Fluorescence: the outlines are re-drawn from ``log(pixel + FLUO_OFFSET)`` (normalised
#: intensities in [0, 1]).
FLUO_OFFSET = 0.05
#: The derived channels' names, per modality that fits some (the metadata says them).
DERIVED_NAMES = {
    "phase": ("local contrast",),
    "brightfield-stain": ("haematoxylin", "eosin", "DAB"),
}
#: Stained section: the foreground's median haematoxylin density (optical-density units
#: of Ruifrok and Johnston's matrix) must reach this; measured: nuclei 1.8-2.8 and the
#: rest of the tissue 0.6-1.0 on the three H&E patches of the evaluation set, bare glass
#: and eosin 0 or below.
STAIN_FLOOR = 0.25
#: Suggestion thresholds (see :func:`suggest`).
HALO_Z = 3.0
HALO_SHARE = 0.01
HALO_RING = 0.02
STAIN_TISSUE = 0.2
STAIN_GREEN = 0.6
STAIN_LIT = 0.3


def grey(normed: np.ndarray) -> np.ndarray:
    """The channel mean of a normalised ``(C, Y, X)`` plane, float32."""
    return np.asarray(normed, np.float32).mean(0)


def local_contrast(plane: np.ndarray, sigma: float = LOCAL_SIGMA) -> np.ndarray:
    """The standard deviation of ``plane`` (2-D) in a Gaussian window of ``sigma``
    pixels, stretched to [0, 1] by its 99.9th percentile, float32."""
    x = np.asarray(plane, np.float64)
    mean = ndi.gaussian_filter(x, sigma, mode="reflect")
    var = ndi.gaussian_filter(x * x, sigma, mode="reflect") - mean * mean
    sd = np.sqrt(np.maximum(var, 0.0))
    top = float(np.percentile(sd, 99.9))
    if not top > 0:
        return np.zeros(x.shape, np.float32)
    return np.clip(sd / top, 0.0, 1.0).astype(np.float32)


def stain_densities(raw: np.ndarray) -> np.ndarray:
    """Haematoxylin, eosin and DAB densities ``(3, Y, X)`` of an RGB plane as read
    (``(3, Y, X)``), each stretched to [0, 1] between its 0.1 and 99.9 percentiles (the
    fit's channels; whether there is any haematoxylin at all is judged on the
    unstretched density, :func:`stain_decision`).

    The optical density is taken against the image's own white (each channel's 99.5th
    percentile: the unstained glass), so a dim or over-exposed image gives the same
    densities; then Ruifrok and Johnston's stain matrix (scikit-image's
    ``hed_from_rgb``) separates the stains."""
    from skimage.color.colorconv import hed_from_rgb

    x = np.asarray(raw, np.float64)
    check_channels("brightfield-stain", x.shape[0] if x.ndim == 3 else 1)
    od = _optical_density(x)
    stains = np.tensordot(hed_from_rgb.T, od, axes=1)
    lo, hi = np.percentile(stains.reshape(3, -1), [0.1, 99.9], axis=1)
    span = np.where(hi > lo, hi - lo, 1.0)
    out = (stains - lo[:, None, None]) / span[:, None, None]
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def _light(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """An RGB ``(3, Y, X)`` plane as read, as non-negative float64, and each channel's
    white (its 99.5th percentile: the glass; 0 for a channel without light)."""
    x = np.asarray(raw, np.float64)
    x = x - min(0.0, float(x.min()))
    return x, np.percentile(x.reshape(3, -1), 99.5, axis=1)


def _density(x: np.ndarray, white: np.ndarray) -> np.ndarray:
    """The optical density of :func:`_light`'s pixels against its white (a channel with
    no light counts as white 1)."""
    white = np.where(white > 0, white, 1.0)
    return -np.log(np.clip(x / white[:, None, None], 1e-3, 1.0))


def _optical_density(raw: np.ndarray) -> np.ndarray:
    """``(3, Y, X)`` optical density of an RGB plane against its own white."""
    return _density(*_light(raw))


def haematoxylin(raw: np.ndarray) -> np.ndarray:
    """The haematoxylin density ``(1, Y, X)`` of an RGB plane as read, in optical-density
    units (not stretched: a section without nuclei has little of it)."""
    from skimage.color.colorconv import hed_from_rgb

    return np.tensordot(hed_from_rgb[:, 0], _optical_density(raw), axes=1)[None]


def stain_decision(densities: list, foregrounds: list) -> dict:
    """The noise test of a stained section (:func:`napari_dsp.core.decide.decide`) on
    the haematoxylin density the classes were split by, and a floor: the foreground's
    median density must reach :data:`STAIN_FLOOR` (bare glass and eosin-only tissue have
    about none), else nothing is segmented. Isolated pixels are not objects here."""
    decision = separation(densities, foregrounds)
    inside = np.concatenate([d[0][f] for d, f in zip(densities, foregrounds)])
    level = float(np.median(inside)) if inside.size else 0.0
    decision["haematoxylin_median"] = round(level, 4)
    if decision["separated"] and level >= STAIN_FLOOR:
        return dict(decision, result="prior")
    why = (
        f"the haematoxylin-rich class has a median density of {level:.2f} ({STAIN_FLOOR:g} needed)"
        if decision["separated"]
        else f"the two classes differ in haematoxylin by {decision['statistic']:.1f} noise "
        f"units ({decision['threshold']:g} needed)"
    )
    return dict(
        decision,
        result="empty",
        message=(
            f"no nuclei stand out in this stained section ({why}); the labels are empty. "
            f"If it has nuclei, check the image, or use modality 'auto'"
        ),
    )


def check_channels(modality: str, n_channels: int) -> None:
    """Refuse an image whose channels the modality cannot use (a stained section is
    RGB), before anything is fitted."""
    if modality == "brightfield-stain" and n_channels != 3:
        raise ValueError(
            f"the modality 'brightfield-stain' needs an RGB image (3 colour channels); "
            f"this one has {n_channels}. Choose another modality, or pass the colour image"
        )


def derived_channels(
    modality: str, normed: np.ndarray, raw: Optional[np.ndarray]
) -> Optional[np.ndarray]:
    """The channels fitted next to (``"phase"``: the local contrast) or instead of
    (``"brightfield-stain"``: the stain densities) the image's, ``(K, Y, X)`` float32 in
    [0, 1]; None for the modalities that fit the image alone."""
    if modality == "phase":
        return local_contrast(grey(normed))[None]
    if modality == "brightfield-stain":
        return stain_densities(raw if raw is not None else normed)
    return None


def clustered(modality: str, features: np.ndarray, n_image: int) -> np.ndarray:
    """What K-means looks at, of a prior's ``features`` (the image's ``n_image``
    channels, then the derived ones): the haematoxylin density alone for a stained
    section (nuclei are where it is; eosin and bare glass are both background: clustered
    with them, two classes split glass from tissue), everything otherwise."""
    if modality == "brightfield-stain" and features.shape[0] > n_image:
        return features[n_image : n_image + 1]
    return features


def refine_space(modality: str, normed: np.ndarray) -> np.ndarray:
    """The pixels the outline refinement models (:mod:`napari_dsp.core.postprocess`):
    their logarithm for fluorescence, the normalised pixels otherwise (phase and
    stained sections are not refined: see the module's docstring)."""
    if modality == "fluorescence":
        return np.log(np.asarray(normed, np.float32) + np.float32(FLUO_OFFSET))
    return normed


@dataclass(frozen=True)
class PhaseCut:
    """The phase-contrast rule learnt from the prior's three classes: ``background``,
    the class of least local contrast (its rank in the cluster model); ``level``, the
    median of the background's smoothed pixels; ``cut``, the level under which a pixel
    outside the background is a cell (see the module's docstring); ``noise``, the
    smoothed pixel noise it was judged against."""

    background: int
    level: float
    cut: float
    noise: float

    def apply(self, labels: np.ndarray, normed: np.ndarray) -> np.ndarray:
        """The cells (bool ``(Y, X)``) of one plane from its 3-class ``labels`` and its
        normalised pixels."""
        smooth = ndi.gaussian_filter(grey(normed), PHASE_SMOOTH, mode="reflect")
        return (smooth < self.cut) & (labels != self.background)

    def info(self) -> dict:
        """The numbers behind the rule, for the metadata."""
        return {
            "phase_background_level": round(self.level, 4),
            "phase_cut": round(self.cut, 4),
            "phase_noise": round(self.noise, 5),
        }


def learn_phase(priors: list, labels: list, normed: list) -> PhaseCut:
    """The :class:`PhaseCut` of planes whose priors (intensity then local contrast),
    3-class labels (1..3) and normalised pixels are given."""
    sums = np.zeros(4)
    counts = np.zeros(4)
    for prior, lab in zip(priors, labels):
        sums += np.bincount(lab.reshape(-1), weights=prior[-1].reshape(-1), minlength=4)[:4]
        counts += np.bincount(lab.reshape(-1), minlength=4)[:4]
    means = np.where(counts > 0, sums / np.maximum(counts, 1), np.inf)
    means[0] = np.inf
    background = int(np.argmin(means))
    smooth = [ndi.gaussian_filter(grey(n), PHASE_SMOOTH, mode="reflect") for n in normed]
    level = float(
        np.median(np.concatenate([s[lab == background] for s, lab in zip(smooth, labels)]))
    )
    reduction = 2.0 * math.sqrt(math.pi) * PHASE_SMOOTH
    noise = max(float(np.median([noise_sigma(grey(n)) for n in normed])) / reduction, 1e-6)
    floor = level - PHASE_MIN_Z * noise
    dark = np.concatenate([s[(s < floor) & (lab != background)] for s, lab in zip(smooth, labels)])
    cells = float(np.median(dark)) if dark.size else level
    return PhaseCut(background, level, min(floor, level - PHASE_DEPTH * (level - cells)), noise)


# -- what an image looks like -------------------------------------------------------


def halo_statistics(normed: np.ndarray) -> dict:
    """The phase-contrast signature of a normalised ``(C, Y, X)`` plane (its channel
    mean, smoothed by one pixel): the background is the histogram's mode, its spread
    the mode's half width at half height; the shares of pixels darker and brighter than
    the mode by :data:`HALO_Z` spreads, and the share of the ring around the dark ones
    (3 pixels wide) that is bright: halos ring dark cells. A fluorescence image has no
    pixels below its background; a stained section no bright rims."""
    smooth = ndi.gaussian_filter(grey(normed), 1.0, mode="reflect")
    counts, edges = np.histogram(smooth, 256, range=(0.0, 1.0))
    centres = (edges[:-1] + edges[1:]) / 2
    peak = int(np.argmax(counts))
    lo = hi = peak
    while lo > 0 and counts[lo] > counts[peak] / 2:
        lo -= 1
    while hi < len(counts) - 1 and counts[hi] > counts[peak] / 2:
        hi += 1
    level = float(centres[peak])
    spread = max(float(centres[hi] - centres[lo]) / 2, 1.0 / len(counts))
    dark = smooth < level - HALO_Z * spread
    bright = smooth > level + HALO_Z * spread
    ring = ndi.binary_dilation(dark, iterations=3) & ~dark if dark.any() else dark
    return {
        "background_level": round(level, 4),
        "dark_share": round(float(dark.mean()), 4),
        "bright_share": round(float(bright.mean()), 4),
        "bright_ring_share": round(float(bright[ring].mean()) if ring.any() else 0.0, 4),
    }


def stain_statistics(raw: np.ndarray) -> dict:
    """The stained-section signature of an RGB ``(3, Y, X)`` plane as read: the share
    of pixels that absorb (optical density summed over channels above 0.3, against the
    image's white) and, of those, the share that absorb green most (haematoxylin and
    eosin both do; a blue sky, foliage or a fluorescence composite does not)."""
    x, white = _light(raw)
    # transmitted light: every channel has light, and the median pixel is not dark
    lit = float(min(np.median(x[c]) / white[c] if white[c] > 0 else 0.0 for c in range(3)))
    od = _density(x, white)
    tissue = od.sum(0) > 0.3
    n = int(tissue.sum())
    green = (od[1] > od[0]) & (od[1] > od[2]) & tissue
    return {
        "median_over_white": round(lit, 4),
        "absorbing_share": round(n / tissue.size, 4),
        "green_absorbing_share": round(int(green.sum()) / max(n, 1), 4),
    }


def suggest(raw: np.ndarray, normed: np.ndarray) -> Optional[dict]:
    """Which modality an image looks like, if it looks like one that is not chosen by
    default: ``{"modality", "why", **statistics}``, or None.

    - a stained section: RGB in transmitted light (every channel's median pixel at
      least :data:`STAIN_LIT` of its white: a fluorescence composite is dark), with at
      least :data:`STAIN_TISSUE` of the pixels absorbing and at least
      :data:`STAIN_GREEN` of those absorbing green most;
    - phase contrast: one channel (or grey RGB), with at least :data:`HALO_SHARE` of the
      pixels darker and as many brighter than the background (:func:`halo_statistics`),
      and at least :data:`HALO_RING` of the dark objects' rims bright.
    """
    raw = np.asarray(raw)
    colour = raw.shape[0] == 3 and not (
        np.array_equal(raw[0], raw[1]) and np.array_equal(raw[1], raw[2])
    )
    if colour:
        stats = stain_statistics(raw)
        if (
            stats["median_over_white"] >= STAIN_LIT
            and stats["absorbing_share"] >= STAIN_TISSUE
            and stats["green_absorbing_share"] >= STAIN_GREEN
        ):
            return dict(
                stats,
                modality="brightfield-stain",
                why=(
                    f"{100 * stats['absorbing_share']:.0f} % of the pixels absorb light, "
                    f"{100 * stats['green_absorbing_share']:.0f} % of them green most, as "
                    f"stained tissue does"
                ),
            )
        return None
    if raw.shape[0] not in (1, 3):
        return None
    stats = halo_statistics(normed)
    if (
        stats["dark_share"] >= HALO_SHARE
        and stats["bright_share"] >= HALO_SHARE
        and stats["bright_ring_share"] >= HALO_RING
    ):
        return dict(
            stats,
            modality="phase",
            why=(
                f"dark objects ringed by bright halos ({100 * stats['dark_share']:.0f} % of "
                f"the pixels darker than the background, {100 * stats['bright_share']:.0f} % "
                f"brighter; {100 * stats['bright_ring_share']:.0f} % of the dark objects' rims "
                f"bright)"
            ),
        )
    return None


#: How the suggestion names each modality.
NAMES = {
    "phase": "phase contrast",
    "brightfield-stain": "a stained section in transmitted light",
}


def suggestion(raw: np.ndarray, normed: np.ndarray) -> Optional[dict]:
    """:func:`suggest`'s finding with ``message``, the sentence the command line and the
    widget show (the choice is the user's: nothing is switched)."""
    found = suggest(raw, normed)
    if found is None:
        return None
    m = found["modality"]
    return dict(
        found,
        message=(
            f"this image looks like {NAMES[m]} ({found['why']}); modality '{m}' is made "
            f"for it (--modality {m}, or modality='{m}'), the result here assumes nothing"
        ),
    )
