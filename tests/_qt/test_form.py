"""The settings form on its own (no viewer): generated from FIELDS, read back as Settings."""

import dataclasses

import pytest
from magicgui.widgets import CheckBox, ComboBox, FloatSpinBox, SpinBox

from napari_dsp._qt.form import OptionalInt, SettingsForm
from napari_dsp.settings import FIELDS, Settings

KINDS = {"bool": CheckBox, "int": SpinBox, "float": FloatSpinBox, "Optional[int]": OptionalInt}


@pytest.fixture
def form(qtbot):
    form = SettingsForm()
    qtbot.addWidget(form.native)
    return form


@pytest.fixture
def fake_gpu(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=None: f"Fake GPU {i}")


def test_every_setting_has_a_control_built_from_its_field(form):
    defaults = Settings()
    types = {f.name: str(f.type) for f in dataclasses.fields(Settings)}
    for name, field in FIELDS.items():
        control = form[name]
        assert control.tooltip == field.help
        assert control.value == getattr(defaults, name), name
        if name == "device" or field.choices is not None:
            assert isinstance(control, ComboBox), name
        else:
            assert isinstance(control, KINDS[types[name]]), name
        if isinstance(control, CheckBox):
            assert control.text == field.label
        else:
            assert control.label == field.label
        if isinstance(control, (SpinBox, FloatSpinBox)):
            assert control.min == pytest.approx(field.minimum)
            assert control.max == pytest.approx(field.maximum)
        if isinstance(control, FloatSpinBox) and field.step is not None:
            assert control.step == pytest.approx(field.step)
        if isinstance(control, OptionalInt):
            assert control.none_text == field.none_text
    method = form["method"]
    assert [method.native.itemText(i) for i in range(method.native.count())] == list(
        FIELDS["method"].choice_labels
    )
    assert method.choices == FIELDS["method"].choices


def test_reading_the_untouched_form_gives_the_defaults(form):
    assert form.settings() == Settings()


def test_values_round_trip_and_optional_settings_use_none_not_sentinels(form):
    form.set_values(
        n_iter=7,
        n_members=3,
        seed=42,
        learning_rate=0.005,
        working_size=256,
        precision="bfloat16",
        method="kanezaki",
        min_labels=4,
    )
    s = form.settings()
    assert (s.n_iter, s.n_members, s.seed, s.working_size) == (7, 3, 42, 256)
    assert s.learning_rate == pytest.approx(0.005) and s.precision == "bfloat16"
    assert s.method == "kanezaki" and s.min_labels == 4
    assert s.n_threads is None  # "automatic" left ticked
    form.set_values(seed=None, working_size=0)
    assert form.settings().seed is None and form.settings().working_size == 0
    assert form["seed"].value is None


def test_rows_that_do_not_apply_are_hidden_and_read_as_defaults(form):
    assert form.shown("n_classes") and form["n_classes"].value == 2
    for name in ("invert", "instances", "min_size"):
        assert form.shown(name)
    assert not form.shown("volumetric")  # only for a stack segmented whole
    assert not form.shown("min_labels")  # self-training only
    form.set_values(invert=True, instances=True)
    form.set_values(n_classes=3)
    for name in ("invert", "instances", "min_size"):
        assert not form.shown(name)
    s = form.settings()  # invert/instances would be refused with 3 classes
    assert s.n_classes == 3 and not s.invert and not s.instances
    form.set_values(method="kanezaki")
    assert not form.shown("n_classes") and form.shown("min_labels")
    assert form.settings().n_classes == 2  # the default: classes do not apply
    form.set_context(stack=True)
    assert not form.shown("volumetric")  # stacks run with K-means only
    form.set_values(method="kmeans")
    assert form.shown("volumetric")


def test_advanced_settings_are_folded(form):
    advanced = [n for n, f in FIELDS.items() if f.advanced and f.applies == "always"]
    assert advanced and not any(form.shown(n) for n in advanced)
    form.advanced = True
    assert all(form.shown(n) for n in advanced)
    assert not form.shown("max_iter")  # advanced, but self-training only
    form.set_values(method="kanezaki")
    assert form.shown("max_iter")


def test_bad_values_raise_the_settings_message(form):
    form.set_values(window=4)
    with pytest.raises(ValueError, match="window must be odd"):
        form.settings()
    with pytest.raises(TypeError, match="unknown setting"):
        form.set_values(classes=3)


def test_device_list_offers_each_cuda_device_by_index(fake_gpu, qtbot):
    form = SettingsForm()
    qtbot.addWidget(form.native)
    device = form["device"]
    labels = [device.native.itemText(i) for i in range(device.native.count())]
    assert labels[:4] == ["auto", "CPU", "CUDA 0: Fake GPU 0", "CUDA 1: Fake GPU 1"]
    device.value = "cuda:1"
    assert form.settings().device == "cuda:1"


def test_optional_control_disables_its_number_while_none(form):
    seed = form["seed"]
    seed.value = 5
    assert seed.value == 5
    seed.value = None
    assert seed.value is None
    events = []
    seed.changed.connect(events.append)
    seed.value = 9
    assert events[-1] == 9
