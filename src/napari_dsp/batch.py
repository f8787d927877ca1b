"""Batches of files: every output planned before anything is computed, and one file run
from its header to its committed outputs.

Owns :func:`plan_batch` (the output paths of every input; a batch in which two inputs
would write the same file, an output would replace an input, or a name is too long for
the file system is refused whole, with one message naming the files) and
:func:`run_job` (header checks before any pixel is decoded, the fit, the outputs staged
and committed together: labels, prior, sidecar). The command line (:mod:`napari_dsp.cli`)
adds argument parsing, progress bars and signals; nothing here prints.
"""

from __future__ import annotations

import contextlib
import os
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from . import io as _io

#: Suffixes that make ``-o`` one output file (with a single input).
FILE_SUFFIXES = (".tif", ".tiff")
#: Bytes per value a run needs beyond the decoded file: the float64 and float32 copies
#: of normalisation (the fit's own memory is planned and checked later, at the working
#: size).
WORK_BYTES_PER_VALUE = 12


class BatchError(ValueError):
    """A batch refused before anything was computed; the message names the files."""


@dataclass(frozen=True)
class Job:
    """One input and the files its run writes."""

    source: Path
    labels: Path
    sidecar: Path
    prior: Optional[Path] = None

    @property
    def outputs(self) -> tuple:
        return tuple(p for p in (self.labels, self.prior, self.sidecar) if p is not None)


def job_for(source: Path, labels: Path, prior: bool) -> Job:
    """The job writing ``labels``: its sidecar ``<labels stem>.json`` and, with
    ``prior``, ``<stem>_prior.tif`` beside it."""
    stem = labels.stem
    base = stem[: -len("_labels")] if stem.endswith("_labels") else stem
    return Job(source, labels, labels.with_name(stem + ".json"),
               labels.with_name(base + "_prior.tif") if prior else None)


def _key(path: Path) -> str:
    """One spelling of a path: the real folder (symbolic links resolved) and the name."""
    real = os.path.realpath(path)
    return os.path.normcase(real)


def _same_file(a: Path, b: Path) -> bool:
    if _key(a) == _key(b):
        return True
    try:
        return os.path.samefile(a, b)  # hard links
    except OSError:
        return False


def plan_batch(inputs: Sequence, output, *, prior: bool = False,
               protected: Sequence = ()) -> tuple[list[Job], list[str]]:
    """The jobs of a batch, with every output path, checked before anything runs.

    ``output`` is a folder (one ``<stem>_labels.tif`` per input), or a ``.tif`` file name
    for a single input. ``protected`` are further files the run reads (scribbles) that no
    output may replace. Returns the jobs and notes (an input given twice is run once).

    Raises
    ------
    BatchError
        When two inputs would write the same file, an output would replace an input, a
        file name is too long for its file system, or ``output`` does not fit the inputs;
        nothing has been written then.
    """
    output = Path(output)
    notes = []
    unique: list[Path] = []
    seen: dict[str, Path] = {}
    for p in (Path(p) for p in inputs):
        key = _key(p)
        if key in seen:
            notes.append(f"{p} is given more than once; it is segmented once")
            continue
        seen[key] = p
        unique.append(p)
    names_a_file = output.suffix.lower() in FILE_SUFFIXES and not output.is_dir()
    if names_a_file and len(unique) > 1:
        raise BatchError(f"-o {output} names one file, but {len(unique)} inputs were "
                         f"given; pass a folder for -o")
    if not names_a_file and output.exists() and not output.is_dir():
        raise BatchError(f"-o {output} is a file; pass a folder (or a .tif name for a "
                         f"single input)")
    labels = [output] if names_a_file else \
        [output / f"{p.stem}_labels.tif" for p in unique]
    jobs = [job_for(src, dst, prior) for src, dst in zip(unique, labels)]
    problems = []
    writers: dict[str, list[Job]] = defaultdict(list)
    for job in jobs:
        for path in job.outputs:
            writers[_key(path)].append(job)
    for key, who in writers.items():
        if len(who) > 1:
            path = next(p for p in who[0].outputs if _key(p) == key)
            problems.append(f"{' and '.join(str(j.source) for j in who)} would all write "
                            f"{path}")
    readers = unique + [Path(p) for p in protected]
    for job in jobs:
        for path in job.outputs:
            for src in readers:
                if _same_file(path, src):
                    problems.append(f"{path} (an output of {job.source}) would replace "
                                    f"the input {src}")
    limit = {}
    for job in jobs:
        for path in job.outputs:
            folder = path.parent
            if folder not in limit:
                limit[folder] = _io.name_max(folder)
            size = len(os.fsencode(path.name))
            if size > limit[folder]:
                problems.append(f"{path.name} is {size} bytes long; the file system "
                                f"allows {limit[folder]}: rename {job.source.name} or "
                                f"pass a shorter -o file name")
    if problems:
        raise BatchError("the batch was refused, nothing was computed:\n  " +
                         "\n  ".join(dict.fromkeys(problems)) +
                         "\nrename the inputs, or write to another folder (-o)")
    return jobs, notes


def check_header(info: _io.ImageInfo, arrangement: _io.Arrangement, *,
                 max_pixels: float, available: Optional[float]) -> None:
    """Refuse, from the header alone, a plane above ``max_pixels`` or a file whose
    decoding needs more memory than is ``available``."""
    h, w = arrangement.plane
    plane = h * w
    if plane > max_pixels:
        raise _io.ImageFileError(
            f"{info.path}: {h}x{w} = {plane / 1e6:.1f} megapixels per plane is above "
            f"--max-pixels {max_pixels:.3g}; downsample or crop it first, or raise "
            f"--max-pixels")
    values = float(np.prod(info.shape, dtype=np.float64))
    need = info.nbytes + WORK_BYTES_PER_VALUE * values
    if available is not None and need > available:
        raise _io.ImageFileError(
            f"{info.path}: reading it needs about {need / 1e9:.1f} GB and "
            f"{available / 1e9:.1f} GB is available; crop or downsample it first")


