"""The napari dock widget: a thin driver of :func:`napari_dsp.iter_segment`.

It does four things: read the form into :class:`~napari_dsp.Settings`; copy the chosen
layer's data on the main thread; run the fit generator in a napari ``thread_worker``;
map ``yielded`` to the progress bar and the live prior, ``returned`` to layers,
``aborted``/``errored`` to a clean reset. Nothing inside the worker touches the viewer.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FloatSpinBox,
    Label,
    PushButton,
    SpinBox,
    create_widget,
)
from napari.qt.threading import create_worker
from napari.utils import progress as napari_progress
from napari.utils.notifications import show_error, show_info, show_warning

from .segment import PriorResult, SegmentResult, cluster, iter_segment, iter_segment_stack
from .settings import FIELDS, Settings

if TYPE_CHECKING:  # pragma: no cover
    import napari

PLANES = ("current plane", "all planes", "volume (3-D prior)")
MODES = ("foreground / background", "K classes", "self-training (finds classes)")
#: Seconds between two updates of the live prior layer (the GUI never drowns).
PREVIEW_INTERVAL = 0.4
#: Keys under which results are stored in a layer's metadata.
META_KEY = "napari_dsp"


def device_choices() -> list[tuple[str, str]]:
    """(label, value) pairs of the devices that exist here, 'auto' first."""
    import torch

    choices = [("auto", "auto"), ("CPU", "cpu")]
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            choices.append((f"CUDA {i}: {torch.cuda.get_device_name(i)}", f"cuda:{i}"))
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        choices.append(("Apple MPS", "mps"))
    return choices


def placement(layer, level: Optional[int] = None) -> dict:
    """The world placement of ``layer`` as keyword arguments for a new layer; for a
    result computed on ``level`` of a multiscale layer, that level's pixel size."""
    scale = np.array(layer.scale, dtype=float)
    if level is not None and getattr(layer, "multiscale", False):
        scale = scale * np.asarray(layer.downsample_factors[level], float)[:len(scale)]
    kwargs = {"scale": scale, "translate": np.array(layer.translate),
              "rotate": np.array(layer.rotate), "shear": np.array(layer.shear),
              "affine": np.array(layer.affine.affine_matrix)}
    units = getattr(layer, "units", None)
    if units is not None:
        kwargs["units"] = units
    return kwargs


@dataclass
class _Slot:
    """One output layer of a source layer, with what it takes to undo an unfinished run:
    a layer this run created is removed, a layer of an earlier run gets its data back."""

    layer: Any = None
    previous: Any = None  # data before this run's previews
    created: bool = False  # made by this run

    def alive(self, viewer) -> bool:
        return self.layer is not None and self.layer in viewer.layers

    def show(self, viewer, add, data, name: str, running: bool = False, **kwargs) -> None:
        """Put ``data`` in the layer (made with ``add`` if needed). ``running`` marks a
        preview: the layer is named "... (running)" and the undo state is kept."""
        label = name + " (running)" if running else name
        if self.alive(viewer):
            if running and self.previous is None and not self.created:
                self.previous = self.layer.data
            self.layer.data = data
            self.layer.name = label
            if "metadata" in kwargs:
                self.layer.metadata.update(kwargs["metadata"])
        else:
            self.layer = add(data, name=label, **kwargs)
            self.created = running
        if not running:
            self.commit()

    def commit(self) -> None:
        self.previous, self.created = None, False

    def rollback(self, viewer, name: str) -> None:
        if self.alive(viewer):
            if self.created:
                viewer.layers.remove(self.layer)
                self.layer = None
            elif self.previous is not None:
                self.layer.data = self.previous
                self.layer.name = name
        self.commit()


@dataclass
class _Outputs:
    """What one source layer got from this widget."""

    prior: Optional[PriorResult] = None
    image: Optional[np.ndarray] = None  # the pixels the prior was fitted to (refine)
    level: Optional[int] = None  # the multiscale level the result was computed on
    prior_slot: _Slot = field(default_factory=_Slot)
    labels_slot: _Slot = field(default_factory=_Slot)
    spread_slot: _Slot = field(default_factory=_Slot)


