"""Volumetric (3-D) prior against one 2-D prior per plane on a synthetic z-stack.

The stack holds random ellipsoids (known 3-D mask) in noise, imaged with a z step
``--z-step`` times the y/x pixel size: objects are anisotropic in voxels, and the first
and last planes of an object are dim and thin, where a plane-by-plane fit has the least
to go on. Both runs use the same settings (defaults unless given) and the same seed; the
voxel size goes to the volumetric run as ``spacing``.

Printed: 3-D foreground IoU against the true mask, the share of the objects' top and
bottom planes found (where a plane alone has the least to go on), and the time of each.

    python benchmarks/bench_volume.py [--z-step 2] [--seeds 0] [--noise 0.12]
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from scipy import ndimage as ndi

from napari_dsp import segment_stack


def ellipsoids(shape=(24, 96, 96), z_step: float = 2.0, n: int = 10, seed: int = 0,
               noise: float = 0.12):
    """Returns (float32 stack, bool mask, bool mask of each object's end planes)."""
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.mgrid[0:shape[0], 0:shape[1], 0:shape[2]].astype(np.float32)
    zz = zz * z_step  # physical units of the y/x pixel
    mask = np.zeros(shape, bool)
    ends = np.zeros(shape, bool)
    signal = np.zeros(shape, np.float32)
    for _ in range(n * 20):
        if n == 0:
            break
        r = rng.uniform(8, 14, 3)
        c = [rng.uniform(r[0], shape[0] * z_step - r[0]), rng.uniform(r[1], shape[1] - r[1]),
             rng.uniform(r[2], shape[2] - r[2])]
        blob = ((zz - c[0]) / r[0]) ** 2 + ((yy - c[1]) / r[1]) ** 2 + \
            ((xx - c[2]) / r[2]) ** 2 <= 1
        if not blob.any() or np.any(ndi.binary_dilation(blob, iterations=2) & mask):
            continue
        zs = np.nonzero(blob.any((1, 2)))[0]
        ends[zs[[0, -1]]] |= blob[zs[[0, -1]]]
        mask |= blob
        signal[blob] = rng.uniform(0.5, 1.0)
        n -= 1
    image = ndi.gaussian_filter(signal, (0.5, 1.0, 1.0)) + 0.15
    image += rng.normal(0, noise, shape)
    return image.astype(np.float32), mask, ends


def iou(a, b):
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def main(argv=None) -> int:
    from napari_dsp.core.fit import tune_allocator_for_fitting

    tune_allocator_for_fitting()  # a fitting process, as the command line
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--z-step", type=float, default=2.0)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--noise", type=float, default=0.12,
                        help="std of the pixel noise (objects are 0.5-1.0 above 0.15)")
    args = parser.parse_args(argv)
    print("| seed | method | 3-D IoU | recall on end planes | time |")
    print("|---|---|---|---|---|")
    for seed in args.seeds:
        image, mask, ends = ellipsoids(z_step=args.z_step, seed=seed, noise=args.noise)
        for name, kw in (("per plane", {}),
                         ("volumetric", {"volumetric": True,
                                         "spacing": (args.z_step, 1.0, 1.0)})):
            t0 = time.perf_counter()
            labels = segment_stack(image, seed=seed, **kw)
            seconds = time.perf_counter() - t0
            fg = labels == 1
            end_recall = float((fg & ends).sum() / max(1, ends.sum()))
            print(f"| {seed} | {name} | {iou(fg, mask):.3f} | {end_recall:.3f} | "
                  f"{seconds:.1f} s |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