@dataclass(frozen=True)
class Outcome:
    """What :func:`run_job` did: ``"done"``, or ``"skipped"`` with the outputs that
    exist."""

    status: str
    existing: tuple = ()


def run_job(job: Job, *, settings, channel_axis: Optional[int] = None,
            stack: bool = False, spacing: Optional[tuple] = None,
            max_pixels: float = float("inf"), scribbles=None, overwrite: bool = False,
            progress=None, on_start: Optional[Callable[[], None]] = None,
            guard: Callable = contextlib.nullcontext,
            notify: Callable[[str], None] = lambda text: None) -> Outcome:
    """Segment one file and write its outputs together.

    Without ``overwrite`` a job with any existing output is skipped (nothing is
    replaced). The header is checked (:func:`check_header`) before any pixel is decoded.
    ``guard`` is entered around the moment the outputs are moved into place (the command
    line holds signals back there, so a run stopped then leaves all or none of them).
    ``notify`` receives notes (assumed axes, a voxel size taken from the file) as soon
    as they are known.

    Raises
    ------
    ImageFileError, TypeError, ValueError, OSError, RuntimeError, MemoryError
        For this file; the batch goes on with the next.
    """
    present = tuple(_io.existing(job.outputs))
    if present and not overwrite:
        return Outcome("skipped", present)
    from .core.memory import available_memory

    info = _io.read_info(job.source)
    arr = _io.arrange(info, channel_axis, stack)
    for note in arr.notes:
        notify(note)
    check_header(info, arr, max_pixels=max_pixels, available=available_memory())
    if scribbles is not None and arr.stack:
        raise _io.ImageFileError(f"{job.source}: is a stack (axes {arr.axes}); "
                                 f"--scribbles is for single images")
    volumetric = bool(getattr(settings, "volumetric", False))
    if volumetric and arr.stack and spacing is None:
        spacing = _io.spacing_of(info, arr)
        if spacing is not None:
            notify(f"voxel size {_fmt(spacing)} {info.unit or ''} (z, y, x) from the "
                   f"file's metadata")
        else:
            notify("the file records no voxel size: an isotropic one is assumed (pass "
                   "--spacing Z Y X)")
    pixels = _io.read_pixels(info, arr)
    _check_not_constant(job.source, pixels)
    if on_start is not None:
        on_start()
    if arr.stack:
        from .stack import segment_stack

        result = segment_stack(pixels, channel_axis=arr.channel_axis, settings=settings,
                               progress=progress, full_output=True, spacing=spacing)
    else:
        from .api import segment

        result = segment(pixels, channel_axis=arr.channel_axis, settings=settings,
                         progress=progress, full_output=True, scribbles=scribbles)
    labels = np.asarray(result.labels)
    axes = arr.labels_axes if len(arr.labels_axes) == labels.ndim and \
        "?" not in arr.labels_axes else "TZYX"[4 - labels.ndim:]
    sizes = _io.pixel_size_for(axes, info)
    if spacing is not None and "Z" in axes:
        sizes = dict(sizes, Z=spacing[0], Y=spacing[1], X=spacing[2])
    unit = info.unit if sizes else None
    stamp = {"written_by": "napari-dsp", "source": job.source.name,
             "sidecar": job.sidecar.name}
    with _io.Staged(overwrite) as out:
        if job.prior is not None and result.prior is not None:
            prior = np.asarray(result.prior.prior)
            prior_axes = _with_channels(axes, prior.ndim, result.prior.channel_axis)
            out.image(job.prior, prior, axes=prior_axes, pixel_size=sizes, unit=unit,
                      info=stamp)
        meta = dict(result.metadata, input_file=str(job.source),
                    labels_file=str(job.labels),
                    prior_file=str(job.prior) if job.prior is not None else None,
                    file={"format": info.format, "shape": list(info.shape),
                          "axes": info.axes, "axes_used": arr.axes,
                          "axes_from": "metadata" if arr.from_metadata else "assumed",
                          "labels_axes": axes, "pixel_size": sizes, "unit": unit,
                          "notes": list(arr.notes)})
        out.json(job.sidecar, meta)
        out.labels(job.labels, labels, axes=axes, pixel_size=sizes, unit=unit, info=stamp)
        with guard():
            out.commit()
    return Outcome("done")


def _check_not_constant(path: Path, pixels: np.ndarray) -> None:
    """A constant file is refused on its decoded pixels, before the float copies of
    normalisation (a blank 30000 x 30000 plane would otherwise take gigabytes)."""
    if pixels.dtype.kind == "f" and not np.isfinite(pixels).all():
        return  # the API says how many NaN or infinite values there are
    low, high = pixels.min(), pixels.max()
    if low == high:
        raise _io.ImageFileError(f"{path}: is constant (every pixel is {low:g}); there "
                                 f"is nothing to segment")


def _with_channels(axes: str, ndim: int, channel_axis: Optional[int]) -> str:
    if channel_axis is None or ndim == len(axes):
        return axes
    position = channel_axis % ndim
    return axes[:position] + "C" + axes[position:]


def _fmt(values) -> str:
    return " x ".join(f"{v:g}" for v in values)
