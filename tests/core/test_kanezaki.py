"""method='kanezaki': self-training seeded by the prior finds the number of classes."""

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from napari_dsp import fit_prior, segment
from napari_dsp.core.kanezaki import (
    compact_ids,
    majority,
    merge_indistinct,
    repeatable,
    separations,
)
from napari_dsp.core.nets import FeatureNet
from napari_dsp.generators import segment as iter_segment
from tests.synthetic import scribbles_for, textured_regions

PRIOR = dict(n_members=5, n_iter=50, n_threads=1, seed=0)


def run(n, size, seed, scribbles=False, **kw):
    image, truth = textured_regions(n, size=size, seed=seed)
    prior = fit_prior(image, **PRIOR)
    strokes = scribbles_for(truth, seed) if scribbles else None
    result = segment(
        image, prior=prior, method="kanezaki", seed=0, scribbles=strokes, full_output=True, **kw
    )
    return result, truth, strokes


@pytest.mark.parametrize("seed", [0, 1])
def test_three_regions_found_with_good_agreement(seed):
    result, truth, _ = run(3, 96, seed)
    found = len(np.unique(result.labels))
    assert abs(found - 3) <= 1
    assert adjusted_rand_score(truth.ravel(), result.labels.ravel()) >= 0.8
    labels = np.unique(result.labels)
    np.testing.assert_array_equal(labels, np.arange(1, found + 1))  # compact 1..K


@pytest.mark.slow
def test_four_regions_found_with_good_agreement():
    result, truth, _ = run(4, 64, 0)
    assert abs(len(np.unique(result.labels)) - 4) <= 1
    assert adjusted_rand_score(truth.ravel(), result.labels.ravel()) >= 0.8


@pytest.mark.parametrize("n", [3, 4])
def test_scribbles_give_exactly_the_painted_classes_and_keep_their_ids(n):
    result, truth, strokes = run(n, 96, 0, scribbles=True)
    assert set(np.unique(result.labels)) == set(range(1, n + 1))
    assert adjusted_rand_score(truth.ravel(), result.labels.ravel()) >= 0.9
    for k in range(1, n + 1):
        painted = result.labels[strokes == k]
        assert np.bincount(painted).argmax() == k  # the painted id is kept
    assert result.metadata["kanezaki"]["scribbles"] is True


def test_without_prior_no_fit_is_made():
    image, truth = textured_regions(3, size=64, seed=1)
    seen = []
    result = segment(
        image,
        method="kanezaki",
        prior_superpixels=False,
        seed=0,
        full_output=True,
        progress=seen.append,
    )
    assert result.prior is None
    assert {p.stage for p in seen} == {"classes"}
    assert adjusted_rand_score(truth.ravel(), result.labels.ravel()) > 0.5


def test_progress_stages_and_label_previews_and_stop():
    image, _ = textured_regions(3, size=48, seed=0)
    gen = iter_segment(
        image, method="kanezaki", n_members=2, n_iter=5, n_threads=1, seed=0, preview_every=2
    )
    stages, previews = [], []
    for p in gen:
        stages.append(p.stage)
        if p.stage == "classes" and p.preview is not None:
            previews.append(p.preview)
        if len(previews) == 2:
            break
    gen.close()
    assert stages[0] == "prior" and stages[-1] == "classes"
    assert previews[0].shape == (48, 48)


def test_same_seed_same_labels():
    """Exactly repeatable on the CPU. (On CUDA, cuDNN's convolution gradients are not
    bitwise repeatable: tests/test_cuda.py measures the agreement there.)"""
    image, _ = textured_regions(3, size=48, seed=2)
    prior = fit_prior(image, **PRIOR)
    a = segment(image, prior=prior, method="kanezaki", seed=3, max_iter=60, device="cpu")
    b = segment(image, prior=prior, method="kanezaki", seed=3, max_iter=60, device="cpu")
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(scribbles=np.zeros((48, 48), int)), ValueError, "method='kanezaki' only"),
        (
            dict(method="kanezaki", scribbles=np.zeros((10, 10), int)),
            ValueError,
            "scribbles have shape",
        ),
        (dict(method="kanezaki", scribbles=np.full((48, 48), -1)), ValueError, "scribble ids"),
        (
            dict(method="kanezaki", scribbles=np.zeros((48, 48), float)),
            TypeError,
            "integer label image",
        ),
        (dict(method="kanezaki", min_labels=50, n_features=20), ValueError, "below n_features"),
    ],
)
def test_bad_kanezaki_arguments(kwargs, error, match):
    image, _ = textured_regions(3, size=48, seed=0)
    with pytest.raises(error, match=match):
        segment(image, n_members=2, n_iter=2, n_threads=1, **kwargs)


