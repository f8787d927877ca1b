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
- ``half``: fitted at half the side (antialiased), the prior scaled back up.

Every prior then goes through napari-dsp's default clustering and refinement
(``napari_dsp.cluster`` with the image), and is scored by foreground IoU against the
11 x 50 float32 labels of the same seed and against the reference mask. The median's
change per iteration (mean absolute change of the prior, in units of the normalised
image, over the last two iterations) is recorded for the early stop.

Stages (each can be rerun; results are cached in ``--work``):

    python benchmarks/study_speed.py fit  [--seeds 0 1 2] [--variants fp32 half bf16]
    python benchmarks/study_speed.py eval [--jobs 2]
    python benchmarks/study_speed.py report [--plot benchmarks/study_speed.png]

Times are not taken here (the fits share the CPU); ``bench_segment.py`` measures the
chosen settings against the research procedure, each in a fresh process.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

MEMBERS = (3, 4, 5, 6, 7, 11)
ITERATIONS = (10, 14, 20, 24, 30, 36, 40, 50)
N_MAX, I_MAX = 11, 50
SHARED = HERE.parents[1] / "shared" / "data" / "cases"


def all_cases() -> dict:
    """``{name: (set, image, mask)}``: shared cases, evaluation set, stress images."""
    from napari_dsp._synthetic import STRESS_CASES

    out = {}
    for path in sorted(SHARED.glob("*.npz")):
        d = np.load(path)
        out[path.stem] = ("shared", d["image"], d["mask"])
    if not out:
        print(f"shared cases absent ({SHARED}); measuring the rest", file=sys.stderr)
    try:
        import evalset

        for name, (image, mask, entry) in evalset.cases().items():
            out[name] = ("evalset", image, mask)
    except Exception as exc:  # noqa: BLE001 - no network: report and go on
        print(f"evaluation set unavailable ({exc}); measuring the rest", file=sys.stderr)
    for name, make in STRESS_CASES.items():
        image, mask = make(seed=0)
        out["stress_" + name] = ("stress", image, mask)
    return out


def fit_snapshots(image: np.ndarray, seed: int, variant: str) -> dict:
    """Priors ``{(members, iteration): (Y, X[, C]) float32}`` and the change curves."""
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
    fit = _fit.iter_members(
        padded, crop, make_net=lambda g, s: nets.EnsembleGenerator(g, c, s),
        seeds=member_seeds(seed, N_MAX), n_iter=I_MAX, learning_rate=0.01,
        device=torch.device("cpu"), precision="bfloat16" if variant == "bf16" else
        "float32", preview_every=1, batch_size=N_MAX)
    priors, change, previous = {}, {m: [] for m in MEMBERS}, {}
    for p in fit:
        it = p.iteration
        for m in MEMBERS:
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
                r = fit_snapshots(image, seed, variant)
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

    from napari_dsp import cluster

    work, name, kind, image, mask, seed, variants = job
    ref_path = work / f"{name}_s{seed}_fp32.npz"
    if not ref_path.exists():
        return []
    rows = []
    ref_labels = None
    for variant in ("fp32",) + tuple(v for v in variants if v != "fp32"):
        path = work / f"{name}_s{seed}_{variant}.npz"
        if not path.exists():
            continue
        d = np.load(path)
        for m in MEMBERS:
            for it in ITERATIONS:
                prior = d[f"p_{m}_{it}"].astype(np.float32)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    fg = cluster(prior, image=image, seed=seed).labels > 0
                if ref_labels is None:  # the first one computed is not the reference
                    pass
                rows.append({"case": name, "set": kind, "seed": seed, "variant": variant,
                             "members": m, "iterations": it, "fg": fg})
    ref = next(r["fg"] for r in rows if r["variant"] == "fp32" and r["members"] == N_MAX
               and r["iterations"] == I_MAX)
    for r in rows:
        fg = r.pop("fg")
        r["iou_ref"] = iou(fg, ref)
        r["iou_mask"] = iou(fg, mask)
    change = {m: np.load(ref_path)[f"change_{m}"].tolist() for m in MEMBERS}
    return rows + [{"case": name, "set": kind, "seed": seed, "change": change}]


