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

import dataclasses
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
#: Opacity of the live prior over the user's image (the image stays in sight).
PREVIEW_OPACITY = 0.5


def spatial_ndim(layer) -> int:
    """Axes of one plane of ``layer``: Y, X (and the colour axis of an RGB layer)."""
    return 3 if getattr(layer, "rgb", False) else 2


def _level_data(layer, level: Optional[int]):
    if not getattr(layer, "multiscale", False):
        return layer.data, None
    level = 0 if level is None else int(level)
    if not 0 <= level < len(layer.data):
        raise ValueError(
            f"layer '{layer.name}' has {len(layer.data)} levels; choose "
            f"a level from 0 to {len(layer.data) - 1} in the form"
        )
    return layer.data[level], level


def read_layer(layer, point, level: Optional[int], all_planes: bool, channel_axis=None):
    """The pixels of ``layer`` to segment, and for a stack in current-plane mode the
    index of the plane at the viewer's ``point`` (world coordinates) along the plane
    axes (every leading axis but ``channel_axis``), else None.

    In-memory data is copied (the user may edit the layer during the fit); lazy data
    (dask, zarr) is left lazy and read plane by plane by the fit. Raises ValueError for
    layers the fit cannot take, in the words of the form."""
    data, level = _level_data(layer, level)
    lead = plane_axes(layer, channel_axis)
    if all_planes and len(lead) > 2:
        raise ValueError(
            f"layer '{layer.name}' has {len(lead)} plane axes; segment all planes of at most "
            f"two (T and Z): choose the channel axis under 'channels', or 'current plane' "
            f"under 'planes'"
        )
    if isinstance(data, np.ndarray):
        data = data.copy()
    if not lead or all_planes:
        return data, None
    return data, plane_at(layer, point, level, lead, np.shape(data))


def plane_axes(layer, channel_axis) -> list:
    """The layer's plane axes: its leading axes but the channel axis."""
    return [a for a in range(layer.ndim - 2) if a != channel_axis]


def plane_at(layer, point, level, axes, shape) -> tuple:
    """The index along ``axes`` of the plane at the viewer's ``point``."""
    where = np.asarray(layer.world_to_data(point), float)
    factors = (
        np.ones(len(shape)) if level is None else np.asarray(layer.downsample_factors[level], float)
    )
    return tuple(int(np.clip(np.floor(where[a] / factors[a] + 0.5), 0, shape[a] - 1)) for a in axes)


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
    """What one run works on, captured on the main thread when Run is pressed.

    Results are handled in one layout: the plane axes (``lead``), Y, X, then the
    channels if any; :meth:`to_layer` puts the layer's channel axis back (a result
    without channels gets a single entry there, drawn across every channel by
    :meth:`where`)."""

    layer: Any  # the source Image layer
    settings: Settings
    lead: tuple  # shape of the plane axes (empty for a 2-D image)
    plane: Optional[tuple] = None  # current plane (or time point): its index on lead
    level: Optional[int] = None  # multiscale: the level read
    image: Any = None  # the 2-D pixels fitted (for re-clustering with refine)
    last_preview: float = 0.0  # monotonic time of the last preview shown
    channel_axis: Optional[int] = None  # the layer's channel axis (not RGB's colour)
    n_channels: int = 1
    notes: dict = field(default_factory=dict)  # how the axes were decided (metadata)

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

    def to_layer(self, arr, channels: bool):
        """A result in the layer's layout (see the class)."""
        c = self.channel_axis
        if c is None:
            return arr
        return np.moveaxis(arr, -1, c) if channels else np.expand_dims(arr, c)

    def from_layer(self, arr, channels: bool):
        """The inverse of :meth:`to_layer` (None if ``arr`` does not fit)."""
        c = self.channel_axis
        if c is None:
            return arr
        if np.ndim(arr) <= c or (not channels and np.shape(arr)[c] != 1):
            return None
        return np.moveaxis(arr, c, -1) if channels else np.take(arr, 0, axis=c)

    def where(self, channels: bool) -> dict:
        """The placement of an output layer: the source's; a result without channels
        stretched over the channel axis, so it shows whichever channel the slider is on."""
        where = placement(self.layer, self.level)
        c = self.channel_axis
        if c is not None and not channels and self.n_channels > 1:
            scale, translate = where["scale"].copy(), where["translate"].copy()
            translate[c] += (self.n_channels - 1) / 2 * scale[c]
            scale[c] *= self.n_channels
            where.update(scale=scale, translate=translate)
        return where