def test_helpers():
    net = FeatureNet(3, 100, 2)
    # conv(3->100) + BN + conv(100->100) + BN + conv1x1(100->100) + BN
    expected = (3 * 100 * 9 + 100) + 200 + (100 * 100 * 9 + 100) + 200 + (100 * 100 + 100) + 200
    assert sum(p.numel() for p in net.parameters()) == expected
    sp = np.array([0, 0, 0, 1, 1])
    np.testing.assert_array_equal(majority(np.array([2, 2, 5, 7, 7]), sp, 2, 10), [2, 2, 2, 7, 7])
    labels = np.array([[40, 40], [7, 9]])
    image = np.array([[[0.9, 0.9], [0.1, 0.5]]])
    np.testing.assert_array_equal(compact_ids(labels, image), [[3, 3], [1, 2]])
    np.testing.assert_array_equal(compact_ids(labels, image, keep=[9]), [[11, 11], [10, 9]])


def test_indistinct_classes_are_merged_distinct_ones_kept():
    rng = np.random.default_rng(0)
    guide = np.zeros((1, 40, 60), np.float32)
    guide[:, :, 20:40] = 0.5
    guide[:, :, 40:] = 1.0
    guide += rng.normal(0, 0.02, guide.shape).astype(np.float32)
    labels = np.zeros((40, 60), int)
    labels[:, 20:40] = 1
    labels[:, 40:] = 2
    labels[:20, 40:] = 3  # region 2 split in two by the self-training
    seps = separations(labels, guide)
    assert seps[(2, 3)] < 1 and seps[(0, 1)] > 10
    assert (0, 2) not in seps  # not touching
    merged, n = merge_indistinct(labels, guide, floor=2)
    assert n == 1 and len(np.unique(merged)) == 3
    assert len(np.unique(merged[:, 40:])) == 1
    # never below the stopping point, never two painted classes together
    assert merge_indistinct(labels, guide, floor=4)[1] == 0
    kept, n = merge_indistinct(labels, guide, floor=2, keep=np.array([2, 3]))
    assert n == 0 and set(np.unique(kept)) == {0, 1, 2, 3}


def test_two_concurrent_runs_give_what_each_gives_alone():
    """Each run owns its random generator: two self-trainings at once in two threads
    of one process (two widgets) give exactly what each gives alone (on the CPU, where
    runs are bitwise repeatable)."""
    import threading

    image, _ = textured_regions(3, size=48, seed=2)
    prior = fit_prior(image, **PRIOR)
    kw = dict(prior=prior, method="kanezaki", max_iter=40, device="cpu")
    alone = {s: segment(image, seed=s, **kw) for s in (3, 4)}
    together = {}

    def run(seed):
        together[seed] = segment(image, seed=seed, **kw)

    threads = [threading.Thread(target=run, args=(s,)) for s in (3, 4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s in (3, 4):
        np.testing.assert_array_equal(together[s], alone[s])


def test_training_steps_on_cuda_use_deterministic_cudnn_and_restore_the_flags(monkeypatch):
    """The flags are process-wide: set for a CUDA step only, and put back after it (even
    when the step fails); nothing changes for the CPU; every training step and the final
    pass run inside it (device given as a string too)."""
    import contextlib

    import torch

    from napari_dsp.core import kanezaki

    cudnn = torch.backends.cudnn
    monkeypatch.setattr(cudnn, "benchmark", True)
    monkeypatch.setattr(cudnn, "deterministic", False)
    with repeatable(torch.device("cpu")):
        assert (cudnn.deterministic, cudnn.benchmark) == (False, True)
    with repeatable("cuda"):
        assert cudnn.deterministic is True and cudnn.benchmark is False
    assert (cudnn.deterministic, cudnn.benchmark) == (False, True)
    with pytest.raises(RuntimeError, match="boom"), repeatable(torch.device("cuda")):
        raise RuntimeError("boom")
    assert (cudnn.deterministic, cudnn.benchmark) == (False, True)

    entered = []

    @contextlib.contextmanager
    def spy(device):
        entered.append(str(device))
        with repeatable(device):
            yield

    monkeypatch.setattr(kanezaki, "repeatable", spy)
    image, _ = textured_regions(2, size=32, seed=0)
    gen = kanezaki.iter_kanezaki(
        image[None].astype(np.float32), None, seed=0, device="cpu", max_iter=7, min_labels=1
    )
    steps = sum(1 for _ in iter(lambda: next(gen, None), None))
    assert steps == 7 and entered == ["cpu"] * 8  # 7 steps and the final pass
