"""Stacks and time-lapses: every plane its own prior, shared classes."""

import numpy as np
import pytest

from napari_dsp import segment_stack
from napari_dsp._synthetic import dark_on_bright

FAST = dict(n_iter=25, n_runs=2, n_workers=0, seed=0)


def moving_discs(n_t=3, shape=(48, 48)):
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    frames, masks = [], []
    rng = np.random.default_rng(0)
    for t in range(n_t):
        mask = (yy - 24) ** 2 + (xx - 14 - 8 * t) ** 2 <= 8 ** 2
        frames.append(np.where(mask, 0.8, 0.2) + rng.normal(0, 0.05, shape))
        masks.append(mask)
    return np.stack(frames).astype(np.float32), np.stack(masks)


def iou(a, b):
    return np.logical_and(a, b).sum() / np.logical_or(a, b).sum()


def test_time_lapse_of_moving_discs_has_consistent_ids():
    movie, masks = moving_discs()
    seen = []
    labels = segment_stack(movie, progress=seen.append, **FAST)
    assert labels.shape == movie.shape and labels.dtype == np.uint8
    for t in range(len(movie)):
        assert iou(labels[t] == 1, masks[t]) > 0.85  # the disc is 1 in every frame
    assert {p.plane for p in seen} == {0, 1, 2} and seen[0].n_planes == 3


def test_multiclass_ids_mean_the_same_in_every_plane():
    rng = np.random.default_rng(1)
    base = np.repeat(np.array([0.1, 0.5, 0.9])[None, :].repeat(16, 1), 48, 0)
    stack = np.stack([base, base[:, ::-1], base]) + rng.normal(0, 0.03, (3, 48, 48))
    labels = segment_stack(stack, n_classes=3, **FAST)
    for z in range(3):
        dark = stack[z] < 0.3
        assert np.bincount(labels[z][dark]).argmax() == 1
        bright = stack[z] > 0.7
        assert np.bincount(labels[z][bright]).argmax() == 3


def test_txzyx_and_channels_and_full_output():
    img, _ = dark_on_bright((32, 32))
    tz = np.stack([np.stack([img, img])] * 2)  # (T=2, Z=2, Y, X)
    res = segment_stack(tz, full_output=True, **dict(FAST, n_iter=3))
    assert res.labels.shape == (2, 2, 32, 32)
    assert res.prior.prior.shape == (2, 2, 32, 32) and res.prior.spread.shape == (2, 2, 32, 32)
    zc = np.stack([np.stack([img, 1 - img], axis=0)] * 2)  # (Z=2, C=2, Y, X)
    res = segment_stack(zc, channel_axis=1, full_output=True, **dict(FAST, n_iter=3))
    assert res.labels.shape == (2, 32, 32) and res.prior.prior.shape == (2, 2, 32, 32)


@pytest.mark.parametrize("shape, kwargs, match", [
    ((2, 2, 2, 32, 32), {}, "5 dimensions"),
    ((2, 32, 32), {"channel_axis": 5}, "out of range"),
    ((2, 32, 32), {"method": "kanezaki"}, "method='kmeans' only"),
])
def test_stack_errors(shape, kwargs, match):
    with pytest.raises(ValueError, match=match):
        segment_stack(np.random.default_rng(0).random(shape), **dict(FAST, **kwargs))