def prepare_run(
    layer,
    settings: Settings,
    point,
    *,
    level: int,
    all_planes: bool,
    scribbles=None,
    channel_axis: Optional[int] = None,
    notes: Optional[dict] = None,
):
    """Read ``layer`` (see :func:`read_layer`) and start the API's generator on it, on the
    path :func:`napari_dsp.stack.choose_path` gives (the one the command line takes for
    the same data): :func:`napari_dsp.generators.segment` for a plane,
    :func:`napari_dsp.generators.segment_stack` for a stack segmented whole
    (``volumetric`` with the layer's voxel size, or the source file's where napari placed
    the layer at scale 1; on a T x Z layer the time point the sliders show), or the same
    with ``out`` in a new temporary folder for a lazy (dask, zarr) stack in all-planes
    mode. ``channel_axis``: the layer's axis of channels (an RGB layer's colours are
    channels anyway). All validate at the call, so bad input raises TypeError/ValueError
    here, before any thread starts. Returns the :class:`Job` and the generator."""
    multiscale = getattr(layer, "multiscale", False)
    level = level if multiscale else None
    if layer.rgb:
        channel_axis = None
    if channel_axis is not None and not 0 <= channel_axis < layer.ndim - 2:
        raise ValueError(
            f"layer '{layer.name}' has no axis {channel_axis} before Y and X (its data "
            f"changed?); choose the channel axis again under 'channels'"
        )
    data, plane = read_layer(layer, point, level, all_planes, channel_axis)
    axes = plane_axes(layer, channel_axis)
    shape = tuple(np.shape(data))
    lead = tuple(shape[a] for a in axes)
    notes = dict(notes or {})
    n_channels = shape[channel_axis] if channel_axis is not None else 1
    job = Job(layer, settings, lead, plane, level, None, 0.0, channel_axis, n_channels, notes)
    # the channels of what is fitted, and where they are in it
    colour = -1 if layer.rgb else None
    image = None
    path = choose_path(data, settings, planes=bool(lead) and plane is None)
    if settings.volumetric and path != "image" and len(lead) == 2:
        # a T x Z layer: one volume, the time point the sliders show
        t_axis = axes[0]
        t = plane_at(layer, point, level, [t_axis], shape)[0]
        job.plane = (t,)
        notes["volume"] = f"time point {t + 1} of {shape[t_axis]} (axis {t_axis})"
        key = [slice(None)] * len(shape)
        key[t_axis] = t
        data = data[tuple(key)]
        axes = [a - (a > t_axis) for a in axes[1:]]
        if channel_axis is not None:
            channel_axis -= channel_axis > t_axis
    stack_channels = channel_axis if channel_axis is not None else colour
    if path == "out of core":
        out = zarr_output(layer)
        gen = _removing_empty(
            out.parent, segment_stack(data, out=out, settings=settings, channel_axis=stack_channels)
        )
    elif path == "stack":
        spacing = None
        if settings.volumetric:
            spacing = _volume_spacing(layer, level, job)
            notes["spacing"] = list(spacing)
        gen = _canonical(
            segment_stack(data, settings=settings, spacing=spacing, channel_axis=stack_channels),
            stack_channels,
        )
    else:
        image = np.asarray(data if plane is None else data[_key(shape, axes, plane)])
        if channel_axis is not None:  # (C, Y, X) of the layer -> (Y, X, C)
            image = np.moveaxis(image, sum(1 for a in range(channel_axis) if a not in axes), -1)
        strokes = None
        if settings.method == "kanezaki" and scribbles is not None:
            strokes = np.array(scribbles.data)  # a copy: the user may paint meanwhile
            if plane is not None and strokes.ndim == len(lead) + 2:
                strokes = strokes[plane]
        gen = segment(
            image,
            settings=settings,
            scribbles=strokes,
            channel_axis=-1 if channel_axis is not None else None,
        )
    job.image = image
    return job, gen


def _key(shape: tuple, axes: list, index: tuple) -> tuple:
    key = [slice(None)] * len(shape)
    for a, i in zip(axes, index):
        key[a] = i
    return tuple(key)


def _volume_spacing(layer, level, job: Job) -> tuple:
    """(z, y, x) voxel size of the volume fitted: the layer's scale at its Z, Y and X
    axes, or the source file's pixel size where napari placed the layer at scale 1."""
    from .axes import file_spacing

    y, x = layer.ndim - 2, layer.ndim - 1  # (napari's ndim leaves out RGB's colours)
    z = plane_axes(layer, job.channel_axis)[-1]
    from_file = file_spacing(layer, (z, y, x))
    if from_file is not None:
        job.notes["spacing_from"] = "the source file (napari placed the layer at scale 1)"
        return from_file
    scale = placement(layer, level)["scale"]
    return (float(scale[z]), float(scale[y]), float(scale[x]))


