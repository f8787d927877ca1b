"""The early stop: a fit ends once the median of all its members has settled, the result
is exactly the fit stopped at that iteration, and the metadata says where it stopped."""

import numpy as np
import pytest
import torch

from napari_dsp import Settings, fit_prior, segment_stack
from napari_dsp.core import fit as _fit
from napari_dsp.core.nets import EnsembleGenerator
from napari_dsp.core.progress import FitProgress, drain
from napari_dsp.generators import fit_prior as iter_fit_prior
from tests.synthetic import nuclei

IMAGE = np.random.default_rng(0).random((3, 32, 40)).astype(np.float32)
CROP = (slice(0, 32), slice(0, 40))
FIELD = nuclei((48, 56), n=4, radius=(5, 8), seed=1)[0]


def _stream(changes, n_members=3, shape=(1, 4, 4), closed=None):
    """Reports whose members' median moves by ``changes[i]`` at iteration ``i + 2``."""
    level = 0.0
    try:
        for i, step in enumerate([0.0] + list(changes)):
            level += step
            members = np.full((n_members, *shape), level, np.float32)
            yield FitProgress(
                i + 1, len(changes) + 1, preview=members, iteration=i + 1, n_iter=len(changes) + 1
            )
        return np.full((n_members, *shape), -1.0, np.float32)  # the full run's result
    finally:
        if closed is not None:
            closed.append(True)


def test_the_stop_comes_at_the_first_small_change_from_the_earliest_allowed_iteration():
    changes = [0.5, 0.1, 0.001, 0.2] + [0.01] * 6 + [0.002, 0.001, 0.3]
    closed, info, seen = [], {}, []
    members = drain(
        _fit.until_settled(
            _stream(changes, closed=closed), 0.005, preview_every=5, info=info, min_iter=10
        ),
        seen.append,
    )
    # iteration 4 moved by 0.001 but is before iteration 10; iteration 12 (0.002) is the
    # first from 10 on below 0.005
    assert info == {"iterations": 12, "settled": True, "change": pytest.approx(0.002, abs=1e-6)}
    assert closed == [True]  # the fit was closed, not left running
    assert np.allclose(members, sum([0.0] + changes[:11]))  # the members at iteration 12
    # previews went on as medians on the user's schedule only
    shown = [p.iteration for p in seen if p.preview is not None]
    assert shown == [5, 10] and seen[4].preview.shape == (1, 4, 4)


def test_a_fit_that_never_settles_runs_to_the_end():
    info = {}
    members = drain(
        _fit.until_settled(_stream([0.5] * 14), 0.005, preview_every=0, info=info, min_iter=10)
    )
    assert info["iterations"] == 15 and info["settled"] is False
    assert np.all(members == -1.0)  # the fit's own result


def test_threaded_previews_show_every_member_at_one_iteration():
    """Two threads run side by side, one may be ahead: each preview is all members at
    the same iteration, equal to a plain fit's outputs at that iteration."""
    kw = dict(
        make_net=lambda g, s: EnsembleGenerator(g, 3, s),
        n_iter=6,
        learning_rate=0.01,
        device=torch.device("cpu"),
        dtype=torch.float64,
        channels_last=False,
        preview_every=1,
    )
    seeds = [3, 4, 5, 6, 7]
    plain = []
    drain(_fit.iter_members(IMAGE, CROP, seeds=seeds, **kw), plain.append)
    threaded = []
    drain(
        _fit.iter_members_threaded(IMAGE, CROP, threads=2, seeds=seeds, batch_size=3, **kw),
        threaded.append,
    )
    shown = [p for p in threaded if p.preview is not None]
    assert [p.iteration for p in shown] == list(range(1, 7))
    for p in shown:
        assert p.preview.shape == (5, 3, 32, 40)
        np.testing.assert_allclose(p.preview, plain[p.iteration - 1].preview, rtol=0, atol=1e-6)


def test_previews_go_on_when_one_thread_has_fewer_member_groups():
    """Shares of 3 and 2 members in groups of 2: one thread trains two groups, the other
    one; once the second has finished, previews show its final members beside the
    first thread's, up to the end."""
    kw = dict(
        make_net=lambda g, s: EnsembleGenerator(g, 3, s),
        n_iter=4,
        learning_rate=0.01,
        device=torch.device("cpu"),
        preview_every=1,
    )
    seen = []
    result = drain(
        _fit.iter_members_threaded(
            IMAGE, CROP, threads=2, seeds=[1, 2, 3, 4, 5], batch_size=2, **kw
        ),
        seen.append,
    )
    shown = [p for p in seen if p.preview is not None]
    assert len(shown) == 8  # every step of the longer thread (2 groups x 4 iterations)
    assert all(p.preview.shape[1:] == (3, 32, 40) for p in shown)
    np.testing.assert_array_equal(shown[-1].preview, result)


