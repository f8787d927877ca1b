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


def phase_contrast(
    shape: tuple[int, int] = (96, 96), seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """A phase-contrast field: dark rods (bacteria) on a mid-grey background, each ringed
    by a bright halo, two of them touching along a one-pixel bright gap, with noise;
    ``(uint16 image, cells mask)``. Returns the cells as the reference (halos and the gap
    are background)."""
    rng = np.random.default_rng(seed)
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    cells = np.zeros(shape, bool)
    rods = [(0.3, 0.3, 0.0), (0.7, 0.25, 1.2), (0.3, 0.72, 0.5), (0.72, 0.7, -0.6)]
    for cy, cx, angle in rods:
        dy, dx = yy - cy * h, xx - cx * w
        u = dx * np.cos(angle) + dy * np.sin(angle)
        v = -dx * np.sin(angle) + dy * np.cos(angle)
        cells |= (np.abs(u) <= 0.12 * w) & (np.abs(v) <= 0.035 * h)
    # two rods side by side, a one-pixel gap between them
    y0, x0 = int(0.5 * h) - 4, int(0.45 * w)
    pair = np.zeros(shape, bool)
    pair[y0 : y0 + 3, x0 : x0 + 22] = True
    pair[y0 + 4 : y0 + 7, x0 : x0 + 22] = True
    cells |= pair
    gap = np.zeros(shape, bool)
    gap[y0 + 3, x0 : x0 + 22] = True
    near = ndi.binary_dilation(cells, iterations=3) & ~cells
    image = np.full(shape, 0.5)
    image[near] = 0.8
    image[gap] = 0.85
    image[cells] = 0.18
    image = ndi.gaussian_filter(image, 0.7) + rng.normal(0, 0.02, shape)
    return (np.clip(image, 0, 1) * 4000).astype(np.uint16), cells


def stained_section(
    shape: tuple[int, int] = (96, 96), seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """An H&E-like RGB section: purple-blue nuclei (haematoxylin) in pink cytoplasm
    (eosin) beside a patch of bare glass, with noise; ``(uint8 RGB image, nuclei
    mask)``. Nuclei are darker than the cytoplasm and also bluer."""
    rng = np.random.default_rng(seed)
    h, w = shape
    stained = _blob_mask(shape, n=9, radius=(4, 8), rng=rng)
    rgb = np.empty(shape + (3,))
    rgb[...] = (225, 150, 200)  # eosin-pink cytoplasm
    glass = np.zeros(shape, bool)
    glass[: h // 4, : w // 3] = True
    rgb[glass & ~stained] = (242, 240, 244)
    rgb[stained] = (95, 80, 165)  # haematoxylin purple-blue
    rgb = ndi.gaussian_filter(rgb, (0.8, 0.8, 0)) + rng.normal(0, 6, rgb.shape)
    return np.clip(rgb, 0, 255).astype(np.uint8), stained


def bright_crowd(shape: tuple[int, int] = (96, 96), seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A crowded fluorescence field: bright cells cover the image border and most of the
    field, the dark background shows in pockets between them; ``(float32 image, cells
    mask)``. The border rule takes the wrong side here; a modality that knows objects are
    bright does not."""
    rng = np.random.default_rng(seed)
    pockets = _blob_mask(shape, n=6, radius=(6, 10), rng=rng)
    pockets[:4], pockets[-4:], pockets[:, :4], pockets[:, -4:] = False, False, False, False
    cells = ~pockets
    image = np.where(cells, 0.7, 0.1) + rng.normal(0, 0.04, shape)
    return ndi.gaussian_filter(image, 0.7).astype(np.float32), cells
