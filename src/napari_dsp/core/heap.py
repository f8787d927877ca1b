"""glibc's allocator for fitting: keep the fit's freed activations in the heap while a
fitting process runs (:func:`tune_allocator_for_fitting`), and hand the heap's free
pages back to the OS after a fit in a long-lived process (:func:`trimmed_heap`)."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the module itself does not load torch
    import torch

_LIBC = None
_TUNED = False


def _libc():
    global _LIBC
    if _LIBC is None and sys.platform.startswith("linux"):
        try:
            _LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        except OSError:  # pragma: no cover
            _LIBC = False
    return _LIBC or None


def tune_allocator_for_fitting() -> bool:
    """Keep freed memory in glibc's heap instead of returning it to the OS: for processes
    whose job is fitting (the command line, benchmarks), never napari: the settings are
    process-wide and permanent.

    The fit frees and re-allocates the same large activations every iteration; by default
    glibc unmaps them and faults them in again each time, which costs more than the
    arithmetic of a small network. Threads share one arena (glibc's per-thread arenas
    made the two fitting threads about 10 % slower per iteration at 512 x 512; where
    other threads made arenas before, glibc keeps those).
    Returns whether the setting took effect (glibc only).
    """
    global _TUNED
    libc = _libc()
    if _TUNED or libc is None:
        return _TUNED
    try:
        m_trim_threshold, m_mmap_max, m_arena_max = -1, -4, -8
        ok = libc.mallopt(m_mmap_max, 0) == 1
        ok = libc.mallopt(m_arena_max, 1) == 1 and ok
        _TUNED = libc.mallopt(m_trim_threshold, 2**30) == 1 and ok
    except AttributeError:  # pragma: no cover - not glibc
        _TUNED = False
    return _TUNED


@contextlib.contextmanager
def trimmed_heap(device: torch.device):
    """After a CPU fit, hand the heap's free pages back to the OS (a long-lived process
    such as napari keeps no fit's activations)."""
    try:
        yield
    finally:
        if device.type == "cpu":
            _release_heap()


def _release_heap() -> None:
    """Return the heap's free pages to the OS (glibc's ``malloc_trim``)."""
    libc = _libc()
    if libc is not None:
        with contextlib.suppress(AttributeError):  # not glibc
            libc.malloc_trim(0)
