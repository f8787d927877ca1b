"""Command line: ``napari-dsp segment INPUT... -o OUTPUT`` and ``napari-dsp demo`` (run
by :mod:`napari_dsp._demo`).

Owns argument parsing, the progress bar, the batch loop's messages and exit statuses
(128 + the signal's number when SIGINT, SIGTERM or SIGHUP stopped a run, see
:mod:`napari_dsp._signals`). Files and batches are :mod:`napari_dsp.io` and
:mod:`napari_dsp.batch`.

The setting flags are built from :data:`~napari_dsp.settings.FIELDS`, and only the
options a user sets are forwarded to :class:`~napari_dsp.Settings`, so the library's
defaults live in one place. Importing this module does not import torch: ``--help``
answers at once, and a file refused from its header is refused before torch loads.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

import numpy as np

from . import batch as _batch
from . import io as _io
from ._signals import Signals, Stopped
from .settings import FIELDS, RESEARCH_FIT, Settings


def read_image(path: Path) -> np.ndarray:
    """Read a .tif/.tiff, .png, .jpg/.jpeg or .npy file as a numpy array (as stored)."""
    return _io.read_pixels(_io.read_info(path))


_SIGNALS = Signals()


class ProgressBar:
    """A one-line text progress bar on stderr, in the user's units
    (:meth:`~napari_dsp.progress.FitProgress.describe`)."""

    def __init__(self, label: str, stream=None, width: int = 24):
        self.label, self.width = label, width
        self.stream = stream if stream is not None else sys.stderr
        self.last = -1.0
        self.stage: Optional[str] = None
        self.shown = 0

    def __call__(self, progress) -> None:
        now = time.perf_counter()
        done = progress.step >= progress.total
        if self.stage is not None and progress.stage != self.stage and self.last >= 0:
            self.stream.write("\n")  # the prior is done; the self-training starts
        self.stage = progress.stage
        if not done and now - self.last < 0.2:
            return
        self.last = now
        fill = int(round(progress.fraction * self.width))
        line = (f"{self.label} [{'#' * fill}{'.' * (self.width - fill)}] "
                f"{progress.describe()}")
        self.stream.write("\r" + line.ljust(self.shown))
        self.shown = len(line)
        if done:
            self.stream.write("\n")
            self.shown = 0
        self.stream.flush()

    def close(self) -> None:
        """End a line the bar left open (a failure, or a fit that stopped early)."""
        if self.shown:
            self.stream.write("\n")
            self.stream.flush()
            self.shown = 0


def _add_setting_flags(parser: argparse.ArgumentParser) -> None:
    defaults = Settings()
    for name, spec in FIELDS.items():
        default = getattr(defaults, name)
        text = spec.help.replace("%", "%%")  # argparse formats help texts with %
        helptext = f"{text} (default: {spec.none_text or default})"
        if isinstance(default, bool):
            parser.add_argument(spec.flag, dest=name, action="store_false" if default else
                                "store_true", default=None, help=text)
        elif spec.choices:
            parser.add_argument(spec.flag, dest=name, choices=spec.choices, default=None,
                                help=helptext)
        elif isinstance(default, str):
            parser.add_argument(spec.flag, dest=name, default=None, metavar="NAME",
                                help=helptext)
        else:
            kind = _finite_float if isinstance(default, float) else int
            parser.add_argument(spec.flag, dest=name, type=kind, default=None, metavar="N",
                                help=helptext)
    research = " ".join(f"{FIELDS[k].flag} {v}" for k, v in RESEARCH_FIT.items())
    parser.add_argument("--research-defaults", action="store_true", help=f"fit as the "
                        f"research procedure: {research} (slower; other flags still apply)")
    parser.add_argument("--channel-axis", type=int, default=None, metavar="AXIS",
                        help="axis of the channels of a multichannel image (RGB(A) with "
                             "channels last, and channels named by OME or ImageJ metadata "
                             "are recognised by themselves)")


def _finite_float(text: str) -> float:
    value = float(text)
    if not np.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def _positive_float(text: str) -> float:
    value = _finite_float(text)
    if not 1e-12 <= value <= 1e12:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number between "
                                         f"1e-12 and 1e12")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="napari-dsp",
        description="Unsupervised segmentation with a Deep Segmentation Prior.")
    sub = parser.add_subparsers(dest="command", required=True)
    seg = sub.add_parser(
        "segment", help="segment image files",
        description="Segment image files. Writes a label image per input (an ImageJ "
                    "TIFF of class or object ids, 0 = background, with the input's "
                    "axes and pixel size) and a JSON file with the settings used next to "
                    "it. Axes come from OME-TIFF and ImageJ metadata where the file has "
                    "them: a file whose metadata says Z or T is a stack without --stack. "
                    "Every output is planned first: a batch in which two inputs would "
                    "write the same file, or an output would replace an input, is "
                    "refused before anything is computed.")
    seg.add_argument("inputs", nargs="+", type=Path, metavar="INPUT",
                     help="image files (.tif/.tiff incl. OME-TIFF, ImageJ and compressed TIFF; "
                          ".png, .jpg, .npy)")
    seg.add_argument("-o", "--output", type=Path, required=True,
                     help="output file for one input, or a directory (one "
                          "<stem>_labels.tif per input)")
    seg.add_argument("--prior", action="store_true", help="also write the prior as "
                     "<stem>_prior.tif (float32; with --texture, its texture channels as "
                     "<stem>_prior_texture.tif)")
    seg.add_argument("--overwrite", action="store_true",
                     help="replace existing outputs (labels, prior and sidecar); "
                          "without it an input with any existing output is skipped")
    seg.add_argument("--scribbles", type=Path, default=None, metavar="FILE",
                     help="label image of user strokes (0 = unlabelled) for --method "
                          "kanezaki; same height and width as the input(s)")
    seg.add_argument("--stack", action="store_true",
                     help="treat leading axes (Z, T, T x Z) as planes: every plane gets "
                          "its own prior, classes are shared across planes (files whose "
                          "metadata names Z or T are stacks without it)")
    seg.add_argument("--spacing", type=_positive_float, nargs=3, default=None,
                     metavar=("Z", "Y", "X"),
                     help="voxel size of a Z stack for the fit of --volumetric (e.g. 2 0.5 "
                          "0.5; only the ratios matter); default: the file's metadata, "
                          "else isotropic. The outputs keep the file's own calibration")
    seg.add_argument("--max-pixels", type=_positive_float, default=67.2e6, metavar="N",
                     help="refuse images with more pixels per plane than this (default "
                          "67.2e6, 8192x8192): a guard for batches of unknown files; "
                          "large planes are fitted at the working size (--working-size)")
    seg.add_argument("--scheduler", default=None, metavar="ADDRESS",
                     help="run the files on a dask cluster, one task per file: local:N "
                          "starts N single-threaded worker processes on this machine; "
                          "an address (tcp://host:8786) uses a running dask scheduler, "
                          "whose workers must see the inputs and -o at the same paths. "
                          "Needs pip install \"napari-dsp[distributed]\"")
    seg.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_setting_flags(seg)
    demo = sub.add_parser("demo", help="segment a built-in sample image (scikit-image's "
                                       "coins) and print a summary",
                          description="Runs the main job on built-in data, no files "
                                      "needed.")
    demo.add_argument("-o", "--output", type=Path, default=None,
                      help="directory to also write the labels, prior and settings to")
    demo.add_argument("--overwrite", action="store_true",
                      help="replace the outputs in -o if they exist")
    demo.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_setting_flags(demo)
    return parser


def _settings_from_args(args) -> Settings:
    chosen = {name: getattr(args, name) for name in FIELDS if getattr(args, name) is not None}
    # no live display here: previews are never computed, whatever --preview-every says
    base = Settings.research() if getattr(args, "research_defaults", False) else Settings()
    return base.replace(**{**chosen, "preview_every": 0})


def _error(text: str) -> None:
    print(f"napari-dsp: error: {text}", file=sys.stderr)


def _note(text: str) -> None:
    print(f"napari-dsp: note: {text}", file=sys.stderr)


class _Once:
    """Calls ``action`` the first time it is called (the allocator tuning, right before
    the first fit: a file refused from its header never loads torch)."""

    def __init__(self, action):
        self.action, self.done = action, False

    def __call__(self) -> None:
        if not self.done:
            self.done = True
            self.action()


def _tune_allocator() -> None:
    from .core.heap import tune_allocator_for_fitting

    tune_allocator_for_fitting()  # this process only fits: keep activations in the heap


def _run_segment(args) -> int:
    try:
        settings = _settings_from_args(args)
        protected = [args.scribbles] if args.scribbles is not None else []
        makes_prior = settings.method != "kanezaki" or settings.use_prior
        jobs, notes = _batch.plan_batch(args.inputs, args.output, prior=args.prior and
                                        makes_prior, texture=settings.texture,
                                        protected=protected)
        if args.scribbles is not None and args.stack:
            raise _batch.BatchError("--scribbles is for single images; leave out --stack")
        if args.scribbles is not None and settings.method != "kanezaki":
            raise _batch.BatchError("--scribbles guides --method kanezaki; add it, or "
                                    "leave out --scribbles")
        scribbles = read_image(args.scribbles) if args.scribbles is not None else None
    except (_io.ImageFileError, _batch.BatchError, TypeError, ValueError) as exc:
        _error(str(exc))
        return 2
    if args.prior and not makes_prior:
        notes.append("--prior: this run computes no prior (--no-prior), so none is "
                     "written")
    for text in notes:
        _note(text)
    for folder in dict.fromkeys(job.labels.parent for job in jobs):
        removed = _io.remove_stale_temps(folder)
        if removed:
            _note(f"removed {len(removed)} unfinished temporary file(s) a stopped run "
                  f"left in {folder}")
    if args.scheduler is not None:
        return _run_on_cluster(args, jobs, settings, scribbles)
    start_fit = _Once(_tune_allocator)
    done = skipped = failed = 0
    for i, job in enumerate(jobs, 1):
        src = job.source
        bar = None if args.quiet else ProgressBar(f"[{i}/{len(jobs)}] {src.name}")
        try:
            outcome = _batch.run_job(
                job, settings=settings, channel_axis=args.channel_axis, stack=args.stack,
                spacing=args.spacing, max_pixels=args.max_pixels, scribbles=scribbles,
                overwrite=args.overwrite, progress=bar, on_start=start_fit,
                guard=_SIGNALS.held, notify=lambda text, src=src: _note(f"{src}: {text}"))
        except Exception as exc:  # every failure of one file is one line; the batch goes on
            failed += 1
            if bar is not None:
                bar.close()
            _error(_batch.describe_failure(src, exc))
            continue
        if bar is not None:
            bar.close()  # a fit that stopped early leaves its line open
        if outcome.status == "skipped":
            skipped += 1
            names = ", ".join(str(p) for p in outcome.existing)
            print(f"napari-dsp: skipped {src}: {names} exist(s) (use --overwrite to "
                  f"replace its outputs)", file=sys.stderr)
        else:
            done += 1
    return _summary(len(jobs), done, skipped, failed)


def _summary(n_jobs: int, done: int, skipped: int, failed: int) -> int:
    if n_jobs > 1 or failed or skipped:
        print(f"napari-dsp: {done} done, {skipped} skipped (outputs exist), {failed} "
              f"failed", file=sys.stderr)
    return 1 if failed else 0


def _run_on_cluster(args, jobs: list, settings: Settings, scribbles) -> int:
    """The batch as one task per file on a dask cluster (:mod:`napari_dsp.distributed`):
    a line per finished file, then the same summary as a local run."""
    from . import distributed as _dist

    try:
        client = _dist.connect(args.scheduler)
    except (_dist.SchedulerError, ValueError) as exc:
        _error(f"{exc}; nothing was written")
        return 2
    counts = {"done": 0, "skipped": 0, "failed": 0}

    def report(result, n: int, total: int) -> None:
        counts[result.status] += 1
        for text in result.notes:
            _note(f"{result.source}: {text}")
        if result.status == "failed":
            _error(result.message)
        elif result.status == "skipped":
            names = ", ".join(str(p) for p in result.existing)
            print(f"napari-dsp: skipped {result.source}: {names} exist(s) (use "
                  f"--overwrite to replace its outputs)", file=sys.stderr)
        elif not args.quiet:
            print(f"[{n}/{total}] {result.source.name} done in {result.seconds:.1f} s",
                  file=sys.stderr)

    try:
        if not args.quiet:
            workers = len(client.scheduler_info().get("workers", {}))
            print(f"napari-dsp: {len(jobs)} file(s) on {workers} dask worker(s) at "
                  f"{client.scheduler.address}", file=sys.stderr)
        futures = _dist.submit_files(client, jobs, settings=settings,
                                     overwrite=args.overwrite,
                                     channel_axis=args.channel_axis, stack=args.stack,
                                     spacing=args.spacing, max_pixels=args.max_pixels,
                                     scribbles=scribbles)
        _dist.collect(futures, jobs, list(dict.fromkeys(j.labels.parent for j in jobs)),
                      report)
    finally:
        _dist.close(client)
    return _summary(len(jobs), counts["done"], counts["skipped"], counts["failed"])


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``napari-dsp`` command; returns the exit status (128 + the
    signal's number when SIGINT, SIGTERM or SIGHUP stopped it)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _SIGNALS.install()
    try:
        if args.command == "demo":
            from ._demo import run_demo

            return run_demo(args)
        return _run_segment(args)
    except KeyboardInterrupt as exc:
        signum = exc.signum if isinstance(exc, Stopped) else signal.SIGINT
        name = signal.Signals(signum).name
        print(f"\nnapari-dsp: stopped by {name}; finished outputs are complete, the rest "
              f"were not written", file=sys.stderr)
        return 128 + int(signum)
    except (TypeError, ValueError, OSError) as exc:
        _error(str(exc))
        return 2
    finally:
        _SIGNALS.restore()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
