"""The settings form, generated from :data:`napari_dsp.settings.FIELDS`.

Owns one control per setting (labels, tooltips, bounds, steps and defaults all come from
``FIELDS`` and ``Settings()``), the "advanced settings" fold, the rule that hides rows
which do not apply (``Field.applies``), and reading the form back as a validated
:class:`~napari_dsp.Settings`. Widget-only rows (layer pickers, the planes choice) are
inserted by the dock widget; the form leaves them alone.

Controls by kind: bool -> CheckBox (the label is its text), choices -> ComboBox (showing
``choice_labels``), int -> SpinBox, float -> FloatSpinBox (``step``), ``Optional[int]``
-> :class:`OptionalInt` (a spin box and a checkbox reading ``none_text``), ``device``
-> ComboBox of the devices present here.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Optional

from magicgui.widgets import CheckBox, ComboBox, Container, FloatSpinBox, SpinBox
from magicgui.widgets.bases import ValuedContainerWidget
from qtpy.QtCore import QEvent, QObject

from ..settings import APPLIES, FIELDS, Field, Settings

#: Name of the checkbox that unfolds the advanced settings.
ADVANCED = "show_advanced"


def device_choices() -> list[tuple[str, str]]:
    """(label, value) pairs of the devices present here (asked once per form: naming
    a GPU initialises CUDA, not something to redo at every layer change)."""
    from ..core.plan import device_choices as present

    return present()


class OptionalInt(ValuedContainerWidget):
    """An ``Optional[int]`` setting: a spin box and, next to it, a checkbox whose text
    says what None means ("automatic", "random"). Checked: the value is None and the
    spin box is disabled."""

    def __init__(
        self,
        value: Optional[int] = None,
        *,
        none_text: str,
        min: int = 0,
        max: int = 2**31 - 1,
        **kwargs: Any,
    ):
        self._spin = SpinBox(
            name="number", value=min, min=min, max=max, tooltip=kwargs.get("tooltip")
        )
        self._none = CheckBox(
            name="none", text=none_text, value=True, tooltip=kwargs.get("tooltip")
        )
        super().__init__(
            widgets=[self._spin, self._none], layout="horizontal", labels=False, **kwargs
        )
        self.margins = (0, 0, 0, 0)
        self._spin.changed.connect(self._emit)
        self._none.changed.connect(self._emit)
        self.set_value(value)

    def _emit(self, *_) -> None:
        self._spin.enabled = not self._none.value
        self.changed.emit(self.value)

    def get_value(self) -> Optional[int]:
        return None if self._none.value else int(self._spin.value)

    def set_value(self, value: Optional[int]) -> None:
        with self.changed.blocked():
            if value is not None:
                self._spin.value = int(value)
            self._none.value = value is None
        self._emit()

    @property
    def none_text(self) -> str:
        return self._none.text


class _Restyled(QObject):
    """Calls ``callback`` when the watched widget is shown or restyled."""

    EVENTS = (QEvent.Type.Show, QEvent.Type.StyleChange, QEvent.Type.FontChange)

    def __init__(self, watched, callback):
        super().__init__(watched)
        self._callback = callback
        watched.installEventFilter(self)

    def eventFilter(self, obj, event) -> bool:  # noqa: N802 (Qt's name)
        if event.type() in self.EVENTS:
            self._callback()
        return False


def _decimals(field: Field) -> int:
    """Decimals a float control needs to show its minimum and its step."""
    need = 2
    for v in (field.minimum, field.step):
        if v is not None and 0 < abs(v) < 1:
            need = max(need, math.ceil(-math.log10(abs(v)) - 1e-9))
    return need


def make_control(field: Field, default: Any, annotation: str):
    """The control of one setting, built from its :class:`~napari_dsp.settings.Field`."""
    common = dict(name=field.name, label=field.label or field.name, tooltip=field.help)
    bounds = {k: v for k, v in (("min", field.minimum), ("max", field.maximum)) if v is not None}
    if field.name == "device":
        return ComboBox(choices=device_choices(), value=default, **common)
    if field.choices is not None:
        labels = field.choice_labels or tuple(str(c) for c in field.choices)
        return ComboBox(choices=list(zip(labels, field.choices)), value=default, **common)
    if annotation == "bool":
        return CheckBox(value=default, text=common.pop("label"), **common)
    if field.none_text is not None:
        return OptionalInt(
            default, none_text=field.none_text, **{k: int(v) for k, v in bounds.items()}, **common
        )
    if annotation == "float":
        control = FloatSpinBox(value=default, step=field.step or 0.1, **bounds, **common)
        control.native.setDecimals(_decimals(field))
        control.value = default  # again, now that the decimals can show it
        return control
    if annotation == "int":
        return SpinBox(
            value=default,
            step=int(field.step or 1),
            **{k: int(v) for k, v in bounds.items()},
            **common,
        )
    raise TypeError(f"no form control for setting {field.name!r} ({annotation})")


class SettingsForm(Container):
    """Every setting of :class:`~napari_dsp.Settings` as a form row.

    ``form[name].value`` reads or sets one control; :meth:`values` gives them all,
    :meth:`settings` the validated settings, :meth:`set_values` sets several at once.
    ``context`` holds the values the ``applies`` rules read besides the settings (the
    dock widget sets ``stack``); rows whose rule is false are hidden, and their settings
    read as the defaults. Advanced rows show only while the ``show_advanced`` checkbox
    is ticked.
    """

    def __init__(self, defaults: Optional[Settings] = None, **kwargs: Any):
        super().__init__(labels=True, **kwargs)
        self.margins = (0, 0, 0, 0)
        self.defaults = defaults if defaults is not None else Settings()
        self.context: dict = {}
        types = {f.name: str(f.type) for f in dataclasses.fields(Settings)}
        basic, advanced = [], []
        for name, field in FIELDS.items():
            annotation = types[name].replace("Optional[", "").rstrip("]")
            control = make_control(field, getattr(self.defaults, name), annotation)
            (advanced if field.advanced else basic).append(control)
        self.extend(basic)
        self.append(
            CheckBox(
                name=ADVANCED,
                text="advanced settings",
                value=False,
                tooltip="Show the settings most runs leave alone: working "
                "size, precision, threads, learning rates, and the "
                "self-training details.",
            )
        )
        self.extend(advanced)
        self.changed.connect(self.refresh)
        self.refresh()
        self._restyled = _Restyled(self.native, self.fit_label_widths)

    def fit_label_widths(self) -> None:
        """One label column, as wide as the widest label in the font napari's style
        sheet gives it (magicgui measures in the application font, narrower, which
        pushes the control of the longest label out of line)."""
        rows = [r for r in (w._labeled_widget() for w in self._list) if r is not None]
        if not rows:
            return
        for r in rows:
            r._label_widget.native.ensurePolished()
        width = max(r._label_widget.native.sizeHint().width() for r in rows)
        for r in rows:
            r.label_width = width

    # -- reading and writing ------------------------------------------------------------
    def values(self) -> dict:
        """The raw value of every setting's control, hidden rows included."""
        return {name: self[name].value for name in FIELDS}

    def applies(self, name: str, values: Optional[dict] = None) -> bool:
        """Whether setting ``name`` applies with the current values and context."""
        current = {**(self.values() if values is None else values), **self.context}
        return APPLIES[FIELDS[name].applies](current)

    def settings(self) -> Settings:
        """The form as :class:`~napari_dsp.Settings`: settings that do not apply take
        their default. Raises TypeError/ValueError (with the settings' own message)."""
        values = self.values()
        chosen = {
            name: (value if self.applies(name, values) else getattr(self.defaults, name))
            for name, value in values.items()
        }
        return Settings(**chosen)

    def set_values(self, **values: Any) -> None:
        """Set several settings' controls; unknown names raise TypeError. Rows are
        re-evaluated once, at the end."""
        unknown = set(values) - set(FIELDS)
        if unknown:
            raise TypeError(f"unknown setting(s) {sorted(unknown)}; the form has {list(FIELDS)}")
        for name, value in values.items():
            self[name].value = value

    # -- which rows show ----------------------------------------------------------------
    def set_context(self, **context: Any) -> None:
        """Set values the ``applies`` rules read besides the settings (``stack``)."""
        self.context.update(context)
        self.refresh()

    @property
    def advanced(self) -> bool:
        """Whether the advanced settings are unfolded."""
        return bool(self[ADVANCED].value)

    @advanced.setter
    def advanced(self, on: bool) -> None:
        self[ADVANCED].value = bool(on)

    def shown(self, name: str) -> bool:
        """Whether the row ``name`` (a setting or an inserted row) is shown (or will be,
        once the form is)."""
        return self[name].native.isVisibleTo(self.native)

    def refresh(self, *_: Any) -> None:
        """Show the rows that apply (advanced ones only while unfolded)."""
        values = self.values()
        for name, field in FIELDS.items():
            visible = self.applies(name, values) and (not field.advanced or self.advanced)
            if self.shown(name) != visible:
                self[name].visible = visible


