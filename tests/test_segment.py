import sys
import subprocess

import numpy as np
import pytest

from napari_dsp import FitProgress, PriorResult, Settings, fit_prior, iter_fit_prior, segment
from napari_dsp._synthetic import dark_on_bright

from conftest import TINY


def iou(a, b):
    return np.logical_and(a, b).sum() / np.logical_or(a, b).sum()


@pytest.mark.parametrize("image, axis, prior_shape", [
    (np.random.default_rng(0).random((24, 40)), None, (24, 40)),
    (np.random.default_rng(0).integers(0, 255, (24, 40), dtype=np.uint8), None, (24, 40)),
    (np.random.default_rng(0).integers(0, 65535, (24, 40), dtype=np.uint16), None, (24, 40)),
    (np.random.default_rng(0).integers(-5, 5, (24, 40)).astype(np.int32), None, (24, 40)),
    (np.random.default_rng(0).random((24, 40)) > 0.5, None, (24, 40)),
    (np.random.default_rng(0).random((24, 40)).astype(np.float64) * 1e4, None, (24, 40)),
    (np.random.default_rng(0).integers(0, 255, (24, 40, 3), dtype=np.uint8), None, (24, 40, 3)),
    (np.random.default_rng(0).integers(0, 255, (24, 40, 4), dtype=np.uint8), None, (24, 40, 3)),
    (np.random.default_rng(0).random((2, 24, 40)).astype(np.float32), 0, (2, 24, 40)),
])
def test_shapes_and_dtypes_for_every_input_kind(image, axis, prior_shape):
    result = fit_prior(image, channel_axis=axis, **TINY)
    assert isinstance(result, PriorResult)
    assert result.prior.shape == prior_shape and result.prior.dtype == np.float32
    assert 0 <= result.prior.min() and result.prior.max() <= 1
    assert result.spread.shape == (24, 40) and result.spread.dtype == np.float32
    assert np.asarray(result).shape == prior_shape
    labels = segment(image, channel_axis=axis, **TINY)
    assert labels.shape == (24, 40) and labels.dtype == np.uint8
    assert set(np.unique(labels)) <= {0, 1}


def test_same_seed_same_result_other_seed_other_result():
    image, _ = dark_on_bright((40, 48))
    a = fit_prior(image, **TINY)
    b = fit_prior(image, **TINY)
    c = fit_prior(image, **dict(TINY, seed=1))
    np.testing.assert_array_equal(a.prior, b.prior)
    assert np.abs(a.prior - c.prior).max() > 1e-3
    assert a.metadata["settings"]["seed"] == 0


def test_seed_drawn_when_none_is_reported_and_reproduces():
    image, _ = dark_on_bright((32, 32))
    first = segment(image, full_output=True, **dict(TINY, seed=None))
    seed = first.metadata["settings"]["seed"]
    assert isinstance(seed, int)
    again = segment(image, full_output=True, **dict(TINY, seed=seed))
    np.testing.assert_array_equal(first.prior.prior, again.prior.prior)
    np.testing.assert_array_equal(first.labels, again.labels)


def test_metadata_has_settings_device_versions():
    image, _ = dark_on_bright((32, 32))
    meta = segment(image, full_output=True, **TINY).metadata
    assert meta["device"] == "cpu"
    assert {"napari_dsp", "torch", "numpy", "scikit-learn"} <= set(meta["versions"])
    assert meta["settings"]["n_iter"] == TINY["n_iter"]
    assert meta["settings"]["n_runs"] == TINY["n_runs"]
    assert meta["clustering"]["foreground_rule"]


@pytest.mark.parametrize("flip", [False, True])
def test_foreground_rule_dark_object_and_its_inverse(flip):
    image, mask = dark_on_bright((64, 64), seed=3)
    if flip:
        image = 1.0 - image  # bright object on dark background
    labels = segment(image, n_iter=30, n_runs=3, n_workers=0, seed=0)
    assert iou(labels == 1, mask) > 0.9
    inverted = segment(image, n_iter=30, n_runs=3, n_workers=0, seed=0, invert=True)
    assert iou(inverted == 1, ~mask) > 0.9


