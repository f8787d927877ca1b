"""The CPU ensemble in threads (today) against the old worker processes, in the same run.

Each variant runs in its own fresh Python process, one after another (interleaved over
repeats), on the same random image, fitting the same members (seed 0, 11 runs x 50
iterations, groups of 2 members, 2-way split) to the prior alone (no clustering):

- ``threads``: ``napari_dsp.generators.fit_prior`` with ``n_threads=2``: two Python threads in
  this process, torch single-threaded in each, glibc's allocator tuned as the command
  line tunes it.
- ``processes``: the old path (``_legacy_processes.py``): two ``python -c`` worker
  processes fed over pipes, each tuning its own allocator.
- ``threads-untuned``: the thread path with the allocator left as it is (as in napari,
  which napari-dsp never tunes).

Reported per variant: wall time of the fit, the time from the call to the first progress
report (what a user waits for after pressing Run), and the peak memory of the whole
process tree. The ratio is processes / threads (> 1: threads faster).

    python benchmarks/bench_threads.py [--sizes 256 512] [--channels 1 3] [--repeats 1]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from _peak import run_measured

VARIANTS = ("threads", "processes", "threads-untuned")
N_RUNS, N_ITER, WORKERS, BATCH = 11, 50, 2, 2


def child(variant: str, size: int, channels: int, precision: str) -> None:
    import numpy as np

    from napari_dsp.core import fit as _fit
    from napari_dsp.core import image as _image
    from napari_dsp.core.prior import member_seeds
    from napari_dsp.generators import fit_prior as iter_fit_prior

    sys.path.insert(0, str(Path(__file__).parent))
    from _legacy_processes import iter_members_parallel

    shape = (size, size) if channels == 1 else (size, size, channels)
    image = np.random.default_rng(0).random(shape, dtype=np.float32)
    _fit.warm_up()  # what the widget does when it opens
    # From here on is what a user waits for after pressing Run in a napari that has the
    # widget (and so torch) loaded already.
    t0 = time.perf_counter()
    first = None
    if variant.startswith("threads"):
        if variant == "threads":
            _fit.tune_allocator_for_fitting()  # as the command line does
        gen = iter_fit_prior(image, seed=0, n_members=N_RUNS, n_iter=N_ITER,
                             n_threads=WORKERS, preview_every=0, precision=precision,
                             batch_size=BATCH)
        while True:
            try:
                next(gen)
            except StopIteration:
                break
            first = first if first is not None else time.perf_counter() - t0
    else:
        sys.path.insert(0, str(Path(__file__).parent))
        from _legacy_processes import iter_members_parallel
        from napari_dsp.core import fit as _fit
        from napari_dsp.core import image as _image
        from napari_dsp.core.prior import member_seeds

        data = _image.normalize(_image.to_channels_first(image))
        padded, crop = _image.pad_to_multiple(data)
        gen = iter_members_parallel(padded, crop, n_threads=WORKERS,
                                    seeds=member_seeds(0, N_RUNS), preview_every=0,
                                    n_iter=N_ITER, learning_rate=0.01,
                                    precision=precision, batch_size=BATCH)
        while True:
            try:
                next(gen)
            except StopIteration as stop:
                _fit.summarize(stop.value)
                break
            first = first if first is not None else time.perf_counter() - t0
    print(json.dumps({"seconds": time.perf_counter() - t0, "first_report_s": first}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--channels", type=int, nargs="+", default=[1, 3])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--precision", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        variant, size, channels, precision = args.child
        child(variant, int(size), int(channels), precision)
        return 0
    print(f"{N_RUNS} runs x {N_ITER} iterations, {args.precision}, {WORKERS}-way split, "
          f"groups of {BATCH}; each variant in a fresh process")
    print(f"{'size':>6} {'C':>2} {'variant':>16} {'fit s':>7} {'first report s':>15} "
          f"{'peak GB':>8}")
    for size in args.sizes:
        for channels in args.channels:
            rows: dict = {v: [] for v in args.variants}
            for _ in range(args.repeats):
                for v in args.variants:
                    out, peak = run_measured([sys.executable, __file__, "--child", v,
                                              str(size), str(channels), args.precision])
                    r = json.loads(out.strip().splitlines()[-1])
                    r["peak_gb"] = peak / 1e9
                    rows[v].append(r)
                    print(f"{size:>6} {channels:>2} {v:>16} {r['seconds']:7.1f} "
                          f"{r['first_report_s']:15.2f} {r['peak_gb']:8.2f}", flush=True)
            if "threads" in rows and "processes" in rows:
                best = {v: min(x["seconds"] for x in rs) for v, rs in rows.items()}
                print(f"{size:>6} {channels:>2} ratio processes/threads = "
                      f"{best['processes'] / best['threads']:.2f}x", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
