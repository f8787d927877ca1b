"""Where the time of one ``segment`` call goes, stage by stage (issue 16, part 4).

Runs ``napari_dsp.segment`` once under cProfile on the synthetic nuclei field of
``bench_segment.py`` (16-bit grayscale) and prints the cumulative seconds of each stage
and its share of the whole call: normalisation, the working-resolution estimate, the
prior fit, the clustering (principal axes, projection, K-means, assignment), the noise
test, the refinement from the pixels, the clean-up and the instance labels.

    python benchmarks/profile_segment.py [--size 512] [--settings n_iter=50 ...]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

#: (label, module path suffix, function name) of the stages, in pipeline order.
STAGES = (
    ("normalise", "core/image.py", "normalize"),
    ("object radius (working size)", "core/image.py", "object_radius"),
    ("prior fit", "core/prior.py", "iter_plane_prior"),
    ("  of which median/spread", "core/fit.py", "summarize"),
    ("clustering (K-means model)", "core/cluster.py", "fit_cluster_model"),
    ("  principal axes", "core/cluster.py", "principal_axes"),
    ("  projection", "core/cluster.py", "project"),
    ("  K-means centres", "core/cluster.py", "kmeans_centers"),
    ("  assignment", "core/cluster.py", "assign"),
    ("what the planes share: noise test, refinement models", "pipeline.py", "learn"),
    ("  noise test", "core/decide.py", "decide"),
    ("  refinement", "core/postprocess.py", "refine_foreground"),
    ("one plane under it (assign, refine, clean up)", "pipeline.py", "apply"),
    ("  clean-up (holes, specks)", "core/postprocess.py", "clean_up"),
    ("instance labels", "core/postprocess.py", "label_objects"),
)


def parse(values: list) -> dict:
    out = {}
    for item in values:
        key, _, value = item.partition("=")
        for kind in (int, float):
            try:
                value = kind(value)
                break
            except ValueError:
                pass
        out[key] = value
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--settings", nargs="*", default=[],
                        help="overrides as name=value (e.g. n_iter=50 instances=1)")
    args = parser.parse_args(argv)
    overrides = parse(args.settings)
    if "instances" in overrides:
        overrides["instances"] = bool(overrides["instances"])

    from bench_segment import make_image
    from napari_dsp import segment
    from napari_dsp.core.fit import tune_allocator_for_fitting

    tune_allocator_for_fitting()
    image = make_image("nuclei", args.size)
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    result = segment(image, seed=0, full_output=True, **overrides)
    prof.disable()
    total = time.perf_counter() - t0
    stats = pstats.Stats(prof).stats
    print(f"segment on {args.size}x{args.size} ({overrides or 'defaults'}): {total:.2f} s, "
          f"fit {result.metadata['fit'].get('iterations')} iterations, working shape "
          f"{result.metadata['fit'].get('working_shape')}")
    print("| stage | seconds | share |")
    print("|---|---|---|")
    for label, path, name in STAGES:
        seconds = sum(v[3] for (file, _line, func), v in stats.items()
                      if file.replace("\\", "/").endswith(path) and func == name)
        print(f"| {label} | {seconds:.2f} | {100 * seconds / total:.0f} % |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