class FitError(Exception):
    """A failure inside the fit (a torch RuntimeError, CUDA out of memory, ...)."""


def _drive(gen):
    """The worker's generator: hands the fit's progress on and returns its result.

    superqt takes a RuntimeError coming out of a worker for a deleted Qt object and then
    emits neither ``errored`` nor ``finished``; torch reports most failures (CUDA out of
    memory included) as RuntimeError, so they are re-raised as :class:`FitError`.
    """
    try:
        return (yield from gen)
    except RuntimeError as exc:
        raise FitError(str(exc)) from exc


def _spin(name: str, value, **kw):
    spec = FIELDS[name]
    kind = FloatSpinBox if isinstance(value, float) else SpinBox
    extra = {"step": 0.001} if kind is FloatSpinBox else {}
    return kind(name=name, value=value, min=spec.minimum, max=spec.maximum,
                tooltip=spec.help, **extra, **kw)


class DSPWidget(Container):
    """Deep Segmentation Prior: fit the prior of an Image layer and segment it."""

    def __init__(self, napari_viewer: napari.viewer.Viewer):
        super().__init__(labels=True)
        viewer = self._viewer = napari_viewer
        d = Settings()
        self._image = create_widget(annotation="napari.layers.Image", name="image",
                                    label="image")
        self._planes = ComboBox(name="planes", choices=PLANES, value=PLANES[0],
                                tooltip="For stacks and time-lapses (layers with more than "
                                        "two axes): the plane the sliders show; every "
                                        "plane, each with its own prior and classes "
                                        "shared across planes; or, for a Z stack, one "
                                        "3-D prior of the whole volume (the z spacing "
                                        "from the layer's scale)")
        self._mode = ComboBox(name="mode", choices=MODES, value=MODES[0],
                              tooltip="Foreground/background (0 = background, 1 = "
                                      "foreground) or K classes 1..K")
        self._classes = _spin("n_classes", 3, label="classes")
        self._min_labels = _spin("min_labels", d.min_labels, label="min classes")
        from napari.layers import Labels

        self._scribbles = create_widget(annotation=Optional[Labels], name="scribbles",
                                        label="scribbles",
                                        options={"tooltip": "optional Labels layer of "
                                                 "strokes (0 = unlabelled); painted "
                                                 "classes keep their ids"})
        self._invert = CheckBox(name="invert", value=d.invert, text="invert foreground",
                                tooltip=FIELDS["invert"].help)
        self._instances = CheckBox(name="instances", value=False,
                                   text="one id per object (count)",
                                   tooltip=FIELDS["instances"].help)
        self._n_iter = _spin("n_iter", d.n_iter, label="iterations")
        self._n_runs = _spin("n_runs", d.n_runs, label="runs")
        self._window = _spin("window", d.window, label="window", step=2)
        self._device = ComboBox(name="device", choices=device_choices(), value="auto",
                                tooltip=FIELDS["device"].help)
        self._seed = SpinBox(name="seed", value=-1, min=-1, max=2**31 - 1,
                             tooltip="Random seed; -1 draws one (the seed used is stored "
                                     "in the layers' metadata).")
        self._show_spread = CheckBox(name="show_spread", value=False,
                                     text="add uncertainty (ensemble spread) layer")
        self._advanced = CheckBox(name="advanced", value=False, text="advanced settings")
        self._precision = ComboBox(name="precision", choices=FIELDS["precision"].choices,
                                   value=d.precision, tooltip=FIELDS["precision"].help)
        self._learning_rate = _spin("learning_rate", d.learning_rate, label="learning rate")
        self._preview_every = _spin("preview_every", d.preview_every, label="preview every")
        self._workers = SpinBox(name="n_workers", value=-1, min=-1,
                                max=FIELDS["n_workers"].maximum, label="CPU workers",
                                tooltip=FIELDS["n_workers"].help + " (-1 = automatic)")
        self._level = SpinBox(name="level", value=0, min=0, max=0, label="level",
                              tooltip="Multiscale layers: the resolution level to segment "
                                      "(0 = finest); the result is placed at that level's "
                                      "pixel size")
        self._level.visible = False
        self._working_size = SpinBox(name="working_size", value=-1, min=-1,
                                     max=FIELDS["working_size"].maximum,
                                     label="working size",
                                     tooltip=FIELDS["working_size"].help +
                                     " (-1 = automatic)")
        self._refine = CheckBox(name="refine", value=d.refine,
                                text="sharpen outlines from the pixels",
                                tooltip=FIELDS["refine"].help)
        self._run = PushButton(name="run", text="Run")
        self._status = Label(name="status", value="")
        self._advanced_widgets = [self._working_size, self._precision, self._learning_rate,
                                  self._preview_every, self._workers]
        self.extend([self._image, self._level, self._planes, self._mode, self._classes,
                     self._min_labels, self._scribbles, self._invert, self._instances,
                     self._refine, self._n_iter, self._n_runs, self._window, self._device, self._seed,
                     self._show_spread, self._advanced, *self._advanced_widgets,
                     self._run, self._status])
        for w in self._advanced_widgets:
            w.visible = False
        self._classes.enabled = False
        self._min_labels.visible = False
        self._scribbles.visible = False

        self._worker = None
        self._gen = None
        self._run_plane = None
        self._run_level: Optional[int] = None
        self._run_image = None
        self._run_shape: tuple = ()
        self._progress = None
        self._running_layer = None
        self._last_preview = 0.0
        self._outputs: dict[int, _Outputs] = {}

        self._run.changed.connect(self._on_run_clicked)
        self._advanced.changed.connect(self._toggle_advanced)
        self._mode.changed.connect(self._on_mode)
        for w in (self._classes, self._invert, self._window, self._instances, self._refine):
            w.changed.connect(self._recluster)
        viewer.layers.selection.events.active.connect(self._follow_selection)
        self._image.changed.connect(self._update_level)
        viewer.layers.events.removed.connect(self._on_layer_removed)
        self.native.destroyed.connect(self._cancel_quietly)
        self._follow_selection()
        self._update_level()

    # -- form ------------------------------------------------------------------------
    def _toggle_advanced(self, on: bool) -> None:
        for w in self._advanced_widgets:
            w.visible = bool(on)

    def _on_mode(self, mode: str) -> None:
        k, self_training = mode == MODES[1], mode == MODES[2]
        self._classes.enabled = k
        self._invert.enabled = mode == MODES[0]
        self._instances.enabled = mode == MODES[0]
        self._min_labels.visible = self_training
        self._scribbles.visible = self_training
        self._recluster()

    def _follow_selection(self, event=None) -> None:
        from napari.layers import Image

        active = self._viewer.layers.selection.active
        if isinstance(active, Image) and self._worker is None:
            self._image.reset_choices()
            self._image.value = active

    def settings(self) -> Settings:
        """The form as a validated :class:`Settings` (raises ValueError/TypeError)."""
        k = self._mode.value == MODES[1]
        fg_bg = self._mode.value == MODES[0]
        return Settings(
            n_classes=int(self._classes.value) if k else 2,
            invert=bool(self._invert.value) and fg_bg,
            refine=bool(self._refine.value),
            working_size=None if self._working_size.value < 0 else
            int(self._working_size.value),
            instances=bool(self._instances.value) and fg_bg,
            method="kanezaki" if self._mode.value == MODES[2] else "kmeans",
            min_labels=int(self._min_labels.value),
            n_iter=int(self._n_iter.value), n_runs=int(self._n_runs.value),
            window=int(self._window.value),
            seed=None if self._seed.value < 0 else int(self._seed.value),
            device=str(self._device.value), precision=str(self._precision.value),
            learning_rate=float(self._learning_rate.value),
            preview_every=int(self._preview_every.value),
            n_workers=None if self._workers.value < 0 else int(self._workers.value))

    # -- running -----------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._worker is not None

    def _on_run_clicked(self, *_) -> None:
        if self.running:
            self.cancel()
        else:
            self.run()

    def run(self):
        """Start a fit on the chosen layer; returns the worker (None if refused)."""
        if self.running:
            show_warning("napari-dsp: a fit is already running; cancel it first")
            return None
        layer = self._image.value
        if layer is None:
            show_error("napari-dsp: choose an Image layer to segment (open one, or "
                       "File > Open Sample > napari-dsp)")
            return None
        try:
            settings = self.settings()
            data, plane, level = self._layer_data(layer)
            scribbles = None
            if settings.method == "kanezaki" and self._scribbles.value is not None:
                scribbles = np.asarray(self._scribbles.value.data).copy()
            if data.ndim > 2 and not layer.rgb and plane is None:
                volumetric = self._planes.value == PLANES[2]
                spacing = tuple(placement(layer, level)["scale"][-3:]) if volumetric \
                    else None
                gen = iter_segment_stack(data, settings=settings.replace(
                    volumetric=volumetric), spacing=spacing)
            else:
                gen = iter_segment(np.asarray(data if plane is None else data[plane]),
                                   settings=settings, scribbles=scribbles)
        except (TypeError, ValueError) as exc:
            show_error(f"napari-dsp: {exc}")
            return None
        self._gen = gen
        self._running_layer = layer
        self._run_plane = plane
        self._run_level = level
        self._run_shape = tuple(data.shape)
        self._run_image = data if plane is None else data[plane]
        out = self._outputs.setdefault(id(layer), _Outputs())
        out.prior_slot.commit()
        out.labels_slot.commit()
        self._last_preview = 0.0
        # The total is corrected by the first progress report (it depends on batching).
        self._progress = napari_progress(total=settings.n_iter,
                                         desc=f"DSP fit: {layer.name}")
        worker = create_worker(_drive, gen, _start_thread=False, _connect={
            "yielded": self._on_yielded, "returned": self._on_returned,
            "errored": self._on_errored, "aborted": self._on_aborted,
            "finished": self._on_finished})
        self._worker = worker
        self._run.text = "Cancel"
        self._status.value = "fitting..."
        worker.start()
        return worker

    def _layer_data(self, layer):
        """The pixels to segment and, for a stack in "current plane" mode, the index of
        the plane the sliders show (else None), and the multiscale level (else None).

        In-memory data is copied (the user may edit the layer during the fit); lazy data
        (dask, zarr) is left lazy and read plane by plane by the fit."""
        data, level = layer.data, None
        if getattr(layer, "multiscale", False):
            level = int(self._level.value)
            if not 0 <= level < len(layer.data):
                raise ValueError(f"layer '{layer.name}' has {len(layer.data)} levels; "
                                 f"choose a level from 0 to {len(layer.data) - 1}")
            data = layer.data[level]
        if isinstance(data, np.ndarray):
            data = data.copy()
        spatial = 3 if layer.rgb else 2
        if data.ndim - spatial > 2:
            raise ValueError(f"layer '{layer.name}' has {data.ndim} dimensions; stacks up "
                             f"to T x Z x Y x X are supported; add a sub-stack as its own "
                             f"layer, e.g. viewer.add_image(viewer.layers['{layer.name}']"
                             f".data[0])")
        if data.ndim == spatial or self._planes.value in PLANES[1:]:
            if layer.rgb and data.ndim > 3:
                raise ValueError("RGB stacks: choose 'current plane'")
            return data, None, level
        point = layer.world_to_data(self._viewer.dims.point)
        lead = data.ndim - spatial
        factors = np.ones(lead) if level is None else \
            np.asarray(layer.downsample_factors[level], float)[:lead]
        plane = tuple(int(np.clip(np.floor(float(point[i]) / factors[i] + 0.5), 0,
                                  data.shape[i] - 1)) for i in range(lead))
        return data, plane, level

    def _update_level(self, *_) -> None:
        """Show the level picker for a multiscale layer; default to the finest level
        whose plane has at most 4096 x 4096 pixels."""
        layer = self._image.value
        multiscale = layer is not None and getattr(layer, "multiscale", False)
        self._level.visible = bool(multiscale)
        if not multiscale:
            return
        shapes = [tuple(d.shape) for d in layer.data]
        self._level.max = len(shapes) - 1
        spatial = 3 if layer.rgb else 2
        fits = [i for i, shp in enumerate(shapes)
                if int(np.prod(shp[len(shp) - spatial:][:2])) <= 4096 * 4096]
        self._level.value = fits[0] if fits else len(shapes) - 1

    def _full(self, slot: "_Slot", part: np.ndarray, index, dtype) -> np.ndarray:
        """``part`` (one plane, or everything when ``index`` is None) placed in an array
        of the source layer's shape, keeping the other planes of an earlier result."""
        if index is None:
            return part
        shape = self._run_shape[: len(index)] + part.shape
        if slot.alive(self._viewer) and slot.layer.data.shape == shape:
            full = np.array(slot.layer.data, dtype=np.result_type(slot.layer.data, dtype))
        else:
            full = np.zeros(shape, dtype=dtype)
        full[index] = part
        return full

    def cancel(self) -> None:
        """Ask the running fit to stop (takes effect at its next iteration)."""
        if self._worker is not None:
            self._status.value = "cancelling..."
            self._worker.quit()

    def _cancel_quietly(self, *_) -> None:
        worker, gen = self._worker, self._gen
        if worker is not None:
            worker.quit()
        if gen is not None:
            try:
                gen.close()
            except ValueError:  # still executing in the worker thread: it stops at quit
                pass

    def _gui_alive(self) -> bool:
        """False once Qt has deleted the widget (dock closed, viewer closed)."""
        try:
            self._run.native.objectName()
        except RuntimeError:
            return False
        return True

    def _on_yielded(self, p) -> None:
        if not self._gui_alive():
            self._cancel_quietly()
            return
        if self._progress is not None:
            self._progress.total = p.total
            self._progress.n = p.step
            self._progress.refresh()
        self._status.value = f"iteration {p.step} / {p.total}"
        now = time.monotonic()
        if p.preview is None or now - self._last_preview < PREVIEW_INTERVAL:
            return
        self._last_preview = now
        layer = self._running_layer
        if layer is None:
            return
        out = self._outputs.setdefault(id(layer), _Outputs())
        index = self._run_plane
        if index is None and p.n_planes > 1:
            index = np.unravel_index(p.plane, self._run_shape[:-2])
        where = placement(layer, self._run_level)
        if p.stage == "classes":
            out.labels_slot.show(self._viewer, self._viewer.add_labels,
                                 self._full(out.labels_slot, p.preview, index, np.int32),
                                 f"{layer.name} labels", running=True, **where)
        else:
            out.prior_slot.show(self._viewer, self._viewer.add_image,
                                self._full(out.prior_slot, p.preview, index, np.float32),
                                f"{layer.name} prior", running=True, rgb=layer.rgb, **where)

    def _on_returned(self, result: SegmentResult) -> None:
        if not self._gui_alive():
            return
        layer = self._running_layer
        if layer is None or layer not in self._viewer.layers:
            show_warning("napari-dsp: the image layer was removed during the fit; the "
                         "result was discarded")
            self._drop_partial_prior(layer)
            return
        out = self._outputs.setdefault(id(layer), _Outputs())
        index = self._run_plane
        # Re-clustering without a refit works on a 2-D result only.
        out.prior = result.prior if (index is None and result.labels.ndim == 2) else None
        out.image = self._run_image if out.prior is not None else None
        out.level = self._run_level
        where = placement(layer, out.level)
        if result.prior is not None:
            out.prior_slot.show(self._viewer, self._viewer.add_image,
                                self._full(out.prior_slot, result.prior.prior, index,
                                           np.float32),
                                f"{layer.name} prior", metadata={META_KEY: result.metadata},
                                rgb=layer.rgb, **where)
        out.labels_slot.show(self._viewer, self._viewer.add_labels,
                             self._full(out.labels_slot, result.labels, index,
                                        result.labels.dtype),
                             f"{layer.name} labels", metadata={META_KEY: result.metadata},
                             **where)
        if self._show_spread.value and result.prior is not None:
            out.spread_slot.show(
                self._viewer, self._viewer.add_image,
                self._full(out.spread_slot, result.prior.spread, index, np.float32),
                f"{layer.name} spread", colormap="magma",
                metadata={META_KEY: {"what": "per-pixel standard deviation across the "
                                             "ensemble (mean over channels)"}},
                **where)
        seed = result.metadata["settings"]["seed"]
        self._status.value = f"done on {result.metadata['device']} (seed {seed})" + \
            self._count_text(result)

    def _show_labels(self, layer, out: _Outputs, result: SegmentResult) -> None:
        out.labels_slot.show(self._viewer, self._viewer.add_labels, result.labels,
                             f"{layer.name} labels", metadata={META_KEY: result.metadata},
                             **placement(layer, out.level))

    def _drop_partial_prior(self, layer) -> None:
        """Undo what a run that did not finish put in the viewer."""
        out = self._outputs.get(id(layer)) if layer is not None else None
        if out is not None:
            out.labels_slot.rollback(self._viewer, f"{layer.name} labels")
            out.prior_slot.rollback(self._viewer, f"{layer.name} prior")

    def _on_errored(self, exc: Exception) -> None:
        if not self._gui_alive():
            return
        self._drop_partial_prior(self._running_layer)
        text = str(exc)
        if "out of memory" in text.lower():
            text += " (try fewer runs, a smaller image or device 'cpu')"
        show_error(f"napari-dsp: {text}")
        self._status.value = "failed"

    def _on_aborted(self) -> None:
        if self._gen is not None:
            try:
                self._gen.close()  # stops worker processes now, not at garbage collection
            except ValueError:
                pass
        if self._gui_alive():
            self._drop_partial_prior(self._running_layer)
            self._status.value = "cancelled"

    def _on_finished(self) -> None:
        if self._progress is not None:
            self._progress.close()
        self._progress = None
        self._worker = None
        self._gen = None
        self._running_layer = None
        if self._gui_alive():
            self._run.text = "Run"

    # -- re-clustering without a refit ---------------------------------------------------
    def _recluster(self, *_) -> None:
        layer = self._image.value
        out = self._outputs.get(id(layer)) if layer is not None else None
        if self.running or out is None or out.prior is None or self._mode.value == MODES[2]:
            return
        if not out.labels_slot.alive(self._viewer):
            return
        try:
            result = cluster(out.prior, self.settings(), image=out.image)
        except (TypeError, ValueError) as exc:
            show_error(f"napari-dsp: {exc}")
            return
        self._show_labels(layer, out, result)
        self._status.value = "re-clustered from the existing prior" + \
            self._count_text(result)

    @staticmethod
    def _count_text(result: SegmentResult) -> str:
        count = result.metadata.get("clustering", {}).get("count")
        return "" if count is None else f"; {count} objects"

    def _on_layer_removed(self, event) -> None:
        removed = event.value
        out = self._outputs.pop(id(removed), None)
        if out is not None and removed is self._running_layer:
            self._outputs[id(removed)] = out  # keep until the run ends
            show_info("napari-dsp: the image layer being fitted was removed; cancelling")
            self.cancel()

