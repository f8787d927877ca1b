"""Where a run's pixels come from and where its results go in the viewer.

Owns: reading an Image layer for a run (:func:`read_layer`: the multiscale level, the
plane the sliders show, a copy of in-memory data taken on the main thread), the world
placement of output layers (:func:`placement`), and the output layers of one source
layer (:class:`Outputs`): the prior, the labels, the spread and (texture features) the
texture channels' prior as RGB, their live previews
while a run goes, putting them in place when it ends, and the rollback of a run that did
not finish.

Layer conventions (those of cellpose-napari for auxiliary outputs): the user's image is
never changed or hidden; the labels layer is added visible, on top of its prior and
spread; the prior is shown while it is being fitted (the live preview, named
"<name> prior (running)") and hidden when the run ends; the spread and texture layers
are added hidden. A layer of an earlier run is updated in place rather than stacked again.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..core.progress import FitProgress
from ..generators import segment, segment_stack
from ..results import PriorResult, SegmentResult
from ..settings import Settings
from ..stack import choose_path

#: Key under which results are stored in an output layer's ``metadata``.
META_KEY = "napari_dsp"
#: Seconds between two updates of a live preview layer (the GUI never drowns).
PREVIEW_INTERVAL = 0.4


def spatial_ndim(layer) -> int:
    """Axes of one plane of ``layer``: Y, X (and the colour axis of an RGB layer)."""
    return 3 if getattr(layer, "rgb", False) else 2


def read_layer(layer, point, level: Optional[int], all_planes: bool):
    """The pixels of ``layer`` to segment, and for a stack in current-plane mode the
    index of the plane at the viewer's ``point`` (world coordinates), else None.

    In-memory data is copied (the user may edit the layer during the fit); lazy data
    (dask, zarr) is left lazy and read plane by plane by the fit. Raises ValueError for
    layers the fit cannot take."""
    data = layer.data
    if getattr(layer, "multiscale", False):
        level = 0 if level is None else int(level)
        if not 0 <= level < len(layer.data):
            raise ValueError(
                f"layer '{layer.name}' has {len(layer.data)} levels; choose "
                f"a level from 0 to {len(layer.data) - 1}"
            )
        data = layer.data[level]
    else:
        level = None
    if isinstance(data, np.ndarray):
        data = data.copy()
    spatial = spatial_ndim(layer)
    lead = data.ndim - spatial
    if lead > 2:
        raise ValueError(
            f"layer '{layer.name}' has {data.ndim} dimensions; stacks up to "
            f"T x Z x Y x X are supported; add a sub-stack as its own layer, "
            f"e.g. viewer.add_image(viewer.layers['{layer.name}'].data[0])"
        )
    if lead == 0 or all_planes:
        return data, None
    where = np.asarray(layer.world_to_data(point), float)
    factors = (
        np.ones(lead)
        if level is None
        else np.asarray(layer.downsample_factors[level], float)[:lead]
    )
    plane = tuple(
        int(np.clip(np.floor(where[i] / factors[i] + 0.5), 0, data.shape[i] - 1))
        for i in range(lead)
    )
    return data, plane


def placement(layer, level: Optional[int] = None) -> dict:
    """The world placement of ``layer`` as keyword arguments for a new layer; for a
    result computed on ``level`` of a multiscale layer, that level's pixel size."""
    scale = np.array(layer.scale, dtype=float)
    if level is not None and getattr(layer, "multiscale", False):
        scale = scale * np.asarray(layer.downsample_factors[level], float)[: len(scale)]
    kwargs = dict(_where(layer), scale=scale)
    units = getattr(layer, "units", None)
    if units is not None:
        kwargs["units"] = units
    return kwargs


