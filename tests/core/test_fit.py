"""The training loop: grouped members are exact, threads give the members of a plain
fit, stop within an iteration, and hand their errors on."""

import threading

import numpy as np
import pytest
import torch

from napari_dsp.core import fit as _fit
from napari_dsp.core.nets import EnsembleGenerator, VolumeGenerator, z_stages
from napari_dsp.core.progress import drain

IMAGE = np.random.default_rng(0).random((3, 32, 40)).astype(np.float32)
CROP = (slice(0, 32), slice(0, 40))


def make_2d(g, seeds):
    return EnsembleGenerator(g, 3, seeds)


def test_a_member_of_the_ensemble_equals_a_stand_alone_fit_with_its_seed():
    """In float64 the grouped model trains each member exactly as if it were alone."""
    kw = dict(
        make_net=make_2d,
        n_iter=6,
        learning_rate=0.01,
        device=torch.device("cpu"),
        dtype=torch.float64,
        channels_last=False,
    )
    together = drain(_fit.iter_members(IMAGE, CROP, seeds=[11, 22, 33], **kw))
    alone = drain(_fit.iter_members(IMAGE, CROP, seeds=[22], **kw))
    assert together.shape == (3, 3, 32, 40)
    np.testing.assert_allclose(together[1], alone[0], rtol=0, atol=1e-6)
    # and the members really differ from each other
    assert np.abs(together[0] - together[1]).max() > 1e-3


def test_threads_fit_the_same_members_in_seed_order():
    kw = dict(
        make_net=make_2d,
        n_iter=5,
        learning_rate=0.01,
        device=torch.device("cpu"),
        dtype=torch.float64,
        channels_last=False,
        batch_size=1,
    )
    seeds = [3, 4, 5, 6, 7]
    plain = drain(_fit.iter_members(IMAGE, CROP, seeds=seeds, **kw))
    seen = []
    threaded = drain(
        _fit.iter_members_threaded(IMAGE, CROP, threads=2, seeds=seeds, **kw), seen.append
    )
    np.testing.assert_allclose(threaded, plain, rtol=0, atol=1e-6)
    # progress over both threads: every iteration of every member group, in order
    assert [p.step for p in seen] == list(range(1, 5 * 5 + 1))
    assert seen[-1].members_done == seen[-1].n_members == 5
    assert all(p.total == 25 for p in seen)


def test_threads_restore_torch_settings_and_no_process_is_started():
    """torch's thread setting is process-wide: after a threaded fit (and after two that
    overlap) a fresh thread sees the setting from before."""
    import psutil

    def seen_by_a_new_thread():
        out = []
        t = threading.Thread(target=lambda: out.append(torch.get_num_threads()))
        t.start()
        t.join()
        return out[0]

    before = seen_by_a_new_thread()
    kids = psutil.Process().children()
    kw = dict(
        threads=2,
        seeds=[1, 2],
        make_net=make_2d,
        n_iter=3,
        learning_rate=0.01,
        device=torch.device("cpu"),
    )
    a = _fit.iter_members_threaded(IMAGE, CROP, **kw)
    next(a)
    assert psutil.Process().children() == kids  # threads, not child processes
    b = _fit.iter_members_threaded(IMAGE, CROP, **kw)  # overlaps a
    next(b)
    drain(a)
    assert seen_by_a_new_thread() == 1  # b still fitting: torch single-threaded
    drain(b)
    assert seen_by_a_new_thread() == before


def test_closing_stops_every_thread_within_an_iteration():
    gen = _fit.iter_members_threaded(
        IMAGE,
        CROP,
        threads=2,
        seeds=[1, 2],
        make_net=make_2d,
        n_iter=100000,
        learning_rate=0.01,
        device=torch.device("cpu"),
    )
    next(gen)
    gen.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("napari-dsp-fit")]


def test_an_error_in_a_thread_is_raised_to_the_consumer():
    def broken(g, seeds):
        raise MemoryError("simulated: no memory for the network")

    gen = _fit.iter_members_threaded(
        IMAGE,
        CROP,
        threads=2,
        seeds=[1, 2],
        make_net=broken,
        n_iter=3,
        learning_rate=0.01,
        device=torch.device("cpu"),
    )
    with pytest.raises(MemoryError, match="simulated"):
        drain(gen)


