"""Speed and memory of the prior fit: napari-dsp's ensemble against the research procedure.

Each variant runs in its own fresh Python process (so process-wide settings such as the
allocator tuning of one variant cannot help another), one after another, on the same
random RGB image; the peak memory is the largest resident size of the variant's whole
process tree, sampled every 50 ms.

Variants:
- ``reference``: the research procedure: 11 fresh fits one after another, float32, the
  default memory layout and threads, 50 full iterations each (forward, backward, step).
- ``dsp``: ``napari_dsp.fit_prior`` with its defaults (the ensemble as grouped models, on
  CPU shared out over one single-threaded fitting thread per core, channels-last).
- ``dsp-bf16``: the same with ``precision="bfloat16"``.

    python benchmarks/bench_prior.py [--sizes 256 512] [--device cpu] [--repeats 1]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import psutil

from _peak import run_measured

VARIANTS = ("reference", "dsp", "dsp-bf16")


def run_variant(variant: str, size: int, device: str, n_members: int, n_iter: int) -> dict:
    """Run one variant in a child process; return its wall time and peak memory."""
    out, peak = run_measured([sys.executable, __file__, "--child", variant, str(size),
                              device, str(n_members), str(n_iter)])
    result = json.loads(out.strip().splitlines()[-1])
    result["peak_rss_gb"] = peak / 1e9
    return result


def child(variant: str, size: int, device: str, n_members: int, n_iter: int) -> None:
    import numpy as np
    import torch

    image = np.random.default_rng(0).random((size, size, 3), dtype=np.float32)
    peak_dev = None
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    if variant == "reference":
        reference_fit(image, torch.device(device), n_members, n_iter)
    else:
        from napari_dsp import fit_prior
        from napari_dsp.core.fit import tune_allocator_for_fitting

        tune_allocator_for_fitting()  # a fitting process, as the command line

        precision = "bfloat16" if variant == "dsp-bf16" else "float32"
        fit_prior(image, seed=0, device=device, n_members=n_members, n_iter=n_iter,
                  precision=precision)
    if device == "cuda":
        torch.cuda.synchronize()
        peak_dev = torch.cuda.max_memory_allocated() / 1e9
    seconds = time.perf_counter() - t0
    print(json.dumps({"seconds": seconds, "peak_device_gb": peak_dev}))


def reference_fit(image, device, n_members: int, n_iter: int):
    """The research procedure, written plainly: one fresh generator after another
    (``image`` (H, W, C) float32 in [0, 1], H and W multiples of 8)."""
    import numpy as np
    import torch

    from napari_dsp.core.nets import EnsembleGenerator, make_noise

    target = torch.from_numpy(np.ascontiguousarray(np.moveaxis(image, -1, 0)))[None].to(device)
    h, w, c = image.shape
    outputs = []
    for run in range(n_members):
        net = EnsembleGenerator(1, c, [run]).to(device)
        noise = make_noise([run], 2, h, w).to(device)
        opt = torch.optim.Adam(net.parameters(), lr=0.01)
        for _ in range(n_iter):
            out = net(noise)
            loss = torch.nn.functional.l1_loss(out, target)
            opt.zero_grad()
            loss.backward()
            opt.step()
        outputs.append(out.detach().cpu().numpy()[0])
    return np.median(np.stack(outputs), axis=0)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--members", type=int, default=11)
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    args = parser.parse_args(argv)
    print(f"prior fit, {args.runs} runs x {args.iterations} iterations, RGB, "
          f"device {args.device}, {psutil.cpu_count()} CPUs")
    print("| size | variant | wall time | vs reference | peak RSS | peak device mem |")
    print("|---|---|---|---|---|---|")
    for size in args.sizes:
        times: dict[str, list[float]] = {v: [] for v in args.variants}
        mem: dict[str, tuple] = {}
        for _ in range(args.repeats):
            for variant in args.variants:  # interleaved, so drifts hit all variants
                r = run_variant(variant, size, args.device, args.runs, args.iterations)
                times[variant].append(r["seconds"])
                mem[variant] = (r["peak_rss_gb"], r["peak_device_gb"])
        ref = min(times["reference"]) if "reference" in times else None
        for variant in args.variants:
            best = min(times[variant])
            ratio = f"{ref / best:.2f}x" if ref else "-"
            dev = f"{mem[variant][1]:.2f} GB" if mem[variant][1] is not None else "-"
            print(f"| {size}² | {variant} | {best:.1f} s | {ratio} | "
                  f"{mem[variant][0]:.2f} GB | {dev} |", flush=True)
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _, _, variant, size, device, n_members, n_iter = sys.argv
        child(variant, int(size), device, int(n_members), int(n_iter))
    else:
        sys.exit(main())
