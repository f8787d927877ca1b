"""Multi-class segmentation that finds the number of classes itself (Kanezaki 2018),
seeded by the prior, with the TIP 2020 variant (spatial continuity loss, scribbles).

A small convolutional network on the ORIGINAL image outputs ``n_features`` responses per
pixel; the per-pixel argmax is the current labelling. Each iteration the target is that
argmax made uniform inside each superpixel (majority vote; superpixels come from SLIC on
the PRIOR, so they follow objects rather than texture), and the network is trained
towards it with cross-entropy. Classes merge as training goes on; the fit stops
``stabilize_iter`` iterations after the number of labels has fallen to ``min_labels``,
or at ``max_iter``.

TIP 2020 variant (``continuity_weight > 0``): no superpixels; the target is the plain
argmax, and an L1 penalty on the responses' horizontal and vertical differences keeps
regions contiguous. Scribbles (``(Y, X)`` ints, 0 = unlabelled) add a cross-entropy term
that pulls painted pixels to channel = their scribble id, so painted classes keep their ids.
"""

from __future__ import annotations

import threading
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from typing import Optional

import numpy as np
import torch
from torch import nn

from .nets import FeatureNet
from .progress import FitProgress

#: Fewest pixels per superpixel on average (caps n_superpixels on small images).
MIN_SUPERPIXEL_AREA = 25

#: cuDNN's flags are process-wide; training steps that set them take turns.
_CUDNN_LOCK = threading.Lock()


@contextmanager
def repeatable(device: torch.device) -> Iterator[None]:
    """On CUDA, run the enclosed training step with cuDNN's deterministic convolution
    algorithms (its default ones accumulate gradients in no fixed order, and the
    self-training amplifies the difference: measured on an H100, two runs with the same
    seed differed in 1 % of the pixels; with this, in none), then restore the flags.
    Nothing changes on other devices. The lock orders the self-training's steps among
    themselves only: other CUDA work running meanwhile in another thread (a prior fit)
    sees the flags set, and a flag it sets in that window is put back afterwards."""
    if torch.device(device).type != "cuda":
        yield
        return
    cudnn = torch.backends.cudnn
    with _CUDNN_LOCK:
        before = cudnn.deterministic, cudnn.benchmark
        cudnn.deterministic, cudnn.benchmark = True, False
        try:
            yield
        finally:
            cudnn.deterministic, cudnn.benchmark = before


def superpixels(guide: np.ndarray, n_segments: int, compactness: float) -> np.ndarray:
    """SLIC superpixels of a ``(C, Y, X)`` guide in [0, 1] (the prior, or the image).

    RGB guides are clustered in Lab (as the research code did); other guides are scaled to
    [0, 100] first, the range of Lab lightness, so ``compactness`` means the same.
    Returns ``(Y, X)`` int32 ids 0..N-1.
    """
    from skimage.segmentation import slic

    c = guide.shape[0]
    if c == 3:
        img, kw = np.moveaxis(guide, 0, -1), {"channel_axis": -1, "convert2lab": True}
    else:
        img = np.moveaxis(guide, 0, -1) * 100.0
        kw = {"channel_axis": -1, "convert2lab": False}
    sp = slic(
        img.astype(np.float64),
        n_segments=n_segments,
        compactness=compactness,
        start_label=0,
        enforce_connectivity=True,
        **kw,
    )
    _, sp = np.unique(sp, return_inverse=True)
    return sp.reshape(guide.shape[1:]).astype(np.int32)


def majority(target: np.ndarray, sp: np.ndarray, n_sp: int, n_features: int) -> np.ndarray:
    """Replace each pixel's label by the most frequent label in its superpixel."""
    counts = np.bincount(sp * n_features + target, minlength=n_sp * n_features)
    return counts.reshape(n_sp, n_features).argmax(1)[sp]


def compact_ids(
    labels: np.ndarray, image: np.ndarray, keep: Optional[np.ndarray] = None
) -> np.ndarray:
    """Renumber raw channel labels to 1..K.

    Channels listed in ``keep`` (scribble ids) keep their value; the others get the next
    ids, ordered by increasing mean intensity of ``image`` (``(C, Y, X)``) over the class.
    """
    keep_set = {int(k) for k in (keep if keep is not None else [])}
    present = np.unique(labels)
    intensity = image.mean(0)
    others = [int(c) for c in present if int(c) not in keep_set]
    means = [float(intensity[labels == c].mean()) for c in others]
    mapping = np.zeros(int(labels.max()) + 1, dtype=np.int64)
    next_id = max(keep_set) + 1 if keep_set else 1
    for c in present:
        if int(c) in keep_set:
            mapping[c] = int(c)
    for c in (others[i] for i in np.argsort(means, kind="stable")):
        mapping[c] = next_id
        next_id += 1
    return mapping[labels]


