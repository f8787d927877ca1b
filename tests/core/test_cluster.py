"""Clustering the prior: window features, K-means, class order, the foreground rule."""

import numpy as np
import pytest

from napari_dsp.core import cluster as _cluster


def two_level_prior(rng, shape=(40, 50), fg=0.8, bg=0.2):
    prior = np.full((1, *shape), bg, np.float32)
    prior[:, 10:25, 15:35] = fg
    return prior + rng.normal(0, 0.01, prior.shape).astype(np.float32)


def test_two_classes_find_the_square_inside_the_border(rng):
    prior = two_level_prior(rng)
    labels, info = _cluster.cluster_prior(prior, n_classes=2, window=3, seed=0)
    truth = np.zeros(prior.shape[1:], bool)
    truth[10:25, 15:35] = True
    assert labels.dtype == np.uint8 and set(np.unique(labels)) == {0, 1}
    assert ((labels == 1) == truth).mean() > 0.99
    assert info["foreground_rule"] == "covers less of the image border"


def test_a_dark_object_is_foreground_too(rng):
    prior = two_level_prior(rng, fg=0.1, bg=0.9)
    labels, _ = _cluster.cluster_prior(prior, n_classes=2, window=3, seed=0)
    assert (labels[11:24, 16:34] == 1).all() and (labels[:5] == 0).all()


def test_classes_are_ordered_by_intensity_and_shared_over_planes(rng):
    a = np.concatenate([np.full((1, 20, 10), v, np.float32) for v in (0.1, 0.5, 0.9)], 2)
    b = a[:, :, ::-1].copy()  # the same classes, mirrored
    (la, lb), _ = _cluster.cluster_priors([a, b], n_classes=3, window=1, seed=0)
    assert (la[:, :10] == 1).all() and (la[:, 10:20] == 2).all() and (la[:, 20:] == 3).all()
    np.testing.assert_array_equal(lb, la[:, ::-1])  # an id means the same in both planes


def test_too_few_distinct_values_for_the_classes_asked():
    prior = np.zeros((1, 20, 20), np.float32)
    prior[:, :10] = 1.0
    with pytest.raises(ValueError, match="only 2 distinct value.*lower n_classes"):
        _cluster.cluster_prior(prior, n_classes=3, window=1, seed=0)


def test_projection_equals_the_explicit_window_features(rng):
    prior = rng.random((2, 12, 14)).astype(np.float32)
    axes, mean = _cluster.principal_axes([prior], 3, np.random.default_rng(0))
    proj = _cluster.project(prior, axes, mean)
    padded = np.pad(prior, ((0, 0), (1, 1), (1, 1)), mode="reflect")
    y, x = 5, 7
    window = padded[:, y : y + 3, x : x + 3].reshape(-1)
    expected = axes.reshape(len(axes), -1) @ (window - mean)
    np.testing.assert_allclose(proj[y * 14 + x], expected, rtol=1e-4, atol=1e-5)


def test_tie_on_the_border_makes_the_smaller_class_foreground():
    two = np.zeros((40, 40), np.uint8)
    two[:, :20] = 1  # both classes on half of the border
    two[:, 18:20] = 0  # class 1 slightly smaller
    fg, info = _cluster.choose_foreground(two)
    assert fg == 1 and "smaller class" in info["foreground_rule"]