# -- the dock widget's own rows ---------------------------------------------------------
#: The planes choice for stacks and time-lapses.
PLANES = ("current plane", "all planes")


def add_widget_rows(form: SettingsForm) -> None:
    """Insert the dock widget's rows that are not settings: the image layer, the
    multiscale level and the planes choice on top, the scribbles layer after the
    self-training rows, the spread checkbox before the advanced fold."""
    from magicgui.widgets import create_widget
    from napari.layers import Labels

    image = create_widget(
        annotation="napari.layers.Image",
        name="image",
        label="image",
        options={"tooltip": "The Image layer to segment."},
    )
    level = SpinBox(
        name="level",
        value=0,
        min=0,
        max=0,
        label="level",
        tooltip="Multiscale layers: the resolution level to segment (0 = "
        "finest); the result is placed at that level's pixel size.",
    )
    from .axes import NO_CHANNELS, channel_choices

    channels = ComboBox(
        name="channel_axis",
        # a callable: napari resets a dock widget's choices when its layers change
        choices=lambda _: channel_choices(_layer_of(form)),
        value=NO_CHANNELS,
        label="channels",
        tooltip="Which axis of the layer holds its channels (fitted together, not "
        "segmented as planes). Set from the layer's axis labels, the file it was "
        "opened from, or an axis of 2-4 entries that differ wildly; 'none' takes "
        "every axis before Y and X as planes (Z, T).",
    )
    planes = ComboBox(
        name="planes",
        choices=PLANES,
        value=PLANES[0],
        label="planes",
        tooltip="Stacks and time-lapses: segment the plane the sliders "
        "show, or all planes (classes shared across planes).",
    )
    scribbles = create_widget(
        annotation=Optional[Labels],
        name="scribbles",
        label="scribbles",
        options={
            "tooltip": "Optional Labels layer of strokes (0 = "
            "unlabelled); painted classes keep their "
            "ids."
        },
    )
    spread = CheckBox(
        name="show_spread",
        value=False,
        text="add uncertainty (ensemble spread) layer",
        tooltip="Also add the per-pixel standard deviation across the "
        "ensemble (high where the fits disagree), hidden.",
    )
    for i, row in enumerate((image, level, channels, planes)):
        form.insert(i, row)
    form.insert(form.index("min_labels") + 1, scribbles)
    form.insert(form.index(ADVANCED), spread)


