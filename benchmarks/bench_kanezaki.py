"""Does the prior help Kanezaki's self-training? Iterations to reach min_labels, classes
found and adjusted Rand index, with superpixels on the prior and on the raw image, on the
same synthetic images (textured regions with known truth) and the same seeds.

    python benchmarks/bench_kanezaki.py [--sizes 64] [--regions 3 4] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import adjusted_rand_score

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository: tests.synthetic
from tests.synthetic import textured_regions  # noqa: E402

from napari_dsp import fit_prior, segment


def main(argv=None) -> int:
    from napari_dsp.core.fit import tune_allocator_for_fitting

    tune_allocator_for_fitting()  # a fitting process, as the command line
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64])
    parser.add_argument("--regions", type=int, nargs="+", default=[3, 4])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args(argv)
    rows = []
    print("| size | regions | seed | guide | iterations to min_labels | total iterations "
          "| classes found | ARI | time |")
    print("|---|---|---|---|---|---|---|---|---|")
    for size in args.sizes:
        for n in args.regions:
            for seed in args.seeds:
                image, truth = textured_regions(n, size=size, seed=seed)
                prior = fit_prior(image, seed=seed)
                for guide in ("prior", "image"):
                    t0 = time.perf_counter()
                    result = segment(image, prior=prior if guide == "prior" else None,
                                     method="kanezaki", prior_superpixels=guide == "prior",
                                     seed=seed, full_output=True)
                    seconds = time.perf_counter() - t0
                    info = result.metadata["kanezaki"]
                    ari = adjusted_rand_score(truth.ravel(), result.labels.ravel())
                    rows.append((guide, info["min_labels_reached_at"], info["n_labels"], n,
                                 ari))
                    reached = info["min_labels_reached_at"] or "never"
                    print(f"| {size} | {n} | {seed} | {guide} | {reached} | "
                          f"{info['iterations']} | {info['n_labels']} | {ari:.3f} | "
                          f"{seconds:.1f} s |", flush=True)
    print()
    for guide in ("prior", "image"):
        sel = [r for r in rows if r[0] == guide]
        reached = [r[1] for r in sel if r[1] is not None]
        print(f"{guide}: mean ARI {np.mean([r[4] for r in sel]):.3f}; reached min_labels "
              f"in {len(reached)}/{len(sel)} (median {np.median(reached) if reached else '-'}"
              f" iterations); mean |classes - regions| "
              f"{np.mean([abs(r[2] - r[3]) for r in sel]):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
