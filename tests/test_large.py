"""Stacks larger than memory (napari_dsp.large): plane by plane into zarr, the same
result as the in-memory path, planes as tasks on a real LocalCluster, memory that does
not grow with the number of planes, refusals and a stopped run."""

from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_dsp import NothingToSegmentWarning, segment_stack
from tests.fast import TINY
from tests.synthetic import nuclei

zarr = pytest.importorskip("zarr", reason="needs napari-dsp[distributed]")
from napari_dsp.large import segment_stack_to_zarr  # noqa: E402


def planes(n, size=64, seed=0):
    return np.stack([nuclei((size, size), n=5, radius=(5, 9), seed=seed + i)[0] for i in range(n)])


def read(path):
    return zarr.open_array(str(path), mode="r")


def test_all_planes_sampled_gives_the_in_memory_result(tmp_path):
    """40 planes: an anchor at 0 and 32 (from scratch), the others from their neighbour's
    fit, in memory and in both passes of the zarr path alike."""
    stack = planes(40, size=48)
    reference = segment_stack(stack, **TINY, full_output=True)
    assert (
        reference.metadata["fit"]["start"]
        == ["scratch"] + ["neighbour"] * 31 + ["scratch"] + ["neighbour"] * 7
    )
    assert reference.metadata["fit"]["iterations"][:3] == [4, 15, 15]
    out = segment_stack_to_zarr(stack, tmp_path / "labels.zarr", n_sample=40, **TINY)
    z = read(out)
    assert z.shape == stack.shape and z.dtype == np.uint8 and z.chunks == (1, 48, 48)
    np.testing.assert_array_equal(z[:], reference.labels)
    meta = z.attrs["napari_dsp"]
    assert z.attrs["axes"] == "ZYX"
    assert meta["settings"]["seed"] == 0 and meta["stack"]["n_planes"] == 40
    # what each plane started from is recorded, as in memory
    assert meta["fit"]["start"] == reference.metadata["fit"]["start"]
    assert meta["fit"]["iterations"] == reference.metadata["fit"]["iterations"]
    assert meta["clustering"]["decision"]["result"] == "prior"


def test_a_sample_of_planes_stays_close_to_the_in_memory_result(tmp_path):
    """The model learnt from 8 planes of 16 against the one learnt from all. Every plane
    from scratch: with warm starts, TINY's 4 iterations against the tens a chained
    plane has had make the sampled planes (fitted from scratch, for the model alone)
    unlike the rest, which the defaults' 50 iterations do not (benchmarks/bench_warm)."""
    stack = planes(16)
    reference = segment_stack(stack, **TINY, warm_iter=0)
    z = read(segment_stack_to_zarr(stack, tmp_path / "l.zarr", **TINY, warm_iter=0))  # 8 of 16
    assert len(z.attrs["napari_dsp"]["clustering"]["sample_planes"]) == 8
    agree = (z[:] == reference).mean()
    assert agree > 0.99, agree


def test_tiff_read_lazily_and_time_by_z(tmp_path):
    stack = planes(6).reshape(2, 3, 64, 64)
    path = tmp_path / "tz.tif"
    tifffile.imwrite(path, stack, imagej=True, metadata={"axes": "TZYX"})
    z = read(segment_stack_to_zarr(path, tmp_path / "tz.zarr", n_sample=6, **TINY))
    assert z.shape == (2, 3, 64, 64) and z.attrs["axes"] == "TZYX"
    np.testing.assert_array_equal(z[:], segment_stack(stack, **TINY))