@dataclass
class Job:
    """What one run works on, captured on the main thread when Run is pressed."""

    layer: Any  # the source Image layer
    settings: Settings
    lead: tuple  # shape of the plane axes (empty for a 2-D layer)
    plane: Optional[tuple] = None  # current-plane mode: the plane's index
    level: Optional[int] = None  # multiscale: the level read
    image: Any = None  # the 2-D pixels fitted (for re-clustering with refine)
    last_preview: float = 0.0  # monotonic time of the last preview shown

    @property
    def name(self) -> str:
        return self.layer.name

    def index(self, p: Optional[FitProgress] = None) -> Optional[tuple]:
        """Where a plane's result goes in the layer's array (None: it is the array)."""
        if self.plane is not None:
            return self.plane
        if p is not None and p.n_planes > 1 and self.lead:
            return tuple(int(i) for i in np.unravel_index(p.plane, self.lead))
        return None


def prepare_run(layer, settings: Settings, point, *, level: int, all_planes: bool, scribbles=None):
    """Read ``layer`` (see :func:`read_layer`) and start the API's generator on it, on the
    path :func:`napari_dsp.stack.choose_path` gives (the one the command line takes for
    the same data): :func:`napari_dsp.generators.segment` for a plane,
    :func:`napari_dsp.generators.segment_stack` for a stack segmented whole
    (``volumetric`` with the layer's voxel size), or the same with ``out`` in a new
    temporary folder for a lazy (dask, zarr) stack in all-planes mode. All validate at
    the call, so bad input raises TypeError/ValueError here, before any thread starts.
    Returns the :class:`Job` and the generator."""
    multiscale = getattr(layer, "multiscale", False)
    level = level if multiscale else None
    data, plane = read_layer(layer, point, level, all_planes)
    lead = tuple(data.shape[: data.ndim - spatial_ndim(layer)])
    image = None
    path = choose_path(data, settings, planes=bool(lead) and plane is None)
    if path == "out of core":
        out = zarr_output(layer)
        gen = _removing_empty(
            out.parent,
            segment_stack(data, out=out, settings=settings, channel_axis=-1 if layer.rgb else None),
        )
    elif path == "stack":
        spacing = tuple(placement(layer, level)["scale"][-3:]) if settings.volumetric else None
        gen = segment_stack(
            data, settings=settings, spacing=spacing, channel_axis=-1 if layer.rgb else None
        )
    else:
        image = np.asarray(data if plane is None else data[plane])
        strokes = None
        if settings.method == "kanezaki" and scribbles is not None:
            strokes = np.array(scribbles.data)  # a copy: the user may paint meanwhile
            if plane is not None and strokes.ndim == len(lead) + 2:
                strokes = strokes[plane]
        gen = segment(image, settings=settings, scribbles=strokes)
    return Job(layer, settings, lead, plane, level, image), gen


def _removing_empty(folder: Path, gen):
    """``gen``, and then ``folder`` removed if it is empty (a cancelled or failed run
    leaves nothing behind)."""
    import contextlib

    try:
        return (yield from gen)
    finally:
        with contextlib.suppress(OSError):
            folder.rmdir()  # only succeeds when empty


def zarr_output(layer) -> Path:
    """A new folder in the system's temporary folder for a lazy stack's labels (the
    status line and the labels layer's metadata say where)."""
    import tempfile

    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", layer.name).strip("._") or "stack"
    return Path(tempfile.mkdtemp(prefix="napari-dsp-")) / f"{safe[:80]}_labels.zarr"


