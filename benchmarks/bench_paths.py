"""One stack through each path, and the same calls under another checkout of the package
(before and after a change): time, peak memory and a digest of the labels.

Paths, each in its own fresh Python process (imports excluded from the time):

- ``image``: ``segment`` of the stack's first plane (a 2-D image is one plane);
- ``memory``: ``segment_stack`` of the whole stack in memory;
- ``zarr``: ``napari_dsp.large.segment_stack_to_zarr`` of the same stack, plane by plane
  into a zarr array on disk (every plane in the sample, so it must equal ``memory``);
- ``memory-ids`` / ``zarr-ids``: the two with ``instances=True``.

The stack is a synthetic 16-bit nuclei time-lapse (``tests.synthetic.nuclei``, a
new field per plane), 8 planes of 256x256 by default. ``--trees A B ...`` runs every path
under each checkout's ``src`` (PYTHONPATH), interleaved, so their figures come from the
same run on the same machine; the digest (SHA-1 of the shape and the ids as int64; the
dtype is printed beside it) says whether
the labels are identical. Only settings that every version names alike are passed.

    python benchmarks/bench_paths.py [--planes 8] [--size 256] [--repeats 1]
                                     [--trees /path/to/old /path/to/new]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _peak import run_measured  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository: tests.synthetic

PATHS = ("image", "memory", "zarr", "memory-ids", "zarr-ids")

CHILD = r"""
import hashlib, json, sys, tempfile, time, warnings
import numpy as np
import napari_dsp
from napari_dsp import segment, segment_stack
from napari_dsp.large import segment_stack_to_zarr
from tests.synthetic import nuclei

path, planes, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
stack = np.stack([nuclei((size, size), n=max(4, size * size // 2500), radius=(5, 9),
                         seed=i)[0] for i in range(planes)])
kw = dict(seed=0, device="cpu", instances=path.endswith("-ids"))
warnings.simplefilter("ignore")
segment(stack[0][:64, :64], seed=0, n_iter=2, device="cpu")  # imports and first-call costs
t0 = time.perf_counter()
if path == "image":
    labels = segment(stack[0], **kw)
elif path.startswith("memory"):
    labels = segment_stack(stack, **kw)
else:
    import zarr
    out = segment_stack_to_zarr(stack, tempfile.mkdtemp() + "/l.zarr", n_sample=planes, **kw)
    labels = zarr.open_array(str(out), mode="r")[:]
seconds = time.perf_counter() - t0
labels = np.asarray(labels)
values = labels.astype(np.int64)  # the ids, whatever the dtype (printed apart)
digest = hashlib.sha1(f"{labels.shape}".encode() + values.tobytes()).hexdigest()
print(json.dumps({"seconds": seconds, "dtype": str(labels.dtype), "ids": int(labels.max()),
                  "digest": digest[:12], "source": napari_dsp.__file__}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--planes", type=int, default=8)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--paths", nargs="+", default=list(PATHS), choices=PATHS)
    parser.add_argument("--trees", nargs="+", default=[str(Path(__file__).resolve().parents[1])])
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    rows = []
    for repeat in range(args.repeats):
        for path in args.paths:
            for tree in args.trees:
                env = dict(os.environ, PYTHONPATH=str(Path(tree) / "src"))
                cmd = [sys.executable, "-c", CHILD, path, str(args.planes), str(args.size)]
                old = os.environ.get("PYTHONPATH")
                os.environ["PYTHONPATH"] = env["PYTHONPATH"]
                try:
                    out, peak = run_measured(cmd)
                finally:
                    if old is None:
                        os.environ.pop("PYTHONPATH", None)
                    else:
                        os.environ["PYTHONPATH"] = old
                row = json.loads(out.strip().splitlines()[-1])
                assert row["source"].startswith(str(Path(tree).resolve())), row["source"]
                row.update(path=path, tree=tree, repeat=repeat, peak_gb=round(peak / 1e9, 3))
                rows.append(row)
                print(
                    f"{path:11s} {tree:28s} {row['seconds']:7.2f} s  {row['peak_gb']:.2f} GB  "
                    f"{row['dtype']:7s} max id {row['ids']:5d}  {row['digest']}",
                    flush=True,
                )
    if len(args.trees) > 1:
        print("\nratio of each tree's time to the first tree's, same path and repeat:")
        first = args.trees[0]
        for path in args.paths:
            for tree in args.trees[1:]:
                pairs = [
                    (a["seconds"], b["seconds"])
                    for a in rows
                    for b in rows
                    if a["path"] == b["path"] == path
                    and a["repeat"] == b["repeat"]
                    and a["tree"] == first
                    and b["tree"] == tree
                ]
                ratio = sum(b for _, b in pairs) / sum(a for a, _ in pairs)
                same = {r["digest"] for r in rows if r["path"] == path}
                print(
                    f"  {path:11s} {tree}: {ratio:.3f}x; labels "
                    f"{'identical' if len(same) == 1 else 'DIFFER'}"
                )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
