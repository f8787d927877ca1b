"""Multi-class segmentation of textures of (nearly) equal brightness (issue 15).

Procedural mosaics with known regions: 256x256 (``--size``), 2 to 4 regions with wavy
borders (Voronoi cells of random seeds, displaced by smooth noise), each filled with a
different procedural texture (oriented stripes, random-phase band-pass textures of
different spectra, blobs, noise of different grain), all at mean 0.5 and the same
standard deviation (0.15) before 8-bit quantisation; the ``offset`` mosaics add a
per-region brightness offset of up to +-0.08. Every image is generated from its seed;
nothing is downloaded. ``--photos`` fills the same regions with photographed textures
instead: crops of four images in scikit-image's wheel (:data:`PHOTOS`: ihc, hubble deep
field, page, retina; brick, grass, gravel and moon are left for checks), normalised the
same way.

Methods, all in the same run on the same images:

- ``pixels``: K-means on the raw pixel values (K given);
- ``gabor``: K-means on the standardised Gabor energies of the same bank the texture
  channels use (4 scales x 4 orientations), each smoothed over its filter's sigma (the
  classic filter-bank baseline, K given); ``gabor-2scales``: the same on the energies the
  texture channels are made of (each at both of ``core.texture.SCALES``);
  ``texture-channels``: the image and its texture channels, unfitted, handed to
  ``napari_dsp.segment(image, prior=...)`` in place of their prior (the same window
  features, K-means and,
  for two classes, the same noise test and clean-up as ``dsp-texture``): what the fit
  itself adds;
- ``felzenszwalb``: scikit-image's graph segmentation (scale 400, sigma 1, min size
  200; K not given);
- ``dsp``: ``napari_dsp.segment(n_classes=K)`` (intensity prior, defaults);
- ``dsp-texture``: ``napari_dsp.segment(n_classes=K, texture=True)``;
- the self-training (K found; ``--kanezaki`` adds them all, ``--methods`` picks): on
  superpixels of the raw image (``kanezaki-no-prior``, the research's ``--no-prior``), of
  the intensity prior (``kanezaki-prior``, the research's default) and of the texture
  prior (``kanezaki-texture``), each with the default superpixels (10,000, at least 25 px
  each, compactness 100); ``-sp400`` variants use superpixels of 400 px (one period of
  the bank's lowest frequency) at compactness 10 (``-c100``: 100). The priors are fitted
  once per mosaic and seed, outside the runs' times.

Scores: adjusted Rand index (ARI) against the regions, pixel accuracy after
Hungarian matching of classes to regions, classes found, seconds; for the self-training
also its iterations, the iteration it reached ``min_labels`` and the classes it had
trained before the final merge. ``--json`` appends every row to a JSON-lines file
(several processes can split the mosaics with ``--first``).

    python benchmarks/bench_textures.py [--mosaics 8] [--first 0] [--size 256]
        [--seeds 0 1] [--methods ...] [--kanezaki] [--photos] [--json rows.jsonl]
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import numpy as np
from scipy import ndimage as ndi
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score

KINDS = [("stripes", 0.0, 8.0), ("stripes", np.pi / 2, 8.0), ("stripes", np.pi / 4, 5.0),
         ("spectrum", 0.05, 0.015), ("spectrum", 0.25, 0.04), ("blobs", 2.0, 0.3),
         ("blobs", 4.0, 0.5), ("grain", 0.0), ("grain", 2.5)]


#: Photographed textures (``--photos``): crops of images that scikit-image ships inside
#: its wheel (skimage/data, no download; measured with 0.26.0; not its texture photos
#: brick, grass, gravel and moon), as (file, top, left, height, width); a crop smaller
#: than the mosaic is mirrored to fill it. Checked by eye to hold one texture each:
#: fibrous stained tissue (ihc), a star field (hubble_deep_field), printed text (page),
#: the retina's background with vessels (retina).
PHOTOS = [("photo", "ihc.png", 0, 0, 256, 256),
          ("photo", "hubble_deep_field.jpg", 300, 300, 256, 256),
          ("photo", "page.png", 40, 0, 151, 384),
          ("photo", "retina.jpg", 900, 300, 256, 256)]


def photo(kind, shape) -> np.ndarray:
    """A ``shape`` field of the luminance of a photographed crop (mirrored to fill)."""
    import os

    import skimage
    from skimage import color, io

    _, name, top, left, h, w = kind
    im = io.imread(os.path.join(os.path.dirname(skimage.__file__), "data", name))
    gray = color.rgb2gray(im[..., :3]) if im.ndim == 3 else im / 255.0
    crop = gray[top:top + h, left:left + w]
    reps = [-(-n // c) for n, c in zip(shape, crop.shape)]
    tiled = np.block([[crop[:, ::(-1) ** j][::(-1) ** i] for j in range(reps[1])]
                      for i in range(reps[0])])
    return tiled[:shape[0], :shape[1]]


def regions(shape, k, rng, wave=12.0):
    h, w = shape
    for _ in range(200):  # keep the cells' seeds apart
        seeds = rng.uniform(0, 1, (k, 2)) * [h, w]
        d = np.linalg.norm(seeds[:, None] - seeds[None], axis=-1) + np.eye(k) * 1e9
        if d.min() > 0.35 * min(h, w):
            break
    yy, xx = np.mgrid[0:h, 0:w].astype(float)
    dy = ndi.gaussian_filter(rng.normal(size=shape), 20)
    dx = ndi.gaussian_filter(rng.normal(size=shape), 20)
    y, x = yy + dy * wave / dy.std(), xx + dx * wave / dx.std()
    return np.argmin([(y - sy) ** 2 + (x - sx) ** 2 for sy, sx in seeds], 0)


def texture(kind, shape, rng):
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(float)
    if kind[0] == "photo":
        t = photo(kind, shape)
    elif kind[0] == "stripes":
        _, theta, period = kind
        t = np.sin(2 * np.pi * (xx * np.cos(theta) + yy * np.sin(theta)) / period
                   + rng.uniform(0, 2 * np.pi)) + 0.3 * rng.normal(size=shape)
    elif kind[0] == "spectrum":  # random phase, a ring of the spectrum at f0 (cycles/px)
        _, f0, bw = kind
        f = np.hypot(np.fft.fftfreq(h)[:, None], np.fft.fftfreq(w)[None])
        t = np.real(np.fft.ifft2(np.exp(-0.5 * ((f - f0) / bw) ** 2)
                                 * np.exp(2j * np.pi * rng.uniform(size=shape))))
    elif kind[0] == "blobs":
        _, sigma, fill = kind
        g = ndi.gaussian_filter(rng.normal(size=shape), sigma)
        t = ndi.gaussian_filter((g > np.quantile(g, 1 - fill)).astype(float), 0.7)
    else:
        _, sigma = kind
        t = rng.normal(size=shape)
        t = ndi.gaussian_filter(t, sigma) if sigma else t
    return (t - t.mean()) / (t.std() + 1e-12)


def mosaic(k: int, seed: int, size: int = 256, offset: float = 0.0, kinds=None):
    """``(uint8 image, regions)`` of a k-region mosaic of textures drawn from ``kinds``
    (default :data:`KINDS`)."""
    rng = np.random.default_rng(seed)
    shape = (size, size)
    reg = regions(shape, k, rng)
    pool = KINDS if kinds is None else kinds
    kinds = [pool[i] for i in rng.choice(len(pool), k, replace=False)]
    offs = rng.permutation(np.linspace(-offset, offset, k)) if offset else np.zeros(k)
    img = np.zeros(shape)
    for i, kind in enumerate(kinds):
        img[reg == i] = 0.5 + offs[i] + 0.15 * texture(kind, shape, rng)[reg == i]
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8), reg


def matched_accuracy(truth: np.ndarray, labels: np.ndarray) -> float:
    """Pixel accuracy after the best one-to-one matching of classes to regions."""
    t, lab = np.unique(truth, return_inverse=True)[1], np.unique(labels, return_inverse=True)[1]
    table = np.zeros((t.max() + 1, lab.max() + 1))
    np.add.at(table, (t.ravel(), lab.ravel()), 1)
    rows, cols = linear_sum_assignment(-table)
    return float(table[rows, cols].sum() / truth.size)


def kmeans(features: np.ndarray, k: int) -> np.ndarray:
    x = features.reshape(len(features), -1).T
    return KMeans(k, n_init=10, random_state=0).fit_predict(x).reshape(features.shape[1:])


#: Methods with K given, and those whose result does not depend on the seed.
BASE = ["pixels", "gabor", "gabor-2scales", "texture-channels", "felzenszwalb", "dsp",
        "dsp-texture"]
DETERMINISTIC = {"pixels", "gabor", "gabor-2scales", "texture-channels", "felzenszwalb"}
#: Self-training variants: (prior: None / "intensity" / "texture", superpixel area in
#: pixels or None for the default (10,000 superpixels, at least 25 px each), compactness).
KANEZAKI = {
    "kanezaki-no-prior": (None, None, 100.0),  # the research's --no-prior-superpixels
    "kanezaki-prior": ("intensity", None, 100.0),  # the research's default
    "kanezaki-texture": ("texture", None, 100.0),
    "kanezaki-texture-sp400": ("texture", 400, 10.0),
    "kanezaki-no-prior-sp400": (None, 400, 10.0),
    "kanezaki-prior-sp400": ("intensity", 400, 10.0),
    "kanezaki-texture-sp400-c100": ("texture", 400, 100.0),
}
_PRIORS: dict = {}


def prior_for(method: str, image: np.ndarray, seed: int):
    """The prior a self-training variant is guided by (None without one), fitted once per
    image, seed and kind; returns ``(prior, seconds spent fitting it now)``."""
    import napari_dsp

    guide = KANEZAKI[method][0]
    if guide is None:
        return None, 0.0
    key = (hash(image.tobytes()), seed, guide)
    if key in _PRIORS:
        return _PRIORS[key], 0.0
    if len(_PRIORS) > 4:
        _PRIORS.clear()
    t0 = time.perf_counter()
    _PRIORS[key] = napari_dsp.fit_prior(image, seed=seed, texture=guide == "texture")
    return _PRIORS[key], time.perf_counter() - t0


def kanezaki(method: str, image: np.ndarray, seed: int) -> np.ndarray:
    """One self-training run on the prior of :func:`prior_for` (fitted before the run's
    clock starts)."""
    import napari_dsp

    guide, area, compactness = KANEZAKI[method]
    prior, _ = prior_for(method, image, seed)
    n_sp = image.size // area if area else 10000
    r = napari_dsp.segment(image, prior=prior, method="kanezaki",
                           prior_superpixels=prior is not None,
                           texture=guide == "texture", seed=seed, n_superpixels=n_sp,
                           compactness=compactness, full_output=True)
    run.kanezaki = r.metadata["kanezaki"]
    return r.labels


def run(method: str, image: np.ndarray, k: int, seed: int) -> np.ndarray:
    import napari_dsp
    from napari_dsp.core.texture import gabor_energies

    g = image.astype(np.float32) / 255.0
    if method == "pixels":
        return kmeans(g[None], k)
    if method in ("gabor", "gabor-2scales"):  # 2scales: the texture channels' energies
        from napari_dsp.core.texture import SCALES

        e = gabor_energies(g, smooth=1.0 if method == "gabor" else SCALES)
        e = (e - e.mean((1, 2), keepdims=True)) / (e.std((1, 2), keepdims=True) + 1e-9)
        return kmeans(e, k)
    if method == "texture-channels":  # what dsp-texture clusters, without the fit
        from napari_dsp.core.image import normalize
        from napari_dsp.core.texture import texture_channels
        from napari_dsp.results import PriorResult

        data = normalize(image[None])  # as fit_prior normalises it
        unfitted = PriorResult(data[0], np.zeros(image.shape, np.float32),
                               texture=texture_channels(data))
        return napari_dsp.segment(image, prior=unfitted, full_output=True, n_classes=k,
                                  texture=True, seed=seed).labels
    if method == "felzenszwalb":
        from skimage.segmentation import felzenszwalb

        return felzenszwalb(g, scale=400, sigma=1.0, min_size=200)
    if method == "dsp":
        return napari_dsp.segment(image, n_classes=k, seed=seed)
    if method == "dsp-texture":
        return napari_dsp.segment(image, n_classes=k, texture=True, seed=seed)
    if method.startswith("kanezaki"):
        return kanezaki(method, image, seed)
    raise ValueError(method)


def mean(values: list) -> str:
    return f"{np.mean(values):.3f}" if values else "-"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mosaics", type=int, default=8, help="half equal brightness, "
                        "half with offsets")
    parser.add_argument("--first", type=int, default=0, help="index of the first mosaic "
                        "(mosaic i has seed 100 + i)")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0],
                        help="seeds of the napari-dsp runs")
    parser.add_argument("--methods", nargs="+", default=BASE, choices=BASE + list(KANEZAKI))
    parser.add_argument("--kanezaki", action="store_true", help="add the self-training "
                        "variants to --methods")
    parser.add_argument("--json", help="also write every row to this JSON-lines file")
    parser.add_argument("--photos", action="store_true", help="photographed textures "
                        "(PHOTOS) instead of the procedural ones")
    args = parser.parse_args(argv)
    methods = args.methods + (list(KANEZAKI) if args.kanezaki else [])
    print("| mosaic | regions | offset | seed | method | ARI | matched accuracy | classes | "
          "iterations (to min_labels) | classes trained | time |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|")
    scores: dict = {m: [] for m in methods}
    for i in range(args.first, args.first + args.mosaics):
        k, offset = 2 + i % 3, (0.08 if i % 2 else 0.0)
        image, truth = mosaic(k, 100 + i, args.size, offset,
                              PHOTOS if args.photos else None)
        for seed in args.seeds:
            for m in methods:
                if seed != args.seeds[0] and m in DETERMINISTIC:
                    continue
                run.kanezaki = {}
                fitted = prior_for(m, image, seed)[1] if m in KANEZAKI else 0.0
                t0 = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    labels = run(m, image, k, seed)
                seconds = time.perf_counter() - t0
                row = dict(mosaic=100 + i, k=k, offset=offset, seed=seed, method=m,
                           size=args.size, ari=adjusted_rand_score(truth.ravel(),
                                                                   labels.ravel()),
                           accuracy=matched_accuracy(truth, labels),
                           classes=len(np.unique(labels)), seconds=seconds,
                           prior_seconds=fitted,
                           **{f"kanezaki_{a}": b for a, b in run.kanezaki.items()})
                scores[m].append(row)
                kz = run.kanezaki
                its = (f"{kz['iterations']} ({kz['min_labels_reached_at']})" if kz else "")
                print(f"| {100 + i} | {k} | {offset:g} | {seed} | {m} | {row['ari']:.3f} | "
                      f"{row['accuracy']:.3f} | {row['classes']} | {its} | "
                      f"{kz.get('classes_trained', '')} | {seconds:.1f} s |", flush=True)
                if args.json:
                    with open(args.json, "a") as out:
                        out.write(json.dumps(row) + "\n")
    print("\n| method | runs | mean ARI | equal brightness | offsets | mean matched accuracy "
          "| classes = K | classes within K +- 1 | mean iterations | reached min_labels |\n"
          "|---|---|---|---|---|---|---|---|---|---|")
    for m, rows in scores.items():
        a = np.array([[r["ari"], r["accuracy"], r["classes"], r["k"]] for r in rows])
        eq = [r["ari"] for r in rows if r["offset"] == 0]
        off = [r["ari"] for r in rows if r["offset"] != 0]
        its = [r["kanezaki_iterations"] for r in rows if "kanezaki_iterations" in r]
        reached = sum(r.get("kanezaki_min_labels_reached_at") is not None for r in rows)
        print(f"| {m} | {len(a)} | {a[:, 0].mean():.3f} | {mean(eq)} | {mean(off)} | "
              f"{a[:, 1].mean():.3f} | "
              f"{int((a[:, 2] == a[:, 3]).sum())}/{len(a)} | "
              f"{int((abs(a[:, 2] - a[:, 3]) <= 1).sum())}/{len(a)} | "
              + (f"{np.mean(its):.0f} | {reached}/{len(a)} |" if its else "| |"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
