import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from napari_dsp import (
    FitProgress,
    PriorResult,
    Settings,
    fit_prior,
    segment,
    segment_stack,
)
from napari_dsp.generators import fit_prior as iter_fit_prior
from tests.fast import TINY
from tests.synthetic import dark_on_bright


def iou(a, b):
    return np.logical_and(a, b).sum() / np.logical_or(a, b).sum()


@pytest.mark.parametrize(
    "image, axis, prior_shape",
    [
        (np.random.default_rng(0).random((24, 40)), None, (24, 40)),
        (np.random.default_rng(0).integers(0, 255, (24, 40), dtype=np.uint8), None, (24, 40)),
        (np.random.default_rng(0).integers(0, 65535, (24, 40), dtype=np.uint16), None, (24, 40)),
        (np.random.default_rng(0).integers(-5, 5, (24, 40)).astype(np.int32), None, (24, 40)),
        (np.random.default_rng(0).random((24, 40)) > 0.5, None, (24, 40)),
        (np.random.default_rng(0).random((24, 40)).astype(np.float64) * 1e4, None, (24, 40)),
        (np.random.default_rng(0).integers(0, 255, (24, 40, 3), dtype=np.uint8), None, (24, 40, 3)),
        (np.random.default_rng(0).integers(0, 255, (24, 40, 4), dtype=np.uint8), None, (24, 40, 3)),
        (np.random.default_rng(0).random((2, 24, 40)).astype(np.float32), 0, (2, 24, 40)),
    ],
)
def test_shapes_and_dtypes_for_every_input_kind(image, axis, prior_shape):
    result = fit_prior(image, channel_axis=axis, **TINY)
    assert isinstance(result, PriorResult)
    assert result.prior.shape == prior_shape and result.prior.dtype == np.float32
    assert result.prior.min() >= 0 and result.prior.max() <= 1
    assert result.spread.shape == (24, 40) and result.spread.dtype == np.float32
    assert np.asarray(result).shape == prior_shape
    labels = segment(image, channel_axis=axis, **TINY)
    assert labels.shape == (24, 40) and labels.dtype == np.uint8
    assert set(np.unique(labels)) <= {0, 1}


def test_same_seed_same_result_other_seed_other_result():
    """Bitwise on the CPU (CUDA's bilinear-upsampling gradients are not: see
    tests/test_cuda.py)."""
    image, _ = dark_on_bright((40, 48))
    a = fit_prior(image, **dict(TINY, device="cpu"))
    b = fit_prior(image, **dict(TINY, device="cpu"))
    c = fit_prior(image, **dict(TINY, seed=1, device="cpu"))
    np.testing.assert_array_equal(a.prior, b.prior)
    assert np.abs(a.prior - c.prior).max() > 1e-3
    assert a.metadata["settings"]["seed"] == 0


def test_seed_drawn_when_none_is_reported_and_reproduces():
    image, _ = dark_on_bright((32, 32))
    first = segment(image, full_output=True, **dict(TINY, seed=None, device="cpu"))
    seed = first.metadata["settings"]["seed"]
    assert isinstance(seed, int)
    again = segment(image, full_output=True, **dict(TINY, seed=seed, device="cpu"))
    np.testing.assert_array_equal(first.prior.prior, again.prior.prior)
    np.testing.assert_array_equal(first.labels, again.labels)


def test_metadata_has_settings_device_versions():
    image, _ = dark_on_bright((32, 32))
    meta = segment(image, full_output=True, **dict(TINY, device="cpu")).metadata
    assert meta["device"] == "cpu"
    assert {"napari_dsp", "torch", "numpy", "scikit-learn"} <= set(meta["versions"])
    assert meta["settings"]["n_iter"] == TINY["n_iter"]
    assert meta["settings"]["n_members"] == TINY["n_members"]
    assert meta["clustering"]["foreground_rule"]


@pytest.mark.parametrize("flip", [False, True])
def test_foreground_rule_dark_object_and_its_inverse(flip):
    image, mask = dark_on_bright((64, 64), seed=3)
    if flip:
        image = 1.0 - image  # bright object on dark background
    labels = segment(image, n_iter=30, n_members=3, n_threads=1, seed=0)
    assert iou(labels == 1, mask) > 0.9
    inverted = segment(image, n_iter=30, n_members=3, n_threads=1, seed=0, invert=True)
    assert iou(inverted == 1, ~mask) > 0.9


