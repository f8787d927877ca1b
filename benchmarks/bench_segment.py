"""The whole segmentation, as a user calls it, against the research procedure (issue 16).

Each variant runs in its own fresh Python process, one after another (interleaved over
repeats), on the same grayscale image: a synthetic field of nuclei
(``tests.synthetic.nuclei``, 16-bit, radius 6-12 px, as many nuclei per area at
every size) or scikit-image's bundled ``camera`` photo (``--image camera``, 512x512).
The time is the wall time from the call to the labels, imports excluded (on a GPU,
CUDA's start in the fresh process is included); the peak memory is the largest resident
size of the child process tree, sampled every 50 ms, and on a GPU also the GPU's peak
allocation. Every variant runs on ``--device`` (default ``cpu``, also where a GPU is
present, so that runs on different machines compare the same thing).

Variants:

- ``research``: the research procedure written plainly: 11 fresh generators fitted one
  after another for 50 iterations each (float32, torch's default threads), the
  per-pixel median, K-means (k=2, 10 starts) on the 7x7 zero-padded windows of the
  prior, foreground = the cluster with fewer pixels on the image's outer ring;
- ``default``: ``napari_dsp.segment(image, seed=0)`` with the package defaults;
- ``research-settings``: ``napari_dsp.segment`` with ``Settings.research()`` (11 x 50,
  no early stop): what the code alone gains, without the new defaults.

    python benchmarks/bench_segment.py [--sizes 256 512 1024] [--repeats 2]
                                       [--image nuclei|camera] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _peak import run_measured  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository: tests.synthetic

VARIANTS = ("research", "default", "research-settings")


def make_image(kind: str, size: int):
    import numpy as np

    if kind == "camera":
        from skimage import data
        from skimage.transform import resize

        img = data.camera()
        return img if size == 512 else (resize(img, (size, size)) * 255).astype(np.uint8)
    from tests.synthetic import nuclei

    image, _mask = nuclei((size, size), n=int(30 * (size / 256) ** 2), seed=0)
    return image


def child(variant: str, size: int, kind: str, device: str) -> None:
    import numpy as np
    import torch

    image = make_image(kind, size)
    if variant == "research":
        from bench_prior import reference_fit
        from napari_dsp.core.image import normalize, to_channels_first
        from quality import research_pipeline

        t0 = time.perf_counter()
        data = normalize(to_channels_first(image))  # (1, Y, X) in [0, 1]
        prior = reference_fit(np.ascontiguousarray(np.moveaxis(data, 0, -1)),
                              torch.device(device), 11, 50)[0]
        labels = research_pipeline(prior, 0)
    else:
        from napari_dsp import Settings, segment

        settings = Settings.research() if variant == "research-settings" else None
        t0 = time.perf_counter()
        result = segment(image, seed=0, settings=settings, device=device,
                         full_output=True)
        labels = result.labels
        fit = result.metadata.get("fit", {})
    seconds = time.perf_counter() - t0
    out = {"seconds": seconds, "foreground": float(np.mean(labels > 0))}
    if device.startswith("cuda"):
        out["gpu_peak"] = torch.cuda.max_memory_allocated(torch.device(device)) / 1e9
    if variant != "research":
        out.update(iterations=fit.get("iterations"), members=result.metadata["settings"][
            "n_members"], working_shape=fit.get("working_shape"))
    print(json.dumps(out))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--image", choices=("nuclei", "camera"), default="nuclei")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--device", default="cpu", help="where every variant fits: cpu, "
                        "cuda, cuda:N (the GPU's peak memory is added); one device for "
                        "all, so 'auto' is not offered")
    args = parser.parse_args(argv)
    if args.device != "cpu" and not args.device.startswith("cuda"):
        parser.error(f"--device must be cpu, cuda or cuda:N, not {args.device!r}")
    gpu = args.device.startswith("cuda")
    print(f"whole segmentation, {args.image} image, grayscale, {psutil.cpu_count()} CPUs, "
          f"device {args.device}")
    print("| size | variant | wall time | research / variant | peak RSS | iterations | "
          "members | foreground |" + (" GPU peak memory |" if gpu else ""))
    print("|---|---|---|---|---|---|---|---|" + ("---|" if gpu else ""))
    for size in args.sizes:
        times: dict[str, list[float]] = {v: [] for v in args.variants}
        info: dict[str, dict] = {}
        for _ in range(args.repeats):
            for variant in args.variants:
                out, peak = run_measured([sys.executable, __file__, "--child", variant,
                                          str(size), args.image, args.device])
                r = json.loads(out.strip().splitlines()[-1])
                times[variant].append(r["seconds"])
                info[variant] = {**r, "peak": peak / 1e9}
        ref = min(times["research"]) if "research" in times else None
        for variant in args.variants:
            best = min(times[variant])
            r = info[variant]
            ratio = f"{ref / best:.2f}x" if ref else "-"
            print(f"| {size}² | {variant} | {best:.1f} s | {ratio} | {r['peak']:.2f} GB | "
                  f"{r.get('iterations', 50)} | {r.get('members', 11)} | "
                  f"{r['foreground']:.3f} |"
                  + (f" {r['gpu_peak']:.2f} GB |" if gpu else ""),
                  flush=True)
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _, _, variant, size, kind, device = sys.argv
        child(variant, int(size), kind, device)
    else:
        sys.exit(main())
