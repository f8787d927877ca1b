"""The run controller of the dock widget: one fit at a time in a napari worker thread.

:class:`Runner` starts the fit generator in a superqt ``GeneratorWorker`` and maps its
signals: ``yielded`` to napari's progress bar, the status line and the live prior,
``returned`` to the output layers, a cancel or a failure to a clean reset (the user's
layers untouched). :func:`_drive` is the worker's generator: it closes the fit in the
worker thread when cancelled, so the fit's own threads are never joined on the GUI thread.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Optional

from napari.qt.threading import create_worker
from napari.utils import progress as napari_progress
from napari.utils.notifications import show_error, show_warning
from superqt.utils import GeneratorWorker

from ..core.progress import RunEstimate, format_seconds
from ..settings import FIELDS
from .outputs import PREVIEW_INTERVAL, Job, Outputs
from .words import in_widget_words

logger = logging.getLogger(__name__)


#: Longest layer name shown in napari's activity panel (its description is one line).
SHORT_NAME = 24


def suggested(suggestion: Optional[dict]) -> str:
    """The status line's hint for an image that looks like another modality than the
    one chosen ('auto'): the choice stays the user's."""
    if not suggestion:
        return ""
    label = dict(zip(FIELDS["modality"].choices, FIELDS["modality"].choice_labels))
    name = label.get(suggestion["modality"], suggestion["modality"])
    return f"; looks like {name}: try the modality '{name}'"


def describe(p, left: Optional[float] = None, iteration: Optional[int] = None) -> str:
    """The status line of a report (:meth:`FitProgress.describe`): where the run is and,
    when known, the time left of the whole run (``left``, the widget's own estimate);
    ``iteration`` (default ``p.iteration``) of the members being fitted now."""
    return p.describe(left=left, iteration=iteration)


def objects(count: int) -> str:
    """``"1 object"``, ``"3 objects"``."""
    return f"{count} object" + ("" if count == 1 else "s")


def short_name(name: str) -> str:
    return name if len(name) <= SHORT_NAME else name[: SHORT_NAME - 1] + "…"


class FitError(Exception):
    """A failure inside the fit (a torch RuntimeError, CUDA out of memory, ...)."""


def _drive(gen, stop: threading.Event):
    """The worker's generator: hands the fit's progress on and returns its result.

    A cancel sets ``stop``; the fit is then closed here, in the worker thread, so its
    fitting threads are joined there and never on the GUI thread. superqt takes a
    RuntimeError coming out of a worker for a deleted Qt object and then emits neither
    ``errored`` nor ``finished``; torch reports most failures (CUDA out of memory
    included) as RuntimeError, so they are re-raised as :class:`FitError`.
    """
    try:
        while True:
            if stop.is_set():
                return None
            try:
                p = next(gen)
            except StopIteration as done:
                return done.value
            yield p
    except RuntimeError as exc:
        raise FitError(str(exc)) from exc
    finally:
        gen.close()


#: Runners whose worker thread is running now (see :func:`_stop_all_at_exit`).
_ACTIVE: set = set()

#: How long the interpreter's exit waits for stopped fits (each stops within an
#: iteration; a GPU iteration on a huge image can take a few seconds).
EXIT_WAIT_MS = 60_000


@atexit.register
def _stop_all_at_exit() -> None:
    """At interpreter exit (napari closed while a fit runs, or just cancelled), stop
    every running fit and wait for its worker thread to end. Python then tears down the
    worker's Qt signal objects; a worker still running would emit on deleted objects,
    and Qt aborts the process. (Registered after Qt's own exit handlers, so it runs
    before them.)"""
    if not _ACTIVE:
        return
    for runner in list(_ACTIVE):
        runner.stop_quietly()
    from qtpy.QtCore import QThreadPool

    QThreadPool.globalInstance().waitForDone(EXIT_WAIT_MS)


