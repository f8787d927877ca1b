"""THE OLD PATH, kept only as the reference of ``bench_threads.py``: CPU fits split over
worker processes, each training its share of the ensemble as one grouped model.

This is the process plumbing napari-dsp used before it fitted in threads (issue 12),
adapted only to call today's training loop (``napari_dsp.core.fit.iter_members``) so both
paths train the same members the same way. The package never imports this file.

Why processes: on a CPU a second OpenMP thread gives only 1.2-1.45x, while two
single-threaded processes each fitting half of the ensemble give close to 2x, and they do
not collapse when napari's own threads are busy (measured at the time; see the README's *How fast*).
The workers are plain ``python -c`` subprocesses that talk over their stdin/stdout pipes
(length-prefixed pickles), not ``multiprocessing``: spawning through ``multiprocessing``
re-imports the user's ``__main__``, which breaks scripts without a main guard. The worker
tunes glibc's allocator for itself; the parent process (napari) is left untouched.

Messages from a worker: ``("progress", step, total, preview_or_None, loss)``,
``("done", members)``, ``("error", exception class name, message)``.
"""

from __future__ import annotations

import os
import pickle
import queue
import struct
import subprocess
import sys
import tempfile
import threading
from collections.abc import Generator, Sequence
from typing import BinaryIO, Optional

import numpy as np

from napari_dsp.core.fit import split
from napari_dsp.core.progress import FitProgress

_HEADER = struct.Struct("<Q")
#: Images smaller than this (pixels) are fitted in-process: a worker's start (importing
#: torch, about 2 s) would cost more than it saves.
MIN_PIXELS_FOR_WORKERS = 160 * 160


def send(stream: BinaryIO, obj) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(data)))
    stream.write(data)
    stream.flush()


def receive(stream: BinaryIO):
    head = stream.read(_HEADER.size)
    if len(head) < _HEADER.size:
        raise EOFError
    (size,) = _HEADER.unpack(head)
    data = stream.read(size)
    if len(data) < size:
        raise EOFError
    return pickle.loads(data)


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def iter_members_parallel(image: np.ndarray, crop: tuple, *, n_threads: int,
                          seeds: Sequence[int], preview_every: int = 0,
                          **fit_kwargs) -> Generator[FitProgress, None, np.ndarray]:
    """Same contract as :func:`napari_dsp._fit.iter_members`, over worker processes.

    Each worker fits its share of ``seeds`` as one grouped model with
    ``cores // n_threads`` threads. Closing the generator (or an error) kills the workers.
    """
    shares = split(list(seeds), n_threads)
    threads = max(1, _cores() // len(shares))
    inbox: queue.Queue[tuple[int, object]] = queue.Queue()
    procs: list[subprocess.Popen] = []
    readers: list[threading.Thread] = []
    try:
        for k, share in enumerate(shares):
            # stderr goes to a file, not a pipe: a worker that writes many warnings must
            # never block on a full pipe that nobody reads until it ends.
            errfile = tempfile.TemporaryFile()
            proc = subprocess.Popen(
                [sys.executable, "-c", "from _legacy_processes import serve; serve()"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errfile,
                env=_child_env())
            proc.errfile = errfile
            procs.append(proc)
            try:
                send(proc.stdin, {"image": image, "crop": crop, "seeds": share,
                                  "threads": threads, "preview_every": preview_every,
                                  "kwargs": fit_kwargs})
                proc.stdin.close()
            except OSError:  # it died at start: its reader reports how
                pass
            reader = threading.Thread(target=_pump, args=(k, proc, inbox), daemon=True)
            reader.start()
            readers.append(reader)
        steps = [0] * len(shares)
        batch = fit_kwargs.get("batch_size") or 0
        totals = [fit_kwargs["n_iter"] * (-(-len(share) // batch) if batch else 1)
                  for share in shares]
        previews: list[Optional[np.ndarray]] = [None] * len(shares)
        results: list[Optional[np.ndarray]] = [None] * len(shares)
        while any(r is None for r in results):
            k, msg = inbox.get()
            kind = msg[0]
            if kind == "progress":
                _, steps[k], totals[k], preview, loss = msg
                if preview is not None:
                    previews[k] = preview
                ready = preview is not None and all(p is not None for p in previews)
                yield FitProgress(sum(steps), sum(totals),
                                  np.concatenate(previews, 0) if ready else None, loss)
            elif kind == "done":
                results[k] = msg[1]
            elif kind == "error":
                _, name, text = msg
                raise {"ValueError": ValueError, "TypeError": TypeError,
                       "MemoryError": MemoryError}.get(name, RuntimeError)(text)
            else:  # "died"
                raise RuntimeError(f"a fitting worker process stopped unexpectedly "
                                   f"(exit code {msg[1]}): {msg[2] or 'no message'}; "
                                   f"try n_threads=0 to fit in this process")
        return np.concatenate(results, 0)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
        for proc in procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:  # pragma: no cover
                pass
        for reader in readers:
            reader.join(timeout=1)
        for proc in procs:
            proc.stdout.close()
            proc.errfile.close()


def _child_env() -> dict:
    env = dict(os.environ)
    # This file must be importable in the child.
    here = os.path.dirname(os.path.abspath(__file__))
    env["PYTHONPATH"] = here + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH")
                                else "")
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def _pump(k: int, proc: subprocess.Popen, inbox: queue.Queue) -> None:
    """Forward a worker's messages to ``inbox`` until it ends."""
    while True:
        try:
            msg = receive(proc.stdout)
        except (EOFError, OSError, ValueError):
            break
        inbox.put((k, msg))
        if msg[0] in ("done", "error"):
            return
    code = proc.wait()
    err = b""
    try:
        proc.errfile.seek(0)
        err = proc.errfile.read() or b""
    except (OSError, ValueError):
        pass
    lines = err.decode(errors="replace").strip().splitlines()
    inbox.put((k, ("died", code, lines[-1] if lines else "")))


def serve() -> None:
    """Worker main: read one job from stdin, fit, stream messages to stdout."""
    import torch

    from napari_dsp.core.fit import iter_members
    from napari_dsp.core.fit import tune_allocator_for_fitting as tune_cpu_allocator
    from napari_dsp.core.nets import EnsembleGenerator

    out = sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing else may write into the message stream
    job = receive(sys.stdin.buffer)
    tune_cpu_allocator()
    torch.set_num_threads(job["threads"])
    try:
        kwargs = dict(job["kwargs"])
        kwargs["device"] = torch.device("cpu")
        c = job["image"].shape[0]
        kwargs["make_net"] = lambda g, seeds: EnsembleGenerator(g, c, seeds)
        fit = iter_members(job["image"], job["crop"], seeds=job["seeds"],
                           preview_every=job["preview_every"], **kwargs)
        while True:
            try:
                p = next(fit)
            except StopIteration as stop:
                send(out, ("done", stop.value))
                return
            send(out, ("progress", p.step, p.total, p.preview, p.loss))
    except BrokenPipeError:  # the parent went away (cancelled): just stop
        return
    except Exception as exc:  # reported to the parent, which raises it
        send(out, ("error", type(exc).__name__, str(exc)))
