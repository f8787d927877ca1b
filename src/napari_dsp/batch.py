"""Batches of files: every output planned before anything is computed, and one file run
from its header to its committed outputs.

Owns :func:`plan_batch` (the output paths of every input; a batch in which two inputs
would write the same file, an output would replace an input, or a name is too long for
the file system is refused whole, with one message naming the files) and
:func:`run_job` (header checks before any pixel is decoded, the fit, the outputs staged
and committed together: labels, prior, sidecar). The command line (:mod:`napari_dsp.cli`)
adds argument parsing, progress bars and signals; nothing here prints
(:func:`describe_failure` gives the one line a failed file is reported with, for the
command line and for :mod:`napari_dsp.distributed`).
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from . import io as _io
from .io.places import overlaps, path_key, probe_folder
from .io.temps import name_max
from .io.write import existing, stem, written_axes

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
    texture_prior: Optional[Path] = None

    @property
    def outputs(self) -> tuple:
        return tuple(
            p for p in (self.labels, self.prior, self.texture_prior, self.sidecar) if p is not None
        )


def fits_derived(settings) -> bool:
    """Whether a run with these settings fits channels beside the image's (the texture
    channels, or a modality's derived ones): ``--prior`` writes their prior as
    ``<stem>_prior_texture.tif``."""
    from .core.modality import DERIVED_NAMES

    return settings.texture or settings.modality in DERIVED_NAMES


def job_for(source: Path, labels: Path, prior: bool, texture: bool = False) -> Job:
    """The job writing ``labels``: its sidecar ``<labels stem>.json`` and, with
    ``prior``, ``<stem>_prior.tif`` beside it (and ``<stem>_prior_texture.tif`` with
    ``texture``: a name no input's ``_prior.tif`` can take)."""
    name = stem(labels)
    base = name[: -len("_labels")] if name.endswith("_labels") else name
    return Job(
        source,
        labels,
        labels.with_name(name + ".json"),
        labels.with_name(base + "_prior.tif") if prior else None,
        labels.with_name(base + "_prior_texture.tif") if prior and texture else None,
    )


#: Names of files napari-dsp writes: an input with such a name is probably an earlier
#: run's output picked up by a wildcard.
_OUTPUT_NAME = ("_labels.tif", "_labels.tiff", "_prior.tif", "_prior_texture.tif", "_labels.json")


def plan_batch(
    inputs: Sequence,
    output,
    *,
    prior: bool = False,
    texture: bool = False,
    protected: Sequence = (),
) -> tuple[list[Job], list[str]]:
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
    if isinstance(output, str) and not output.strip():
        raise BatchError("output is empty (is a variable unset?); give an output folder")
    output = Path(output)
    _check_name_lengths(output)
    notes = []
    unique: list[Path] = []
    seen: dict[str, Path] = {}
    for p in (Path(p) for p in inputs):
        key = path_key(p)
        if key in seen:
            same = (
                "is given more than once"
                if str(seen[key]) == str(p)
                else f"is the same file as {seen[key]}"
            )
            notes.append(f"{p} {same}; it is segmented once")
            continue
        seen[key] = p
        unique.append(p)
    names_a_file = output.suffix.lower() in FILE_SUFFIXES and not os.path.isdir(output)
    if (
        output.suffix.lower() in _io.READABLE + (".json",)
        and not names_a_file
        and not os.path.isdir(output)
    ):
        raise BatchError(
            f"-o {output}: label images are written as TIFF; pass a .tif file name or a folder"
        )
    if names_a_file and len(unique) > 1:
        raise BatchError(
            f"-o {output} names one file, but {len(unique)} inputs were given; pass a folder for -o"
        )
    if not names_a_file and os.path.exists(output) and not os.path.isdir(output):
        raise BatchError(
            f"-o {output} is a file; pass a folder (or a .tif name for a single input)"
        )
    labels = [output] if names_a_file else [output / f"{stem(p)}_labels.tif" for p in unique]
    jobs = [job_for(src, dst, prior, texture) for src, dst in zip(unique, labels)]
    problems = []
    folders = {job.labels.parent for job in jobs}
    fold = {}
    for folder in folders:
        problem, fold[folder] = probe_folder(folder)
        if problem:
            problems.append(problem)
    writers: dict[str, list[Job]] = defaultdict(list)
    for job in jobs:
        for path in job.outputs:
            writers[path_key(path, fold[path.parent])].append(job)
    for key, who in writers.items():
        if len(who) > 1:
            path = next(p for p in who[0].outputs if path_key(p, fold[p.parent]) == key)
            problems.append(f"{' and '.join(str(j.source) for j in who)} would all write {path}")
    readers = unique + [Path(p) for p in protected]
    earlier_outputs = False
    for job in jobs:
        for path, src, problem in overlaps(job.outputs, readers):
            problems.append(f"{path} (an output of {job.source}) {problem}")
            earlier_outputs |= str(src).lower().endswith(_OUTPUT_NAME)
    for job in jobs:
        problems.extend(
            f"{path} is a folder; an output file cannot replace it"
            for path in job.outputs
            if os.path.isdir(path)
        )
    limit = {folder: name_max(folder) for folder in folders}
    for job in jobs:
        for path in job.outputs:
            size = len(os.fsencode(path.name))
            if size > limit[path.parent]:
                problems.append(
                    f"{path.name} is {size} bytes long; the file system "
                    f"allows {limit[path.parent]}: rename {job.source.name} "
                    f"or pass a shorter -o file name"
                )
    if earlier_outputs:
        problems.append(
            "(inputs named *_labels.tif or *_prior.tif look like an earlier "
            "run's outputs caught by a wildcard: write outputs to a folder "
            "apart from the inputs)"
        )
    if problems:
        raise BatchError(
            "the batch was refused, nothing was computed:\n  "
            + "\n  ".join(dict.fromkeys(problems))
            + "\nrename the inputs, or write to another folder (-o)"
        )
    return jobs, notes


def interrupted(job: Job, present: Sequence[Path]) -> bool:
    """Whether the outputs ``present`` are what a run of ``job`` stopped between moving
    its outputs into place left: the labels, always placed last (see :func:`run_job`),
    are missing, and every file there is napari-dsp's own for this input (a sidecar
    naming it, a TIFF written by napari-dsp from it). Such a set is redone; a set with
    the labels, or with a file of anyone else's, is left alone."""
    if job.labels in present:
        return False
    return all(_written_for(Path(p), job) for p in present)


def _written_for(path: Path, job: Job) -> bool:
    """``path`` is napari-dsp's own output for ``job``: a sidecar naming this very input
    file, or a TIFF written by napari-dsp whose stamp names this input and its sidecar."""
    import json

    try:
        if path.suffix.lower() == ".json":
            meta = json.loads(path.read_text(encoding="utf-8"))
            named = meta.get("input_file")
            if not (isinstance(named, str) and path_key(Path(named)) == path_key(job.source)):
                return False
            return meta.get("input_fingerprint") == input_fingerprint(job.source)
        if not _io.read_info(path).written_by_us:
            return False
        import tifffile

        with tifffile.TiffFile(path) as tif:
            stamp = json.loads((tif.imagej_metadata or {}).get("Info") or "{}")
        return (
            stamp.get("input") == input_fingerprint(job.source)
            and stamp.get("sidecar") == job.sidecar.name
        )
    except (OSError, ValueError, TypeError, AttributeError, _io.ImageFileError):
        return False


def input_fingerprint(source: Path) -> Optional[dict]:
    """What identifies the very input file an output was made from: its full real path,
    its size and its modification time (a file of the same name elsewhere, or the same
    path holding another image since, does not match); None if it cannot be read."""
    try:
        st = os.stat(source)
    except OSError:
        return None
    return {"path": path_key(source), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _check_name_lengths(output: Path) -> None:
    """Every part of ``-o`` fits the file system's name length (the system's own error,
    "[Errno 36] File name too long", says neither which part nor what to do)."""
    limit = name_max(output.parent)
    for part in output.parts:
        size = len(os.fsencode(part))
        if size > limit:
            raise BatchError(
                f"-o {output}: the name {part[:24]}... is {size} bytes long; the file "
                f"system allows {limit}: pass a shorter -o"
            )


def check_header(
    info: _io.ImageInfo,
    arrangement: _io.Arrangement,
    *,
    max_pixels: float,
    available: Optional[float],
) -> None:
    """Refuse, from the header alone, a plane above ``max_pixels`` or a file whose
    decoding needs more memory than is ``available``."""
    h, w = arrangement.plane
    plane = h * w
    if plane > max_pixels:
        raise _io.ImageFileError(
            f"{info.path}: {h}x{w} = {plane:,} pixels per plane is above --max-pixels "
            f"{max_pixels:,.0f}; downsample or crop it first, or raise --max-pixels"
        )
    values = float(np.prod(info.shape, dtype=np.float64))
    need = info.nbytes + WORK_BYTES_PER_VALUE * values
    if available is not None and need > available:
        raise _io.ImageFileError(
            f"{info.path}: reading it needs about {need / 1e9:.1f} GB and "
            f"{available / 1e9:.1f} GB is available; crop or downsample it first"
        )


@dataclass(frozen=True)
class Outcome:
    """What :func:`run_job` did: ``"done"``, or ``"skipped"`` with the outputs that
    exist."""

    status: str
    existing: tuple = ()


def run_job(
    job: Job,
    *,
    settings,
    channel_axis: Optional[int] = None,
    stack: bool = False,
    spacing: Optional[tuple] = None,
    max_pixels: float = float("inf"),
    scribbles=None,
    overwrite: bool = False,
    progress=None,
    on_start: Optional[Callable[[], None]] = None,
    guard: Callable = contextlib.nullcontext,
    notify: Callable[[str], None] = lambda text: None,
) -> Outcome:
    """Segment one file and write its outputs together.

    Without ``overwrite`` a job with existing outputs is skipped (nothing is replaced),
    unless they are what an interrupted run of this job left (:func:`interrupted`):
    then it is run again and they are replaced. The header is checked
    (:func:`check_header`) before any pixel is decoded.
    ``guard`` is entered around the moment the outputs are moved into place (the command
    line holds signals back there, so a run stopped then leaves all or none of them).
    ``notify`` receives notes (assumed axes, a voxel size taken from the file) as soon
    as they are known.

    Raises
    ------
    ImageFileError, TypeError, ValueError, OSError, RuntimeError, MemoryError
        For this file; the batch goes on with the next.
    """
    present = tuple(existing(job.outputs))
    if present and not overwrite:
        if not interrupted(job, present):
            return Outcome("skipped", present)
        notify(
            f"an earlier run of {job.source.name} was stopped before its labels were "
            f"written; it is run again, replacing its "
            f"{', '.join(p.name for p in present)}"
        )
        overwrite = present  # those files only: anything else that appears is kept
    from .core.memory import available_memory

    volumetric = settings.volumetric
    fingerprint = input_fingerprint(job.source)  # the file as it is read
    info = _io.read_info(job.source)
    arr = _io.arrange(info, channel_axis, stack or volumetric)
    for note in arr.notes:
        notify(note)
    check_header(info, arr, max_pixels=max_pixels, available=available_memory())
    if scribbles is not None and arr.stack:
        raise _io.ImageFileError(
            f"{job.source}: is a stack (axes {arr.axes}); --scribbles is for single images"
        )
    if volumetric:
        _check_volumetric(job.source, arr)
    if volumetric and spacing is None:
        spacing = _io.spacing_of(info, arr)
        if spacing is not None:
            notify(
                f"voxel size {_fmt(spacing)} {info.unit or ''} (z, y, x) from the file's metadata"
            )
        else:
            notify(
                "the file records no voxel size: an isotropic one is assumed (pass --spacing Z Y X)"
            )
    pixels = _io.read_pixels(info, arr)
    _check_not_constant(job.source, pixels)
    if on_start is not None:
        on_start()
    from .results import NothingToSegmentWarning

    with warnings.catch_warnings():
        # said once, as a note, from the metadata below
        warnings.simplefilter("ignore", NothingToSegmentWarning)
        from .stack import choose_path

        if choose_path(pixels, settings, planes=arr.stack) != "image":
            from .stack import segment_stack

            result = segment_stack(
                pixels,
                channel_axis=arr.channel_axis,
                settings=settings,
                progress=progress,
                full_output=True,
                spacing=spacing,
            )
        else:
            from .api import segment

            result = segment(
                pixels,
                channel_axis=arr.channel_axis,
                settings=settings,
                progress=progress,
                full_output=True,
                scribbles=scribbles,
            )
    decision = result.metadata.get("clustering", {}).get("decision") or {}
    if decision.get("message"):
        if progress is not None and hasattr(progress, "close"):
            progress.close()
        notify(decision["message"])
    suggestion = result.metadata.get("clustering", {}).get("suggestion") or {}
    if suggestion.get("message"):
        notify(suggestion["message"])
    labels = np.asarray(result.labels)
    axes = (
        arr.labels_axes
        if len(arr.labels_axes) == labels.ndim and "?" not in arr.labels_axes
        else "TZYX"[4 - labels.ndim :]
    )
    # the outputs keep the file's own calibration (--spacing steers the fit only)
    sizes = _io.pixel_size_for(axes, info)
    unit = info.unit if sizes else None
    stamp = {
        "written_by": "napari-dsp",
        "source": job.source.name,
        "input": fingerprint,
        "sidecar": job.sidecar.name,
    }
    with _io.Staged(overwrite) as out:
        prior_file = None
        if job.prior is not None and result.prior is not None:
            prior = np.asarray(result.prior.prior)
            prior_axes = _with_channels(axes, prior.ndim, result.prior.channel_axis)
            prior_file = out.image(
                job.prior, prior, axes=prior_axes, pixel_size=sizes, unit=unit, info=stamp
            )
        texture_file = None
        if job.texture_prior is not None and result.prior.texture is not None:
            texture_file = out.image(
                job.texture_prior,
                result.prior.texture,
                axes="C" + axes,
                pixel_size=sizes,
                unit=unit,
                info=stamp,
            )  # texture: (6, Y, X) principal components; a modality: its derived channels
        meta = dict(
            result.metadata,
            input_file=str(job.source),
            input_fingerprint=fingerprint,
            labels_file=str(job.labels),
            prior_file=str(prior_file) if prior_file is not None else None,
            texture_prior_file=str(texture_file) if texture_file else None,
            file={
                "format": info.format,
                "shape": list(info.shape),
                "axes": info.axes,
                "axes_used": arr.axes,
                "axes_from": arr.source,
                "labels_axes": written_axes(axes),
                "pixel_size": sizes,
                "unit": unit,
                "notes": list(arr.notes),
            },
        )
        out.json(job.sidecar, meta)
        # the labels last: a run stopped while the files are moved into place leaves a
        # set without them, which the next run recognises and redoes (interrupted())
        out.labels(job.labels, labels, axes=axes, pixel_size=sizes, unit=unit, info=stamp)
        with guard():
            out.commit()
    return Outcome("done")


def _check_volumetric(path: Path, arr: _io.Arrangement) -> None:
    """``--volumetric`` fits one 3-D prior to a Z stack: refuse anything else in the
    command line's words."""
    planes = arr.plane_axes
    if planes == "Z" or (not arr.from_metadata and len(planes) == 1):
        return
    if not planes:
        raise _io.ImageFileError(
            f"{path}: is a single plane (axes {arr.axes}); "
            f"--volumetric needs a Z stack: leave it out"
        )
    if "T" in planes and arr.from_metadata:
        what = "a time series" if planes == "T" else "a time series of Z stacks"
        raise _io.ImageFileError(
            f"{path}: is {what} (axes {arr.axes}); --volumetric "
            f"fits one Z stack, not time: leave it out, or save one "
            f"time point per file"
        )
    raise _io.ImageFileError(
        f"{path}: has {len(planes)} plane axes (axes {arr.axes}); "
        f"--volumetric fits one Z stack: save one stack per file"
    )


def _check_not_constant(path: Path, pixels: np.ndarray) -> None:
    """A constant file is refused on its decoded pixels, before the float copies of
    normalisation (a blank 30000 x 30000 plane would otherwise take gigabytes)."""
    if pixels.dtype.kind == "f" and not np.isfinite(pixels).all():
        return  # the API says how many NaN or infinite values there are
    low, high = pixels.min(), pixels.max()
    if low == high:
        raise _io.ImageFileError(
            f"{path}: is constant (every pixel is {low:g}); there is nothing to segment"
        )


def _with_channels(axes: str, ndim: int, channel_axis: Optional[int]) -> str:
    if channel_axis is None or ndim == len(axes):
        return axes
    position = channel_axis % ndim
    return axes[:position] + "C" + axes[position:]


def _fmt(values) -> str:
    return " x ".join(f"{v:g}" for v in values)


def describe_failure(src: Path, exc: BaseException) -> str:
    """One line for a file that failed, saying what to do."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if isinstance(exc, (_io.ImageFileError, TypeError, ValueError)):
        return text if text.startswith(str(src)) else f"{src}: {text}"
    if isinstance(exc, _io.OutputExistsError):
        return (
            f"{src}: {exc.filename} appeared while it was computed (another run?); "
            f"nothing of this file was written"
        )
    if isinstance(exc, OSError):
        name = getattr(exc, "filename2", None) or getattr(exc, "filename", None)
        where = f" {name}" if name else ""
        return (
            f"{src}: cannot write{where} ({exc.strerror or exc}); check the folder's "
            f"permissions and free space"
        )
    if isinstance(exc, MemoryError):
        return (
            f"{src}: out of memory; try a --working-size, fewer --members, or close other programs"
        )
    if isinstance(exc, RuntimeError):  # torch failures
        return (
            f"{src}: the fit failed ({text}); try fewer --members, a --working-size, or "
            f"--device cpu"
        )
    return (
        f"{src}: unexpected {type(exc).__name__} ({text}); please report it with the "
        f"command you ran"
    )