@dataclass
class Slot:
    """One output layer, with what it takes to undo an unfinished run: a layer this run
    created is removed, a layer of an earlier run gets its data and visibility back."""

    layer: Any = None
    previous: Any = None  # data before this run's previews
    was_visible: bool = True
    was_where: dict = field(default_factory=dict)  # placement before this run
    created: bool = False  # made by this run

    def alive(self, viewer) -> bool:
        return self.layer is not None and self.layer in viewer.layers

    def show(
        self,
        viewer,
        add: Callable,
        data,
        name: str,
        *,
        running: bool = False,
        visible: bool = True,
        where: Optional[dict] = None,
        **kwargs,
    ) -> None:
        """Put ``data`` in the layer (made with ``add`` if needed). ``running`` marks a
        preview: the layer is named "... (running)" and the undo state is kept."""
        label = name + " (running)" if running else name
        where = where or {}
        if self.alive(viewer):
            if running and self.previous is None and not self.created:
                self.previous, self.was_visible = self.layer.data, self.layer.visible
                self.was_where = _where(self.layer)
            _place(self.layer, where)
            self.layer.data = data
            self.layer.name = label
            if "metadata" in kwargs:
                self.layer.metadata.update(kwargs["metadata"])
            self.layer.visible = visible
        else:
            kwargs.setdefault("metadata", {META_KEY: {"running": True}})
            self.layer = add(data, name=label, visible=visible, **where, **kwargs)
            self.created = running
        if not running:
            self.commit()

    def commit(self) -> None:
        self.previous, self.created = None, False

    def remove(self, viewer) -> None:
        """Take this slot's layer out of the viewer."""
        if self.alive(viewer):
            viewer.layers.remove(self.layer)
        self.layer = None

    def rollback(self, viewer, name: str) -> None:
        if self.alive(viewer):
            if self.created:
                self.remove(viewer)
            elif self.previous is not None:
                _place(self.layer, self.was_where)
                self.layer.data = self.previous
                self.layer.name = name
                self.layer.visible = self.was_visible
        self.commit()


def _where(layer) -> dict:
    return {
        "scale": np.array(layer.scale),
        "translate": np.array(layer.translate),
        "rotate": np.array(layer.rotate),
        "shear": np.array(layer.shear),
        "affine": np.array(layer.affine.affine_matrix),
    }


def _place(layer, where: dict) -> None:
    """Move an existing output layer to ``where`` (another level, a moved source)."""
    for key in ("scale", "translate", "rotate", "shear"):
        if key in where and not np.allclose(np.asarray(getattr(layer, key)), where[key]):
            setattr(layer, key, where[key])
    if "affine" in where and not np.allclose(layer.affine.affine_matrix, where["affine"]):
        layer.affine = where["affine"]