def test_multiclass_is_ordered_by_intensity():
    rng = np.random.default_rng(0)
    image = np.repeat(np.array([0.1, 0.5, 0.9])[None, :].repeat(16, 1), 48, 0)
    image = (image + rng.normal(0, 0.03, image.shape)).astype(np.float32)
    labels = segment(image, n_classes=3, n_iter=30, n_runs=3, n_workers=0, seed=0)
    assert set(np.unique(labels)) == {1, 2, 3}
    # thirds of the image, dark to bright, interior columns away from the class edges
    assert np.bincount(labels[:, 2:12].ravel()).argmax() == 1
    assert np.bincount(labels[:, 20:28].ravel()).argmax() == 2
    assert np.bincount(labels[:, 36:46].ravel()).argmax() == 3


def test_precomputed_prior_reclusters_without_refit():
    image, mask = dark_on_bright((48, 48))
    prior = fit_prior(image, **dict(TINY, n_iter=20))
    calls = []
    two = segment(image, prior=prior, progress=calls.append)
    three = segment(prior=prior, n_classes=3)
    arr = segment(image, prior=np.asarray(prior), seed=0)
    assert calls == []  # no fit: nothing to report
    assert two.shape == three.shape == arr.shape == (48, 48)
    assert set(np.unique(three)) == {1, 2, 3}
    np.testing.assert_array_equal(two, arr)
    with pytest.raises(ValueError, match="prior covers 48x48 pixels but the image is 40x40"):
        segment(np.zeros((40, 40)), prior=prior)


def test_progress_reports_every_iteration_and_previews_in_image_layout():
    image = np.random.default_rng(0).random((32, 40, 3)).astype(np.float32)
    seen = []
    fit_prior(image, progress=seen.append, **dict(TINY, preview_every=2))
    total = seen[0].total
    assert total % TINY["n_iter"] == 0  # n_iter per group of members
    assert [p.step for p in seen] == list(range(1, total + 1))
    assert all(isinstance(p, FitProgress) and p.total == total for p in seen)
    previews = [p.preview for p in seen if p.preview is not None]
    assert len(previews) == total // 2 and previews[0].shape == (32, 40, 3)


def test_generator_can_be_stopped_early():
    gen = iter_fit_prior(np.random.default_rng(0).random((32, 32)),
                         Settings(n_iter=40, n_runs=2, n_workers=0, seed=0))
    first = next(gen)
    assert first.step == 1 and first.total == 40
    gen.close()  # what a GUI's cancel does
    with pytest.raises(StopIteration):
        next(gen)


def test_worker_processes_give_a_reproducible_prior():
    image, mask = dark_on_bright((48, 48))
    kw = dict(n_iter=10, n_runs=3, n_workers=2, seed=5)
    seen = []
    a = segment(image, full_output=True, progress=seen.append, **kw)
    assert len({p.total for p in seen}) == 1  # the total is known from the start
    assert seen[-1].step == seen[-1].total
    b = segment(image, full_output=True, **kw)
    np.testing.assert_array_equal(a.prior.prior, b.prior.prior)
    assert a.metadata["workers"] == 2
    assert a.prior.prior.shape == (48, 48)


def test_cancelling_a_worker_fit_ends_the_worker_processes():
    import psutil

    gen = iter_fit_prior(np.random.default_rng(0).random((64, 64)),
                         Settings(n_iter=2000, n_runs=2, n_workers=2, seed=0))
    next(gen)
    me = psutil.Process()
    assert len(me.children()) == 2
    gen.close()
    assert psutil.wait_procs(me.children(), timeout=5)[1] == []


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(n_iter=0), ValueError, "n_iter must be at least 1"),
    (dict(device="cuda"), ValueError, "CUDA is not available|"),
    (dict(progress=5), TypeError, "progress must be a callable"),
    (dict(settings="fast"), TypeError, "settings must be a napari_dsp.Settings"),
])
def test_bad_arguments(kwargs, error, match):
    import torch

    if kwargs.get("device") == "cuda" and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(error, match=match):
        fit_prior(np.random.default_rng(0).random((32, 32)), **kwargs)