def test_multiclass_is_ordered_by_intensity():
    rng = np.random.default_rng(0)
    image = np.repeat(np.array([0.1, 0.5, 0.9])[None, :].repeat(16, 1), 48, 0)
    image = (image + rng.normal(0, 0.03, image.shape)).astype(np.float32)
    labels = segment(image, n_classes=3, n_iter=30, n_members=3, n_threads=1, seed=0)
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
        segment(np.random.default_rng(0).random((40, 40)), prior=prior)


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
    gen = iter_fit_prior(
        np.random.default_rng(0).random((32, 32)),
        Settings(n_iter=40, n_members=2, n_threads=1, seed=0),
    )
    first = next(gen)
    assert first.step == 1 and first.total == 40
    gen.close()  # what a GUI's cancel does
    with pytest.raises(StopIteration):
        next(gen)


def test_threaded_fit_is_reproducible_and_starts_no_process():
    import psutil

    image, mask = dark_on_bright((48, 48))
    kw = dict(n_iter=10, n_members=3, n_threads=2, seed=5, device="cpu")  # CPU threads
    seen = []
    a = segment(image, full_output=True, progress=seen.append, **kw)
    assert len({p.total for p in seen}) == 1  # the total is known from the start
    assert seen[-1].step == seen[-1].total
    b = segment(image, full_output=True, **kw)
    np.testing.assert_array_equal(a.prior.prior, b.prior.prior)
    assert a.metadata["fit"]["threads"] == 2
    assert a.prior.prior.shape == (48, 48)
    assert psutil.Process().children() == []


def test_first_report_comes_at_once():
    """Threads need no process start: the first progress report arrives after one
    iteration (the 512x512 figure is measured by benchmarks/bench_threads.py)."""
    import time

    gen = iter_fit_prior(
        np.random.default_rng(0).random((128, 128)),
        Settings(n_iter=50, n_members=4, n_threads=2, seed=0),
    )
    t0 = time.perf_counter()
    first = next(gen)
    gen.close()
    assert first.step == 1 and first.iteration == 1 and first.n_iter == 50
    assert time.perf_counter() - t0 < 20  # generous: a busy 2-core machine