@dataclass
class Outputs:
    """What one source layer got from a widget: its output layers, and the 2-D prior
    that lets classes, invert, ... be changed without a refit."""

    prior: Optional[PriorResult] = None
    image: Optional[np.ndarray] = None  # the pixels the prior was fitted to (refine)
    level: Optional[int] = None  # the multiscale level the result was computed on
    settings: Optional[Settings] = None  # the settings of the run (seed resolved)
    prior_slot: Slot = field(default_factory=Slot)
    labels_slot: Slot = field(default_factory=Slot)
    spread_slot: Slot = field(default_factory=Slot)
    texture_slot: Slot = field(default_factory=Slot)

    def begin(self) -> None:
        for slot in (self.prior_slot, self.labels_slot, self.spread_slot, self.texture_slot):
            slot.commit()

    def _full(self, viewer, slot: Slot, part: np.ndarray, index, job: Job, dtype):
        """``part`` (one plane, or everything when ``index`` is None) placed in an array
        of the source layer's shape, keeping the other planes of an earlier result."""
        if index is None:
            return part
        shape = tuple(job.lead) + part.shape
        if slot.alive(viewer) and slot.layer.data.shape == shape:
            full = np.array(slot.layer.data, dtype=np.result_type(slot.layer.data, dtype))
        else:
            full = np.zeros(shape, dtype=dtype)
        full[index] = part
        return full

    def preview(self, viewer, job: Job, p: FitProgress) -> None:
        """Show the running prior (or, while self-training, the running labels)."""
        index, where = job.index(p), placement(job.layer, job.level)
        if p.stage == "classes":
            self.labels_slot.show(
                viewer,
                viewer.add_labels,
                self._full(viewer, self.labels_slot, p.preview, index, job, np.int32),
                f"{job.name} labels",
                running=True,
                where=where,
            )
        else:
            self.prior_slot.show(
                viewer,
                viewer.add_image,
                self._full(viewer, self.prior_slot, p.preview, index, job, np.float32),
                f"{job.name} prior",
                running=True,
                where=where,
                rgb=job.layer.rgb,
            )

    def publish(self, viewer, job: Job, result: SegmentResult, spread: bool) -> None:
        """Put a finished run's layers in place: prior and spread hidden, labels shown
        on top of them; keep what re-clustering needs."""
        index = job.index()
        # Re-clustering without a refit works on a 2-D result only.
        two_d = index is None and result.labels.ndim == 2
        self.prior = result.prior if two_d else None
        self.image = job.image if self.prior is not None else None
        self.level = job.level
        try:  # the run's settings with the seed it used, for re-clustering
            self.settings = Settings(**result.metadata["settings"])
        except (KeyError, TypeError, ValueError):
            self.settings = job.settings
        where, meta = placement(job.layer, job.level), {META_KEY: result.metadata}
        if result.prior is not None:
            self.prior_slot.show(
                viewer,
                viewer.add_image,
                self._full(viewer, self.prior_slot, result.prior.prior, index, job, np.float32),
                f"{job.name} prior",
                visible=False,
                where=where,
                metadata=meta,
                rgb=job.layer.rgb,
            )
        if spread and result.prior is not None:
            self.spread_slot.show(
                viewer,
                viewer.add_image,
                self._full(viewer, self.spread_slot, result.prior.spread, index, job, np.float32),
                f"{job.name} spread",
                visible=False,
                where=where,
                colormap="magma",
                metadata={
                    META_KEY: {
                        "what": "per-pixel standard deviation across the "
                        "ensemble (mean over channels)"
                    }
                },
            )
        texture = result.prior.texture if result.prior is not None else None
        if texture is None or index is not None:
            self.texture_slot.remove(viewer)  # an earlier run's texture layer: now stale
        if texture is not None and index is None:
            self.texture_slot.show(
                viewer,
                viewer.add_image,
                np.moveaxis(texture[:3], 0, -1),
                f"{job.name} texture prior",
                visible=False,
                where=where,
                rgb=True,
                metadata={
                    META_KEY: {
                        "what": "prior of the texture channels, first "
                        "three principal components as RGB"
                    }
                },
            )
        self.labels_slot.show(
            viewer,
            viewer.add_labels,
            self._full(viewer, self.labels_slot, result.labels, index, job, result.labels.dtype),
            f"{job.name} labels",
            where=where,
            metadata=meta,
        )
        self._labels_on_top(viewer)

    def relabel(self, viewer, layer, result: SegmentResult) -> None:
        """Replace the labels after re-clustering the kept prior."""
        self.labels_slot.show(
            viewer,
            viewer.add_labels,
            result.labels,
            f"{layer.name} labels",
            where=placement(layer, self.level),
            metadata={META_KEY: result.metadata},
        )

    def rollback(self, viewer, name: str) -> None:
        """Undo what a run that did not finish put in the viewer."""
        self.labels_slot.rollback(viewer, f"{name} labels")
        self.prior_slot.rollback(viewer, f"{name} prior")
        self.spread_slot.rollback(viewer, f"{name} spread")
        self.texture_slot.rollback(viewer, f"{name} texture prior")

    def _labels_on_top(self, viewer) -> None:
        if not self.labels_slot.alive(viewer):
            return
        layers = viewer.layers
        below = [
            layers.index(s.layer)
            for s in (self.prior_slot, self.spread_slot, self.texture_slot)
            if s.alive(viewer)
        ]
        at = layers.index(self.labels_slot.layer)
        if below and at < max(below):
            layers.move(at, max(below) + 1)
