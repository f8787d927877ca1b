"""Sample images for napari's File > Open Sample > napari-dsp (no downloads)."""

from __future__ import annotations

from . import _synthetic


def nuclei_sample():
    """Procedural fluorescence-like nuclei (uint16) with their reference mask."""
    image, mask = _synthetic.nuclei((256, 256), n=30, seed=0)
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
