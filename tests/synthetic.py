"""Procedural test images with known answers (no downloads, no files): the stress images
of the quality checks, textured mosaics, scribbles, discs. The nuclei image is the sample
data's (:func:`napari_dsp._sample_data.nuclei`), re-exported here for the tests.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from napari_dsp._sample_data import nuclei  # noqa: F401 - the tests' nuclei image


def dark_on_bright(
    shape: tuple[int, int] = (64, 64), seed: int = 0, noise: float = 0.08
) -> tuple[np.ndarray, np.ndarray]:
    """A dark disc on a bright background with noise; returns ``(float32 image, mask)``."""
    rng = np.random.default_rng(seed)
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    mask = (yy - h / 2) ** 2 + (xx - w / 2) ** 2 <= (min(h, w) / 4) ** 2
    image = np.where(mask, 0.25, 0.75) + rng.normal(0, noise, shape)
    return image.astype(np.float32), mask


def textured_regions(n: int, size: int = 96, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` Voronoi regions, each with its own mean intensity and sinusoidal texture,
    plus noise. Returns ``(float32 image (size, size), region ids 0..n-1)``."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    pts = rng.uniform(0, size, (n, 2))
    dist = (yy[None] - pts[:, 0, None, None]) ** 2 + (xx[None] - pts[:, 1, None, None]) ** 2
    truth = dist.argmin(0)
    means = np.linspace(0.15, 0.85, n)
    rng.shuffle(means)
    image = np.zeros((size, size), np.float32)
    for k in range(n):
        freq = 0.3 + 0.4 * k / n
        texture = 0.08 * np.sin(freq * xx + k) * np.cos(freq * yy * (1 + k % 2))
        region = means[k] + texture + rng.normal(0, 0.05, (size, size))
        image[truth == k] = region[truth == k]
    return image, truth


def scribbles_for(truth: np.ndarray, seed: int = 0, radius: int = 2) -> np.ndarray:
    """A short stroke inside each region (ids 1..n), away from its edges."""
    rng = np.random.default_rng(seed)
    strokes = np.zeros(truth.shape, np.int32)
    for k in np.unique(truth):
        inner = ndi.binary_erosion(truth == k, iterations=radius + 3)
        ys, xs = np.nonzero(inner if inner.any() else truth == k)
        i = rng.integers(len(ys))
        y, x = ys[i], xs[i]
        line = np.zeros(truth.shape, bool)
        line[max(0, y - radius) : y + radius + 1, max(0, x - 6) : x + 7] = True
        strokes[line & (truth == k)] = k + 1
    return strokes


def touching_discs(
    shape: tuple[int, int] = (128, 128), radius: float = 7.0, seed: int = 0
) -> tuple[np.ndarray, int]:
    """Discs on a grid where every second disc touches (overlaps by ~2 px) a partner.

    Returns ``(mask bool, number of discs)``.
    """
    rng = np.random.default_rng(seed)
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    mask = np.zeros(shape, bool)
    count = 0
    step = int(4 * radius + 6)
    for cy in range(step // 2, h - step // 2 + 1, step):
        for cx in range(int(radius) + 4, w - 3 * int(radius) - 4, step):
            r1, r2 = radius * rng.uniform(0.9, 1.1), radius * rng.uniform(0.9, 1.1)
            mask |= (yy - cy) ** 2 + (xx - cx) ** 2 <= r1**2
            cx2 = cx + r1 + r2 - 2  # overlaps by about 2 pixels: touching
            mask |= (yy - cy) ** 2 + (xx - cx2) ** 2 <= r2**2
            count += 2
    return mask, count


# ---------------------------------------------------------------------------------------
# Stress images for the quality benchmark: each returns ``(float32 image, bool mask)``,
# foreground = True. Small (160 x 160) so a default fit takes seconds.


def _blobs(
    shape: tuple[int, int], n: int, radius: tuple, rng: np.random.Generator, gap: int = 3
) -> list:
    """Up to ``n`` non-touching random ellipses (boolean masks)."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    taken = np.zeros(shape, bool)
    blobs = []
    for _ in range(n * 30):
        if len(blobs) == n:
            break
        ry, rx = rng.uniform(*radius, size=2)
        cy = rng.uniform(ry + 2, h - ry - 2)
        cx = rng.uniform(rx + 2, w - rx - 2)
        theta = rng.uniform(0, np.pi)
        c, s = np.cos(theta), np.sin(theta)
        u = ((yy - cy) * c + (xx - cx) * s) / ry
        v = (-(yy - cy) * s + (xx - cx) * c) / rx
        blob = u * u + v * v <= 1.0
        if np.any(ndi.binary_dilation(blob, iterations=gap) & taken):
            continue
        taken |= blob
        blobs.append(blob)
    return blobs


