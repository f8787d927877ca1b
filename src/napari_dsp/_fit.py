"""Fitting the prior: the ensemble of generator fits as a generator of progress.

``iter_members`` yields a :class:`FitProgress` after every iteration (so a consumer can
stop within one iteration) and returns the members' outputs; ``summarize`` turns them into
the prior (median) and its spread. Nothing here knows about napari, Qt or files.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
import sys
from dataclasses import dataclass
from typing import Generator, Optional, Sequence

import numpy as np
import torch

from ._nets import NOISE_CHANNELS, EnsembleGenerator, make_noise


@dataclass(frozen=True)
class FitProgress:
    """One step of a running fit.

    ``step`` of ``total`` iterations of the current ``stage`` are done: ``"prior"`` (the
    generator fits; ``total = n_iter * number of member groups``) or ``"classes"`` (the
    self-training of ``method="kanezaki"``; ``total`` shrinks once the stopping point is
    known). ``preview`` on preview steps: the running prior in the image's layout, or the
    current ``(Y, X)`` label map in the ``"classes"`` stage; else None.
    """

    step: int
    total: int
    preview: Optional[np.ndarray] = None
    loss: Optional[float] = None
    stage: str = "prior"
    plane: int = 0
    n_planes: int = 1


def resolve_device(device: str) -> torch.device:
    """Map ``'auto' | 'cpu' | 'cuda' | 'cuda:N' | 'mps'`` to an available torch device."""
    if not isinstance(device, (str, torch.device)):
        raise TypeError(f"device must be a string such as 'auto', 'cpu' or 'cuda', got "
                        f"{device!r}")
    name = str(device)
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError("device='cuda' was asked for but CUDA is not available here "
                             "(no NVIDIA GPU or a CPU-only PyTorch); use device='auto' or "
                             "'cpu'")
        return torch.device(name)
    if name == "mps":
        if not _mps_available():
            raise ValueError("device='mps' was asked for but Apple MPS is not available "
                             "here; use device='auto' or 'cpu'")
        return torch.device("mps")
    if name == "cpu":
        return torch.device("cpu")
    raise ValueError(f"unknown device {name!r}; use 'auto', 'cpu', 'cuda' or 'mps'")


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


#: What a device that runs out of memory raises (CUDA; MPS raises a RuntimeError).
OUT_OF_MEMORY = (getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError,)


def release_device_memory(device: torch.device) -> None:
    """Hand cached blocks back to the driver after an out-of-memory error."""
    if device.type == "cuda":
        torch.cuda.empty_cache()


_ALLOCATOR_TUNED = False


def tune_cpu_allocator() -> bool:
    """Keep freed memory in glibc's heap instead of returning it to the OS.

    The fit frees and re-allocates the same large activations every iteration; by default
    glibc unmaps them and faults them in again each time, which costs more than the
    arithmetic of a small network. Process-wide and permanent: call it in processes whose
    only job is fitting (the command line, benchmarks, worker processes), not in napari.
    Returns whether the setting took effect (glibc only).
    """
    global _ALLOCATOR_TUNED
    if _ALLOCATOR_TUNED:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_trim_threshold, m_mmap_max = -1, -4
        ok = libc.mallopt(m_mmap_max, 0) == 1
        ok = libc.mallopt(m_trim_threshold, 2**30) == 1 and ok
    except (OSError, AttributeError):
        return False
    _ALLOCATOR_TUNED = ok
    return ok


def member_batches(n_runs: int, batch_size: Optional[int]) -> list[range]:
    """Split ``range(n_runs)`` into consecutive batches of at most ``batch_size``."""
    size = n_runs if not batch_size else max(1, min(batch_size, n_runs))
    return [range(i, min(i + size, n_runs)) for i in range(0, n_runs, size)]


def iter_members(image: np.ndarray, crop: tuple, *, n_iter: int, seeds: Sequence[int],
                 learning_rate: float, device: torch.device, precision: str = "float32",
                 preview_every: int = 0, batch_size: Optional[int] = None,
                 dtype: torch.dtype = torch.float32, channels_last: Optional[bool] = None,
                 ) -> Generator[FitProgress, None, np.ndarray]:
    """Fit one generator per seed to ``image``; return every member's final output.

    Parameters
    ----------
    image : ndarray, shape (C, H, W), float32 in [0, 1]
        The padded image; H and W are multiples of 8.
    crop : (slice, slice)
        Region of the padded image that is the user's image.
    n_iter : int
        Forward passes per member; the prior is the output of the last one (so ``n_iter
        - 1`` optimiser steps are taken: the backward pass after the last forward would
        change nothing that is returned).
    seeds : sequence of int
        One seed per ensemble member (weights and noise).
    preview_every : int
        Every this many iterations, ``FitProgress.preview`` holds the cropped current
        outputs of all members so far, ``(n, C, Y, X)`` float32 (0 = never).
    batch_size : int, optional
        Members trained together as one grouped model (default: all).
    dtype : torch.dtype
        Parameter dtype (float64 is for tests of exactness).
    channels_last : bool, optional
        Memory format (default: channels-last on CPU, where oneDNN is faster with it).

    Yields
    ------
    FitProgress
        After every iteration.

    Returns
    -------
    ndarray, shape (len(seeds), C, Y, X), float32
        The members' outputs after ``n_iter`` forward passes, cropped.
    """
    c, h, w = image.shape
    batches = member_batches(len(seeds), batch_size)
    total = n_iter * len(batches)
    target_all = torch.from_numpy(np.ascontiguousarray(image)).to(device=device, dtype=dtype)
    if channels_last is None:
        channels_last = device.type == "cpu"
    use_autocast = precision == "bfloat16"
    outputs: list[torch.Tensor] = []  # finished members, each (C, Y, X) cropped, on device
    step = 0
    for batch in batches:
        g = len(batch)
        member_seeds = [int(seeds[i]) for i in batch]
        net = EnsembleGenerator(g, c, member_seeds).to(device=device, dtype=dtype)
        noise = make_noise(member_seeds, NOISE_CHANNELS, h, w).to(device=device, dtype=dtype)
        if channels_last:
            net = net.to(memory_format=torch.channels_last)
            noise = noise.contiguous(memory_format=torch.channels_last)
        target = target_all.repeat(g, 1, 1)[None]
        opt = torch.optim.Adam(net.parameters(), lr=learning_rate)
        net.train()
        out = None
        for it in range(n_iter):
            last = it == n_iter - 1
            with torch.set_grad_enabled(not last), torch.autocast(
                    device.type, dtype=torch.bfloat16, enabled=use_autocast):
                out = net(noise)
            loss_value = None
            if not last:
                # Sum of the members' mean L1 losses: each member gets exactly the gradient
                # of its own loss, as if it were trained alone.
                loss = (out.float() - target).abs().mean(dim=(0, 2, 3)).view(g, c).mean(1).sum()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            step += 1
            preview = None
            if preview_every and (step % preview_every == 0 or last):
                current = out.detach().float()[0].view(g, c, h, w)[:, :, crop[0], crop[1]]
                preview = (torch.cat([torch.stack(outputs), current], 0) if outputs
                           else current).cpu().numpy()
                if not last:
                    loss_value = float(loss.detach()) / g
            yield FitProgress(step, total, preview, loss_value)
        outputs.extend(out.detach().float()[0].view(g, c, h, w)[:, :, crop[0], crop[1]]
                       .unbind(0))
        del net, opt, out, noise, target
    return torch.stack(outputs, 0).cpu().numpy()


def summarize(stack: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel median ``(C, Y, X)`` and spread ``(Y, X)`` of members ``(n, C, Y, X)``.

    The spread is the standard deviation across members, averaged over channels.
    """
    t = torch.from_numpy(np.ascontiguousarray(stack, dtype=np.float32))
    median = _median(t)
    spread = t.std(dim=0, unbiased=False).mean(0) if t.shape[0] > 1 else \
        torch.zeros(t.shape[2:])
    return median.numpy(), spread.numpy()