def merge_unpainted(
    labels: np.ndarray, response: np.ndarray, painted: np.ndarray, target: int
) -> tuple[np.ndarray, int]:
    """With scribbles, when more classes than the stopping point remain at the end
    (``max_iter`` came first, or a class reappeared while stabilising): merge the smallest
    unpainted class into the class whose response is highest on its pixels, until at most
    ``target`` classes remain or only painted ones are left. Returns (labels, merges)."""
    labels = labels.copy()
    painted_set = {int(p) for p in painted}
    merges = 0
    while True:
        present, counts = np.unique(labels, return_counts=True)
        free = [(n, int(c)) for c, n in zip(present, counts) if int(c) not in painted_set]
        if len(present) <= target or not free:
            return labels, merges
        _, c = min(free)
        mask = labels == c
        others = [int(k) for k in present if int(k) != c]
        scores = [float(response[k][mask].mean()) for k in others]
        labels[mask] = others[int(np.argmax(scores))]
        merges += 1


#: Touching classes whose mean guide values are closer than this many within-class
#: standard deviations are one class (see :func:`merge_indistinct`). Measured on the
#: self-training's unconverged results: a region split in two, or a seam along a border,
#: lies at 0.3-2.3; two different regions at 9 or more.
MIN_SEPARATION = 3.0
#: Class statistics are taken inside the class, this many pixels from its outline: the
#: prior's blurred borders would otherwise inflate every class's spread.
INTERIOR = 2


def separations(labels: np.ndarray, guide: np.ndarray) -> dict:
    """For every pair of classes that touch (4-neighbours) in ``labels`` (Y, X): the
    distance of their mean ``guide`` (C, Y, X) values in units of their pooled
    within-class standard deviation, ``{(a, b): d}`` with ``a < b``. Means and spreads
    are measured on each class's interior (:data:`INTERIOR` pixels in; the whole class
    when that leaves fewer than 10 pixels, as for a seam)."""
    from scipy import ndimage as ndi

    flat = guide.reshape(guide.shape[0], -1).astype(np.float64)
    stats = {}
    for c in np.unique(labels):
        mask = labels == c
        inner = ndi.binary_erosion(mask, iterations=INTERIOR)
        values = flat[:, (inner if inner.sum() >= 10 else mask).ravel()]
        stats[int(c)] = (values.mean(1), max(float(values.var(1).mean()), 1e-8))
    pairs = set()
    for a, b in ((labels[:, :-1], labels[:, 1:]), (labels[:-1, :], labels[1:, :])):
        edge = a != b
        lo, hi = np.minimum(a[edge], b[edge]), np.maximum(a[edge], b[edge])
        pairs.update(zip(lo.tolist(), hi.tolist()))
    out = {}
    for a, b in pairs:
        (ma, va), (mb, vb) = stats[a], stats[b]
        out[(int(a), int(b))] = float(np.linalg.norm(ma - mb) / np.sqrt(0.5 * (va + vb)))
    return out


def merge_indistinct(
    labels: np.ndarray, guide: np.ndarray, floor: int, keep: Optional[np.ndarray] = None
) -> tuple[np.ndarray, int]:
    """Merge touching classes that the guide (the prior) cannot tell apart, closest pair
    first, while more than ``floor`` classes remain: two classes whose mean guide values
    differ by less than :data:`MIN_SEPARATION` pooled within-class standard deviations
    are one region that the self-training split (it had not reached its stopping point),
    or a seam along a border. Painted classes (``keep``) are never merged together; an
    unpainted class merges into a painted one. Returns (labels, merges)."""
    labels = labels.copy()
    painted = {int(p) for p in (keep if keep is not None else [])}
    merges = 0
    while len(np.unique(labels)) > floor:
        candidates = [
            (d, a, b)
            for (a, b), d in separations(labels, guide).items()
            if d < MIN_SEPARATION and not (a in painted and b in painted)
        ]
        if not candidates:
            break
        _, a, b = min(candidates)
        sizes = {c: int((labels == c).sum()) for c in (a, b)}
        # the painted class keeps its id; else the larger class does
        into, gone = (
            (a, b) if a in painted or (b not in painted and sizes[a] >= sizes[b]) else (b, a)
        )
        labels[labels == gone] = into
        merges += 1
    return labels, merges