@pytest.mark.parametrize("instances", [False, True])
def test_one_stack_through_every_path_gives_the_same_labels_ids_and_dtype(tmp_path, instances):
    """In memory, to zarr from an array, to zarr from a dask array read lazily: one
    pipeline, so identical labels, ids (unique over the stack, numbered plane by plane)
    and dtype (the one rule: uint32 ids, uint8 classes)."""
    dask_array = pytest.importorskip("dask.array")
    stack = planes(4)
    kw = dict(TINY, instances=instances)
    memory = segment_stack(stack, **kw)
    on_disk = read(segment_stack_to_zarr(stack, tmp_path / "a.zarr", **kw))
    lazy = read(
        segment_stack_to_zarr(
            dask_array.from_array(stack, chunks=(1, 48, 48)), tmp_path / "b.zarr", **kw
        )
    )
    assert memory.dtype == on_disk.dtype == lazy.dtype == (np.uint32 if instances else np.uint8)
    np.testing.assert_array_equal(on_disk[:], memory)
    np.testing.assert_array_equal(lazy[:], memory)
    if instances:
        counts = on_disk.attrs["napari_dsp"]["clustering"]["counts_per_plane"]
        assert min(counts) >= 1 and int(memory.max()) == sum(counts)
        ids = [set(np.unique(plane)) - {0} for plane in memory]
        first = 1
        for plane_ids, n in zip(ids, counts):  # plane k holds the next n ids
            assert plane_ids == set(range(first, first + n))
            first += n
    else:
        assert set(np.unique(memory)) == {0, 1}


def test_noise_only_stack_is_empty_with_a_warning(tmp_path):
    rng = np.random.default_rng(0)
    stack = rng.poisson(20, (4, 64, 64)).astype(np.uint16)
    with pytest.warns(NothingToSegmentWarning):
        z = read(segment_stack_to_zarr(stack, tmp_path / "n.zarr", **TINY))
    assert z[:].max() == 0
    assert z.attrs["napari_dsp"]["clustering"]["decision"]["result"] == "empty"


def test_refusals_write_nothing(tmp_path):
    stack = planes(2)
    with pytest.raises(ValueError, match=r"\.zarr"):
        segment_stack_to_zarr(stack, tmp_path / "x.tif", **TINY)
    with pytest.raises(ValueError, match="volumetric.*leave out out="):
        segment_stack_to_zarr(stack, tmp_path / "v.zarr", volumetric=True, **TINY)
    with pytest.raises(ValueError, match="spacing is used by volumetric=True"):
        segment_stack(stack, out=tmp_path / "s.zarr", spacing=(2.0, 1.0, 1.0), **TINY)
    with pytest.raises(ValueError, match="kmeans"):
        segment_stack_to_zarr(stack, tmp_path / "k.zarr", method="kanezaki", **TINY)
    with pytest.raises(ValueError, match="constant"):
        segment_stack_to_zarr(np.zeros((3, 32, 32), np.uint8), tmp_path / "c.zarr", **TINY)
    assert list(tmp_path.iterdir()) == []
    out = segment_stack_to_zarr(stack, tmp_path / "o.zarr", **TINY)
    before = read(out)[:]
    with pytest.raises(FileExistsError, match="overwrite=True"):
        segment_stack_to_zarr(planes(2, seed=5), out, **TINY)
    np.testing.assert_array_equal(read(out)[:], before)


def test_a_stopped_run_leaves_no_output(tmp_path):
    def stop(p):
        if p.fraction >= 0.5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        segment_stack_to_zarr(planes(5), tmp_path / "s.zarr", progress=stop, **TINY)
    assert list(tmp_path.iterdir()) == []


def test_planes_as_tasks_on_a_local_cluster(tmp_path):
    """The same labels as the loop in this process: runs of planes that start from
    their neighbour's fit, cut at the anchors (40 planes: two runs), as tasks."""
    distributed = pytest.importorskip("distributed")
    dask_array = pytest.importorskip("dask.array")
    stack = planes(40, size=48)
    path = tmp_path / "st.tif"
    tifffile.imwrite(path, stack)
    here = read(segment_stack_to_zarr(stack, tmp_path / "here.zarr", **TINY))[:]
    seen = []
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, dashboard_address=":0"
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        a = segment_stack_to_zarr(
            path, tmp_path / "a.zarr", client=client, progress=seen.append, **TINY
        )
        b = segment_stack_to_zarr(
            dask_array.from_array(stack, chunks=(1, 48, 48)),
            tmp_path / "b.zarr",
            client=client,
            **TINY,
        )
    np.testing.assert_array_equal(read(a)[:], here)
    np.testing.assert_array_equal(read(b)[:], here)
    # every plane reported once written, and the last report is the whole run
    assert seen[-1].step == seen[-1].total and seen[-1].n_planes == 40
    written = [p.plane for p in seen if p.iteration == 0]
    assert sorted(written) == list(range(40))
    steps = [p.step for p in seen]
    assert steps == sorted(steps)


