"""The napari dock widget: a thin driver of :func:`napari_dsp.generators.segment` and
:func:`napari_dsp.generators.segment_stack`.

It does four things: read the form (generated from the settings metadata, see
:mod:`.form`) into :class:`~napari_dsp.Settings`; copy the chosen layer's data on the main
thread; run the fit generator in a napari worker; map ``yielded`` to the progress bar,
the status line and the live prior, ``returned`` to layers (see :mod:`.outputs`),
``aborted``/``errored`` to a clean reset. Nothing inside the worker touches the viewer.
Bad input is refused when Run is pressed, before any thread starts.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

from magicgui.widgets import Container, Label, PushButton
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtWidgets import QSizePolicy

from ..core.fit import warm_up
from ..generators import run, segment
from ..settings import CLUSTERING_SETTINGS, Settings
from .axes import NO_CHANNELS
from .form import PLANES, SettingsForm, add_widget_rows, update_widget_rows
from .outputs import META_KEY, Outputs, prepare_run
from .runner import Runner, objects
from .words import in_widget_words

if TYPE_CHECKING:  # pragma: no cover
    import napari

logger = logging.getLogger(__name__)

#: Settings that only change the clustering of a 2-D prior: no refit needed.
RECLUSTER = CLUSTERING_SETTINGS


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
        self._status.native.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Minimum)
        self._runner = Runner(viewer, self._gui_alive, self._report, self._ended)
        self.extend([form, self.run_button, self._status])

        self.run_button.changed.connect(self._on_button)
        for name in RECLUSTER:
            form[name].changed.connect(self._recluster)
        form["image"].changed.connect(self._layer_rows)
        form["planes"].changed.connect(self._layer_rows)
        form["channel_axis"].changed.connect(self._layer_rows)
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

    @property
    def channel_axis(self):
        """The layer's axis of channels chosen in the form (None: no channels)."""
        value = self.form["channel_axis"].value
        return None if value == NO_CHANNELS else int(value)

    @channel_axis.setter
    def channel_axis(self, axis) -> None:
        self.form["channel_axis"].value = NO_CHANNELS if axis is None else int(axis)

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
        if (
            self._gui_alive()
            and isinstance(active, Image)
            and META_KEY not in active.metadata
            and not self.running
        ):
            self.image_layer = active

    def _layer_rows(self, *_: Any) -> None:
        note = update_widget_rows(self.form, new_layer=self.image_layer is not self._rows_for)
        self._rows_for = self.image_layer
        if note and not self.running:
            self._report(note)  # a channel axis guessed from the pixels is said

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
            show_error(
                "napari-dsp: choose an Image layer to segment (open one, or "
                "File > Open Sample > napari-dsp)"
            )
            return None
        try:
            job, gen = prepare_run(
                layer,
                self.settings(),
                self._viewer.dims.point,
                level=self.level,
                all_planes=self.planes == PLANES[1],
                scribbles=self.scribbles_layer,
                channel_axis=self.channel_axis,
                notes=self._axes_notes(layer),
            )
        except (TypeError, ValueError) as exc:
            text = in_widget_words(str(exc))
            show_error(f"napari-dsp: {text}")
            self._report(f"not started: {text}")
            return None
        guessed = job.notes.get("channel_axis_from", "")
        if "differ" in guessed:  # never taken silently: said at Run too
            show_info(
                f"napari-dsp: axis {job.channel_axis} of '{layer.name}' is fitted as "
                f"channels ({guessed}); choose 'none' under 'channels' to segment it as planes"
            )
        outputs = self._outputs.setdefault(id(layer), Outputs())
        self.run_button.text = "Cancel"
        self._report("starting...")
        return self._runner.start(gen, job, outputs, self.show_spread)

    def _axes_notes(self, layer) -> dict:
        """How the layer's axes were read, for the results' metadata."""
        from .axes import axis_names, guess_channel

        axis = self.channel_axis
        notes: dict = {"channel_axis": axis}
        guess = guess_channel(layer) if axis is not None else None
        if guess is not None and guess.axis == axis:
            notes["channel_axis_from"] = guess.why
        elif axis is not None:
            notes["channel_axis_from"] = "chosen in the form"
        names, where = axis_names(layer)
        if where:
            notes["axes"] = "".join(n or "?" for n in names)
            notes["axes_from"] = where
        return notes

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
            self._report(
                "changed settings apply at the next Run, which fits the prior again "
                "(only a single 2-D image is re-clustered without a refit)"
            )
            return
        try:
            form = self.settings()
            if form.method != "kmeans":
                return
            base = out.settings or form
            settings = base.replace(method="kmeans", **{k: getattr(form, k) for k in RECLUSTER})
            result = run(segment(out.image, prior=out.prior, settings=settings))
        except (TypeError, ValueError) as exc:
            show_error(f"napari-dsp: {exc}")
            return
        message = (result.metadata.get("clustering", {}).get("decision") or {}).get("message")
        if message:
            show_warning(f"napari-dsp: {message}")
        out.relabel(self._viewer, layer, result)
        out.settings = settings
        count = result.metadata.get("clustering", {}).get("count")
        self._report(
            "re-clustered the existing prior (no refit)"
            + ("" if count is None else f"; {objects(count)}")
        )

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
