"""``napari-dsp segment``: the batch loop over planned jobs, one line per file, the
summary and the exit status; on a dask cluster with ``--scheduler``
(:mod:`napari_dsp.distributed`). Files and batches are :mod:`napari_dsp.batch`."""

from __future__ import annotations

import os
import sys

from .. import batch as _batch
from .. import io as _io
from ..settings import Settings
from .common import (
    Once,
    ProgressBar,
    error,
    note,
    read_image,
    settings_from_args,
    tune_allocator,
)
from .signals import SIGNALS


def run_segment(args) -> int:
    try:
        settings = settings_from_args(args)
        protected = [args.scribbles] if args.scribbles is not None else []
        makes_prior = settings.method != "kanezaki" or settings.prior_superpixels
        jobs, notes = _batch.plan_batch(
            args.inputs,
            args.output,
            prior=args.prior and makes_prior,
            texture=_batch.fits_derived(settings),
            protected=protected,
        )
        if args.spacing is not None and not settings.volumetric:
            raise _batch.BatchError(
                "--spacing is the voxel size of --volumetric (one 3-D fit); add "
                "--volumetric, or leave out --spacing"
            )
        if args.scribbles is not None and args.stack:
            raise _batch.BatchError("--scribbles is for single images; leave out --stack")
        if args.scribbles is not None and settings.method != "kanezaki":
            raise _batch.BatchError(
                "--scribbles guides --method kanezaki; add it, or leave out --scribbles"
            )
        scribbles = read_image(args.scribbles) if args.scribbles is not None else None
    except (_io.ImageFileError, _batch.BatchError, TypeError, ValueError) as exc:
        error(str(exc))
        return 2
    if args.prior and not makes_prior:
        notes.append(
            "--prior: this run computes no prior (--no-prior-superpixels), so none is written"
        )
    for text in notes:
        note(text)
    for folder in dict.fromkeys(job.labels.parent for job in jobs):
        removed = _io.remove_stale_temps(folder)
        if removed:
            note(
                f"removed {len(removed)} unfinished temporary file(s) a stopped run "
                f"left in {folder}"
            )
    before = {job.labels: _signature(job.labels) for job in jobs}
    try:
        if args.scheduler is not None:
            return run_on_cluster(args, jobs, settings, scribbles)
        return run_here(args, jobs, settings, scribbles)
    except KeyboardInterrupt as exc:
        # counted on disk, once nothing more can be written (a cluster's workers finish
        # files while it shuts down): what the user finds is what the summary says
        finished = sum(_signature(job.labels) not in (None, before[job.labels]) for job in jobs)
        exc.outcome = (
            f"{finished} of {len(jobs)} file(s) finished, their outputs complete; "
            f"the other {len(jobs) - finished} were not written by this run"
        )
        raise


def _signature(path) -> tuple | None:
    """Which file is at ``path`` (identity, time and size), or ``None``: a labels file
    that appears or changes during the run was written by it."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_ino, stat.st_mtime_ns, stat.st_size


def run_here(args, jobs: list, settings: Settings, scribbles) -> int:
    """The batch in this process, one file after the other, with a progress bar."""
    start_fit = Once(tune_allocator)
    done = skipped = failed = 0
    for i, job in enumerate(jobs, 1):
        src = job.source
        bar = None if args.quiet else ProgressBar(f"[{i}/{len(jobs)}] {src.name}")
        try:
            outcome = _batch.run_job(
                job,
                settings=settings,
                channel_axis=args.channel_axis,
                stack=args.stack,
                spacing=args.spacing,
                max_pixels=args.max_pixels,
                scribbles=scribbles,
                overwrite=args.overwrite,
                progress=bar,
                on_start=start_fit,
                guard=SIGNALS.held,
                notify=lambda text, src=src: note(f"{src}: {text}"),
            )
        except Exception as exc:  # every failure of one file is one line; the batch goes on
            # unless it is a stop that a library turned into another exception
            SIGNALS.check()
            failed += 1
            if bar is not None:
                bar.close()
            error(_batch.describe_failure(src, exc))
            continue
        if bar is not None:
            bar.close()  # a fit that stopped early leaves its line open
        SIGNALS.check()  # a stop that was swallowed on the way
        if outcome.status == "skipped":
            skipped += 1
            names = ", ".join(str(p) for p in outcome.existing)
            print(
                f"napari-dsp: skipped {src}: {names} exist(s) (use --overwrite to "
                f"replace its outputs)",
                file=sys.stderr,
            )
        else:
            done += 1
    return summary(len(jobs), done, skipped, failed)


def summary(n_jobs: int, done: int, skipped: int, failed: int) -> int:
    if n_jobs > 1 or failed or skipped:
        print(
            f"napari-dsp: {done} done, {skipped} skipped (outputs exist), {failed} failed",
            file=sys.stderr,
        )
    return 1 if failed else 0


def run_on_cluster(args, jobs: list, settings: Settings, scribbles) -> int:
    """The batch as one task per file on a dask cluster (:mod:`napari_dsp.distributed`):
    a line per finished file, then the same summary as a local run."""
    import logging

    # dask's own log lines (a connection closed while the cluster shuts down, with its
    # traceback) are not for this command's user: each file's outcome is reported below.
    # For the rest of the process: dask's event loop still logs once the cluster is
    # closed, while the command says its last line.
    logging.getLogger("distributed").setLevel(logging.CRITICAL)
    return _run_on_cluster(args, jobs, settings, scribbles)


def _run_on_cluster(args, jobs: list, settings: Settings, scribbles) -> int:
    from .. import distributed as _dist

    client = None
    try:
        # a signal while the cluster starts waits until it has started (and is closed
        # below): stopped half-way, dask's own exit handler failed with a traceback
        with SIGNALS.held():
            client = _dist.connect(args.scheduler, note=note, quiet=True)
    except (_dist.SchedulerError, ValueError) as exc:
        error(f"{exc}; nothing was written")
        return 2
    except KeyboardInterrupt:
        if client is not None:
            _dist.close(client)
        raise
    counts = {"done": 0, "skipped": 0, "failed": 0}

    def report(result, n: int, total: int) -> None:
        counts[result.status] += 1
        for text in result.notes:
            note(f"{result.source}: {text}")
        if result.status == "failed":
            error(result.message)
        elif result.status == "skipped":
            names = ", ".join(str(p) for p in result.existing)
            print(
                f"napari-dsp: skipped {result.source}: {names} exist(s) (use "
                f"--overwrite to replace its outputs)",
                file=sys.stderr,
            )
        elif not args.quiet:
            print(
                f"[{n}/{total}] {result.source.name} done in {result.seconds:.1f} s",
                file=sys.stderr,
            )

    try:
        if not args.quiet:
            workers = len(client.scheduler_info().get("workers", {}))
            print(
                f"napari-dsp: {len(jobs)} file(s) on {workers} dask worker(s) at "
                f"{client.scheduler.address}",
                file=sys.stderr,
            )
        futures = _dist.submit_files(
            client,
            jobs,
            settings=settings,
            overwrite=args.overwrite,
            channel_axis=args.channel_axis,
            stack=args.stack,
            spacing=args.spacing,
            max_pixels=args.max_pixels,
            scribbles=scribbles,
        )
        _dist.collect(futures, jobs, list(dict.fromkeys(j.labels.parent for j in jobs)), report)
        SIGNALS.check()
    finally:
        _dist.close(client)
    return summary(len(jobs), counts["done"], counts["skipped"], counts["failed"])
