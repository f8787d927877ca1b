"""The prior of a plane as the plan says: tiles, working size, out-of-memory retries."""

import numpy as np
import pytest
import torch

from napari_dsp import fit_prior
from napari_dsp.core import fit as _fit
from napari_dsp.core import image as _image
from napari_dsp.core import plan as _plan
from napari_dsp.core.prior import iter_plane_prior
from napari_dsp.core.progress import FitProgress, drain


def plan_for(data, **kw):
    args = dict(n_members=3, device=torch.device("cpu"), working_size=None, n_threads=1)
    args.update(kw)
    return _plan.plan_fit(data, **args)


def test_tiled_fit_covers_the_plane_and_reports_tiles(monkeypatch):
    monkeypatch.setitem(_plan.TILE_SIZE, "cpu", 96)
    data = np.random.default_rng(0).random((1, 150, 130)).astype(np.float32)
    plan = plan_for(data, working_size=0)
    assert len(plan.tiles) == 4
    seen = []
    median, spread = drain(
        iter_plane_prior(
            data,
            plan,
            seed=0,
            n_members=3,
            n_iter=3,
            learning_rate=0.01,
            precision="float32",
            preview_every=0,
        ),
        seen.append,
    )
    assert median.shape == (1, 150, 130) and spread.shape == (150, 130)
    assert np.isfinite(median).all() and median.min() >= 0 and median.max() <= 1
    assert {p.tile for p in seen} == {0, 1, 2, 3} and seen[-1].n_tiles == 4
    assert [p.step for p in seen] == list(range(1, seen[-1].total + 1))


def test_working_size_fits_smaller_and_returns_full_size():
    image = np.random.default_rng(0).random((200, 120))
    result = fit_prior(image, n_iter=3, n_members=3, n_threads=1, seed=0, working_size=64)
    assert result.prior.shape == (200, 120)
    h, w = result.metadata["fit"]["working_shape"]
    assert h * w <= 64 * 64 and abs(h / w - 200 / 120) < 0.05


def test_out_of_memory_retries_with_smaller_groups(monkeypatch):
    """Provoke the device running out of memory for groups of more than one member: the
    fit starts again with smaller groups and gives the prior of the same members."""
    real = _fit.iter_members
    groups = []

    def capped(image, crop, *, seeds, batch_size=None, **kw):
        groups.append(batch_size)
        if (batch_size or len(seeds)) > 1:
            yield FitProgress(1, 1)
            raise _fit.OUT_OF_MEMORY[0]("CUDA out of memory (simulated cap)")
        return (yield from real(image, crop, seeds=seeds, batch_size=batch_size, **kw))

    monkeypatch.setattr(_fit, "iter_members", capped)
    image = np.random.default_rng(0).random((32, 32))
    result = fit_prior(image, n_iter=3, n_members=4, n_threads=1, seed=1, device="cpu")
    assert groups == [2, 1] and result.prior.shape == (32, 32)

    def always(image, crop, **kw):
        raise _fit.OUT_OF_MEMORY[0]("CUDA out of memory (simulated cap)")
        yield  # pragma: no cover

    monkeypatch.setattr(_fit, "iter_members", always)
    with pytest.raises(ValueError, match="out of memory on cpu even with one ensemble member"):
        fit_prior(image, n_iter=3, n_members=4, n_threads=1, seed=1, device="cpu")


def test_blend_weights_rise_across_the_overlap():
    w = _image.blend_weights((slice(0, 64), slice(32, 96)), (64, 200), 16)
    assert w.shape == (64, 64)
    assert w[:, 0].max() < 0.1 and w[:, 32].min() == 1.0 and w[:, -1].max() < 0.1
    assert w[0, 32] == 1.0  # no ramp along the plane's own border
