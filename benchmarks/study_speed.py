"""Time against quality of the prior's ensemble: members, iterations, precision and
working resolution, over the evaluation set (the shared cases, ``benchmarks/evalset.py``)
and the synthetic stress images, several seeds (issue 16).

One fit per (image, seed, variant) gives every (members, iterations) setting at once:
the ensemble's members are independent (each its own weights and noise, seeded from the
run's seed in order), so the first ``m`` members' outputs after ``i`` forward passes
are exactly the members an ``m`` x ``i`` run would train. The fit trains all 11 members
as one grouped model and keeps their outputs every other iteration; the prior of a
setting is the median of its members at its iteration. Variants:

- ``fp32``: full resolution, float32 (the research procedure's arithmetic);
- ``bf16``: full resolution, bfloat16 autocast;
- ``half``: fitted at half the side (antialiased), the prior scaled back up;
- ``lr2``, ``lr3``: float32 at twice / three times the learning rate (0.02, 0.03), to see
  whether a larger step reaches the same prior in proportionally fewer iterations (Adam's
  step per parameter scales with the learning rate); fitted for 36 iterations.

Every prior then goes through napari-dsp's default clustering and refinement
(``napari_dsp.segment`` with the image and the prior), and is scored by foreground IoU against the
11 x 50 float32 labels of the same seed and against the reference mask. The median's
change per iteration (mean absolute change of the prior, in units of the normalised
image, over the last two iterations) is recorded for the early stop.

Stages (each can be rerun; fits and scores are cached in ``--work``, one file per image,
seed and variant):

    python benchmarks/study_speed.py fit  [--seeds 0 1 2] [--variants fp32 half bf16]
    python benchmarks/study_speed.py eval [--jobs 2]
    python benchmarks/study_speed.py report [--plot docs/images/study_speed.png]

Times are not taken here (the fits share the CPU); ``bench_segment.py`` measures the
chosen settings against the research procedure, each in a fresh process.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository: tests.synthetic

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

MEMBERS = (3, 4, 5, 6, 7, 11)
ITERATIONS = (10, 14, 20, 24, 30, 36, 40, 50)
N_MAX, I_MAX = 11, 50
#: The settings scored (members, iterations) per variant: fewer than 30 iterations lose
#: 0.2-0.5 IoU on some images (dsb2018_nuclei, first study run), so they are left out
#: of the scoring, whose cost is one clustering per setting.
EVAL_GRID = {
    "fp32": [(m, i) for m in MEMBERS for i in (30, 40, 50)],
    "half": [(m, i) for m in (3, 4, 5, 6, 11) for i in (40, 50)],
    "bf16": [(m, i) for m in (3, 4, 5) for i in (40, 50)],
    "lr2": [(m, i) for m in (5, 6, 7) for i in (20, 24, 30)],
    "lr3": [(m, i) for m in (5, 6, 7) for i in (14, 20, 24)],
}
#: Learning rate and iterations fitted per variant (default: 0.01, I_MAX).
VARIANT_FIT = {"lr2": (0.02, 36), "lr3": (0.03, 36)}
LABELS = {"fp32": "float32", "half": "float32, half resolution", "bf16": "bfloat16",
          "lr2": "float32, learning rate 0.02", "lr3": "float32, learning rate 0.03"}
SHARED = HERE.parents[1] / "shared" / "data" / "cases"


def all_cases() -> dict:
    """``{name: (set, image, mask)}``: shared cases, evaluation set, stress images."""
    from tests.synthetic import STRESS_CASES

    out = {}
    for path in sorted(SHARED.glob("*.npz")):
        d = np.load(path)
        out[path.stem] = ("shared", d["image"], d["mask"])
    if not out:
        print(f"shared cases absent ({SHARED}); measuring the rest", file=sys.stderr)
    try:
        import evalset

        for name, (image, mask, _entry) in evalset.cases().items():
            out[name] = ("evalset", image, mask)
    except Exception as exc:  # noqa: BLE001 - no network: report and go on
        print(f"evaluation set unavailable ({exc}); measuring the rest", file=sys.stderr)
    for name, make in STRESS_CASES.items():
        image, mask = make(seed=0)
        out["stress_" + name] = ("stress", image, mask)
    return out


def fit_snapshots(image: np.ndarray, seed: int, variant: str, n_max: int = N_MAX) -> dict:
    """Priors ``{(members, iteration): (Y, X[, C]) float32}`` of the first ``n_max``
    members and the change curves."""
    import torch

    from napari_dsp.core import fit as _fit
    from napari_dsp.core import image as _image
    from napari_dsp.core import nets
    from napari_dsp.core.prior import member_seeds

    torch.set_num_threads(1)
    chw = _image.to_channels_first(image)
    layout = _image.Layout(np.ndim(image), None)
    data = _image.normalize(chw)
    shape = data.shape[1:]
    if variant == "half":
        data = _image.resize(data, tuple(max(16, s // 2) for s in shape))
    padded, crop = _image.pad_to_multiple(data)
    c = padded.shape[0]
    lr, n_iter = VARIANT_FIT.get(variant, (0.01, I_MAX))
    fit = _fit.iter_members(
        padded, crop, make_net=lambda g, s: nets.EnsembleGenerator(g, c, s),
        seeds=member_seeds(seed, N_MAX)[:n_max], n_iter=n_iter, learning_rate=lr,
        device=torch.device("cpu"), precision="bfloat16" if variant == "bf16" else
        "float32", preview_every=1, batch_size=n_max)
    members = [m for m in MEMBERS if m <= n_max]
    priors, change, previous = {}, {m: [] for m in members}, {}
    for p in fit:
        it = p.iteration
        for m in members:
            med = _fit.median(p.preview[:m])
            if m in previous:
                change[m].append(float(np.abs(med - previous[m]).mean()))
            previous[m] = med
            if it in ITERATIONS:
                out = med if variant != "half" else _image.resize(med, shape)
                priors[(m, it)] = layout.to_user(np.clip(out, 0, 1)).astype(np.float16)
    return {"priors": priors, "change": change}


def cmd_fit(args) -> None:
    from napari_dsp.core.fit import tune_allocator_for_fitting

    tune_allocator_for_fitting()
    args.work.mkdir(parents=True, exist_ok=True)
    for name, (_, image, _) in all_cases().items():
        if args.only and name not in args.only:
            continue
        for seed in args.seeds:
            for variant in args.variants:
                path = args.work / f"{name}_s{seed}_{variant}.npz"
                if path.exists():
                    continue
                r = fit_snapshots(image, seed, variant, args.members_max)
                arrays = {f"p_{m}_{i}": v for (m, i), v in r["priors"].items()}
                arrays.update({f"change_{m}": np.array(v) for m, v in r["change"].items()})
                np.savez_compressed(path.with_suffix(".tmp.npz"), **arrays)
                path.with_suffix(".tmp.npz").rename(path)
                print(f"{name} seed {seed} {variant}", flush=True)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def _eval_one(job) -> list:
    import warnings

    from napari_dsp import segment

    work, name, kind, image, mask, seed, variants = job
    ref_path = work / f"{name}_s{seed}_fp32.npz"
    suffix = "" if variants == ("fp32", "half") else "_" + "_".join(variants)
    done_path = work / f"eval_{name}_s{seed}{suffix}.json"
    if done_path.exists():
        return json.loads(done_path.read_text())
    if not all((work / f"{name}_s{seed}_{v}.npz").exists() for v in ("fp32",) + variants):
        return []  # not fitted yet: scored on a later run

    def labels(prior: np.ndarray) -> np.ndarray:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = segment(image, prior=prior.astype(np.float32), seed=seed,
                             full_output=True)
            return result.labels > 0

    ref = labels(np.load(ref_path)[f"p_{N_MAX}_{I_MAX}"])
    rows = []
    for variant in variants:
        d = np.load(work / f"{name}_s{seed}_{variant}.npz")
        for m, it in EVAL_GRID[variant]:
            if f"p_{m}_{it}" not in d:
                continue
            fg = labels(d[f"p_{m}_{it}"])
            rows.append({"case": name, "set": kind, "seed": seed, "variant": variant,
                         "members": m, "iterations": it, "iou_ref": iou(fg, ref),
                         "iou_mask": iou(fg, mask)})
    if "fp32" in variants:
        change = {m: np.load(ref_path)[f"change_{m}"].tolist() for m in MEMBERS}
        rows.append({"case": name, "set": kind, "seed": seed, "change": change})
    done_path.write_text(json.dumps(rows))
    return rows


def cmd_eval(args) -> None:
    from concurrent.futures import ProcessPoolExecutor

    jobs = [(args.work, name, kind, image, mask, seed, tuple(args.variants))
            for name, (kind, image, mask) in all_cases().items()
            for seed in args.seeds if not args.only or name in args.only]
    with ProcessPoolExecutor(args.jobs) as pool:  # each result is cached as it comes
        for out in pool.map(_eval_one, jobs):
            if out:
                print(out[0]["case"], out[0]["seed"], flush=True)


def _diffs(scores: list, variant: str, m: int, it: int) -> dict:
    """Per image: IoU against the mask of this setting minus that of 11 x 50 float32,
    seed by seed (the same seed's members)."""
    ref = {(r["case"], r["seed"]): r["iou_mask"] for r in scores if r["variant"] == "fp32"
           and r["members"] == N_MAX and r["iterations"] == I_MAX}
    out: dict = {}
    for r in scores:
        if r["variant"] == variant and r["members"] == m and r["iterations"] == it \
                and (r["case"], r["seed"]) in ref:
            out.setdefault(r["case"], []).append(r["iou_mask"] - ref[r["case"], r["seed"]])
    return out


def _worst_seed(scores: list, variant: str, m: int, it: int) -> dict:
    """Per image: the lowest IoU against the mask over the seeds."""
    out: dict = {}
    for r in scores:
        if r["variant"] == variant and r["members"] == m and r["iterations"] == it:
            out[r["case"]] = min(out.get(r["case"], 1.0), r["iou_mask"])
    return out


def cmd_report(args) -> None:
    rows = [r for path in sorted(args.work.glob("eval_*.json"))
            for r in json.loads(path.read_text())]
    scores = [r for r in rows if "iou_ref" in r]
    seeds = sorted({r["seed"] for r in scores})
    print(f"{len({r['case'] for r in scores})} images, seeds {seeds}; IoU against the "
          f"reference masks, change against 11 x 50 float32 of the same seed\n")
    lines = ["| variant | members | iterations | fit cost | worst image, same seed | "
             "images within 0.01, same seed | worst image, worst seeds | images within "
             "0.01, worst seeds | mean change | mean IoU | agreement with 11x50 labels |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    ref_worst = _worst_seed(scores, "fp32", N_MAX, I_MAX)
    front = []
    for variant in dict.fromkeys(r["variant"] for r in scores):
        for m, it in EVAL_GRID[variant]:
            d = _diffs(scores, variant, m, it)
            if not d:
                continue
            worst = {c: min(v) for c, v in d.items()}
            wc = min(worst, key=worst.get)
            ok = sum(1 for v in worst.values() if v >= -0.01)
            sel = [r for r in scores if r["variant"] == variant and r["members"] == m
                   and r["iterations"] == it]
            cost = m * it / (N_MAX * I_MAX) * (0.25 if variant == "half" else 1.0)
            mean_change = float(np.mean([np.mean(v) for v in d.values()]))
            mine = _worst_seed(scores, variant, m, it)
            ww = {c: mine[c] - ref_worst[c] for c in mine if c in ref_worst}
            wwc = min(ww, key=ww.get)
            lines.append(
                f"| {variant} | {m} | {it} | {cost:.3f} | {wc} {worst[wc]:+.3f} | "
                f"{ok}/{len(d)} | {wwc} {ww[wwc]:+.3f} | "
                f"{sum(1 for v in ww.values() if v >= -0.01)}/{len(ww)} | "
                f"{mean_change:+.4f} | {np.mean([r['iou_mask'] for r in sel]):.3f} | "
                f"{np.mean([r['iou_ref'] for r in sel]):.3f} |")
            front.append((variant, m, it, cost, ww[wwc], mean_change))
    print("\n".join(lines))
    for spec in args.detail or []:
        variant, m, it = spec.split(",")
        d = _diffs(scores, variant, int(m), int(it))
        print(f"\n{variant} {m} x {it}, per image (IoU change per seed):")
        for c, v in d.items():
            print(f"  {c:28s} " + " ".join(f"{x:+.3f}" for x in v))
    if args.plot:
        _plot(front, args.plot)


def _plot(front: list, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=80)
    for variant, marker in (("fp32", "o"), ("half", "s"), ("bf16", "^"), ("lr2", "v"),
                            ("lr3", "D")):
        pts = [f for f in front if f[0] == variant]
        if pts:
            ax.scatter([p[3] for p in pts], [p[4] for p in pts], marker=marker, alpha=0.7,
                       label=LABELS.get(variant, variant))
    ax.axhline(-0.01, color="grey", lw=0.8, ls="--")
    ax.set_xscale("log")
    ax.set_xlabel("fit cost relative to 11 members x 50 iterations")
    ax.set_ylabel("worst image: worst-seed IoU minus\n11 x 50 float32 worst-seed IoU")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("stage", choices=("fit", "eval", "report"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=["fp32", "half"])
    parser.add_argument("--only", nargs="*")
    parser.add_argument("--members-max", type=int, default=N_MAX,
                        help="fit only the first N members (the settings with more are not scored)")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--work", type=Path, default=Path.home() / ".cache" / "napari-dsp"
                        / "study_speed")
    parser.add_argument("--plot", type=Path)
    parser.add_argument("--detail", nargs="*", metavar="VARIANT,MEMBERS,ITERATIONS",
                        help="per-image changes of these settings (e.g. fp32,4,50)")
    args = parser.parse_args(argv)
    {"fit": cmd_fit, "eval": cmd_eval, "report": cmd_report}[args.stage](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
