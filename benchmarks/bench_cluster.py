"""Files and stacks on a dask cluster (``napari_dsp.distributed``, ``napari_dsp.large``)
against the sequential paths, each variant in a fresh process, in the same run.

1. ``files``: N files (default 16) of 256 x 256 synthetic nuclei, segmented by the plain
   command line (one after another, the default fitting threads) and by the command line
   with ``--scheduler local:2`` (two single-threaded worker processes). Reported: wall
   time of each command, the throughput ratio (sequential / cluster, > 1: the cluster is
   faster), the cluster's start-up, and the overhead per task: the cluster's wall time,
   less its start-up, less the tasks' own compute time shared over the workers, per task.
2. ``stack``: a P-plane (default 200) 512 x 512 uint16 stack in a TIFF, segmented
   (a) in memory by ``segment_stack`` (read whole), (b) plane by plane into zarr by
   ``segment_stack_to_zarr`` in one process, (c) the same with the planes as tasks on
   ``local:2``. Reported: wall time and the peak resident memory (VmHWM) of the process
   that runs it, and of each worker for (c); the agreement of (b) with (a).

Both use a reduced ensemble (``--members``/``--iterations``, default 5 x 30) so the run takes
minutes on two cores; the ratios are what matters.

    python benchmarks/bench_cluster.py [--files 16] [--planes 200] [--only files|stack]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository: tests.synthetic

PEAK = """
def peak():
    for line in open('/proc/self/status'):
        if line.startswith('VmHWM:'):
            return int(line.split()[1]) * 1024
"""

STACK_CHILD = PEAK + r"""
import json, sys, time
mode, src, out, runs, iters = sys.argv[1:6]
kw = dict(n_members=int(runs), n_iter=int(iters), seed=0)
t = time.perf_counter()
if mode == "memory":
    import numpy as np, tifffile
    from napari_dsp import segment_stack
    labels = segment_stack(tifffile.memmap(src), **kw)
    np.save(out, labels)
    print(json.dumps({"seconds": time.perf_counter() - t, "peak": peak()}))
elif mode == "zarr":
    from napari_dsp.large import segment_stack_to_zarr
    segment_stack_to_zarr(src, out, **kw)
    print(json.dumps({"seconds": time.perf_counter() - t, "peak": peak()}))
else:
    import distributed
    from napari_dsp.large import segment_stack_to_zarr
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1,
                                  dashboard_address=":0") as c, distributed.Client(c) as cl:
        t = time.perf_counter()
        segment_stack_to_zarr(src, out, client=cl, **kw)
        seconds = time.perf_counter() - t
        workers = sorted(cl.run(peak).values())
    print(json.dumps({"seconds": seconds, "peak": peak(), "workers": workers}))
"""


def make_files(folder: Path, n: int, size: int) -> list:
    import tifffile
    from tests.synthetic import nuclei

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        image, _ = nuclei((size, size), n=12, seed=i)
        paths.append(folder / f"field{i:03d}.tif")
        tifffile.imwrite(paths[-1], image)
    return paths


def bench_files(tmp: Path, n: int, runs: int, iters: int) -> dict:
    paths = make_files(tmp / "files", n, 256)
    flags = ["--members", str(runs), "--iterations", str(iters), "--seed", "0", "--quiet"]
    base = [sys.executable, "-m", "napari_dsp.cli", "segment", *map(str, paths)]
    t = time.perf_counter()
    subprocess.run([*base, "-o", str(tmp / "seq"), *flags], check=True)
    seq = time.perf_counter() - t
    # the cluster's own run, with its start-up and the tasks' compute time
    script = PEAK + r"""
import json, sys, time
from pathlib import Path
t0 = time.perf_counter()
from napari_dsp import distributed as dist
client = dist.connect("local:2")
started = time.perf_counter() - t0
paths = [Path(p) for p in sys.argv[3:]]
results = dist.segment_files(paths, sys.argv[1], client, n_members=int(sys.argv[2].split('x')[0]),
                             n_iter=int(sys.argv[2].split('x')[1]), seed=0)
dist.close(client)
print(json.dumps({"start": started, "wall": time.perf_counter() - t0,
                  "tasks": [r.seconds for r in results],
                  "status": [r.status for r in results]}))
