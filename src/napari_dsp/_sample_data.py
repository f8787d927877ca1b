"""Sample images for napari's File > Open Sample > napari-dsp (no downloads), and the
procedural nuclei image behind the first of them (the tests use it too)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi


def nuclei(
    shape: tuple[int, int] = (256, 256), n: int = 30, radius: tuple = (6, 12), seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """A fluorescence-like image of nuclei and its foreground mask.

    Bright, slightly textured ellipses on a dim uneven background with shot-like noise,
    blurred like a widefield microscope, as uint16 (values in the low thousands).

    Returns ``(image uint16 (Y, X), mask bool (Y, X))``.
    """
    rng = np.random.default_rng(seed)
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    mask = np.zeros(shape, dtype=bool)
    signal = np.zeros(shape, dtype=np.float32)
    placed = 0
    for _ in range(n * 20):
        if placed == n:
            break
        ry, rx = rng.uniform(*radius, size=2)
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        theta = rng.uniform(0, np.pi)
        c, s = np.cos(theta), np.sin(theta)
        u = ((yy - cy) * c + (xx - cx) * s) / ry
        v = (-(yy - cy) * s + (xx - cx) * c) / rx
        blob = u * u + v * v <= 1.0
        grown = ndi.binary_dilation(blob, iterations=2)
        if np.any(grown & mask):
            continue
        mask |= blob
        signal[blob] = rng.uniform(0.6, 1.0)
        placed += 1
    texture = ndi.gaussian_filter(rng.normal(0, 1, shape).astype(np.float32), 1.5)
    signal = signal * (1.0 + 0.25 * texture / (texture.std() + 1e-6))
    background = 0.08 + 0.06 * (xx / w) + 0.04 * (yy / h)
    clean = ndi.gaussian_filter(signal, 1.0) + background
    photons = rng.poisson(np.clip(clean, 0, None) * 400.0).astype(np.float32)
    image = 1000.0 + photons * 5.0 + rng.normal(0, 15.0, shape)
    return np.clip(image, 0, 65535).astype(np.uint16), mask


def nuclei_sample():
    """Procedural fluorescence-like nuclei (uint16) with their reference mask."""
    image, mask = nuclei((256, 256), n=30, seed=0)
    return [
        (image, {"name": "synthetic nuclei"}, "image"),
        (
            mask.astype("uint8"),
            {"name": "synthetic nuclei reference mask", "visible": False},
            "labels",
        ),
    ]


def coins_sample():
    """scikit-image's bundled 'coins' (greyscale, 303x384)."""
    from skimage import data

    return [(data.coins(), {"name": "coins"}, "image")]
