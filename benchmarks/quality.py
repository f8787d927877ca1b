"""Foreground IoU of napari-dsp's default segmentation on the shared reference cases.

Reads ``../shared/data/cases/*.npz`` (``image``, ``mask``) beside the repository, or the
folder given with ``--cases``. Otsu and Li thresholds are computed in the same run, on the
same normalised intensities, with the foreground side chosen by the same border rule
napari-dsp uses (no look at the mask). Prints a table; ``--json FILE`` also saves it.

    python benchmarks/quality.py [--seed 0] [--cases DIR] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from skimage.filters import threshold_li, threshold_otsu

from napari_dsp import segment, tune_cpu_allocator
from napari_dsp._cluster import choose_foreground
from napari_dsp._image import normalize, to_channels_first

DEFAULT_CASES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cases"


def iou(pred: np.ndarray, mask: np.ndarray) -> float:
    pred, mask = pred.astype(bool), mask.astype(bool)
    union = np.logical_or(pred, mask).sum()
    return float(np.logical_and(pred, mask).sum() / union) if union else 1.0


def dice(pred: np.ndarray, mask: np.ndarray) -> float:
    pred, mask = pred.astype(bool), mask.astype(bool)
    total = pred.sum() + mask.sum()
    return float(2 * np.logical_and(pred, mask).sum() / total) if total else 1.0


def threshold_foreground(image: np.ndarray, method) -> np.ndarray:
    """A global threshold on the (channel-mean) intensity, foreground by the border rule."""
    gray = normalize(to_channels_first(image)).mean(0)
    above = (gray > method(gray)).astype(np.uint8)
    fg, _ = choose_foreground(above)
    return above == fg


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=Path, default=DEFAULT_CASES)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--precision", default="float32")
    args = parser.parse_args(argv)
    files = sorted(args.cases.glob("*.npz"))
    if not files:
        print(f"no cases found in {args.cases} (the shared data folder is absent); "
              f"nothing to measure", file=sys.stderr)
        return 0
    tune_cpu_allocator()
    rows = []
    for path in files:
        case = np.load(path)
        image, mask = case["image"], case["mask"]
        t0 = time.perf_counter()
        labels = segment(image, seed=args.seed, precision=args.precision)
        seconds = time.perf_counter() - t0
        row = {"case": path.stem, "shape": list(image.shape), "seconds": round(seconds, 1)}
        for name, pred in (("dsp", labels > 0),
                           ("otsu", threshold_foreground(image, threshold_otsu)),
                           ("li", threshold_foreground(image, threshold_li))):
            row[f"{name}_iou"] = iou(pred, mask)
            row[f"{name}_dice"] = dice(pred, mask)
        rows.append(row)
        print(f"{path.stem}: dsp {row['dsp_iou']:.3f}  otsu {row['otsu_iou']:.3f}  "
              f"li {row['li_iou']:.3f}  ({seconds:.1f} s)", file=sys.stderr)
    cols = ["dsp", "otsu", "li"]
    print(f"\n| case | {' | '.join(c + ' IoU' for c in cols)} | dsp Dice | dsp time |")
    print("|---|" + "---|" * (len(cols) + 2))
    for r in rows:
        print(f"| {r['case']} | " + " | ".join(f"{r[c + '_iou']:.3f}" for c in cols)
              + f" | {r['dsp_dice']:.3f} | {r['seconds']:.1f} s |")
    means = {c: float(np.mean([r[c + "_iou"] for r in rows])) for c in cols}
    print("| **mean** | " + " | ".join(f"{means[c]:.3f}" for c in cols) + " | | |")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "mean_iou": means}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
