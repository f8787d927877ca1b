"""A 4096 x 4096 grayscale plane on the CPU with the automatic working resolution.

Each run is a fresh Python process; its peak memory is the largest resident size of its
whole process tree (worker processes included), sampled every 50 ms.

1. ``large``: ``segment`` of a 4096 x 4096 uint16 synthetic nuclei field (64 tiles of
   ``tests.synthetic.nuclei``, known mask) with the default (automatic) working size.
2. ``crop-full``: the central 1024 x 1024 crop segmented at full resolution
   (``working_size=0``), the reference the working resolution is compared with.

Printed: time and peak memory of each, the working shape chosen, and on the crop the IoU
of the large run against the full-resolution run, and of both against the true mask.

    python benchmarks/bench_large.py [--size 4096] [--crop 1024]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

from _peak import run_measured

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository: tests.synthetic

TILE = 512


def mosaic(size: int) -> tuple[np.ndarray, np.ndarray]:
    """A ``size`` x ``size`` nuclei field: 8 tiles of 512 x 512 in 8 flips/rotations."""
    from tests.synthetic import nuclei

    tiles = [nuclei((TILE, TILE), n=45, seed=s) for s in range(8)]
    n = size // TILE
    image = np.empty((size, size), np.uint16)
    mask = np.empty((size, size), bool)
    for i in range(n):
        for j in range(n):
            img, m = tiles[(i * n + j) % 8]
            k = (i + 3 * j) % 8
            img, m = np.rot90(img, k % 4), np.rot90(m, k % 4)
            if k >= 4:
                img, m = img[::-1], m[::-1]
            image[i * TILE:(i + 1) * TILE, j * TILE:(j + 1) * TILE] = img
            mask[i * TILE:(i + 1) * TILE, j * TILE:(j + 1) * TILE] = m
    return image, mask


def crop_box(size: int, crop: int) -> tuple[slice, slice]:
    start = (size - crop) // 2
    return slice(start, start + crop), slice(start, start + crop)


def child(job: str, size: int, crop: int, out: str) -> None:
    from napari_dsp import segment
    from napari_dsp.core.fit import tune_allocator_for_fitting

    tune_allocator_for_fitting()  # a fitting process, as the command line

    image, _ = mosaic(size)
    kwargs = {}
    if job == "crop-full":
        image = np.ascontiguousarray(image[crop_box(size, crop)])
        kwargs["working_size"] = 0
    t0 = time.perf_counter()
    result = segment(image, seed=0, full_output=True, **kwargs)
    seconds = time.perf_counter() - t0
    np.save(out, result.labels)
    print(json.dumps({"seconds": seconds,
                      "working_shape": result.metadata["fit"]["working_shape"],
                      "tiles": result.metadata["fit"]["tiles"],
                      "object_radius": result.metadata["fit"]["object_radius"],
                      "threads": result.metadata["fit"]["threads"],
                      "refined": result.metadata["clustering"].get("refined")}))


def run(job: str, size: int, crop: int, out: Path) -> dict:
    text, peak = run_measured([sys.executable, __file__, "--child", job, str(size),
                               str(crop), str(out)])
    result = json.loads(text.strip().splitlines()[-1])
    result["peak_rss_gb"] = peak / 1e9
    return result


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--crop", type=int, default=1024)
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        job, size, crop, out = args.child
        child(job, int(size), int(crop), out)
        return 0
    print(f"{psutil.cpu_count()} CPUs, {psutil.virtual_memory().total / 2**30:.0f} GiB",
          flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        large_out, crop_out = Path(tmp) / "large.npy", Path(tmp) / "crop.npy"
        large = run("large", args.size, args.crop, large_out)
        print(f"{args.size}x{args.size} automatic: {large['seconds']:.1f} s, peak "
              f"{large['peak_rss_gb']:.2f} GB, object radius {large['object_radius']} px, "
              f"fitted at {large['working_shape']} in {large['tiles']} tile(s), "
              f"refined: {large['refined']}", flush=True)
        full = run("crop-full", args.size, args.crop, crop_out)
        print(f"{args.crop}x{args.crop} crop at full resolution: {full['seconds']:.1f} s, "
              f"peak {full['peak_rss_gb']:.2f} GB, fitted at {full['working_shape']} in "
              f"{full['tiles']} tile(s)",
              flush=True)
        _, mask = mosaic(args.size)
        box = crop_box(args.size, args.crop)
        large_labels = np.load(large_out) > 0
        full_crop = np.load(crop_out) > 0
    large_crop, truth = large_labels[box], mask[box]
    print(f"on the crop: IoU(automatic, full resolution) = {iou(large_crop, full_crop):.3f}; "
          f"IoU vs the true mask: automatic {iou(large_crop, truth):.3f}, full resolution "
          f"{iou(full_crop, truth):.3f}; whole {args.size}x{args.size} plane vs the true "
          f"mask: {iou(large_labels, mask):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