class Runner:
    """One fit at a time: the worker, its progress bar, and what its signals do.

    ``alive()`` tells whether the widget still exists (Qt may delete it mid-run),
    ``report(text)`` sets the status line, ``ended()`` is called once a run is over."""

    def __init__(
        self,
        viewer,
        alive: Callable[[], bool],
        report: Callable[[str], None],
        ended: Callable[[], None],
    ):
        self.viewer, self.alive, self.report, self.ended = viewer, alive, report, ended
        self.worker = None
        self.progress: Optional[napari_progress] = None
        self.job: Optional[Job] = None
        self._gen = self._outputs = None
        self._stop = threading.Event()
        self._spread, self._stage, self._start = False, "prior", 0.0
        self._latest, self._busy, self._cancelling = None, False, False
        self._estimate = RunEstimate()
        self._group, self._furthest = None, 0

    def start(self, gen, job: Job, outputs: Outputs, spread: bool):
        self._gen, self.job, self._outputs, self._spread = gen, job, outputs, spread
        self._stop = threading.Event()
        self._stage, self._start = "prior", time.monotonic()
        self._latest, self._busy, self._cancelling = None, False, False
        self._estimate = RunEstimate()
        self._group, self._furthest = None, 0
        outputs.begin()
        # The total is corrected by the first report (it depends on tiles and planes).
        self.progress = napari_progress(
            total=job.settings.n_iter, desc=f"napari-dsp: {short_name(job.name)}"
        )
        self.worker = create_worker(
            _drive,
            gen,
            self._stop,
            _start_thread=False,
            _worker_class=GeneratorWorker,
            _connect={
                "yielded": self._on_yielded,
                "returned": self._on_returned,
                "errored": self._on_errored,
                "aborted": self._on_aborted,
                "finished": self._on_finished,
            },
        )
        _ACTIVE.add(self)
        self.worker.start()
        return self.worker

    def cancel(self) -> None:
        if self.worker is not None:
            self._cancelling = True
            self.report("cancelling...")
            # Not worker.quit(): superqt would then never resume the generator, and the
            # fit's threads would run on. _drive sees the flag at the fit's next report
            # (within an iteration), closes the fit in the worker thread and returns None.
            self._stop.set()

    def stop_quietly(self, *_: Any) -> None:
        """Stop without touching the GUI (the widget or the viewer is going away): the
        worker thread closes the fit at its next report (see :func:`_drive`). If the
        worker was quit by someone else (napari quits its workers when it closes), the
        fit is suspended for good and is closed here, which stops its threads."""
        self._stop.set()
        if self._gen is not None:
            with contextlib.suppress(ValueError):  # still running: it sees the flag
                self._gen.close()

    def _on_yielded(self, p) -> None:
        if not self.alive():
            self.stop_quietly()
            return
        if self.worker is None or self._cancelling:
            return
        # napari's progress bar processes events while it redraws, so this handler can
        # be entered again from inside itself: the inner call only leaves the newest
        # report for the outer one, which shows reports in order and stops once the run
        # has ended (its returned/finished handlers may run inside the bar's redraw).
        self._latest = p
        if self._busy:
            return
        self._busy = True
        try:
            while self._latest is not None and self.worker is not None:
                p, self._latest = self._latest, None
                self._show(p)
        finally:
            self._busy = False

    def _show(self, p) -> None:
        left = None if p.stage == "classes" else self._estimate.seconds_left(p.fraction)
        # threads fitting members side by side report their own iterations: show the
        # furthest of the group being fitted, so the count never steps back within it
        group = (p.stage, p.plane, p.tile, p.members_done)
        if group != self._group:
            self._group, self._furthest = group, 0
        self._furthest = max(self._furthest, p.iteration)
        self.report(describe(p, left, self._furthest))
        job, now = self.job, time.monotonic()
        if (
            p.preview is not None
            and now - job.last_preview >= PREVIEW_INTERVAL
            and job.layer in self.viewer.layers
        ):
            job.last_preview = now
            self._outputs.preview(self.viewer, job, p)
        self._advance(p)  # last: the bar's redraw may run the end of the run

    def _advance(self, p) -> None:
        bar = self.progress
        if p.stage != self._stage:
            self._stage = p.stage
            bar.reset(total=p.total)
        elif p.total != bar.total:
            bar.total = p.total
        if p.step > bar.n and self.worker is not None:
            bar.update(p.step - bar.n)  # update() emits napari's value event; .n does not
        if self.worker is not None:
            where = f" · plane {p.plane + 1}/{p.n_planes}" if p.n_planes > 1 else ""
            bar.set_description(f"{short_name(self.job.name)}{where}")

    def _on_returned(self, result) -> None:
        if result is None:  # cancelled (see cancel)
            self._on_aborted()
            return
        if not self.alive():
            return
        job = self.job
        if job.layer not in self.viewer.layers:
            show_warning(
                "napari-dsp: the image layer was removed during the fit; the result was discarded"
            )
            self._outputs.rollback(self.viewer, job.name)
            return
        self._outputs.publish(self.viewer, job, result, self._spread)
        seed = result.metadata["settings"]["seed"]
        clustering = result.metadata.get("clustering", {})
        count = clustering.get("count")
        decision = clustering.get("decision") or {}
        empty = {
            "empty": "; nothing stands out from the noise",
            "outliers": "; only isolated pixels stand out",
        }.get(decision.get("result"), "")
        where = result.metadata.get("labels_file")
        self.report(
            f"done on {result.metadata['device']} in "
            f"{format_seconds(time.monotonic() - self._start)} (seed {seed})"
            + ("" if count is None else f"; {objects(count)}")
            + empty
            + ("" if where is None else f"; labels on disk in {where}")
            + suggested(clustering.get("suggestion"))
        )
        if decision.get("message"):
            show_warning(f"napari-dsp: {decision['message']}")

    def _on_errored(self, exc: Exception) -> None:
        logger.error("napari-dsp: the fit failed", exc_info=exc)
        if not self.alive():
            return
        self._outputs.rollback(self.viewer, self.job.name)
        text = in_widget_words(str(exc)) or type(exc).__name__
        if not isinstance(exc, (FitError, ValueError)):
            text = f"{type(exc).__name__}: {text}"
        if "out of memory" in text.lower():
            text += " (try fewer members, a smaller working size or device 'CPU')"
        device = self.job.settings.device
        if device not in ("auto", "cpu"):
            text += f" (on device {device!r}; 'auto' or 'CPU' in the device list fit elsewhere)"
        show_error(f"napari-dsp: the fit failed: {text}")
        self.report(f"failed: {text}")

    def _on_aborted(self) -> None:
        # the worker thread closes the fit (see _drive); nothing is joined here
        if self.alive():
            self._outputs.rollback(self.viewer, self.job.name)
            self.report("cancelled")

    def _on_finished(self) -> None:
        _ACTIVE.discard(self)
        if self.progress is not None:
            self.progress.close()
        self.worker, self._gen = None, None
        self.ended()
