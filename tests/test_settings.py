import dataclasses

import pytest

from napari_dsp import Settings
from napari_dsp.settings import FIELDS, make_settings


def test_defaults_are_the_research_defaults_but_the_documented_departures():
    s = Settings()
    assert (s.n_iter, s.learning_rate, s.n_classes) == (50, 0.01, 2)
    # documented departures (see README): window 3 (research: 7); 6 members (research:
    # 11, benchmarks/study_speed.py); no early stop, float32 as the research
    assert (s.window, s.n_members, s.settle, s.precision) == (3, 6, 0.0, "float32")
    assert s.seed is None and s.device == "auto" and not s.invert
    r = Settings.research()
    assert (r.n_iter, r.n_members, r.settle, r.precision) == (50, 11, 0.0, "float32")


def test_every_setting_is_described():
    assert set(FIELDS) == {f.name for f in dataclasses.fields(Settings)}


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(n_iter=0), "n_iter must be at least 1"),
        (dict(n_members=1000), "n_members must be at most 64"),
        (dict(window=4), "window must be odd"),
        (dict(n_classes=1), "n_classes must be at least 2"),
        (dict(device="gpu"), r"device must be 'auto', 'cpu', 'cuda', 'cuda:N'"),
        (dict(device="cuda:x"), r"device must be 'auto', 'cpu', 'cuda', 'cuda:N'"),
        (dict(learning_rate=float("nan")), "learning_rate must be a finite number"),
        (dict(compactness=float("inf")), "compactness must be a finite number"),
        (dict(precision="fp8"), "precision must be one of"),
        (dict(invert=True, n_classes=3), "invert only applies"),
        (dict(seed=-1), "seed must be at least 0"),
    ],
)
def test_bad_values_raise_value_error(change, match):
    with pytest.raises(ValueError, match=match):
        Settings(**change)


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(n_iter=2.5), "n_iter must be an integer"),
        (dict(invert="yes"), "invert must be True or False"),
        (dict(learning_rate="fast"), "learning_rate must be a number"),
    ],
)
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


def test_every_field_has_a_flag_a_label_and_a_known_rule():
    from napari_dsp.settings import APPLIES

    flags = [f.flag for f in FIELDS.values()]
    assert len(set(flags)) == len(flags) and all(f.startswith("--") for f in flags)
    for f in FIELDS.values():
        assert f.label and f.help and f.applies in APPLIES
        if f.choice_labels is not None:
            assert len(f.choice_labels) == len(f.choices)


def test_applies_rules():
    from napari_dsp.settings import APPLIES, FIELDS

    fgbg = dict(Settings().to_dict(), stack=False)
    assert APPLIES[FIELDS["invert"].applies](fgbg)
    assert not APPLIES[FIELDS["invert"].applies](dict(fgbg, n_classes=3))
    assert not APPLIES[FIELDS["n_classes"].applies](dict(fgbg, method="kanezaki"))
    assert APPLIES[FIELDS["min_labels"].applies](dict(fgbg, method="kanezaki"))
    assert not APPLIES[FIELDS["volumetric"].applies](fgbg)
    assert APPLIES[FIELDS["volumetric"].applies](dict(fgbg, stack=True))


def test_the_settings_a_user_needs_first_are_up_front_and_the_rest_grouped():
    from napari_dsp.settings import GROUPS

    main = [n for n, f in FIELDS.items() if f.group == "main"]
    assert set(main) == {
        "method", "n_classes", "min_labels", "modality", "texture", "invert", "instances",
        "min_size", "volumetric", "seed", "device",
    }  # fmt: skip
    assert all(f.group in GROUPS for f in FIELDS.values())
    groups = [f.group for f in FIELDS.values()]
    assert groups == sorted(groups, key=list(GROUPS).index)  # forms and --help in order
    assert {n for n, f in FIELDS.items() if f.advanced} == set(FIELDS) - set(main)


def test_one_name_for_the_ensemble_and_the_threads_and_the_old_names_still_work(capsys):
    assert FIELDS["n_members"].flag == "--members" and FIELDS["n_members"].label == "members"
    assert FIELDS["n_threads"].flag == "--threads"
    assert FIELDS["prior_superpixels"].flag == "--no-prior-superpixels"  # not --prior's twin
    with pytest.warns(FutureWarning, match="'n_runs' is now called 'n_members'"):
        assert make_settings(n_runs=3).n_members == 3
    with pytest.warns(FutureWarning, match="'use_prior' is now called 'prior_superpixels'"):
        assert make_settings(use_prior=False).prior_superpixels is False
    from napari_dsp.cli.common import settings_from_args
    from napari_dsp.cli.parser import build_parser

    parser = build_parser()
    old = settings_from_args(
        parser.parse_args(["segment", "a.tif", "-o", "o", "--runs", "2", "--workers", "1"])
    )
    assert (old.n_members, old.n_threads) == (2, 1)
    with pytest.raises(SystemExit):
        parser.parse_args(["segment", "--help"])
    help_text = capsys.readouterr().out
    assert "--members" in help_text and "--runs" not in help_text
    assert "settings: the prior's fit" in help_text


def test_none_means_not_given_for_settings_that_cannot_be_none():
    s = make_settings(n_iter=None, n_members=None, seed=None, working_size=None)
    assert s.n_iter == Settings().n_iter and s.n_members == Settings().n_members
    assert make_settings(Settings(seed=3), seed=None).seed is None  # None is a seed value


def test_types_are_checked_from_the_annotations_not_their_text():
    import numpy as np

    assert Settings(n_iter=np.int64(7)).n_iter == 7
    assert Settings(learning_rate=np.float32(0.02)).learning_rate == pytest.approx(0.02)
    with pytest.raises(TypeError, match="n_iter must be an integer"):
        Settings(n_iter=7.5)
    with pytest.raises(TypeError, match="seed must be an integer"):
        Settings(seed="1")
    with pytest.raises(TypeError, match="texture must be True or False"):
        Settings(texture=1)
    with pytest.raises(ValueError, match="settle must be a finite number"):
        Settings(settle=float("nan"))


def test_an_old_name_and_its_new_name_together_are_refused():
    with pytest.raises(TypeError, match="'n_runs' is the old name of 'n_members'"):
        make_settings(n_runs=3, n_members=2)
    with pytest.raises(ValueError, match="at most 4294967295,"):
        Settings(seed=2**64)


def test_settings_takes_the_old_names_like_segment_does():
    """Hunt F9: Settings(n_runs=3) gave the dataclass's bare 'unexpected keyword
    argument' while segment(img, n_runs=3) took it with a FutureWarning."""
    for old, new, value in [
        ("n_runs", "n_members", 3),
        ("n_workers", "n_threads", 2),
        ("use_prior", "prior_superpixels", False),
    ]:
        with pytest.warns(FutureWarning, match=f"'{old}' is now called '{new}'") as caught:
            assert getattr(Settings(**{old: value}), new) == value
        assert caught[0].filename == __file__  # pointed at the caller's line
        with pytest.raises(TypeError, match=f"'{old}' is the old name of '{new}'"):
            Settings(**{old: value, new: value})
    assert Settings(n_members=4) == Settings().replace(n_members=4)