def test_api_does_not_import_napari_or_qt():
    code = ("import sys, numpy as np, napari_dsp; "
            "napari_dsp.segment(np.random.default_rng(0).random((32, 32)), n_iter=2, "
            "n_runs=2, n_workers=0, seed=0); "
            "bad = [m for m in ('napari', 'qtpy', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6', "
            "'magicgui') if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_a_fit_that_cannot_fit_in_memory_is_refused_up_front(monkeypatch):
    from napari_dsp import _fit

    image = np.random.default_rng(0).random((256, 256))
    monkeypatch.setattr(_fit, "available_bytes", lambda: 50e6)  # a 50 MB machine
    # smaller tiles that fit instead of a refusal; the prior has the full size
    result = fit_prior(image, n_iter=2, n_runs=2, n_workers=0, seed=0)
    assert result.metadata["tiles"] > 1 and result.prior.shape == (256, 256)
    monkeypatch.setattr(_fit, "available_bytes", lambda: 2e6)  # not even a 64x64 tile
    with pytest.raises(ValueError, match=r"needs about .* GB of memory and 0.0 GB is "
                                         r"available; set a working_size"):
        fit_prior(image, n_iter=2, n_runs=2, n_workers=0)


def test_memory_estimate_is_close_to_the_measured_peak():
    from napari_dsp._fit import estimate_bytes

    # measured with benchmarks/bench_prior.py: 512x512 RGB, 11 runs, 2 workers of 2-member
    # groups, float32: 2.61 GB peak for the whole process tree
    assert 0.7 * 2.61e9 < estimate_bytes(512 * 512, 3, 11, 2, 2) < 1.3 * 2.61e9


def test_a_failing_worker_process_becomes_a_clear_error(monkeypatch):
    # A worker that cannot start (a broken interpreter path) must give an error with a
    # way out, not hang.
    import napari_dsp._workers as workers

    monkeypatch.setattr(workers.sys, "executable", "/bin/false")
    with pytest.raises(RuntimeError, match="worker process stopped unexpectedly.*n_workers=0"):
        fit_prior(np.random.default_rng(0).random((32, 32)), n_iter=2, n_runs=2, n_workers=2)


def test_out_of_memory_retries_with_smaller_groups(monkeypatch):
    """Provoke the device running out of memory for groups of more than one member: the
    fit starts again with smaller groups and gives the prior of the same members."""
    from napari_dsp import _fit

    real = _fit.iter_members

    def capped(image, crop, *, seeds, batch_size=None, **kw):
        if (batch_size or len(seeds)) > 1:
            yield _fit.FitProgress(1, 1)
            raise _fit.OUT_OF_MEMORY[0]("CUDA out of memory (simulated cap)")
        return (yield from real(image, crop, seeds=seeds, batch_size=batch_size, **kw))

    monkeypatch.setattr(_fit, "iter_members", capped)
    image = np.random.default_rng(0).random((32, 32))
    result = fit_prior(image, n_iter=3, n_runs=4, n_workers=0, seed=1)
    assert result.metadata["members_per_group"] == 1
    assert result.prior.shape == (32, 32)

    def always(image, crop, **kw):
        raise _fit.OUT_OF_MEMORY[0]("CUDA out of memory (simulated cap)")
        yield  # pragma: no cover

    monkeypatch.setattr(_fit, "iter_members", always)
    with pytest.raises(ValueError, match="out of memory on cpu even with one ensemble member"):
        fit_prior(image, n_iter=3, n_runs=4, n_workers=0, seed=1)


def test_device_selection(monkeypatch):
    import torch

    from napari_dsp._fit import resolve_device

    assert resolve_device("cpu").type == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("auto").type == "mps"  # Apple GPU when there is no CUDA
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto").type == "cuda"  # CUDA first
    assert str(resolve_device("cuda:1")) == "cuda:1"
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(ValueError, match="MPS is not available"):
        resolve_device("mps")
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        resolve_device("tpu")