def _traced_peak(run) -> int:
    """Peak of the memory numpy and Python allocate (tracemalloc) while ``run()`` runs."""
    import tracemalloc

    tracemalloc.start()
    try:
        run()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _start_tracing():
    import tracemalloc

    tracemalloc.stop()
    tracemalloc.start()


def _traced():
    import tracemalloc

    return tracemalloc.get_traced_memory()[1]


@pytest.mark.slow
def test_memory_does_not_grow_with_the_number_of_planes(tmp_path):
    """64 planes against 16 read lazily from a TIFF: the peak of what numpy and Python
    hold (tracemalloc) here, and on each worker of a LocalCluster, grows by less than
    half the extra planes' own bytes (keeping them, or any copy of them, would fail).
    The whole process's peak (VmHWM) against the in-memory path is measured by
    benchmarks/bench_cluster.py."""
    distributed = pytest.importorskip("distributed")
    size, few, many = 192, 16, 64
    for n in (few, many):
        data = np.concatenate([planes(16, size, seed=0)] * (n // 16))
        tifffile.imwrite(tmp_path / f"stack{n}.tif", data)
    # what is held matters here, not the labels. Every plane from scratch: a plane that
    # starts from its neighbour's fit holds one set of weights more (torch's memory, not
    # traced here); under pytest, with warm starts, the 64-plane run's traced peak was
    # 67 MB against 2.5 MB for 16 planes, which the same calls in a plain process do not
    # show (23 MB both, and no numpy array left for the cyclic collector): not resolved
    quick = dict(TINY, n_iter=2, n_members=1, warm_iter=0)
    # imports and first allocations here (torch loads its compiler's modules, tens of MB
    # of Python objects, when the first optimiser is made), before measuring
    segment_stack_to_zarr(tmp_path / f"stack{few}.tif", tmp_path / "first.zarr", **quick)
    here = {
        n: _traced_peak(
            lambda n=n: segment_stack_to_zarr(
                tmp_path / f"stack{n}.tif", tmp_path / f"here{n}.zarr", **quick
            )
        )
        for n in (few, many)
    }
    workers = {}
    import dask.config

    # dask's statistical profiler keeps a history that grows with the run's wall time
    # (slower on a busy machine): not ours to measure
    with (
        dask.config.set({"distributed.worker.profile.enabled": False}),
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, dashboard_address=":0"
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        # imports and first allocations on the workers, before measuring
        segment_stack_to_zarr(
            tmp_path / f"stack{few}.tif", tmp_path / "warm.zarr", client=client, **quick
        )
        for n in (few, many):
            client.run(_start_tracing)
            segment_stack_to_zarr(
                tmp_path / f"stack{n}.tif", tmp_path / f"c{n}.zarr", client=client, **quick
            )
            workers[n] = max(client.run(_traced).values())
    extra = (many - few) * size * size * 2  # the extra planes as stored (uint16)
    assert here[many] - here[few] < extra / 2, (here, extra)
    # (a worker's own task log takes a few kB per task)
    assert workers[many] - workers[few] < extra / 2, (workers, extra)
    # the measurement can fail: the first pass holds its sample of 8 planes
    assert here[few] > 8 * size * size * 4


@pytest.mark.parametrize("phase", ["sample", "planes"])
def test_closing_the_generator_stops_within_an_iteration(tmp_path, phase):
    """The generator reports every iteration of every plane's fit, in both passes, so
    closing it (the widget's Cancel) stops the fit at once: no fitting thread runs on,
    and no output or temporary folder is left."""
    import threading

    from napari_dsp.large import iter_segment_stack_to_zarr

    gen = (
        iter_segment_stack_to_zarr(
            planes(4, size=48),
            tmp_path / "s.zarr",
            n_sample=2,
            **dict(TINY, n_iter=5000, n_threads=2, settle=0.0),
        )
        if phase == "sample"
        else iter_segment_stack_to_zarr(
            planes(4, size=48), tmp_path / "s.zarr", n_sample=1, **dict(TINY, n_threads=2)
        )
    )
    seen = [next(gen), next(gen)]
    if phase == "planes":  # past the sample: a plane of the second pass, mid-fit
        while not (seen[-1].plane > 0 and seen[-1].iteration >= 2):
            seen.append(next(gen))
    assert seen[-1].iteration >= 1 and seen[-1].n_planes == 4
    gen.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("napari-dsp-fit-")]
    assert list(tmp_path.iterdir()) == []


def test_an_output_that_is_contains_or_lies_inside_the_input_is_refused(tmp_path):
    """Even with overwrite=True: the input stack is never replaced or written into,
    whether given as a path, a zarr array or a dask array read from it."""
    dask_array = pytest.importorskip("dask.array")
    src = tmp_path / "s.zarr"
    z = zarr.open_array(str(src), mode="w", shape=(3, 48, 48), chunks=(1, 48, 48), dtype="uint8")
    z[:] = planes(3, size=48)
    before = z[:]
    nested = tmp_path / "outer.zarr" / "inner.zarr"
    zarr.open_array(str(nested), mode="w", shape=(3, 48, 48), dtype="uint8")[:] = before
    cases = [
        (str(src), src, "would replace the input"),
        (zarr.open_array(str(src), mode="r"), src, "would replace the input"),
        (dask_array.from_zarr(str(src)), src, "would replace the input"),
        (dask_array.from_zarr(str(src), inline_array=True), src, "would replace the input"),
        (dask_array.from_zarr(str(src), inline_array=True)[:, 1:] + 1, src, "would replace"),
        (str(src), src / "labels.zarr", "lies inside the input"),
        (str(nested), tmp_path / "outer.zarr", "contains the input"),
    ]
    for image, output, words in cases:
        with pytest.raises(ValueError, match=words):
            segment_stack_to_zarr(image, output, overwrite=True, **TINY)
    # where a dask array reads from cannot be told: an existing output is not replaced
    elsewhere = tmp_path / "elsewhere.zarr"
    zarr.open_array(str(elsewhere), mode="w", shape=(1,), dtype="uint8")
    with pytest.raises(ValueError, match="could not be told"):
        segment_stack_to_zarr(dask_array.from_array(before), elsewhere, overwrite=True, **TINY)
    np.testing.assert_array_equal(read(src)[:], before)
    np.testing.assert_array_equal(read(nested)[:], before)
    assert not (src / "labels.zarr").exists()


def test_an_unwritable_output_is_refused_before_anything_is_fitted(tmp_path):
    blocker = tmp_path / "results"
    blocker.write_text("a file where the output folder should be")
    seen = []
    with pytest.raises(PermissionError, match="is a file, so the folder .* cannot be created"):
        segment_stack_to_zarr(planes(3), blocker / "labels.zarr", progress=seen.append, **TINY)
    assert seen == []  # refused at the call: no plane was fitted


def test_a_killed_run_s_unfinished_array_is_removed_by_the_next_run(tmp_path):
    """SIGKILL while the zarr array is written leaves its hidden folder; the next run
    into the same folder removes it (its process is gone), not a live run's."""
    import signal
    import subprocess
    import sys
    import time

    code = (
        "import numpy as np\n"
        "from napari_dsp.large import segment_stack_to_zarr\n"
        "from tests.test_large import planes\n"
        f"segment_stack_to_zarr(planes(6), {str(tmp_path / 'l.zarr')!r}, n_sample=1, "
        "n_iter=400, n_members=2, n_threads=1, seed=0, device='cpu')\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code], cwd=str(Path(__file__).parents[1]))
    try:
        deadline = time.monotonic() + 120
        while not [p for p in tmp_path.glob(".napari-dsp-*.part") if p.is_dir()]:  # writing
            assert child.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    [left] = [p for p in tmp_path.glob(".napari-dsp-*.part") if p.is_dir()]
    segment_stack_to_zarr(planes(2), tmp_path / "other.zarr", **TINY)
    assert not left.exists() and list(tmp_path.glob(".napari-dsp-*.part")) == []


def test_a_file_s_channels_are_never_taken_as_planes(tmp_path):
    """A ZCYX OME-TIFF or ImageJ hyperstack given by its path: the file's axes say
    which is the channel axis, as the command line reads it (the channels became planes:
    a (3, 2, Y, X) result labelled TZYX)."""
    g = planes(1)[0]
    st = np.stack([np.stack([g, g.max() - g]) for _ in range(3)])  # Z=3, C=2
    tifffile.imwrite(tmp_path / "z.ome.tif", st, metadata={"axes": "ZCYX"})
    tifffile.imwrite(tmp_path / "z_ij.tif", st, imagej=True, metadata={"axes": "ZCYX"})
    for name in ("z.ome.tif", "z_ij.tif"):
        z = read(segment_stack_to_zarr(tmp_path / name, tmp_path / f"{name}.zarr", **TINY))
        assert z.shape == (3, 64, 64) and z.attrs["axes"] == "ZYX"


def test_overwrite_replaces_only_a_label_array_napari_dsp_wrote(tmp_path):
    """overwrite=True once emptied any folder named like the output (notes.txt gone)."""
    foreign = tmp_path / "results.zarr"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a label array napari-dsp wrote"):
        segment_stack(planes(2), out=foreign, overwrite=True, **TINY)
    assert (foreign / "notes.txt").read_text() == "mine"
    ours = tmp_path / "labels.zarr"
    segment_stack(planes(2), out=ours, **TINY)
    segment_stack(planes(2, seed=3), out=ours, overwrite=True, **TINY)  # ours: replaced


def test_an_empty_or_ragged_stack_says_what_to_change():
    with pytest.raises(ValueError, match="at least one plane"):
        segment_stack(np.zeros((0, 64, 64)), **TINY)
    with pytest.raises(ValueError, match="different sizes"):
        segment_stack([planes(1)[0], planes(1)[0][:48, :48]], **TINY)


def test_a_wrong_client_or_an_unreadable_tiff_is_said_at_once(tmp_path, monkeypatch):
    """Hunt F5c: client='local:1' fitted the sample first, then AttributeError ('str' has
    no 'scatter'). F5d: a TIFF cut short gave tifffile's own TiffFileError."""
    from napari_dsp import io, large

    tifffile.imwrite(tmp_path / "st.tif", planes(3), imagej=True, metadata={"axes": "ZYX"})

    def no_fit(*args, **kwargs):
        raise AssertionError("fitted before the client was checked")

    monkeypatch.setattr(large, "iter_learn", no_fit)
    for client in ("local:1", 5):
        with pytest.raises(TypeError, match=r"distributed\.Client.*connect\('local:2'\)"):
            segment_stack_to_zarr(tmp_path / "st.tif", tmp_path / "c.zarr", client=client, **TINY)
    monkeypatch.undo()
    tifffile.imwrite(tmp_path / "st.tif", planes(3))  # pages of their own, no ImageJ header
    data = (tmp_path / "st.tif").read_bytes()
    (tmp_path / "trunc.tif").write_bytes(data[: len(data) * 5 // 6])  # the last plane cut
    with pytest.raises(io.ImageFileError, match=r"trunc\.tif: cannot be read .*cut short"):
        segment_stack_to_zarr(tmp_path / "trunc.tif", tmp_path / "t.zarr", **TINY)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["st.tif", "trunc.tif"]