def _canonical(gen, channel_axis: Optional[int]):
    """``gen`` (a stack's segment generator), its result's prior with the channels last
    (the layout :class:`Job` handles)."""
    result = yield from gen
    prior = result.prior
    if prior is not None and channel_axis is not None and prior.prior.ndim > 0:
        moved = np.moveaxis(prior.prior, channel_axis, -1)
        result = dataclasses.replace(
            result, prior=dataclasses.replace(prior, prior=moved, channel_axis=-1)
        )
    return result


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
    was_opacity: float = 1.0
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
        opacity: Optional[float] = None,
        **kwargs,
    ) -> None:
        """Put ``data`` in the layer (made with ``add`` if needed). ``running`` marks a
        preview: the layer is named "... (running)" and the undo state is kept.
        ``opacity``: the layer's opacity (else left as it is)."""
        label = name + " (running)" if running else name
        where = where or {}
        if self.alive(viewer):
            if running and self.previous is None and not self.created:
                self.previous, self.was_visible = self.layer.data, self.layer.visible
                self.was_opacity = self.layer.opacity
                self.was_where = _where(self.layer)
            _place(self.layer, where)
            self.layer.data = data
            self.layer.name = label
            if "metadata" in kwargs:
                self.layer.metadata.update(kwargs["metadata"])
            if opacity is not None:
                self.layer.opacity = opacity
            self.layer.visible = visible
        else:
            kwargs.setdefault("metadata", {META_KEY: {"running": True}})
            if opacity is not None:
                kwargs["opacity"] = opacity
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
                self.layer.opacity = self.was_opacity
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
    job: Optional[Job] = None  # the run the kept result came from (its layout)
    prior_slot: Slot = field(default_factory=Slot)
    labels_slot: Slot = field(default_factory=Slot)
    spread_slot: Slot = field(default_factory=Slot)
    texture_slot: Slot = field(default_factory=Slot)

    def begin(self) -> None:
        for slot in (self.prior_slot, self.labels_slot, self.spread_slot, self.texture_slot):
            slot.commit()

    def _full(self, viewer, slot: Slot, part: np.ndarray, index, job: Job, dtype, channels=False):
        """``part`` (one plane, or everything when ``index`` is None) placed in an array
        of the source layer's shape (:meth:`Job.to_layer`; ``channels``: whether ``part``
        has them, last), keeping the other planes of an earlier result. Real numbers of
        planes not fitted are NaN: napari draws them transparent, so a prior shown over
        the image never blacks out the planes it does not cover."""
        if index is None:
            return job.to_layer(part, channels)
        shape = tuple(job.lead[: len(index)]) + part.shape
        earlier = job.from_layer(slot.layer.data, channels) if slot.alive(viewer) else None
        if earlier is not None and earlier.shape == shape:
            full = np.array(earlier, dtype=np.result_type(earlier, dtype))
        else:
            fill = np.nan if np.dtype(dtype).kind == "f" else 0
            full = np.full(shape, fill, dtype=dtype)
        full[index] = part
        return job.to_layer(full, channels)

    def preview(self, viewer, job: Job, p: FitProgress) -> None:
        """Show the running prior (or, while self-training, the running labels), half
        transparent over the image."""
        index, channels = job.index(p), job.channel_axis is not None
        if p.stage == "classes":
            self.labels_slot.show(
                viewer,
                viewer.add_labels,
                self._full(viewer, self.labels_slot, p.preview, index, job, np.int32),
                f"{job.name} labels",
                running=True,
                where=job.where(False),
            )
        else:
            self.prior_slot.show(
                viewer,
                viewer.add_image,
                self._full(viewer, self.prior_slot, p.preview, index, job, np.float32, channels),
                f"{job.name} prior",
                running=True,
                where=job.where(channels),
                opacity=PREVIEW_OPACITY,
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
        self.level, self.job = job.level, job
        try:  # the run's settings with the seed it used, for re-clustering
            self.settings = Settings(**result.metadata["settings"])
        except (KeyError, TypeError, ValueError):
            self.settings = job.settings
        channels = job.channel_axis is not None
        where = job.where(False)
        metadata = dict(result.metadata)
        if job.notes:
            metadata["napari"] = dict(job.notes)
        meta = {META_KEY: metadata}
        if result.prior is not None:
            self.prior_slot.show(
                viewer,
                viewer.add_image,
                self._full(
                    viewer, self.prior_slot, result.prior.prior, index, job, np.float32, channels
                ),
                f"{job.name} prior",
                visible=False,
                where=job.where(channels),
                opacity=1.0,
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
            derived = ((result.metadata.get("fit") or {}).get("derived") or {}).get("channels")
            if derived:
                # a modality's first channel (phase: the local contrast; a stained
                # section: the haematoxylin density), one grey layer
                data, rgb = texture[0], False
                name, what = f"{derived[0]} prior", f"prior of the {derived[0]} channel"
            else:
                data, rgb = np.moveaxis(texture[:3], 0, -1), True
                name = "texture prior"
                what = "prior of the texture channels, first three principal components as RGB"
            self.texture_slot.show(
                viewer,
                viewer.add_image,
                job.to_layer(data, False),
                f"{job.name} {name}",
                visible=False,
                where=where,
                rgb=rgb,
                metadata={META_KEY: {"what": what}},
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
        # the result is what the user looks at next (never a hidden layer)
        viewer.layers.selection.active = self.labels_slot.layer

    def relabel(self, viewer, layer, result: SegmentResult) -> None:
        """Replace the labels after re-clustering the kept prior."""
        job = self.job
        self.labels_slot.show(
            viewer,
            viewer.add_labels,
            result.labels if job is None else job.to_layer(result.labels, False),
            f"{layer.name} labels",
            where=placement(layer, self.level) if job is None else job.where(False),
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
