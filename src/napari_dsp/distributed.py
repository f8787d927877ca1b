"""Batches on a dask.distributed cluster: one task per file, planned once on the client.

Owns :func:`connect` (a running scheduler by address, or ``local:N``: a ``LocalCluster``
of N single-threaded worker processes started for the run), :func:`segment_files` (a
batch of files: the plan of :func:`napari_dsp.batch.plan_batch` made on the client before
anything is submitted, then one task per file that reads its file, fits and writes its
outputs atomically from the worker, see :func:`napari_dsp.batch.run_job`) and
:func:`submit_segment` (arrays in, futures of :class:`~napari_dsp.SegmentResult` out).

Faults: a worker that dies takes its task with it; the scheduler runs the task again on
another worker (dask's ``allowed-failures``). Outputs are moved into place only when all
of a file's outputs are written, so a killed task leaves at most temporary files, which
are removed at the end of the run (their process is gone). Should a worker die in the
instant between two of a file's outputs being moved into place, the task that runs again
completes the set: an output that did not exist when the batch was planned is this run's
own.

``dask.distributed`` is an optional dependency (``pip install "napari-dsp[distributed]"``);
importing this module does not import it, torch or napari.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from . import batch as _batch
from .io.temps import remove_stale_temps
from .io.write import existing
from .workers import (  # noqa: F401 - SchedulerError, INSTALL_HINT: part of this API
    INSTALL_HINT,
    SchedulerError,
    check_client,
    prepare_worker,
    require_distributed,
    worker_threads,
)

#: What a user calls (the documented API of this module).
__all__ = ["FileResult", "SchedulerError", "close", "connect", "segment_files", "submit_segment"]


def parse_scheduler(text: str) -> tuple[str, Any]:
    """``"local:N"`` -> ``("local", N)``; anything else -> ``("address", text)``.

    Raises ``ValueError`` for ``local:`` without a positive whole number.
    """
    text = str(text).strip()
    local = re.fullmatch(r"local(?::(.*))?", text, flags=re.IGNORECASE)
    if local:  # "localhost:8786" is an address
        count = (local.group(1) or "").strip()
        n = int(count) if count.isdigit() else 0
        if n < 1 or n > 1024:
            raise ValueError(
                f"--scheduler {text}: write local:N with N worker processes "
                f"(e.g. local:4), or a scheduler's address such as "
                f"tcp://host:8786"
            )
        return "local", n
    if not text:
        raise ValueError(
            "--scheduler needs local:N or a scheduler's address such as tcp://host:8786"
        )
    if "://" not in text and ":" not in text:
        raise ValueError(
            f"--scheduler {text}: write local:N (e.g. local:4), or a scheduler's address "
            f"with its port, such as tcp://host:8786"
        )
    return "address", text


@contextlib.contextmanager
def safe_import_path():
    """Start processes that never import from the current folder. dask starts its
    worker and resource-tracker processes with ``python -c ...``, whose first import
    path is the working folder: a file there named like a module (``pickle.py``,
    ``multiprocessing.py``) would be run in every worker. Python's safe-path mode
    (``PYTHONSAFEPATH``) leaves that folder out: it is in the environment while the
    cluster starts (the nanny's restarts get it through their own ``env``), and this
    process's environment is given back as it was afterwards (dask's own settings for
    its workers included), so nothing else this process starts later is affected."""
    before = dict(os.environ)
    os.environ["PYTHONSAFEPATH"] = "1"
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(before)


@contextlib.contextmanager
def hangup_kept_from_children():
    """Start a local cluster whose processes leave a closed terminal to this one. The
    terminal sends SIGHUP to every process of its foreground group: multiprocessing's
    resource tracker died of it, was started again, and printed a ``KeyError``
    traceback for each shared object it had not seen. SIGHUP is blocked in this thread
    while the cluster starts: the threads dask creates meanwhile (its event loop, the
    threads that start worker processes and the tracker, later restarts included)
    inherit the block, and so do the processes they start (Python keeps it across
    ``exec``). The block is lifted here on the way out; a SIGHUP that arrived
    meanwhile goes to this process's own handler. (SIGINT cannot be kept from them
    this way: Python unblocks it when it starts. The workers ignore it themselves,
    :func:`napari_dsp.workers.dask_setup`, and the tracker ignores it by its own code.)
    """
    import signal

    if not hasattr(signal, "SIGHUP") or not hasattr(signal, "pthread_sigmask"):  # not POSIX
        yield
        return
    before = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


def local_workers(asked: int) -> tuple[int, Optional[str]]:
    """How many worker processes ``local:N`` starts: at most one per core this process
    may use (each fits on one core; more only take turns on the same cores, and every
    worker holds its own torch and a fit's memory). Returns the number and, when it is
    fewer than asked, the sentence that says so."""
    from .core.memory import cores

    n = min(int(asked), cores())
    if n == asked:
        return n, None
    return n, (
        f"local:{asked} asks for {asked} worker processes, but this machine gives this "
        f"process {n} core(s): {n} are started (one fit per core; more would only take "
        f"turns on the same cores and each would need its own memory)"
    )


@contextlib.contextmanager
def output_of_children_discarded():
    """Processes started meanwhile write their output (standard error) nowhere: file
    descriptor 2 points at the null device while the block runs, and is given back
    after. For a command line that reports every file's outcome itself: a worker
    process still importing when Ctrl-C reaches the terminal's whole group printed a
    ``KeyboardInterrupt`` traceback under the command's own last line."""
    import sys

    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def connect(scheduler: str, *, timeout: Optional[float] = None, note=None, quiet: bool = False):
    """A ``distributed.Client`` for ``scheduler`` (see :func:`parse_scheduler`).

    ``local:N`` starts N single-threaded worker processes on this machine, at most one per
    core (:func:`local_workers`; ``note`` is called with the sentence when fewer are
    started, else it is a ``UserWarning``), closed with the client (use it as a context
    manager, or call :func:`close`); an address connects
    to a running scheduler, waiting at most ``timeout`` seconds (default: dask's
    ``distributed.comm.timeouts.connect``, 30 s unless configured, e.g. with the
    environment variable ``DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT=5s``).

    Parameters
    ----------
    scheduler : str
        ``"local:N"``, or a scheduler's address (``"tcp://head-node:8786"``).
    timeout : float, optional
        Seconds to wait for a scheduler at an address.
    note : callable, optional
        Called with a sentence when ``local:N`` starts fewer workers than asked.
    quiet : bool
        Send what the ``local:N`` processes print nowhere (a command line that reports
        every file's outcome itself); failures still come back as each task's exception.

    Returns
    -------
    distributed.Client
        Connected to the scheduler (with ``local:N``, to the cluster started for it).

    Raises
    ------
    SchedulerError
        dask.distributed is not installed, the scheduler cannot be reached within
        ``timeout`` seconds, or the local cluster cannot start.
    ValueError
        For a malformed ``scheduler``, or a ``timeout`` (or dask's
        ``distributed.comm.timeouts.connect``) that is not a positive duration.
    TypeError
        For a ``timeout`` that is not a number.
    """
    kind, value = parse_scheduler(scheduler)
    distributed = require_distributed()
    if kind == "local":
        import logging

        value, capped = local_workers(value)
        if capped and note is not None:
            note(capped)
        elif capped:
            import warnings

            warnings.warn(f"napari-dsp: {capped}", UserWarning, stacklevel=2)

        cluster = None
        try:
            quieted = output_of_children_discarded() if quiet else contextlib.nullcontext()
            with safe_import_path(), hangup_kept_from_children(), quieted, worker_ttl_bounded():
                cluster = distributed.LocalCluster(
                    n_workers=value,
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=":0",
                    silence_logs=logging.CRITICAL,
                    env={"PYTHONSAFEPATH": "1"},  # workers restarted later too
                    preload=["napari_dsp.workers"],  # workers.dask_setup: signals
                )
            return distributed.Client(cluster)
        except Exception as exc:  # ports, memory, a broken environment
            if cluster is not None:
                cluster.close()
            raise SchedulerError(
                f"could not start {value} local dask workers ({exc}); "
                f"try fewer (local:1) or leave out --scheduler"
            ) from exc
        except BaseException:  # Ctrl-C while it started: the workers go with it
            if cluster is not None:
                cluster.close()
            raise
    timeout = connect_timeout(timeout)
    try:
        answers_within(value, timeout)
        return distributed.Client(value, timeout=timeout)
    except Exception as exc:  # not a dask scheduler there (an HTTP server...), refused...
        raise SchedulerError(
            f"cannot reach the dask scheduler at {value} within {timeout:g} s ({exc}); "
            f"check the address and that the scheduler runs (dask scheduler), or use "
            f"--scheduler local:N"
        ) from None


#: How long the scheduler of a ``local:N`` cluster waits for a worker that stopped
#: answering (frozen, stopped with SIGSTOP) before its tasks go to another worker; dask's
#: default, 5 minutes, kept a run waiting that long. A fit keeps answering (heartbeats
#: come from the worker's own event loop), so this does not cut long fits short.
LOCAL_WORKER_TTL = "60s"


@contextlib.contextmanager
def worker_ttl_bounded():
    """dask's ``distributed.scheduler.worker-ttl`` as :data:`LOCAL_WORKER_TTL` while a
    local cluster's scheduler is made, unless the user configured it (e.g.
    ``DASK_DISTRIBUTED__SCHEDULER__WORKER_TTL``)."""
    import dask.config

    if str(dask.config.get("distributed.scheduler.worker-ttl", None)) != "5 minutes":
        yield  # the user's own value
        return
    with dask.config.set({"distributed.scheduler.worker-ttl": LOCAL_WORKER_TTL}):
        yield


def connect_timeout(timeout: Optional[float] = None) -> float:
    """Seconds to wait for a scheduler at an address: ``timeout``, or dask's
    ``distributed.comm.timeouts.connect``; a ValueError that says how to write it when
    it is not a positive, finite duration (dask's own parser raised a KeyError or an
    AttributeError that named neither the setting nor the fix)."""
    if timeout is not None:
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
            raise TypeError(f"timeout must be a number of seconds, got {type(timeout).__name__}")
        if not (math.isfinite(timeout) and timeout > 0):
            raise ValueError(f"timeout must be a positive, finite number of seconds, got {timeout}")
        return float(timeout)
    import dask.config
    from dask.utils import parse_timedelta

    value = dask.config.get("distributed.comm.timeouts.connect")
    try:
        seconds = parse_timedelta(value)
    except (KeyError, ValueError, TypeError, AttributeError, OverflowError):
        seconds = None
    if not isinstance(seconds, (int, float)) or not (math.isfinite(seconds) and seconds > 0):
        raise ValueError(
            f"dask's connect timeout (distributed.comm.timeouts.connect, e.g. the "
            f"environment variable DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT) is {value!r}, "
            f"not a positive duration: write it like 5s or 30s, or unset it"
        )
    return float(seconds)


def answers_within(address: str, timeout: float) -> None:
    """Return once the dask scheduler at ``address`` answers who it is, or raise within
    about ``timeout`` seconds. ``distributed.Client(timeout=...)`` bounds the connection
    but not dask's handshake after it, so a peer that accepts the connection and never
    speaks would keep the caller waiting for as long as it stays open. The question is
    asked from a thread with its own event loop (a notebook's loop is left alone); on
    time-out the thread is abandoned (a daemon: it never holds up the exit).

    Raises ``TimeoutError`` when no answer comes in time, or what the connection raised.
    """
    import asyncio
    import threading

    async def identity():
        from distributed.comm import connect as open_comm

        comm = await open_comm(address, timeout=timeout)
        try:
            await comm.write({"op": "identity", "reply": True})
            return await comm.read()
        finally:
            comm.abort()

    outcome: dict = {}

    def ask():
        try:
            outcome["answer"] = asyncio.run(asyncio.wait_for(identity(), timeout))
        except BaseException as exc:  # handed to the caller below
            outcome["error"] = exc

    thread = threading.Thread(target=ask, name="napari-dsp-scheduler-probe", daemon=True)
    thread.start()
    thread.join(timeout + 2.0)
    if "error" in outcome:
        error = outcome["error"]
        if isinstance(error, asyncio.TimeoutError):
            raise TimeoutError("no answer to dask's greeting") from None
        raise error
    if not isinstance(outcome.get("answer"), dict):
        raise TimeoutError("no answer to dask's greeting")


def close(client) -> None:
    """Close ``client`` and the local cluster :func:`connect` started for it, if any.

    Parameters
    ----------
    client : distributed.Client
        A client from :func:`connect` (or any other).
    """
    cluster = getattr(client, "cluster", None)
    client.close()
    if cluster is not None and type(cluster).__name__ == "LocalCluster":
        cluster.close()


@dataclass
class FileResult:
    """What happened to one file of :func:`segment_files`.

    Parameters
    ----------
    source : Path
        The input file.
    status : str
        ``"done"``, ``"skipped"`` (outputs exist) or ``"failed"``.
    message : str
        For a failed file, why and what to do.
    existing : tuple of Path
        For a skipped file, the outputs that exist.
    notes : list of str
        What was assumed about the file (its axes, for example).
    worker : str
        The worker that ran the task.
    seconds : float
        How long the task took.
    """

    source: Path
    status: str
    message: str = ""
    existing: tuple = ()
    notes: list = field(default_factory=list)
    worker: str = ""
    seconds: float = 0.0


def run_file(
    job: _batch.Job,
    settings,
    planned_absent: tuple,
    *,
    overwrite: bool,
    channel_axis: Optional[int] = None,
    stack: bool = False,
    spacing: Optional[tuple] = None,
    max_pixels: float = float("inf"),
    scribbles=None,
) -> FileResult:
    """The task of one file, on a worker: :func:`napari_dsp.batch.run_job` with the
    worker's threads; every failure becomes a ``"failed"`` result with one line.

    ``planned_absent`` are the job's outputs that did not exist when the batch was
    planned: if some of them exist now, an earlier attempt of this task (on a worker
    that died while or after moving outputs into place) wrote them: a partial set is
    completed rather than skipped, a full set is done.
    """
    start = time.perf_counter()
    notes: list = []
    worker = ""
    try:
        from distributed import get_worker

        worker = get_worker().address
    except Exception:
        pass
    if settings.n_threads is None:  # one fitting thread per thread the worker has
        settings = settings.replace(n_threads=worker_threads())
    prepare_worker()
    present = set(existing(job.outputs))
    own = bool(present) and present <= set(planned_absent)
    if own and len(present) == len(job.outputs):  # an attempt finished before it died
        return FileResult(
            job.source,
            "done",
            notes=["completed by an earlier attempt"],
            worker=worker,
            seconds=time.perf_counter() - start,
        )
    try:
        outcome = _batch.run_job(
            job,
            settings=settings,
            channel_axis=channel_axis,
            stack=stack,
            spacing=spacing,
            max_pixels=max_pixels,
            scribbles=scribbles,
            overwrite=overwrite or bool(own),
            notify=notes.append,
        )
    except Exception as exc:  # one line per failed file; the batch goes on
        return FileResult(
            job.source,
            "failed",
            _batch.describe_failure(job.source, exc),
            notes=notes,
            worker=worker,
            seconds=time.perf_counter() - start,
        )
    return FileResult(
        job.source,
        outcome.status,
        existing=outcome.existing,
        notes=notes,
        worker=worker,
        seconds=time.perf_counter() - start,
    )


def submit_files(
    client,
    jobs: Sequence[_batch.Job],
    *,
    settings,
    overwrite: bool = False,
    channel_axis: Optional[int] = None,
    stack: bool = False,
    spacing: Optional[tuple] = None,
    max_pixels: float = float("inf"),
    scribbles=None,
) -> list:
    """One future per job (see :func:`run_file`), in the order of ``jobs``."""
    futures = []
    for job in jobs:
        absent = tuple(p for p in job.outputs if not os.path.lexists(p))
        futures.append(
            client.submit(
                run_file,
                job,
                settings,
                absent,
                overwrite=overwrite,
                channel_axis=channel_axis,
                stack=stack,
                spacing=spacing,
                max_pixels=max_pixels,
                scribbles=scribbles,
                pure=False,
                key=f"napari-dsp-{job.source.name}-{os.urandom(4).hex()}",
            )
        )
    return futures


def segment_files(
    inputs: Sequence,
    output,
    client,
    *,
    settings=None,
    prior: bool = False,
    overwrite: bool = False,
    channel_axis: Optional[int] = None,
    stack: bool = False,
    spacing: Optional[tuple] = None,
    max_pixels: float = float("inf"),
    on_result: Optional[Callable[[FileResult, int, int], None]] = None,
    **overrides: Any,
) -> list[FileResult]:
    """Segment files on a dask cluster; every output is written by the workers.

    The batch is planned on this machine first (:func:`napari_dsp.batch.plan_batch`:
    output names, collisions, outputs that would replace inputs), so a refused batch
    submits nothing. Then one task per file reads the file, fits and writes
    ``<stem>_labels.tif``, the sidecar and (``prior=True``) the prior into ``output``,
    which the workers must be able to reach at the same path (a shared file system).

    Parameters
    ----------
    inputs : sequence of str or Path
        The image files.
    output : str or Path
        A folder (or a ``.tif`` name for one input), as for the command line.
    client : distributed.Client
        The cluster's client (see :func:`connect`).
    settings : Settings, optional
        Defaults for every parameter.
    prior : bool, default False
        Also write each prior (``<stem>_prior.tif``).
    overwrite : bool, default False
        Replace existing outputs; without it a file with any output is skipped.
    channel_axis : int, optional
        The channel axis of files whose metadata does not name it.
    stack : bool, default False
        Take leading axes of files without axes metadata as planes.
    spacing : tuple of 3 floats (z, y, x), optional
        Voxel size for ``volumetric=True`` (default: the files').
    max_pixels : float, default inf
        Refuse files with a larger plane.
    on_result : callable, optional
        Called with ``(result, completed, total)`` as each file finishes.
    **overrides
        Any setting of :class:`~napari_dsp.Settings` by name.

    Returns
    -------
    list of FileResult
        In the order of the (de-duplicated) inputs.

    Raises
    ------
    TypeError
        If ``client`` is not a ``distributed.Client``.
    napari_dsp.batch.BatchError
        When the batch is refused (nothing was submitted).

    Examples
    --------
    >>> from napari_dsp import distributed as dsp_dist
    >>> client = dsp_dist.connect("local:2")  # doctest: +SKIP
    >>> results = dsp_dist.segment_files(["a.tif", "b.tif"], "out/", client, seed=0)
    >>> [r.status for r in results]
    ['done', 'done']
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]  # one file, not its characters
    check_client(client)
    from .settings import make_settings

    settings = make_settings(settings, **overrides)
    makes_prior = settings.method != "kanezaki" or settings.prior_superpixels
    jobs, _notes = _batch.plan_batch(
        inputs,
        output,
        prior=prior and makes_prior,
        texture=_batch.fits_derived(settings),
    )
    folders = list(dict.fromkeys(job.labels.parent for job in jobs))
    for folder in folders:
        remove_stale_temps(folder)
    futures = submit_files(
        client,
        jobs,
        settings=settings,
        overwrite=overwrite,
        channel_axis=channel_axis,
        stack=stack,
        spacing=spacing,
        max_pixels=max_pixels,
    )
    return collect(futures, jobs, folders, on_result)


def collect(
    futures: list,
    jobs: Sequence[_batch.Job],
    folders: Sequence[Path],
    on_result: Optional[Callable] = None,
) -> list[FileResult]:
    """Wait for the futures as they complete; a task lost for good (its workers kept
    dying) is a failed file. Temporary files of killed workers are removed at the end."""
    distributed = require_distributed()
    index = {f.key: i for i, f in enumerate(futures)}
    results: list = [None] * len(futures)
    try:
        for n, future in enumerate(_as_completed(distributed, futures), 1):
            i = index[future.key]
            try:
                result = future.result()
            except Exception as exc:  # KilledWorker, a lost scheduler, ...
                result = FileResult(
                    jobs[i].source,
                    "failed",
                    f"{jobs[i].source}: its task was lost "
                    f"({type(exc).__name__}: {exc}); run the batch again "
                    f"(finished files are skipped)",
                )
            results[i] = result
            if on_result is not None:
                on_result(result, n, len(futures))
    except BaseException:
        for future in futures:
            future.cancel()
        raise
    finally:
        for folder in folders:
            remove_stale_temps(folder)
    return results


def _as_completed(distributed, futures: list):
    """The futures as they complete, waiting in short sleeps: a signal that the kernel
    hands to another thread (dask's, BLAS's) runs this process's handler only once the
    main thread runs Python again, and a wait with no end (``as_completed``'s own)
    postponed a Ctrl-C until the next file was done."""
    pending = distributed.as_completed(futures)
    while not pending.is_empty():
        batch = pending.next_batch(block=False)
        if not batch:
            time.sleep(0.1)
        yield from batch


def submit_segment(client, images: Sequence, *, settings=None, **kwargs: Any) -> list:
    """Segment arrays on a dask cluster, one task each.

    Parameters
    ----------
    client : distributed.Client
        The cluster's client (see :func:`connect`).
    images : sequence of array_like
        The images; they are sent to the workers.
    settings : Settings, optional
        Defaults for every parameter.
    **kwargs
        Keyword arguments of :func:`napari_dsp.segment` (``channel_axis=``,
        ``n_classes=``, ``n_iter=``...).

    Returns
    -------
    list of distributed.Future
        One per image; ``.result()`` is its :class:`~napari_dsp.SegmentResult`.

    Raises
    ------
    TypeError
        For a ``client`` that is not a ``distributed.Client``, one array instead of a
        list of them, or an unknown setting; nothing is submitted then.
    ValueError
        For a setting out of its range; nothing is submitted then.
    """
    check_client(client)
    if hasattr(images, "shape") and hasattr(images, "ndim") or isinstance(images, (str, bytes)):
        shape = getattr(images, "shape", None)
        raise TypeError(
            f"images must be a list of images (one task each), got one "
            f"{type(images).__name__}{f' of shape {tuple(shape)}' if shape else ''}: "
            f"pass [image]"
        )
    if "full_output" in kwargs:
        raise TypeError("submit_segment always returns full results; leave out full_output")
    from .settings import make_settings

    passed = {k: kwargs.pop(k) for k in ("channel_axis", "progress", "scribbles") if k in kwargs}
    settings = make_settings(settings, **kwargs)  # checked here, not on the workers
    return [client.submit(_segment_one, image, settings, passed, pure=False) for image in images]


def _segment_one(image, settings, kwargs):
    from .api import segment
    from .settings import make_settings

    settings = make_settings(settings)
    if settings.n_threads is None:
        settings = settings.replace(n_threads=worker_threads())
    prepare_worker()
    return segment(image, settings=settings, full_output=True, **kwargs)