def test_numpy_in_the_working_folder_is_never_imported(tmp_path):
    """Nothing from the user's current folder is imported or executed by a fit (the
    script lives elsewhere, as a user's script or napari does; the old worker processes
    were started with ``python -c`` and imported the folder's ``numpy.py``)."""
    work, scripts = tmp_path / "work", tmp_path / "scripts"
    work.mkdir()
    scripts.mkdir()
    (work / "numpy.py").write_text(
        "raise SystemExit('the numpy.py of the working folder was imported')\n"
    )
    (scripts / "run.py").write_text(
        "import numpy as np, napari_dsp\n"
        "napari_dsp.segment(np.random.default_rng(0).random((128, 128)), n_iter=2, "
        "n_members=2, n_threads=2, seed=0)\nprint('ok')\n"
    )
    out = subprocess.run(
        [sys.executable, str(scripts / "run.py")], capture_output=True, text=True, cwd=work
    )
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stdout + out.stderr


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(n_iter=0), ValueError, "n_iter must be at least 1"),
        (dict(learning_rate=float("nan")), ValueError, "learning_rate must be a finite number"),
        (dict(device="cuda"), ValueError, "CUDA is not available here"),
        (dict(device="cuda:0"), ValueError, "CUDA is not available here"),
        (dict(progress=5), TypeError, "progress must be a callable"),
        (dict(settings="fast"), TypeError, "settings must be a napari_dsp.Settings"),
    ],
)
def test_bad_arguments(kwargs, error, match, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(error, match=match):
        fit_prior(np.random.default_rng(0).random((32, 32)), **kwargs)


def test_generators_validate_at_the_call():
    """iter_* raise before any iteration (a GUI reports bad input before a thread)."""
    from napari_dsp.generators import segment as iter_segment
    from napari_dsp.generators import segment_stack as iter_segment_stack

    bad = np.full((32, 32), np.nan)
    with pytest.raises(ValueError, match="NaN"):
        iter_fit_prior(bad, **TINY)
    with pytest.raises(ValueError, match="NaN"):
        iter_segment(bad, **TINY)
    with pytest.raises(ValueError, match="dimensions"):
        iter_segment_stack(np.zeros((2, 2, 2, 2, 32, 32)), **TINY)
    stack = np.random.default_rng(0).random((3, 32, 32))
    stack[1, 5, 5] = np.inf
    with pytest.raises(ValueError, match="NaN or infinite"):
        iter_segment_stack(stack, **TINY)
    with pytest.raises(ValueError, match="planes are 32x8 pixels"):
        iter_segment_stack(np.random.default_rng(0).random((3, 32, 8)), **TINY)
    with pytest.raises(TypeError, match="dtype complex"):
        iter_segment_stack(np.zeros((3, 32, 32), complex), **TINY)


def test_api_does_not_import_napari_or_qt_and_import_is_cheap():
    code = (
        "import sys, napari_dsp; assert 'torch' not in sys.modules, 'torch at import'; "
        "import numpy as np; "
        "napari_dsp.segment(np.random.default_rng(0).random((32, 32)), n_iter=2, "
        "n_members=2, n_threads=1, seed=0); "
        "bad = [m for m in ('napari', 'qtpy', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6', "
        "'magicgui') if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_texture_features_separate_what_brightness_cannot():
    """Two stripe textures of the same mean brightness: the texture-aware prior splits
    them, the intensity prior cannot; the texture channels' prior comes with the result,
    re-clustering keeps using it, and a prior without it is refused for texture=True."""
    from sklearn.metrics import adjusted_rand_score

    from tests.core.test_texture import two_textures

    image, truth = two_textures((96, 96))
    kw = dict(seed=0, n_iter=20, n_members=2, full_output=True)
    tex = segment(image, texture=True, **kw)
    plain = segment(image, **kw)
    assert adjusted_rand_score(truth.ravel(), tex.labels.ravel()) > 0.8
    assert adjusted_rand_score(truth.ravel(), plain.labels.ravel()) < 0.3
    assert tex.prior.prior.shape == image.shape  # the image's own layout
    assert tex.prior.texture.shape == (6, 96, 96)
    assert tex.metadata["fit"]["texture"]["channels"] == 6
    decision = tex.metadata["clustering"]["decision"]
    assert decision["result"] == "prior" and decision["texture_separation"] >= 4
    assert "texture" in decision["note"]
    again = segment(image, prior=tex.prior, full_output=True)
    np.testing.assert_array_equal(again.labels, tex.labels)
    assert again.metadata["settings"]["texture"] is True
    with pytest.raises(ValueError, match="prior fitted with texture=True"):
        segment(image, prior=plain.prior, texture=True)
    with pytest.raises(ValueError, match="single 2-D images"):
        segment_stack(np.stack([image, image]), texture=True)


def test_self_training_takes_the_texture_prior_as_its_guide():
    from sklearn.metrics import adjusted_rand_score

    from tests.core.test_texture import two_textures

    image, truth = two_textures((64, 64))
    r = segment(
        image,
        method="kanezaki",
        texture=True,
        seed=0,
        n_iter=20,
        n_members=2,
        max_iter=200,
        min_labels=2,
        full_output=True,
    )
    assert r.prior.texture.shape == (6, 64, 64)
    assert len(np.unique(r.labels)) == 2
    assert adjusted_rand_score(truth.ravel(), r.labels.ravel()) > 0.8


def test_texture_keeps_brightness_order_previews_layout_and_says_what_it_skipped():
    """Three bands at 0.35 / 0.5 / 0.65, the darkest striped: with texture features the
    classes are still numbered by brightness; previews come in the image's layout (RGB);
    the skipped refinement is in the metadata; texture without a prior is refused."""
    from napari_dsp.large import segment_stack_to_zarr
    from tests.core.test_texture import stripes

    image = np.zeros((60, 60), np.float32)
    image[:20], image[20:40], image[40:] = 0.35, 0.5, 0.65
    image[:20] += 0.1 * (stripes((20, 60), 6, 0.0) - 0.5).astype(np.float32)
    r = segment(image, n_classes=3, texture=True, seed=0, n_iter=20, n_members=2, full_output=True)
    assert [np.bincount(r.labels[a : a + 20].ravel()).argmax() for a in (0, 20, 40)] == [1, 2, 3]
    seen = []
    rgb = np.repeat(image[..., None], 3, -1)
    two = segment(
        rgb,
        texture=True,
        seed=0,
        n_iter=4,
        n_members=2,
        preview_every=2,
        progress=seen.append,
        full_output=True,
    )
    shapes = {p.preview.shape for p in seen if p.preview is not None}
    assert shapes == {(60, 60, 3)}
    assert two.metadata["settings"]["refine"] is False
    assert two.metadata["clustering"]["refine_skipped"] == "texture features"
    with pytest.raises(ValueError, match="prior_superpixels=False"):
        segment(image, method="kanezaki", prior_superpixels=False, texture=True)
    with pytest.raises(ValueError, match="single 2-D images"):
        segment_stack_to_zarr(np.stack([image, image]), "/nonexistent/x.zarr", texture=True)


def test_texture_separation_runs_on_the_device_asked_for(monkeypatch):
    """The noise test's texture energies are computed where the fit ran (a CUDA device
    here with torch.cuda patched; the energies themselves are stubbed), and on the device
    the settings ask for when an existing prior is re-clustered."""
    import torch

    from napari_dsp.core import texture
    from tests.core.test_texture import two_textures

    image, _ = two_textures((48, 48))
    prior = fit_prior(image, texture=True, seed=0, n_iter=4, n_members=2, device="cpu")
    seen = []
    monkeypatch.setattr(
        texture, "separation", lambda chw, labels, device="cpu": seen.append(device) or 10.0
    )
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    segment(image, prior=prior, texture=True, device="cuda")
    segment(image, prior=prior, texture=True)  # device 'auto'
    segment(image, prior=prior, texture=True, device="cpu")
    assert seen == [torch.device("cuda"), torch.device("cuda"), torch.device("cpu")]


def test_texture_features_do_not_find_regions_in_noise():
    """Every texture channel is stretched to [0, 1]: on a field of Poisson noise K-means
    splits the noise's own fluctuations. The split must not be believed: empty labels,
    the warning, both statistics in the metadata."""
    from napari_dsp import NothingToSegmentWarning

    noise = np.random.default_rng(0).poisson(20, (96, 96)).astype(np.uint16)
    with pytest.warns(NothingToSegmentWarning, match="texture"):
        r = segment(noise, texture=True, seed=0, n_iter=20, n_members=2, full_output=True)
    assert not r.labels.any()
    decision = r.metadata["clustering"]["decision"]
    assert decision["result"] == "empty" and decision["texture_separation"] < 4


@pytest.mark.parametrize("dtype, value", [(np.float32, 3e38), (np.float64, 1e308)])
def test_values_near_the_float_limits_are_segmented_like_any_others(dtype, value):
    """A clean two-level image at +-3e38 (float32) or +-1e308 (float64): the differences
    and ranges of such values overflow; they gave empty labels, an overflow warning and
    a false 'nothing stands out'. Now the same result as the image scaled to [0, 1]."""
    import warnings

    mask = np.zeros((64, 64), bool)
    mask[16:48, 12:40] = True
    image = np.where(mask, value, -value).astype(dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow warning, no NothingToSegmentWarning
        result = segment(image, full_output=True, **TINY)
        # every plane from scratch: the two planes are no neighbours (one is the other
        # upside down), and the labels are compared pixel for pixel
        stack = segment_stack(np.stack([image, image[::-1]]), **TINY, warm_iter=0)
    assert result.metadata["clustering"]["decision"]["result"] == "prior"
    np.testing.assert_array_equal(result.labels, mask)
    np.testing.assert_array_equal(stack[0], mask)
    np.testing.assert_array_equal(stack[1], mask[::-1])


def test_torch_tensors_are_taken_by_every_entry_point_whatever_their_grad_and_dtype():
    torch = pytest.importorskip("torch")
    image, _ = dark_on_bright((48, 48), seed=2)
    expected = segment(image.astype(np.float32), **TINY)
    tensor = torch.tensor(image.astype(np.float32), requires_grad=True)
    np.testing.assert_array_equal(segment(tensor, **TINY), expected)
    assert segment(tensor.detach().to(torch.bfloat16), **TINY).shape == (48, 48)
    stack = segment_stack(torch.stack([tensor, tensor]).detach().requires_grad_(True), **TINY)
    assert stack.shape == (2, 48, 48)
    prior = fit_prior(image.astype(np.float32), **TINY)
    again = segment(tensor, prior=torch.tensor(prior.prior), **TINY)
    assert again.shape == (48, 48)
    pytest.importorskip("zarr")
    import tempfile

    from napari_dsp.large import segment_stack_to_zarr

    out = segment_stack_to_zarr(
        torch.stack([tensor, tensor]).detach(), Path(tempfile.mkdtemp()) / "t.zarr", **TINY
    )
    assert out.exists()


def test_a_meta_tensor_says_what_to_pass():
    """Hunt F5a: a tensor on torch's 'meta' device gave NotImplementedError."""
    import torch

    with pytest.raises(TypeError, match=r"'meta' device.*pass a tensor with data"):
        segment(torch.empty((64, 64), device="meta"), **TINY)