def _blob_mask(
    shape: tuple[int, int], n: int, radius: tuple, rng: np.random.Generator
) -> np.ndarray:
    """The union of :func:`_blobs` as one boolean mask."""
    mask = np.zeros(shape, bool)
    for blob in _blobs(shape, n, radius, rng):
        mask |= blob
    return mask


def _texture(shape: tuple[int, int], rng: np.random.Generator, scale: float) -> np.ndarray:
    """Zero-mean, unit-std random texture with grain ``scale`` pixels."""
    t = ndi.gaussian_filter(rng.normal(0, 1, shape), scale)
    return ((t - t.mean()) / (t.std() + 1e-9)).astype(np.float32)


def stress_textured(
    shape: tuple[int, int] = (160, 160), seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Objects 0.15 brighter than the background, both covered by a fine random texture
    whose spread is as large as that difference: a pixel's value says little, a region's
    average says it all."""
    rng = np.random.default_rng(seed)
    mask = _blob_mask(shape, 8, (12, 24), rng)
    image = np.where(mask, 0.55, 0.40) + 0.15 * _texture(shape, rng, 0.8)
    image += 0.03 * rng.normal(0, 1, shape)
    return image.astype(np.float32), mask


def stress_textured_stripes(
    shape: tuple[int, int] = (160, 160), seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Striped objects on a dotted background: strong periodic textures of different
    orientation and grain whose ranges overlap; the objects are 0.12 brighter on average."""
    rng = np.random.default_rng(seed)
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    mask = _blob_mask(shape, 7, (14, 26), rng)
    stripes = 0.25 * np.sin(0.9 * (xx + 0.5 * yy))
    dots = 0.25 * np.sin(0.7 * xx) * np.sin(0.7 * yy)
    image = np.where(mask, 0.56 + stripes, 0.44 + dots) + 0.04 * rng.normal(0, 1, shape)
    return image.astype(np.float32), mask


def stress_uneven(
    shape: tuple[int, int] = (160, 160), seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Bright objects under illumination that falls from 1 to 0.35 across the field, so
    objects on the dark side are dimmer than the background on the bright side."""
    rng = np.random.default_rng(seed)
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    mask = _blob_mask(shape, 14, (7, 14), rng)
    light = 1.0 - 0.65 * (xx / w) * (0.6 + 0.4 * yy / h)
    image = ndi.gaussian_filter(np.where(mask, 0.8, 0.3), 1.0) * light
    image += 0.03 * rng.normal(0, 1, shape)
    return image.astype(np.float32), mask


def stress_low_contrast(
    shape: tuple[int, int] = (160, 160), seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Objects only 0.1 above the background under pixel noise of 0.1 (SNR 1)."""
    rng = np.random.default_rng(seed)
    mask = _blob_mask(shape, 10, (9, 18), rng)
    image = ndi.gaussian_filter(np.where(mask, 0.5, 0.4), 0.7)
    image += 0.1 * rng.normal(0, 1, shape)
    return image.astype(np.float32), mask


def stress_dim_small(
    shape: tuple[int, int] = (160, 160), seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """A few large bright objects and many small dim ones (a fifth as bright), as in a
    fluorescence field with cells of very different expression."""
    rng = np.random.default_rng(seed)
    blobs = _blobs(shape, 24, (3, 6), rng, gap=4)
    rng2 = np.random.default_rng(seed + 1)
    mask = np.zeros(shape, bool)
    signal = np.zeros(shape, np.float32)
    for b in _blobs(shape, 4, (16, 24), rng2, gap=6):
        mask |= b
        signal[b] = 1.0
    for b in blobs:
        if not np.any(ndi.binary_dilation(b, iterations=4) & mask):
            mask |= b
            signal[b] = 0.2
    image = ndi.gaussian_filter(signal, 1.0) + 0.05
    image = image + 0.02 * rng.normal(0, 1, shape)
    return image.astype(np.float32), mask


#: The stress cases by name, as used by ``benchmarks/quality.py``.
STRESS_CASES = {
    "textured": stress_textured,
    "textured_stripes": stress_textured_stripes,
    "uneven_illumination": stress_uneven,
    "low_contrast": stress_low_contrast,
    "dim_small": stress_dim_small,
}
