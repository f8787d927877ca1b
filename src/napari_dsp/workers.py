"""What a process needs to run fits as a dask worker: dask.distributed itself (an
optional dependency, with the message that says how to install it), the worker's
allocator tuning and its thread count. Used by the batches of files
(:mod:`napari_dsp.distributed`) and the planes of a stack as tasks
(:mod:`napari_dsp.large`); importing it imports neither dask nor torch."""

from __future__ import annotations

INSTALL_HINT = 'pip install "napari-dsp[distributed]"'


class SchedulerError(RuntimeError):
    """The cluster could not be reached or started; the message says what to do."""


def check_client(client) -> None:
    """A TypeError that says what to pass unless ``client`` is a dask
    ``distributed.Client`` (anything that submits and scatters like one)."""
    if not (hasattr(client, "submit") and hasattr(client, "scatter")):
        raise TypeError(
            f"client must be a distributed.Client (e.g. "
            f"napari_dsp.distributed.connect('local:2'), or connect('tcp://host:8786') "
            f"for a running scheduler), got {type(client).__name__}"
        )


def require_distributed():
    try:
        import distributed
    except ImportError:
        raise SchedulerError(
            f"running on a dask cluster needs dask.distributed: {INSTALL_HINT}"
        ) from None
    return distributed


def prepare_worker() -> None:
    """Tune this worker process for fitting, as the command line tunes itself: glibc
    keeps freed activations in its heap (dask starts workers with
    ``MALLOC_TRIM_THRESHOLD_=65536``, which made every fit about twice as slow,
    measured by ``benchmarks/bench_cluster.py``). Idempotent; a worker's job is fitting."""
    from .core.heap import tune_allocator_for_fitting

    tune_allocator_for_fitting()


def worker_threads() -> int:
    try:
        from distributed import get_worker

        return max(1, int(get_worker().state.nthreads))
    except Exception:  # not on a worker (a direct call, a test)
        return 1


def dask_setup(worker) -> None:  # noqa: ARG001 - dask's preload interface
    """A ``local:N`` worker's first step (a dask preload: see
    :func:`napari_dsp.distributed.connect`): Ctrl-C and a closed terminal reach every
    process of the terminal's group, these workers included, and each printed a
    ``KeyboardInterrupt`` traceback under the command's own message. The command that
    started them stops and closes them itself, so they ignore SIGINT and SIGHUP (SIGTERM
    still ends them: it is how their nanny stops one that does not close)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return  # a worker run in a thread of another program: its signals are not ours
    for name in ("SIGINT", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_IGN)
