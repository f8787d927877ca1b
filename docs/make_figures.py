"""Regenerate docs/images/comparison.png, the README's figure: two hard images segmented
by Otsu's threshold, Li's threshold and napari-dsp, side by side.

    python docs/make_figures.py [out.png]

The images are the stress images of ``tests/synthetic.py`` (built from a seed, with their
true masks): textured objects on a textured background (the objects 0.15 brighter, the
texture as strong: SNR about 1), and objects 0.1 above the background under pixel noise
of 0.1. The thresholds pick their foreground side by the same border rule as napari-dsp
(``benchmarks/quality.py``, which measures all three on all the stress images); napari-dsp
runs with its defaults and seed 0. Each panel's title gives the IoU against the true mask.
Needs only the package's own dependencies (Pillow draws the figure).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.synthetic
sys.path.insert(0, str(ROOT / "benchmarks"))  # quality.py: the thresholds, IoU

from skimage.filters import threshold_li, threshold_otsu  # noqa: E402
from tests.synthetic import stress_low_contrast, stress_textured  # noqa: E402

from napari_dsp import segment  # noqa: E402
from quality import iou, threshold_foreground  # noqa: E402

CASES = {
    "textured objects and background, SNR ~1": stress_textured,
    "low contrast, SNR 1": stress_low_contrast,
}
SCALE = 2  # each 160 x 160 image drawn at 320 x 320
ORANGE = np.array([255, 140, 0], np.float32)


def panel(image: np.ndarray, mask=None) -> Image.Image:
    gray = (image - image.min()) / (np.ptp(image) or 1.0)
    rgb = np.repeat(gray[..., None] * 255.0, 3, axis=-1)
    if mask is not None:
        rgb[mask] = 0.45 * rgb[mask] + 0.55 * ORANGE
    out = Image.fromarray(rgb.astype(np.uint8))
    return out.resize((image.shape[1] * SCALE, image.shape[0] * SCALE), Image.NEAREST)


def main(out: Path) -> int:
    font = ImageFont.load_default(size=15)
    rows = []
    for title, make in CASES.items():
        image, truth = make(seed=0)
        results = {
            "Otsu": threshold_foreground(image, threshold_otsu),
            "Li": threshold_foreground(image, threshold_li),
            "napari-dsp": segment(image, seed=0) == 1,
        }
        panels = [(f"image: {title}", panel(image))]
        for name, labels in results.items():
            panels.append((f"{name}: IoU {iou(labels, truth):.2f}", panel(image, labels)))
            print(f"{title}: {name} IoU {iou(labels, truth):.3f}")
        rows.append(panels)
    size = rows[0][0][1].size[0]
    pad, head = 8, 24
    width = len(rows[0]) * (size + pad) + pad
    height = len(rows) * (size + head + pad) + pad
    figure = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(figure)
    for r, panels in enumerate(rows):
        y = pad + r * (size + head + pad)
        for c, (text, image) in enumerate(panels):
            x = pad + c * (size + pad)
            draw.text((x, y + 2), text, fill="black", font=font)
            figure.paste(image, (x, y + head))
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.save(out, optimize=True)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs/images/comparison.png"))
