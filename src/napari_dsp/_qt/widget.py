"""The napari dock widget: a thin driver of :func:`napari_dsp.iter_segment` and
:func:`napari_dsp.iter_segment_stack`.

It does four things: read the form (generated from the settings metadata, see
:mod:`.form`) into :class:`~napari_dsp.Settings`; copy the chosen layer's data on the main
thread; run the fit generator in a napari worker; map ``yielded`` to the progress bar,
the status line and the live prior, ``returned`` to layers (see :mod:`.outputs`),
``aborted``/``errored`` to a clean reset. Nothing inside the worker touches the viewer.
Bad input is refused when Run is pressed, before any thread starts.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Optional

from magicgui.widgets import Container, Label, PushButton
from napari.qt.threading import create_worker
from napari.utils import progress as napari_progress
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtWidgets import QSizePolicy
from superqt.utils import GeneratorWorker

from ..api import cluster
from ..core.fit import warm_up
from ..progress import format_seconds
from ..settings import Settings
from .form import PLANES, SettingsForm, add_widget_rows, update_widget_rows
from .outputs import META_KEY, PREVIEW_INTERVAL, Job, Outputs, prepare_run

if TYPE_CHECKING:  # pragma: no cover
    import napari

logger = logging.getLogger(__name__)

#: Settings that only change the clustering of a 2-D prior: no refit needed.
RECLUSTER = ("n_classes", "invert", "window", "instances", "refine", "min_size",
             "fill_holes")


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


class Runner:
    """One fit at a time: the worker, its progress bar, and what its signals do.

    ``alive()`` tells whether the widget still exists (Qt may delete it mid-run),
    ``report(text)`` sets the status line, ``ended()`` is called once a run is over."""

    def __init__(self, viewer, alive: Callable[[], bool], report: Callable[[str], None],
                 ended: Callable[[], None]):
        self.viewer, self.alive, self.report, self.ended = viewer, alive, report, ended
        self.worker = None
        self.progress: Optional[napari_progress] = None
        self.job: Optional[Job] = None
        self._gen = self._outputs = None
        self._stop = threading.Event()
        self._spread, self._stage, self._start = False, "prior", 0.0
        self._latest, self._busy, self._cancelling = None, False, False

    def start(self, gen, job: Job, outputs: Outputs, spread: bool):
        self._gen, self.job, self._outputs, self._spread = gen, job, outputs, spread
        self._stop = threading.Event()
        self._stage, self._start = "prior", time.monotonic()
        self._latest, self._busy, self._cancelling = None, False, False
        outputs.begin()
        # The total is corrected by the first report (it depends on tiles and planes).
        self.progress = napari_progress(total=job.settings.n_iter,
                                        desc=f"napari-dsp: {job.name}")
        self.worker = create_worker(
            _drive, gen, self._stop, _start_thread=False, _worker_class=GeneratorWorker, _connect={
                "yielded": self._on_yielded, "returned": self._on_returned,
                "errored": self._on_errored, "aborted": self._on_aborted,
                "finished": self._on_finished})
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
        self.report(p.describe())
        job, now = self.job, time.monotonic()
        if p.preview is not None and now - job.last_preview >= PREVIEW_INTERVAL \
                and job.layer in self.viewer.layers:
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
            bar.set_description(f"{self.job.name}: {p.describe()}")

    def _on_returned(self, result) -> None:
        if result is None:  # cancelled (see cancel)
            self._on_aborted()
            return
        if not self.alive():
            return
        job = self.job
        if job.layer not in self.viewer.layers:
            show_warning("napari-dsp: the image layer was removed during the fit; the "
                         "result was discarded")
            self._outputs.rollback(self.viewer, job.name)
            return
        self._outputs.publish(self.viewer, job, result, self._spread)
        seed = result.metadata["settings"]["seed"]
        count = result.metadata.get("clustering", {}).get("count")
        self.report(f"done on {result.metadata['device']} in "
                    f"{format_seconds(time.monotonic() - self._start)} (seed {seed})"
                    + ("" if count is None else f"; {count} objects"))

    def _on_errored(self, exc: Exception) -> None:
        logger.error("napari-dsp: the fit failed", exc_info=exc)
        if not self.alive():
            return
        self._outputs.rollback(self.viewer, self.job.name)
        text = str(exc) or type(exc).__name__
        if not isinstance(exc, (FitError, ValueError)):
            text = f"{type(exc).__name__}: {text}"
        if "out of memory" in text.lower():
            text += " (try fewer runs, a smaller working size or device 'CPU')"
        device = self.job.settings.device
        if device not in ("auto", "cpu"):
            text += f" (on device {device!r}; 'auto' or 'CPU' in the device list fit " \
                    f"elsewhere)"
        show_error(f"napari-dsp: the fit failed: {text}")
        self.report(f"failed: {text}")

    def _on_aborted(self) -> None:
        # the worker thread closes the fit (see _drive); nothing is joined here
        if self.alive():
            self._outputs.rollback(self.viewer, self.job.name)
            self.report("cancelled")

    def _on_finished(self) -> None:
        if self.progress is not None:
            self.progress.close()
        self.worker, self._gen = None, None
        self.ended()


def _row(name: str, doc: str) -> property:
    """A widget-only row of the form as a property of the widget."""

    def get(self):
        return self.form[name].value

    def set(self, value) -> None:
        control = self.form[name]
        if hasattr(control, "reset_choices"):  # layer pickers: the viewer's layers now
            control.reset_choices()
        control.value = value

    return property(get, set, doc=doc)


class DSPWidget(Container):
    """Deep Segmentation Prior: fit the prior of an Image layer and segment it.

    Public surface (for scripts and tests):

    ``form``
        The :class:`~napari_dsp._qt.form.SettingsForm`: ``form[name].value`` for any
        setting or row (``"image"``, ``"level"``, ``"planes"``, ``"scribbles"``,
        ``"show_spread"``), ``form.shown(name)``, ``form.advanced``.
    ``settings()`` / ``set_values(**settings)``
        The form as validated :class:`~napari_dsp.Settings` / set settings' controls.
    ``image_layer``, ``scribbles_layer``, ``planes``, ``level``, ``show_spread``
        The widget-only choices (get and set); ``planes`` is ``"current plane"`` or
        ``"all planes"``.
    ``run()``
        Start a fit; returns the worker, or None when refused (with a notification).
    ``cancel()``, ``running``, ``worker``
        Stop the running fit; whether one runs; its worker.
    ``status``, ``progress``, ``run_button``
        The status line's text; the napari progress bar of the current (or last) run;
        the Run/Cancel button.
    """

    def __init__(self, napari_viewer: napari.viewer.Viewer):
        super().__init__(labels=False)
        self._viewer = viewer = napari_viewer
        self._outputs: dict[int, Outputs] = {}
        self._rows_for = None  # the layer the rows were last set up for
        self.form = form = SettingsForm(name="settings_form")
        add_widget_rows(form)
        self.run_button = PushButton(name="run_button", text="Run")
        self._status = Label(name="status_line", value="")
        self._status.native.setWordWrap(True)  # long reports wrap, never widen the dock
        self._status.native.setSizePolicy(QSizePolicy.Policy.Ignored,
                                          QSizePolicy.Policy.Minimum)
        self._runner = Runner(viewer, self._gui_alive, self._report, self._ended)
        self.extend([form, self.run_button, self._status])

        self.run_button.changed.connect(self._on_button)
        for name in RECLUSTER:
            form[name].changed.connect(self._recluster)
        form["image"].changed.connect(self._layer_rows)
        form["planes"].changed.connect(self._layer_rows)
        form["method"].changed.connect(self._layer_rows)
        viewer.layers.selection.events.active.connect(self._follow_selection)
        viewer.layers.events.removed.connect(self._on_layer_removed)
        self.native.destroyed.connect(self._runner.stop_quietly)
        self.native_parent_changed.connect(self._on_parent_changed)
        self._follow_selection()
        self._layer_rows()
        # Pay torch's one-off optimiser imports now, not after the user presses Run.
        threading.Thread(target=warm_up, name="napari-dsp-warm-up", daemon=True).start()

    # -- the widget-only choices --------------------------------------------------------
    image_layer = _row("image", "The Image layer to segment.")
    scribbles_layer = _row("scribbles", "The Labels layer of strokes (self-training).")
    planes = _row("planes", "Stacks: 'current plane' or 'all planes'.")
    level = _row("level", "Multiscale layers: the level to segment (0 = finest).")
    show_spread = _row("show_spread", "Whether an ensemble spread layer is added.")

    def settings(self) -> Settings:
        """The form as validated :class:`~napari_dsp.Settings` (raises ValueError or
        TypeError for values that do not go together)."""
        return self.form.settings()

    def set_values(self, **settings: Any) -> None:
        self.form.set_values(**settings)

    # -- state --------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._runner.worker is not None

    @property
    def worker(self):
        return self._runner.worker

    @property
    def progress(self):
        return self._runner.progress

    @property
    def status(self) -> str:
        return str(self._status.value)

    def _report(self, text: str) -> None:
        if self._gui_alive():
            self._status.value = text

    def _gui_alive(self) -> bool:
        """False once Qt has deleted the widget (dock closed, viewer closed)."""
        try:
            self.run_button.native.objectName()
        except RuntimeError:
            return False
        return True

    def _ended(self) -> None:
        if self._gui_alive():
            self.run_button.text = "Run"

    # -- rows that follow the layer -----------------------------------------------------
    def _follow_selection(self, *_: Any) -> None:
        from napari.layers import Image

        active = self._viewer.layers.selection.active
        if self._gui_alive() and isinstance(active, Image) and META_KEY not in active.metadata \
                and not self.running:
            self.image_layer = active

    def _layer_rows(self, *_: Any) -> None:
        update_widget_rows(self.form, new_layer=self.image_layer is not self._rows_for)
        self._rows_for = self.image_layer

    # -- running ------------------------------------------------------------------------
    def _on_button(self, *_: Any) -> None:
        if self.running:
            self.cancel()
        else:
            self.run()

    def run(self):
        """Start a fit on the chosen layer; returns the worker (None if refused, with a
        notification saying why)."""
        if self.running:
            show_warning("napari-dsp: a fit is already running; cancel it first")
            return None
        layer = self.image_layer
        if layer is None:
            show_error("napari-dsp: choose an Image layer to segment (open one, or "
                       "File > Open Sample > napari-dsp)")
            return None
        try:
            job, gen = prepare_run(layer, self.settings(), self._viewer.dims.point,
                                   level=self.level, all_planes=self.planes == PLANES[1],
                                   scribbles=self.scribbles_layer)
        except (TypeError, ValueError) as exc:
            show_error(f"napari-dsp: {exc}")
            self._report(f"not started: {exc}")
            return None
        outputs = self._outputs.setdefault(id(layer), Outputs())
        self.run_button.text = "Cancel"
        self._report("starting...")
        return self._runner.start(gen, job, outputs, self.show_spread)

    def cancel(self) -> None:
        """Ask the running fit to stop (takes effect within an iteration)."""
        self._runner.cancel()

    # -- after a run ----------------------------------------------------------------------
    def _recluster(self, *_: Any) -> None:
        """Re-cluster the kept 2-D prior with the form's clustering settings."""
        layer = self.image_layer
        out = self._outputs.get(id(layer)) if layer is not None else None
        if self.running or out is None or not out.labels_slot.alive(self._viewer):
            return
        if out.prior is None:
            self._report("changed settings apply at the next Run (a stack or a plane of "
                         "one is re-clustered by running it again)")
            return
        try:
            form = self.settings()
            if form.method != "kmeans":
                return
            base = out.settings or form
            settings = base.replace(method="kmeans",
                                    **{k: getattr(form, k) for k in RECLUSTER})
            result = cluster(out.prior, settings, image=out.image)
        except (TypeError, ValueError) as exc:
            show_error(f"napari-dsp: {exc}")
            return
        out.relabel(self._viewer, layer, result)
        out.settings = settings
        count = result.metadata.get("clustering", {}).get("count")
        self._report("re-clustered the existing prior (no refit)"
                     + ("" if count is None else f"; {count} objects"))

    def _on_parent_changed(self, parent) -> None:
        """napari closes a dock by taking the widget out of it: stop the fit then."""
        if parent is None and self.running:
            self.cancel()

    def _on_layer_removed(self, event) -> None:
        removed = event.value
        if not self._gui_alive():
            return
        job = self._runner.job if self.running else None
        if job is not None and removed is job.layer:
            show_info("napari-dsp: the image layer being fitted was removed; cancelling")
            self.cancel()
        else:
            self._outputs.pop(id(removed), None)