@pytest.mark.parametrize("first", [0, 1])
def test_every_step_is_previewed_once_in_order_however_threads_interleave(monkeypatch, first):
    """Member fits replaced by scripted ones; one thread reports nothing until the other
    has finished (the most a loaded machine can delay it). Every step is previewed
    once, in order, each with every member, the last one the result: nothing depends on
    which thread the scheduler runs first."""
    import threading

    gates = [threading.Event(), threading.Event()]

    def scripted(target, crop, *, seeds, preview_every, stop, n_iter, **kw):
        k = 0 if seeds[0] == 1 else 1  # the thread's share: seeds 1-3 or 4-5
        groups = -(-len(seeds) // 2)  # member groups of 2
        if k != first:
            gates[first].wait(10)  # the other thread finishes first
        for step in range(1, groups * n_iter + 1):
            members = np.full((len(seeds), 1, 2, 2), 100.0 * k + step)
            yield FitProgress(
                step=step,
                total=groups * n_iter,
                preview=members,
                iteration=(step - 1) % n_iter + 1,
                n_iter=n_iter,
            )
        if k == first:
            gates[first].set()
        return members  # the final members are the last step's

    monkeypatch.setattr(_fit, "iter_members", scripted)
    seen = []
    result = drain(
        _fit.iter_members_threaded(
            IMAGE, CROP, threads=2, seeds=[1, 2, 3, 4, 5], batch_size=2, n_iter=4, preview_every=1
        ),
        seen.append,
    )
    shown = [p.preview for p in seen if p.preview is not None]
    # thread 0 trains 3 members in 2 groups (8 steps), thread 1 two in one (4 steps)
    assert len(shown) == 8
    for step, preview in enumerate(shown, 1):
        assert preview.shape == (5, 1, 2, 2)
        assert (preview[:3] == step).all()
        assert (preview[3:] == 100 + min(step, 4)).all()  # then its final members
    np.testing.assert_array_equal(shown[-1], result)
    assert [p.step for p in seen] == sorted(p.step for p in seen)


def test_a_settled_prior_is_the_prior_of_a_fit_stopped_at_that_iteration():
    kw = dict(n_members=4, n_threads=2, seed=3, batch_size=2, device="cpu")  # CPU threads
    settled = drain(iter_fit_prior(FIELD, n_iter=30, settle=1.0, **kw))
    assert settled.metadata["fit"]["iterations"] == _fit.MIN_SETTLE_ITER
    assert settled.metadata["fit"]["settled"] is True
    assert settled.metadata["settings"]["settle"] == 1.0
    short = drain(iter_fit_prior(FIELD, n_iter=_fit.MIN_SETTLE_ITER, settle=0.0, **kw))
    np.testing.assert_array_equal(settled.prior, short.prior)
    assert short.metadata["fit"]["iterations"] == _fit.MIN_SETTLE_ITER
    assert short.metadata["fit"]["settled"] is False


def test_members_trained_in_several_groups_run_every_iteration():
    """The stop watches all members at once; groups trained one after another cannot
    be watched, so the fit runs its n_iter and the metadata says the stop was off."""
    r = drain(
        iter_fit_prior(FIELD, n_iter=12, settle=1.0, n_members=4, n_threads=1, seed=0, batch_size=2)
    )
    assert r.metadata["fit"]["iterations"] == 12
    assert r.metadata["fit"]["settle"] == 0.0 and r.metadata["fit"]["settled"] is False


def test_every_plane_of_a_stack_reports_where_it_stopped():
    stack = np.stack([FIELD, FIELD[::-1]])
    r = segment_stack(
        stack, n_iter=14, settle=1.0, n_members=3, n_threads=1, seed=0, full_output=True
    )
    assert r.metadata["fit"]["iterations"] == [10, 10]


@pytest.mark.parametrize("value", [-0.1, 1.5, float("nan"), "0.01"])
def test_settle_is_checked(value):
    with pytest.raises((ValueError, TypeError), match="settle"):
        fit_prior(FIELD, settle=value)


def test_research_settings_are_one_switch_away():
    from napari_dsp.cli.common import settings_from_args
    from napari_dsp.cli.parser import build_parser

    r = Settings.research()
    assert (r.n_members, r.n_iter, r.settle, r.precision) == (11, 50, 0.0, "float32")
    args = build_parser().parse_args(
        ["segment", "a.tif", "-o", "out", "--research-defaults", "--iterations", "30"]
    )
    s = settings_from_args(args)
    assert (s.n_members, s.n_iter, s.settle) == (11, 30, 0.0)  # a flag given still applies
    plain = settings_from_args(build_parser().parse_args(["segment", "a.tif", "-o", "o"]))
    assert plain == Settings().replace(preview_every=0)
