"""Every resource decision of a fit, made in one place and explained in one object.

:func:`plan_fit` decides, for one normalised plane and the run's settings: the device,
the largest plane fitted in one piece (the tile), the working resolution, the tiles, how
many ensemble members are trained as one grouped model, how many CPU threads share the
ensemble, and whether the memory it needs is there. :class:`FitPlan` carries the answer;
its :meth:`FitPlan.describe` goes into the result's metadata. :func:`resolve_precision`
turns ``precision='auto'`` into the arithmetic the device computes natively.

Memory available is :func:`napari_dsp.core.memory.available_memory`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from . import image as _image
from .memory import CGROUP_FILES, available_memory, cgroup_memory_left, cores  # noqa: F401

#: Largest plane fitted in one piece (pixels a side), and the tile size beyond it: on a
#: CPU a 512 x 512 fit takes about a minute on two cores and 1.7 GB; a GPU handles
#: 2048.
TILE_SIZE = {"cpu": 512, "cuda": 2048, "mps": 1024}
#: Overlap of neighbouring tiles (pixels of the working plane), blended linearly.
TILE_OVERLAP = 32
#: Smallest object radius (pixels of the working plane) the automatic working size keeps:
#: measured on a nuclei field (radii 6-12 px, 1024 x 1024 crop), foreground IoU 0.84 at
#: full resolution, 0.87 / 0.92 / 0.95 fitted 2x / 3x / 4x smaller, 0.03 at 5x (radius
#: under 2 px: the objects vanish from the prior).
MIN_RADIUS = 3.0
#: Planes smaller than this (pixels) are fitted by one thread: starting a second one
#: costs more than it saves.
MIN_PIXELS_FOR_THREADS = 96 * 96
#: Most activation memory of one group of members trained together on a CPU (bytes).
GROUP_BYTES = 1.5e9
#: Share of the available memory a fit may plan to use.
MEMORY_SHARE = 0.9


@dataclass(frozen=True)
class FitPlan:
    """How one plane is fitted (see :func:`plan_fit`)."""

    device: torch.device
    shape: tuple  # (Y, X) of the normalised plane
    working_shape: tuple  # (Y, X) the prior is fitted at
    object_radius: Optional[float]  # estimated, when it decided the working shape
    tile: int  # largest side fitted in one piece
    tiles: tuple  # ((slice, slice), ...) of the working plane
    threads: int  # CPU threads sharing the ensemble (1: one fit, 0: torch's own pool)
    batch_size: int  # members trained at once as one grouped model
    memory_needed: float  # bytes, estimated
    memory_available: Optional[float]  # bytes, or None where unknown

    def describe(self) -> dict:
        return {
            "device": describe_device(self.device),
            "working_shape": [int(v) for v in self.working_shape],
            "object_radius": self.object_radius,
            "tiles": len(self.tiles),
            "threads": self.threads,
            "members_per_group": self.batch_size,
            "memory_needed_gb": round(self.memory_needed / 1e9, 2),
        }


def plan_fit(
    data: np.ndarray,
    *,
    n_members: int,
    device: torch.device,
    working_size: Optional[int],
    n_threads: Optional[int],
    batch_size: Optional[int] = None,
    together: bool = False,
) -> FitPlan:
    """Plan the fit of a normalised ``(C, Y, X)`` plane (see ``Settings`` for the
    meaning of ``working_size`` and ``n_threads``); refuses up front, with a
    ``ValueError`` that says what to change, a CPU fit that would not fit in memory.

    ``together``: train each thread's share of the members as one group where memory
    allows (the early stop watches all members iteration by iteration)."""
    c = data.shape[0]
    shape = tuple(int(v) for v in data.shape[1:])
    tile = tile_size(device)
    work, radius = working_shape(data, working_size, tile)
    tiles = tuple(tile_slices(work, tile, TILE_OVERLAP))
    side = max(sl.stop - sl.start for sl, _ in tiles), max(sl.stop - sl.start for _, sl in tiles)
    n_pixels = _padded_pixels(side)
    if device.type != "cpu":
        threads = 1
    elif n_threads is None:
        threads = default_threads(n_members, n_pixels)
    else:
        threads = min(int(n_threads), n_members)
    if batch_size is None:
        batch_size = default_batch_size(n_members, n_pixels, c, device)
        if together and device.type == "cpu":
            share = -(-n_members // max(1, threads))
            batch_size = int(
                max(batch_size, min(share, math.floor(GROUP_BYTES / activation_bytes(n_pixels, c))))
            )
    if device.type == "cpu" and n_threads is None:
        # automatic: fewer threads rather than refusing
        while threads > 1 and not fits(estimate_bytes(n_pixels, c, n_members, batch_size, threads)):
            threads -= 1
    need = estimate_bytes(n_pixels, c, n_members, batch_size, threads)
    have = available_memory()
    if device.type == "cpu" and have is not None and need > MEMORY_SHARE * have:
        smaller = max(64, int(np.sqrt(n_pixels)) // 2)
        raise ValueError(
            f"fitting this image in pieces of {side[0]}x{side[1]} pixels needs about "
            f"{need / 1e9:.1f} GB of memory and {have / 1e9:.1f} GB is available now; "
            f"close other programs, use fewer CPU threads (n_threads=1) or fewer members "
            f"(n_members), or fit the prior on fewer pixels (working_size={smaller}); "
            f"napari-dsp does not shrink the pieces by itself, since that would change "
            f"the result of a given seed"
        )
    return FitPlan(device, shape, work, radius, tile, tiles, threads, int(batch_size), need, have)


def plan_volume_threads(
    shape: tuple,
    *,
    n_members: int,
    device: torch.device,
    n_threads: Optional[int],
    batch_size: int = 2,
) -> int:
    """CPU threads for the volumetric fit of a ``(C, Z, Y, X)`` volume: as for a plane
    (:func:`default_threads`, fewer while the memory estimate does not fit), refused up
    front with a ``ValueError`` when even one thread would not fit."""
    if device.type != "cpu":
        return 0
    c, voxels = int(shape[0]), int(np.prod(shape[1:]))
    threads = (
        default_threads(n_members, voxels) if n_threads is None else min(int(n_threads), n_members)
    )
    while threads > 1 and not fits(estimate_bytes(voxels, c, n_members, batch_size, threads)):
        threads -= 1
    need, have = estimate_bytes(voxels, c, n_members, batch_size, threads), available_memory()
    if have is not None and need > MEMORY_SHARE * have:
        raise ValueError(
            f"the volumetric fit of this {voxels / 1e6:.1f}-megavoxel stack "
            f"needs about {need / 1e9:.1f} GB of memory and {have / 1e9:.1f} "
            f"GB is available; fit per plane (volumetric=False), or crop or "
            f"downsample the stack"
        )
    return threads


def _padded_pixels(side: tuple) -> int:
    m = _image.MULTIPLE
    return int(-(-side[0] // m) * m) * int(-(-side[1] // m) * m)


# -- device ------------------------------------------------------------------------------
def resolve_device(device) -> torch.device:
    """Map ``'auto' | 'cpu' | 'cuda' | 'cuda:N' | 'mps'`` to an available torch device."""
    if not isinstance(device, (str, torch.device)):
        raise TypeError(f"device must be a string such as 'auto', 'cpu' or 'cuda', got {device!r}")
    name = str(device)
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ValueError(
                f"device={name!r} was asked for but CUDA is not available "
                f"here (no NVIDIA GPU or a CPU-only PyTorch); use "
                f"device='auto' or 'cpu'"
            )
        dev = torch.device(name)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(
                f"device={name!r}: this machine has "
                f"{torch.cuda.device_count()} CUDA device(s), numbered from "
                f"0; use one of them or 'cuda'"
            )
        return dev
    if name == "mps":
        if not _mps_available():
            raise ValueError(
                "device='mps' was asked for but Apple MPS is not available "
                "here; use device='auto' or 'cpu'"
            )
        return torch.device("mps")
    if name == "cpu":
        return torch.device("cpu")
    raise ValueError(f"unknown device {name!r}; use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'")


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_precision(precision: str, device: torch.device) -> str:
    """``'auto'`` -> ``'bfloat16'`` where ``device`` computes it natively, else
    ``'float32'``; other values unchanged."""
    if precision != "auto":
        return precision
    return "bfloat16" if native_bfloat16(device) else "float32"


def native_bfloat16(device: torch.device) -> bool:
    """Whether ``device`` has bfloat16 arithmetic in hardware: a CUDA GPU that supports
    it, or a CPU with AVX512-BF16, AMX-BF16 or the Arm BF16 extension (emulated
    bfloat16 is slower than float32)."""
    if device.type == "cuda":  # Ampere (8.x) and later; before it bfloat16 is emulated
        return torch.cuda.get_device_capability(device)[0] >= 8
    if device.type == "cpu":
        caps = getattr(torch.cpu, "get_capabilities", lambda: {})()
        return any(bool(caps.get(k)) for k in ("avx512_bf16", "amx_bf16", "bf16"))
    return False


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


def device_choices() -> list[tuple[str, str]]:
    """(label, value) pairs of the devices present here, 'auto' first."""
    choices = [("auto", "auto"), ("CPU", "cpu")]
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            choices.append((f"CUDA {i}: {torch.cuda.get_device_name(i)}", f"cuda:{i}"))
    if _mps_available():
        choices.append(("Apple MPS", "mps"))
    return choices


# -- sizes -------------------------------------------------------------------------------
def tile_size(device: torch.device) -> int:
    """Side of the largest plane fitted in one piece: 512 on a CPU, 2048 on CUDA, 1024
    on MPS. It depends on the device alone, never on the memory free at the moment: the
    pieces a prior is fitted in change its arithmetic, and a seed must give the same
    result whatever else the machine is doing. A plan that does not fit in memory is
    refused by :func:`plan_fit` with what to change."""
    return TILE_SIZE.get(device.type, 512)


def working_shape(
    data: np.ndarray, working_size: Optional[int], tile: int
) -> tuple[tuple[int, int], Optional[float]]:
    """The plane shape the prior is fitted at (see ``Settings.working_size``) and the
    estimated object radius behind an automatic choice."""
    shape = tuple(int(v) for v in data.shape[1:])
    if working_size is not None:
        return _image.working_shape(shape, working_size), None
    if shape[0] * shape[1] <= tile * tile:
        return shape, None
    radius = _image.object_radius(data)
    # Scale down as far as the objects allow (they keep MIN_RADIUS pixels), but never
    # below one tile: a larger working plane is fitted in tiles.
    factor = min(max(1.0, radius / MIN_RADIUS), np.sqrt(shape[0] * shape[1]) / tile)
    side = int(round(np.sqrt(shape[0] * shape[1]) / factor))
    return _image.working_shape(shape, side), round(float(radius), 2)


def tile_slices(shape: tuple[int, int], tile: int, overlap: int) -> list[tuple[slice, slice]]:
    """Overlapping tiles covering ``shape``, at most about ``tile`` pixels a side, spread
    evenly; a single tile when the plane has at most ``tile ** 2`` pixels."""
    h, w = int(shape[0]), int(shape[1])
    if h * w <= tile * tile:
        return [(slice(0, h), slice(0, w))]

    def starts(n: int) -> list[tuple[int, int]]:
        count = max(1, int(np.ceil((n - overlap) / (tile - overlap))))
        size = min(n, int(np.ceil((n + (count - 1) * overlap) / count)))
        size = max(size, _image.MIN_SIDE)
        pos = np.linspace(0, n - size, count).round().astype(int) if count > 1 else [0]
        return [(int(p), int(p) + size) for p in pos]

    return [(slice(y0, y1), slice(x0, x1)) for y0, y1 in starts(h) for x0, x1 in starts(w)]


# -- parallelism -------------------------------------------------------------------------
def default_threads(n_members: int, n_pixels: int) -> int:
    """CPU threads sharing the ensemble: one per core (at most one per member), each
    with a single-threaded torch; one for small planes, single members and single-core
    machines (a second thread costs more than it saves there).

    Never torch's own thread pool by default: two OpenMP threads collapse when another
    process or napari's own threads take a core (a 48 x 64 fit went from 1.5 s to 26-86 s
    with both cores busy, where one single-threaded fit stayed at 1.2 s); independent
    single-threaded fits do not (``benchmarks/bench_threads.py``)."""
    n = min(cores(), n_members)
    if n < 2 or n_pixels < MIN_PIXELS_FOR_THREADS:
        return 1
    return n


def default_batch_size(n_members: int, n_pixels: int, n_channels: int, device: torch.device) -> int:
    """How many members to train as one grouped model.

    On a GPU as many as half the free memory holds (one big step instead of many small
    ones). On a CPU 2: measured at 512x512 on 2 cores, fitting 6 members in groups of
    1-2 took 56-60 s in float32 where one group of 6 took 75 s (and twice the memory);
    large planes get smaller groups so one group's activations stay under about 1.5 GB.
    """
    per_member = activation_bytes(n_pixels, n_channels)
    if device.type == "cpu":
        return int(max(1, min(n_members, 2, math.floor(GROUP_BYTES / per_member))))
    budget = 0.5 * free_device_bytes(device)
    return int(max(1, min(n_members, math.floor(budget / max(per_member, 1)))))


# -- memory ------------------------------------------------------------------------------
def activation_bytes(n_pixels: int, n_channels: int) -> float:
    """Memory one member needs while training (float32): about 1.4 KB per pixel for
    the activations and their gradients, plus the image-sized tensors."""
    return n_pixels * (1400.0 + 16.0 * n_channels)


def estimate_bytes(
    n_pixels: int, n_channels: int, n_members: int, batch_size: int, threads: int
) -> float:
    """Memory a fit adds to the process, in bytes: one group of members per thread
    training at once, and every member's output kept for the median."""
    groups_at_once = max(1, threads)
    outputs = n_members * n_pixels * n_channels * 4.0 * 3  # members' outputs, median, sort
    return groups_at_once * batch_size * activation_bytes(n_pixels, n_channels) + outputs


def fits(need: float) -> bool:
    have = available_memory()
    return have is None or need <= MEMORY_SHARE * have


def free_device_bytes(device: torch.device) -> float:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return float(free)
    return 4e9
