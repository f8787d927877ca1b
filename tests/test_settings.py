import dataclasses

import pytest

from napari_dsp import FIELDS, Settings


def test_defaults_are_the_research_defaults():
    s = Settings()
    assert (s.n_iter, s.n_runs, s.learning_rate, s.n_classes) == (50, 11, 0.01, 2)
    assert s.window == 3  # the one documented departure (research: 7), see README
    assert s.seed is None and s.device == "auto" and not s.invert


def test_every_setting_is_described():
    assert set(FIELDS) == {f.name for f in dataclasses.fields(Settings)}


@pytest.mark.parametrize("change, match", [
    (dict(n_iter=0), "n_iter must be at least 1"),
    (dict(n_runs=1000), "n_runs must be at most 64"),
    (dict(window=4), "window must be odd"),
    (dict(n_classes=1), "n_classes must be at least 2"),
    (dict(device="gpu"), "device must be one of 'auto', 'cpu', 'cuda', 'mps'"),
    (dict(precision="fp8"), "precision must be one of"),
    (dict(invert=True, n_classes=3), "invert only applies"),
    (dict(seed=-1), "seed must be at least 0"),
])
def test_bad_values_raise_value_error(change, match):
    with pytest.raises(ValueError, match=match):
        Settings(**change)


@pytest.mark.parametrize("change, match", [
    (dict(n_iter=2.5), "n_iter must be an integer"),
    (dict(invert="yes"), "invert must be True or False"),
    (dict(learning_rate="fast"), "learning_rate must be a number"),
])
def test_bad_types_raise_type_error(change, match):
    with pytest.raises(TypeError, match=match):
        Settings(**change)


def test_replace_validates_and_rejects_unknown_names():
    s = Settings().replace(n_iter=10)
    assert s.n_iter == 10 and Settings().n_iter == 50
    with pytest.raises(TypeError, match="unknown setting"):
        Settings().replace(iterations=10)
    with pytest.raises(ValueError, match="window must be odd"):
        Settings().replace(window=8)