def median(stack: np.ndarray) -> np.ndarray:
    """Per-pixel median ``(C, Y, X)`` of members ``(n, C, Y, X)`` (a preview: no spread)."""
    return _median(torch.from_numpy(np.ascontiguousarray(stack, dtype=np.float32))).numpy()


def _median(stack: torch.Tensor) -> torch.Tensor:
    """Per-pixel median over dim 0 (mean of the two middle values for even counts)."""
    n = stack.shape[0]
    if n == 1:
        return stack[0]
    ordered = stack.sort(dim=0).values
    if n % 2:
        return ordered[n // 2]
    return 0.5 * (ordered[n // 2 - 1] + ordered[n // 2])


def default_batch_size(n_runs: int, n_pixels: int, n_channels: int,
                       device: torch.device) -> int:
    """How many members to train as one grouped model.

    On a GPU as many as half the free memory holds (one big step instead of many small
    ones). On a CPU 2: measured at 512x512 on 2 cores, a worker process fitting its 6
    members in groups of 1-2 took 56-60 s in float32 where one group of 6 took 75 s (and
    twice the memory); large images get smaller groups so the activations of one group
    stay under about 1.5 GB.
    """
    per_member = _activation_bytes(n_pixels, n_channels)
    if device.type == "cpu":
        return int(max(1, min(n_runs, 2, math.floor(1.5e9 / per_member))))
    budget = 0.5 * _free_device_bytes(device)
    return int(max(1, min(n_runs, math.floor(budget / max(per_member, 1)))))


def _activation_bytes(n_pixels: int, n_channels: int) -> float:
    # Memory per member while training, float32, measured: 512x512 RGB with two worker
    # processes of 2-member groups peaked at 2.6 GB, of which ~0.35 GB per process is
    # torch itself: about 1.4 KB per pixel per member, plus the image-sized tensors.
    return n_pixels * (1400.0 + 16.0 * n_channels)


def estimate_bytes(n_pixels: int, n_channels: int, n_runs: int, batch_size: int,
                   n_workers: int) -> float:
    """Peak memory of a fit, in bytes (within about 30 % of what was measured)."""
    groups_at_once = max(1, n_workers)
    per_process = 0.35e9 if n_workers else 0.0
    outputs = n_runs * n_pixels * n_channels * 4.0 * 3  # members' outputs, median, sort
    return (groups_at_once * (batch_size * _activation_bytes(n_pixels, n_channels)
                              + per_process) + outputs)


def available_bytes() -> Optional[float]:
    """Memory available to this process now (Linux), or None where unknown."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _free_device_bytes(device: torch.device) -> float:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return float(free)
    return 4e9