"""
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", script, str(tmp / "dist"),
                          f"{runs}x{iters}", *map(str, paths)], check=True,
                         capture_output=True, text=True).stdout
    wall_api = time.perf_counter() - t
    info = json.loads(out.strip().splitlines()[-1])
    t = time.perf_counter()
    subprocess.run([*base, "-o", str(tmp / "cli"), *flags, "--scheduler", "local:2"],
                   check=True)
    cli = time.perf_counter() - t
    overhead = (info["wall"] - info["start"] - sum(info["tasks"]) / 2) / n
    agree = []
    from napari_dsp import io

    for p in paths:
        a = io.read_pixels(io.read_info(tmp / "seq" / f"{p.stem}_labels.tif"))
        b = io.read_pixels(io.read_info(tmp / "cli" / f"{p.stem}_labels.tif"))
        agree.append(float((a == b).mean()))
    return {"files": n, "sequential_s": seq, "cluster_cli_s": cli,
            "throughput_ratio": seq / cli, "cluster_start_s": info["start"],
            "api_wall_s": info["wall"], "api_process_s": wall_api,
            "task_mean_s": float(np.mean(info["tasks"])),
            "overhead_per_task_s": overhead, "min_label_agreement": min(agree),
            "statuses": sorted(set(info["status"]))}


def bench_stack(tmp: Path, planes: int, runs: int, iters: int) -> dict:
    import tifffile
    from tests.synthetic import nuclei

    base = np.stack([nuclei((512, 512), n=40, seed=i)[0] for i in range(8)])
    data = np.concatenate([base] * (planes // 8 + 1))[:planes]
    src = tmp / "stack.tif"
    tifffile.imwrite(src, data)
    rows = {}
    for mode, out in (("memory", tmp / "memory.npy"), ("zarr", tmp / "here.zarr"),
                      ("cluster", tmp / "cluster.zarr")):
        proc = subprocess.run([sys.executable, "-c", STACK_CHILD, mode, str(src), str(out),
                               str(runs), str(iters)], capture_output=True, text=True)
        if proc.returncode:
            raise RuntimeError(proc.stderr[-2000:])
        rows[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
    import zarr

    memory = np.load(tmp / "memory.npy")
    here = zarr.open_array(str(tmp / "here.zarr"), mode="r")[:]
    cluster = zarr.open_array(str(tmp / "cluster.zarr"), mode="r")[:]
    rows["agreement_zarr_vs_memory"] = float((here == memory).mean())
    rows["agreement_cluster_vs_zarr"] = float((cluster == here).mean())
    rows["stack_bytes"] = int(data.nbytes)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=16)
    parser.add_argument("--planes", type=int, default=200)
    parser.add_argument("--members", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--only", choices=("files", "stack"), default=None)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        if args.only in (None, "files"):
            r = bench_files(tmp, args.files, args.runs, args.iterations)
            print(json.dumps(r, indent=1))
            print(f"\n{r['files']} files of 256x256 ({args.runs} runs x {args.iterations} "
                  f"iterations): sequential {r['sequential_s']:.1f} s, local:2 "
                  f"{r['cluster_cli_s']:.1f} s -> throughput ratio "
                  f"{r['throughput_ratio']:.2f}x; cluster start {r['cluster_start_s']:.1f} "
                  f"s; overhead per task {r['overhead_per_task_s']:.2f} s (task "
                  f"{r['task_mean_s']:.1f} s); labels agree >= "
                  f"{r['min_label_agreement']:.4f}", flush=True)
        if args.only in (None, "stack"):
            r = bench_stack(tmp, args.planes, args.runs, args.iterations)
            print(json.dumps(r, indent=1))
            gb = 1e9
            print(f"\n{args.planes} planes of 512x512 ({r['stack_bytes'] / gb:.2f} GB "
                  f"uint16):")
            for mode in ("memory", "zarr", "cluster"):
                row = r[mode]
                extra = (f", workers {', '.join(f'{w / gb:.2f}' for w in row['workers'])} "
                         f"GB" if "workers" in row else "")
                print(f"  {mode:8s} {row['seconds']:7.1f} s  peak {row['peak'] / gb:.2f} "
                      f"GB{extra}")
            print(f"  labels: zarr vs memory {r['agreement_zarr_vs_memory']:.4f}, "
                  f"cluster vs zarr {r['agreement_cluster_vs_zarr']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