def test_the_same_loop_fits_volumes():
    stages = z_stages((1, 1, 1), 8)
    vol = np.random.default_rng(0).random((1, 8, 16, 16)).astype(np.float32)
    out = drain(
        _fit.iter_members(
            vol,
            (slice(0, 8), slice(0, 16), slice(0, 16)),
            make_net=lambda g, s: VolumeGenerator(g, 1, s, stages),
            seeds=[1, 2, 3],
            n_iter=3,
            learning_rate=0.01,
            device=torch.device("cpu"),
            batch_size=2,
        )
    )
    assert out.shape == (3, 1, 8, 16, 16) and out.dtype == np.float32


def test_median_and_spread():
    stack = np.stack([np.full((1, 2, 2), v, np.float32) for v in (0.0, 1.0, 0.2, 0.4)])
    median, spread = _fit.summarize(stack)
    np.testing.assert_allclose(median, 0.3)  # mean of the two middle values
    np.testing.assert_allclose(spread, np.std([0.0, 1.0, 0.2, 0.4]), rtol=1e-6)
    assert _fit.split([1, 2, 3, 4, 5], 2) == [[1, 2, 3], [4, 5]]
    assert [list(b) for b in _fit.member_batches(5, 2)] == [[0, 1], [2, 3], [4]]


def test_threads_stopped_from_outside_wake_their_consumer():
    """The interpreter's exit handler stops every fitting thread; the consumer, which
    waits for their members, must learn that they will never come (it once waited for
    ever, and the process never exited)."""
    kw = dict(
        make_net=make_2d,
        n_iter=100_000,
        learning_rate=0.01,
        device=torch.device("cpu"),
        channels_last=False,
    )
    gen = _fit.iter_members_threaded(IMAGE, CROP, threads=2, seeds=[1, 2, 3], **kw)
    next(gen)  # running
    _fit._stop_all_at_exit()  # what atexit does
    with pytest.raises(_fit.FitStopped, match="stopped before it finished"):
        for _ in gen:  # the reports already sent, then the stop
            pass
    assert not [t for t in threading.enumerate() if t.name.startswith("napari-dsp-fit-")]


def test_a_fit_goes_on_from_the_weights_another_fit_kept():
    """Weights kept after the last step, given to a one-iteration fit, give the same
    output (the same weights, the same noise); kept earlier, they are another start; and
    a fit from them goes on from there (closer to its own target sooner than from
    scratch)."""
    kw = dict(
        make_net=make_2d,
        learning_rate=0.01,
        device=torch.device("cpu"),
        dtype=torch.float64,
        channels_last=False,
    )
    seeds = [3, 4]
    first = _fit.WarmStart(keep_at=8)
    done = drain(_fit.iter_members(IMAGE, CROP, seeds=seeds, n_iter=9, warm=first, **kw))
    assert set(first.kept) == {((3, 4),)}
    again = _fit.WarmStart(start=first.kept)
    same = drain(_fit.iter_members(IMAGE, CROP, seeds=seeds, n_iter=1, warm=again, **kw))
    np.testing.assert_allclose(same, done, rtol=0, atol=1e-12)
    scratch = drain(_fit.iter_members(IMAGE, CROP, seeds=seeds, n_iter=1, **kw))
    assert np.abs(scratch - done).max() > 1e-3
    # the neighbour: a shifted image; three iterations from the kept weights fit it
    # better than three from scratch
    shifted = np.roll(IMAGE, 2, axis=2)
    warm = drain(
        _fit.iter_members(
            shifted, CROP, seeds=seeds, n_iter=3, warm=_fit.WarmStart(start=first.kept), **kw
        )
    )
    cold = drain(_fit.iter_members(shifted, CROP, seeds=seeds, n_iter=3, **kw))
    assert np.abs(warm - shifted).mean() < np.abs(cold - shifted).mean()
    # the threaded form shares one WarmStart between its threads
    kept = _fit.WarmStart(keep_at=8)
    drain(
        _fit.iter_members_threaded(
            IMAGE, CROP, threads=2, seeds=seeds, n_iter=9, warm=kept, batch_size=1, **kw
        )
    )
    assert set(kept.kept) == {((3,),), ((4,),)}