def _layer_of(form: SettingsForm):
    """The form's image layer (None while the rows are being inserted)."""
    try:
        return form["image"].value
    except AttributeError:
        return None


def update_widget_rows(form: SettingsForm, new_layer: bool) -> str:
    """Show the level row for a multiscale layer (for a ``new_layer``, preset to the
    finest level whose plane has at most 4096 x 4096 pixels), the channels row for a
    layer with axes before Y and X (for a ``new_layer``, preset from its axis labels,
    its file or its pixels: see :mod:`.axes`), the planes row when plane axes remain,
    the scribbles row for self-training; tell the form whether a stack is segmented
    whole (the ``stack`` context of the ``applies`` rules). Returns a note for the
    user when the channel axis was guessed from the pixels, else ``""``."""
    from .axes import NO_CHANNELS, describe_axis, guess_channel, lead_ndim

    layer = form["image"].value
    note = ""
    multiscale = layer is not None and getattr(layer, "multiscale", False)
    if multiscale and new_layer:
        spatial = 3 if layer.rgb else 2
        shapes = [tuple(d.shape) for d in layer.data]
        form["level"].max = len(shapes) - 1
        fits = [
            i
            for i, shp in enumerate(shapes)
            if math.prod(shp[len(shp) - spatial :][:2]) <= 4096 * 4096
        ]
        form["level"].value = fits[0] if fits else len(shapes) - 1
    form["level"].visible = multiscale
    channels = form["channel_axis"]
    if new_layer:
        with channels.changed.blocked():
            channels.reset_choices()
            guess = guess_channel(layer) if layer is not None else None
            channels.value = NO_CHANNELS if guess is None or guess.axis is None else guess.axis
        if guess is not None and guess.axis is not None and "differ" in guess.why:
            note = (  # an axis guessed from the pixels is said, never silently taken
                f"{describe_axis(layer, guess.axis)} is taken as channels: {guess.why}; "
                f"choose 'none' under 'channels' to segment its entries as planes"
            )
    lead = 0 if layer is None else lead_ndim(layer)
    channels.visible = layer is not None and not layer.rgb and lead > 0
    chosen = channels.value != NO_CHANNELS
    stack = layer is not None and lead - chosen > 0
    form["planes"].visible = stack
    form["scribbles"].visible = form["method"].value == "kanezaki"
    form.set_context(stack=stack and form["planes"].value == PLANES[1])
    return note