def iter_kanezaki(
    image: np.ndarray,
    guide: Optional[np.ndarray],
    *,
    seed: int,
    device: torch.device,
    n_features: int = 100,
    n_conv: int = 2,
    learning_rate: float = 0.1,
    momentum: float = 0.9,
    min_labels: int = 3,
    max_iter: int = 1000,
    stabilize_iter: int = 50,
    n_superpixels: int = 10000,
    compactness: float = 100.0,
    continuity_weight: float = 0.0,
    similarity_weight: float = 1.0,
    scribbles: Optional[np.ndarray] = None,
    scribble_weight: float = 0.5,
    preview_every: int = 0,
) -> Generator[FitProgress, None, tuple[np.ndarray, dict]]:
    """Run the self-training; yields progress, returns ``(labels 1..K (Y, X), info)``.

    Parameters
    ----------
    image : ndarray, shape (C, Y, X), float32 in [0, 1]
        The original image (the network's input).
    guide : ndarray, shape (C, Y, X), or None
        What the superpixels are computed on (the prior; or the image, to run without the
        prior). Ignored when ``continuity_weight > 0``.
    scribbles : ndarray, shape (Y, X), int, optional
        0 = unlabelled, v > 0 = class v (v < n_features). The stopping point is then at
        least the number of painted classes.
    """
    c, h, w = image.shape
    # The run's own generator: the global torch RNG is shared by every thread of the
    # process (two widgets running at once would race on it).
    generator = torch.Generator().manual_seed(int(seed))
    use_superpixels = continuity_weight <= 0
    if use_superpixels:
        # 10,000 superpixels suit the research's ~0.1-megapixel photos; a small image would
        # get superpixels of one pixel, where the majority vote does nothing.
        n_segments = int(min(n_superpixels, max(2, h * w // MIN_SUPERPIXEL_AREA)))
        sp = superpixels(guide if guide is not None else image, n_segments, compactness).reshape(-1)
        n_sp = int(sp.max()) + 1
    scr = None
    if scribbles is not None:
        scr = np.asarray(scribbles).reshape(-1).astype(np.int64)
        painted = scr > 0
        scr_idx = torch.from_numpy(np.flatnonzero(painted)).to(device)
        free_idx = torch.from_numpy(np.flatnonzero(~painted)).to(device)
        scr_target = torch.from_numpy(scr[painted]).to(device)
        # The painted classes must survive: stop no lower than their number.
        min_labels = max(min_labels, len(np.unique(scr[painted])))
    net = FeatureNet(c, n_features, n_conv, generator=generator).to(device)
    x = torch.from_numpy(np.ascontiguousarray(image))[None].to(device)
    opt = torch.optim.SGD(net.parameters(), lr=learning_rate, momentum=momentum)
    ce = nn.CrossEntropyLoss()
    reached_at: Optional[int] = None
    it = 0
    for it in range(1, max_iter + 1):
        with repeatable(device):  # one training step
            out = net(x)[0]  # (F, h, w)
            flat = out.permute(1, 2, 0).reshape(-1, n_features)
            argmax = flat.argmax(1)
            raw = argmax.cpu().numpy()
            n_labels = len(np.unique(raw))
            if use_superpixels:
                target = torch.from_numpy(majority(raw, sp, n_sp, n_features)).to(device)
            else:
                target = argmax
            if scr is None:
                loss = similarity_weight * ce(flat, target)
            else:
                loss = similarity_weight * ce(
                    flat[free_idx], target[free_idx]
                ) + scribble_weight * ce(flat[scr_idx], scr_target)
            if continuity_weight > 0:
                dy = (out[:, 1:, :] - out[:, :-1, :]).abs().mean()
                dx = (out[:, :, 1:] - out[:, :, :-1]).abs().mean()
                loss = loss + continuity_weight * (dy + dx)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if reached_at is None and n_labels <= min_labels:
            reached_at = it
        preview = None
        if preview_every and it % preview_every == 0:
            preview = raw.reshape(h, w)
        total = min(max_iter, reached_at + stabilize_iter) if reached_at else max_iter
        yield FitProgress(it, total, preview, float(loss.detach()), stage="classes")
        if reached_at is not None and it >= reached_at + stabilize_iter:
            break
    with torch.no_grad(), repeatable(device):
        response = net(x)[0].cpu().numpy()
    final = response.argmax(0)
    keep = np.unique(scr[scr > 0]) if scr is not None else None
    found = int(len(np.unique(final)))
    # Not converged (more classes than the stopping point): classes the guide cannot
    # tell apart are one. This makes the answer independent of where the (chaotic)
    # trajectory happened to be at max_iter on this machine.
    final, merged = merge_indistinct(final, guide if guide is not None else image, min_labels, keep)
    if keep is not None:
        final, more = merge_unpainted(final, response, keep, min_labels)
        merged += more
    labels = compact_ids(final, image, keep)
    info = {
        "iterations": it,
        "min_labels_reached_at": reached_at,
        "classes_trained": found,
        "n_labels": int(len(np.unique(labels))),
        "merged_classes": merged,
    }
    return labels, info