def cmd_eval(args) -> None:
    from concurrent.futures import ProcessPoolExecutor

    jobs = [(args.work, name, kind, image, mask, seed, tuple(args.variants))
            for name, (kind, image, mask) in all_cases().items()
            for seed in args.seeds if not args.only or name in args.only]
    rows = []
    with ProcessPoolExecutor(args.jobs) as pool:
        for out in pool.map(_eval_one, jobs):
            rows.extend(out)
            if out:
                print(out[0]["case"], out[0]["seed"], flush=True)
    (args.work / "study.json").write_text(json.dumps(rows))


def cmd_report(args) -> None:
    rows = json.loads((args.work / "study.json").read_text())
    scores = [r for r in rows if "iou_ref" in r]
    cases = list(dict.fromkeys(r["case"] for r in scores))
    lines = ["| variant | members | iterations | cost | worst image (IoU vs 11x50, worst seed) "
             "| mean vs 11x50 (worst seed) | mean vs mask | images within 0.01 |",
             "|---|---|---|---|---|---|---|---|"]
    front = []
    for variant in dict.fromkeys(r["variant"] for r in scores):
        for m in MEMBERS:
            for it in ITERATIONS:
                sel = [r for r in scores if r["variant"] == variant and r["members"] == m
                       and r["iterations"] == it]
                if not sel:
                    continue
                worst = {c: min(r["iou_ref"] for r in sel if r["case"] == c) for c in cases}
                mask = {c: np.mean([r["iou_mask"] for r in sel if r["case"] == c])
                        for c in cases}
                ref_mask = {c: np.mean([r["iou_mask"] for r in scores if r["case"] == c and
                                        r["variant"] == "fp32" and r["members"] == N_MAX
                                        and r["iterations"] == I_MAX]) for c in cases}
                # quality loss against the reference, by the mask: worst per image
                loss = {c: min(r["iou_mask"] for r in sel if r["case"] == c) - min(
                    r["iou_mask"] for r in scores if r["case"] == c and r["variant"] ==
                    "fp32" and r["members"] == N_MAX and r["iterations"] == I_MAX)
                    for c in cases}
                cost = m * it / (N_MAX * I_MAX) * (0.25 if variant == "half" else 1.0)
                wc = min(worst, key=worst.get)
                ok = sum(1 for c in cases if loss[c] >= -0.01)
                lines.append(f"| {variant} | {m} | {it} | {cost:.3f} | {wc} {worst[wc]:.3f} | "
                             f"{np.mean(list(worst.values())):.3f} | "
                             f"{np.mean(list(mask.values())):.3f} | {ok}/{len(cases)} |")
                front.append((variant, m, it, cost, float(np.mean(list(mask.values()))),
                              min(loss.values()), float(np.mean(list(ref_mask.values())))))
    print("\n".join(lines))
    if args.plot:
        _plot(front, args.plot)


def _plot(front: list, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=80)
    for variant, marker in (("fp32", "o"), ("half", "s"), ("bf16", "^")):
        pts = [f for f in front if f[0] == variant]
        if pts:
            ax.scatter([p[3] for p in pts], [p[5] for p in pts], marker=marker, label=variant,
                       alpha=0.7)
    ax.axhline(-0.01, color="grey", lw=0.8, ls="--")
    ax.set_xscale("log")
    ax.set_xlabel("fit cost relative to 11 members x 50 iterations")
    ax.set_ylabel("worst per-image IoU change vs 11x50 (vs mask)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("stage", choices=("fit", "eval", "report"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=["fp32", "half"])
    parser.add_argument("--only", nargs="*")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--work", type=Path, default=Path.home() / ".cache" / "napari-dsp"
                        / "study_speed")
    parser.add_argument("--plot", type=Path)
    args = parser.parse_args(argv)
    {"fit": cmd_fit, "eval": cmd_eval, "report": cmd_report}[args.stage](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
