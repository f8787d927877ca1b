"""Stacks larger than memory: segmented plane by plane with bounded memory into a zarr
array on disk, written as planes finish, in this process or as tasks on a dask cluster.

Owns :func:`segment_stack_to_zarr` and :func:`iter_segment_stack_to_zarr`, the sources
they read (:func:`open_source`), the zarr output and the planes as cluster tasks. The two
passes are :mod:`napari_dsp.pipeline`'s: a :class:`~napari_dsp.pipeline.StackModel` is
learnt from a sample of planes, then every plane is segmented under it alone, one after
another here, or as tasks on workers that write their own chunk (one chunk per plane).

Memory holds one plane's fit at a time, plus the sample's priors during the first pass.
The output is written to a temporary folder beside it and moved into place when every
plane is done; a stopped run leaves no partial output under the final name.

With ``instances=True`` the ids are unique over the stack, numbered plane by plane, as in
memory (the counts per plane are in the metadata).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import shutil
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np

from . import io as _io
from .core import image as _image
from .core.postprocess import label_dtype, offset_ids
from .core.progress import FitProgress, ProgressCallback, check_callback, drain, relay
from .io.places import overlaps, probe_folder
from .io.temps import new_temp_folder, remove_stale_temps
from .io.write import jsonable
from .pipeline import (
    ANCHOR_EVERY,
    SAMPLE_PLANES,
    StackModel,
    fit_order,
    fitted_by_rule,
    iter_learn,
    iter_segment_plane,
    planned_iterations,
    refuse_per_image,
    sample_indices,
    segment_plane,
    warn_if_nothing,
)
from .settings import Settings, make_settings
from .workers import check_client

#: What a user calls (the documented API of this module).
__all__ = ["iter_segment_stack_to_zarr", "open_source", "segment_stack_to_zarr"]

#: Progress steps per plane fit in a whole run's report (a fit's own steps depend on its
#: tiles and early stop; each plane counts the same).
STEPS_PER_FIT = 1000


def open_source(source):
    """An array-like for a stack given as an array or a path.

    Parameters
    ----------
    source : array_like or str or Path
        A path to a TIFF (read lazily through tifffile's zarr store, one plane at a time)
        or a zarr store; a torch tensor; any other array.

    Returns
    -------
    array_like
        A zarr array for a path, a numpy array for a tensor, other arrays as they are.

    Raises
    ------
    ValueError
        For a path that is neither a TIFF nor a zarr store.
    """
    source = _image.from_torch(source)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile
            import zarr

            return zarr.open(tifffile.imread(path, aszarr=True), mode="r")
        if path.is_dir() or path.suffix.lower() == ".zarr":
            import zarr

            return zarr.open(str(path), mode="r")
        raise ValueError(
            f"{path}: pass a TIFF or a zarr store for a stack larger than "
            f"memory (or the array itself)"
        )
    return source


def _close_opened(source, given) -> None:
    """Close the store :func:`open_source` opened for a path (not an array given)."""
    closer = getattr(getattr(source, "store", None), "close", None)
    if source is not given and callable(closer):
        closer()


@functools.lru_cache(maxsize=4)
def _open_cached(path: str, mtime_ns: int, size: int):
    """:func:`open_source` once per file (and version of it) in a worker process: a
    TIFF's pages are parsed once, not for every plane."""
    return open_source(path)


def _plane_task(
    source_ref, stack, indices: list, model: StackModel, store: str, fitted_first: dict
) -> list[tuple[tuple, int]]:
    """A run of planes on a worker (:func:`napari_dsp.pipeline.fit_order`): read each,
    segment it (each from where the one before ended; a plane fitted in the first pass
    is in ``fitted_first``), write its chunk of ``store``. ``source_ref``: a path (with
    ``stack``) or one :class:`_PlaneRef` per plane."""
    import zarr

    from .workers import prepare_worker, worker_threads

    prepare_worker()
    if model.settings.n_threads is None:  # one fitting thread per worker thread
        model = dataclasses.replace(
            model, settings=model.settings.replace(n_threads=worker_threads())
        )
    out = zarr.open_array(store, mode="r+")
    carry: dict = {"weights": None}
    done = []
    for k, index in enumerate(indices):
        if stack is not None:  # a path: opened once per worker process
            path = Path(source_ref)
            st = path.stat()
            raw = stack.raw_plane(_open_cached(str(path), st.st_mtime_ns, st.st_size), index)
        else:
            raw = np.asarray(source_ref[k])  # a _PlaneRef: (C, Y, X)
        prior = None
        if index in fitted_first:
            prior, carry["weights"] = fitted_first[index]
        labels, count = segment_plane(raw, model, prior, carry)
        out[index] = labels
        done.append((index, count))
    return done


def segment_stack_to_zarr(
    image,
    output,
    *,
    channel_axis: Optional[int] = None,
    settings: Optional[Settings] = None,
    client=None,
    n_sample: int = SAMPLE_PLANES,
    overwrite: bool = False,
    progress: Optional[ProgressCallback] = None,
    **overrides: Any,
) -> Path:
    """Segment every plane of a stack with bounded memory into a zarr array at ``output``.

    Parameters
    ----------
    image : array_like (numpy, dask, zarr) or path of a TIFF or zarr store
        ``(..., Y, X)`` with at most two leading axes (T, Z), plus ``channel_axis``.
        Planes are read one at a time.
    output : str or Path ending in ``.zarr``
        Created with one chunk per plane (labels ``uint8``; ``uint32`` ids unique over
        the stack with ``instances``). Its attributes hold the metadata (settings, the
        shared model's numbers, counts per plane, axes).
    channel_axis : int, optional
        Axis of the channels, if any (a TIFF's metadata names it by itself).
    settings : Settings, optional
        Defaults for every parameter (``method='kmeans'``; ``volumetric`` needs the
        stack in memory and is refused).
    client : distributed.Client, optional
        Run the planes as tasks on its workers (the workers must reach ``image`` when it
        is a path, and ``output``); without it, planes run here one after another.
    n_sample : int, default 8
        Planes the shared model (K-means centres, class order, noise decision) is
        learnt from, evenly spaced.
    overwrite : bool, default False
        Replace an existing ``output`` that napari-dsp wrote.
    progress : callable, optional
        Called with a :class:`~napari_dsp.core.progress.FitProgress` after every iteration of
        every plane's fit (``plane``/``n_planes`` say which plane; without a client)
        and as each plane is written.
    **overrides
        Any setting of :class:`~napari_dsp.Settings` by name, replacing the value of
        ``settings``.

    Returns
    -------
    Path
        The zarr array written.

    Raises
    ------
    TypeError
        For a stack, a setting or a ``client`` of the wrong type (nothing is written
        then).
    ValueError
        For a bad stack, settings or output (nothing is written then); an
        :class:`~napari_dsp.io.ImageFileError` (a ValueError) for a TIFF that cannot be
        read (cut short, damaged), with nothing left behind.
    FileExistsError
        ``output`` exists and ``overwrite`` is False.
    PermissionError
        ``output``'s folder cannot be written (or a file stands where it should be);
        said at the call, before anything is fitted.

    Examples
    --------
    >>> from napari_dsp.large import segment_stack_to_zarr
    >>> segment_stack_to_zarr("lightsheet.tif", "lightsheet_labels.zarr")  # doctest: +SKIP
    PosixPath('lightsheet_labels.zarr')
    """
    check_callback(progress)
    if client is not None:
        check_client(client)
    s = make_settings(settings, **overrides)
    output, channel_axis = _check_call(s, output, n_sample, overwrite, image, channel_axis)
    output, meta = drain(
        _iter_to_zarr(image, output, s, channel_axis, client, n_sample, overwrite), progress
    )
    warn_if_nothing(meta)
    return output


def stored_at(image) -> list[Path]:
    """Where on disk ``image`` is read from: its path, the folder of a zarr array, or
    the zarr arrays a dask array reads, found anywhere in its task graph (as a layer of
    the graph, or inlined into the tasks' arguments); empty for an array in memory."""
    if isinstance(image, (str, os.PathLike)):
        return [Path(image)]
    found: list = []
    seen: set = set()

    def visit(value, depth: int = 0) -> None:
        if depth > 6 or id(value) in seen:
            return
        seen.add(id(value))
        store = getattr(value, "store", None)
        if store is not None and not isinstance(value, type):
            root = getattr(store, "root", None) or getattr(store, "path", None)
            if isinstance(root, (str, os.PathLike)):
                found.append(Path(root) / (getattr(value, "path", "") or ""))
        if isinstance(value, dict):
            items = value.values()
        elif isinstance(value, (list, tuple, set)):
            items = value
        else:  # a dask task: its arguments; a data node: what it holds
            items = [*getattr(value, "args", ()), *getattr(value, "kwargs", {}).values()]
            if type(value).__name__ == "DataNode":
                items.append(getattr(value, "value", None))
        for item in items:
            if not isinstance(item, (str, bytes, int, float, np.ndarray)):
                visit(item, depth + 1)

    visit(image)
    graph = getattr(image, "dask", None)
    if graph is not None:
        with contextlib.suppress(Exception):
            for value in dict(graph).values():
                visit(value)
    return list(dict.fromkeys(found))


def channel_axis_of(image, channel_axis: Optional[int]) -> Optional[int]:
    """The channel axis of a TIFF given by its path, from the axes its OME or ImageJ
    metadata names (C, or S for samples), as the command line reads it: a channel axis
    is never taken as planes. An axis given by the caller, or an array, is left as it
    is."""
    if channel_axis is not None or not isinstance(image, (str, os.PathLike)):
        return channel_axis
    if Path(image).suffix.lower() not in (".tif", ".tiff"):
        return None
    info = _io.read_info(image)
    axes = info.axes or ""
    if len(axes) != len(info.shape):
        return None
    channels = [i for i, (a, n) in enumerate(zip(axes, info.shape)) if a in "CS" and n > 1]
    if len(channels) > 1:
        raise ValueError(
            f"{image}: has both channels and samples (axes {axes}); save one of them, or "
            f"pass channel_axis=..."
        )
    return channels[0] if channels else None


def _check_call(
    settings: Settings, output, n_sample: int, overwrite: bool, image, channel_axis
) -> tuple[Path, Optional[int]]:
    """Everything checked at the call, before anything is fitted; returns the output
    path and the channel axis (from a TIFF's own axes where not given)."""
    if settings.method != "kmeans":
        raise ValueError("segment_stack_to_zarr supports method='kmeans' only")
    refuse_per_image(settings)
    if settings.volumetric:
        raise ValueError(
            "volumetric=True fits one 3-D prior to the whole stack, which "
            "needs it in memory: leave out out= (segment_stack in memory), or leave "
            "volumetric out to segment plane by plane into the zarr array"
        )
    if int(n_sample) < 1:
        raise ValueError(f"n_sample must be at least 1, got {n_sample}")
    output = Path(output)
    if output.suffix.lower() != ".zarr":
        raise ValueError(f"{output}: name the output <name>.zarr")
    problem, _ = probe_folder(output.parent)
    if problem:
        raise PermissionError(f"{output}: {problem}; choose another folder for the labels")
    sources = stored_at(image)
    problems = overlaps([output], sources)
    if not sources and hasattr(image, "dask") and overwrite and os.path.lexists(output):
        raise ValueError(
            f"{output} exists and where this dask array reads its data could not be "
            f"told, so it might be that very store: write the labels to a new .zarr, or "
            f"remove {output} first"
        )
    if problems:
        raise ValueError(
            "; ".join(f"{out} {what}" for out, _src, what in problems)
            + ": write the labels to another .zarr, outside the input"
        )
    if os.path.lexists(output) and not overwrite:
        raise FileExistsError(
            f"{output} exists; pass overwrite=True to replace it, or another name"
        )
    if os.path.lexists(output) and not ours(output):
        raise FileExistsError(
            f"{output} exists and is not a label array napari-dsp wrote (overwrite=True "
            f"replaces only those, never other data); choose another name, or remove it "
            f"yourself"
        )
    return output, channel_axis_of(image, channel_axis)


def ours(path: Path) -> bool:
    """Whether ``path`` is a zarr array napari-dsp wrote (its attributes say so)."""
    try:
        import zarr

        return "napari_dsp" in dict(zarr.open_array(str(path), mode="r").attrs)
    except Exception:  # not a zarr array, unreadable, zarr missing
        return False


def iter_segment_stack_to_zarr(
    image,
    output,
    *,
    channel_axis: Optional[int] = None,
    settings: Optional[Settings] = None,
    n_sample: int = SAMPLE_PLANES,
    overwrite: bool = False,
    **overrides: Any,
):
    """Generator form of :func:`segment_stack_to_zarr`, in this process.

    The napari widget runs it in a thread. Arguments are checked at the call. The
    generator yields a :class:`~napari_dsp.FitProgress` after every iteration of every
    plane's fit (``plane``/``n_planes`` set); closing it stops the fit within an
    iteration and removes the unfinished output.

    Parameters
    ----------
    image : array_like or str or Path
        As for :func:`segment_stack_to_zarr`.
    output : str or Path ending in ``.zarr``
        The zarr array to write.
    channel_axis : int, optional
        Axis of the channels, if any.
    settings : Settings, optional
        Defaults for every parameter.
    n_sample : int, default 8
        Planes the shared model is learnt from.
    overwrite : bool, default False
        Replace an existing ``output`` that napari-dsp wrote.
    **overrides
        Any setting of :class:`~napari_dsp.Settings` by name.

    Returns
    -------
    generator
        Yields :class:`~napari_dsp.FitProgress`; returns a
        :class:`~napari_dsp.SegmentResult` whose labels are a dask array read from the
        zarr output (``prior`` None).

    Raises
    ------
    TypeError
        For a stack or a setting of the wrong type.
    ValueError
        For a bad stack, settings or output.
    """
    from .results import SegmentResult

    s = make_settings(settings, **overrides)
    output, channel_axis = _check_call(s, output, n_sample, overwrite, image, channel_axis)
    from .planes import StackLayout

    with unreadable_file_said(image):
        probe = open_source(image)  # the stack's axes and dtype, checked now
    StackLayout(probe, channel_axis)
    _close_opened(probe, image)

    def run():
        out, meta = yield from _iter_to_zarr(
            image, output, s, channel_axis, None, n_sample, overwrite
        )
        import dask.array as da

        return SegmentResult(da.from_zarr(str(out)), None, meta)

    return run()


def _iter_to_zarr(
    image, output: Path, s: Settings, channel_axis, client, n_sample: int, overwrite: bool
):
    """Both passes; yields :class:`~napari_dsp.core.progress.FitProgress`, returns ``(output,
    metadata)``."""
    source_ref = image
    with unreadable_file_said(image):
        source = open_source(image)
        try:
            return (
                yield from _to_zarr(
                    source_ref, source, output, s, channel_axis, client, n_sample, overwrite
                )
            )
        finally:
            _close_opened(source, image)


@contextlib.contextmanager
def unreadable_file_said(image):
    """What tifffile raises for a stack given by path that cannot be read (a file cut
    short, a damaged strip: found only when that plane is read) becomes an
    :class:`~napari_dsp.io.ImageFileError` naming the file and what to do."""
    try:
        yield
    except Exception as exc:
        if not (
            isinstance(image, (str, os.PathLike))
            and type(exc).__module__.split(".")[0] == "tifffile"
        ):
            raise
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise _io.ImageFileError(
            f"{image}: cannot be read ({text}); the file may be cut short or damaged: "
            f"check it (open it in Fiji), or write it again"
        ) from exc


def _to_zarr(
    source_ref,
    source,
    output: Path,
    s: Settings,
    channel_axis,
    client,
    n_sample: int,
    overwrite: bool,
):
    import zarr

    from .core.plan import resolve_device
    from .planes import StackLayout
    from .results import make_metadata, resolve_seed

    stack = StackLayout(source, channel_axis)
    s = s.replace(seed=resolve_seed(s.seed))
    device = resolve_device(s.device)
    n = len(stack.planes)
    position = {index: k for k, index in enumerate(stack.planes)}
    sample = sample_indices(stack.planes, n_sample)
    # every plane once, and the sampled planes not fitted as the second pass fits them
    # (pipeline.fitted_by_rule) twice
    n_fits = n + len(sample) - len(fitted_by_rule(stack.planes, sample, bool(s.warm_iter)))
    start = time.monotonic()

    def overall(fits_done: int, plane: int):
        """A plane fit's report as a step of the whole run (every plane is fitted once:
        the sample's priors are reused in the second pass)."""

        def stamp(p: FitProgress) -> FitProgress:
            return p.replace(
                step=fits_done * STEPS_PER_FIT + round(p.fraction * STEPS_PER_FIT),
                total=n_fits * STEPS_PER_FIT,
                plane=plane,
                n_planes=n,
                elapsed=time.monotonic() - start,
            )

        return stamp

    def sample_report(p: FitProgress) -> FitProgress:
        return overall(p.plane, position[sample[p.plane]])(p)

    model, fitted_first = yield from relay(iter_learn(source, stack, s, n_sample), sample_report)
    n_sampled = len(sample)
    dtype = label_dtype(instances=s.instances, n_classes=s.n_classes)
    plane_shape = stack.plane_shape
    shape = stack.lead + tuple(plane_shape)
    output.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(output.parent)  # what a killed run left (its process is gone)
    tmp = new_temp_folder(output.parent)  # zarr writes its array into it
    zarr.open_array(
        str(tmp),
        mode="w",
        shape=shape,
        chunks=(1,) * len(stack.lead) + tuple(plane_shape),
        dtype=dtype,
        fill_value=0,
    )

    def written(fits_done: int, index: tuple) -> FitProgress:
        """The report of a plane written; the unfinished array is touched, so a run
        elsewhere on a shared folder sees it is alive and leaves it alone."""
        os.utime(tmp)
        return overall(fits_done, position[index])(FitProgress(0, 1))

    counts: dict = {}
    try:
        if client is None:
            out = zarr.open_array(str(tmp), mode="r+")
            fitted = n_sampled
            k = 0
            for run in fit_order(stack.planes, bool(s.warm_iter)):
                carry: dict = {"weights": None}  # an anchor: from scratch
                for index in run:
                    raw = stack.raw_plane(source, index)
                    prior = None
                    if index in fitted_first:  # fitted as here in the first pass
                        prior, carry["weights"] = fitted_first[index]
                    labels, counts[index] = yield from relay(
                        iter_segment_plane(raw, model, prior, carry), overall(fitted, k)
                    )
                    fitted += prior is None
                    out[index] = labels
                    yield written(fitted, index)
                    k += 1
        else:
            counts = yield from _run_planes(
                client, source_ref, source, stack, model, fitted_first, n_sampled, str(tmp), written
            )
        if s.instances:  # numbered over the stack, plane by plane, as in memory
            renumbering = _number_over_the_stack(
                zarr.open_array(str(tmp), mode="r+"), stack.planes, counts
            )
            for k in renumbering:  # a report per plane: a cancel takes effect between them
                yield overall(n_fits, k)(FitProgress(0, 1))
        axes = _axes(stack)
        meta = make_metadata(
            s,
            device=str(device),
            image_shape=stack.shape,
            image_dtype=np.dtype(source.dtype),
            channel_axis=channel_axis,
            clustering=dict(model.metadata(), sample_planes=[list(i) for i in model.sample]),
            stack={
                "n_planes": n,
                "plane_axes": stack.lead_axes,
                "mode": "plane by plane (bounded memory)",
            },
        )
        # each plane's start and iterations, as pipeline.fit_order fits them on every path
        # (the most, where the fits stop once settled)
        first_of_run = {run[0] for run in fit_order(stack.planes, bool(s.warm_iter))}
        meta["fit"] = {
            "warm_iter": s.warm_iter,
            "anchor_every": ANCHOR_EVERY,
            "start": ["scratch" if i in first_of_run else "neighbour" for i in stack.planes],
            "iterations": [planned_iterations(k, s) for k in range(n)],
            "settle": s.settle,
        }
        per_plane = [counts[i] for i in stack.planes]
        if s.instances:
            meta["clustering"]["counts_per_plane"] = per_plane
            meta["clustering"]["count"] = int(sum(per_plane))
            meta["clustering"]["ids"] = "unique over the stack, numbered plane by plane"
        arr = zarr.open_array(str(tmp), mode="r+")
        arr.attrs.update({"napari_dsp": jsonable(meta), "axes": axes})
        _move_into_place(tmp, output, overwrite)
        meta["labels_file"] = str(output)
    except BaseException:  # an error, Ctrl-C, or the generator closed (cancel)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return output, meta


def _number_over_the_stack(out, planes: list, counts: dict):
    """Plane by plane (bounded memory), the ids ``1..n`` each plane was written with
    become ids unique over the stack: the rule of
    :func:`napari_dsp.core.postprocess.label_objects`, which the in-memory path uses.
    Yields each plane's position as it is done."""
    offset = 0
    for k, index in enumerate(planes):
        if offset and counts[index]:
            out[index] = offset_ids(np.asarray(out[index]), offset)
        offset += counts[index]
        yield k


def _run_planes(client, source_ref, source, stack, model, fitted_first, n_sampled, store, written):
    """The planes as tasks, a run of :func:`napari_dsp.pipeline.fit_order` each; yields
    ``written(fits done, plane index)`` as each plane is written, returns the counts."""
    from .workers import require_distributed

    dist = require_distributed()
    by_path = isinstance(source_ref, (str, os.PathLike))
    model_future = client.scatter(model, broadcast=True)
    futures = []
    for indices in fit_order(stack.planes, bool(model.settings.warm_iter)):
        if by_path:
            ref, st = source_ref, stack
        else:  # the planes themselves (a lazy slice of dask/zarr data is read on the worker)
            ref = [_PlaneRef(source, stack.key(i), stack.plane_axis) for i in indices]
            st = None
        given = {i: fitted_first[i] for i in indices if i in fitted_first}
        futures.append(
            client.submit(_plane_task, ref, st, indices, model_future, store, given, pure=False)
        )
    counts = {}
    try:
        fitted = n_sampled  # the sample's planes were fitted here, in the first pass
        for future in dist.as_completed(futures):
            for index, count in future.result():
                counts[index] = count
                fitted += index not in fitted_first
                yield written(fitted, index)
    except BaseException:
        for future in futures:
            future.cancel()
        raise
    return counts


class _PlaneRef:
    """One plane of an array, read where the task runs (``np.asarray`` on it)."""

    def __init__(self, source, key, plane_axis):
        self.data = (
            source[key] if not isinstance(source, np.ndarray) else np.ascontiguousarray(source[key])
        )
        self.plane_axis = plane_axis

    def __array__(self, dtype=None, copy=None):
        arr = _image.to_channels_first(np.asarray(self.data), self.plane_axis)
        return arr if dtype is None else arr.astype(dtype)


def _axes(stack) -> str:
    lead = "TZ"[2 - len(stack.lead) :] if stack.lead else ""
    return lead + "YX"


def _move_into_place(tmp: Path, output: Path, overwrite: bool) -> None:
    if os.path.lexists(output):
        if not overwrite or not ours(output):
            raise FileExistsError(
                f"{output} appeared while the stack was segmented (or is not napari-dsp's); "
                f"the result was not written"
            )
        aside = output.with_name(f".{output.name}.{os.urandom(3).hex()}.old")
        os.rename(output, aside)
        os.rename(tmp, output)
        with contextlib.suppress(OSError):
            shutil.rmtree(aside) if aside.is_dir() else os.unlink(aside)
        return
    os.rename(tmp, output)
