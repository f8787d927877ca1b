"""Progress reports in the user's units."""

import pytest

from napari_dsp.core.progress import FitProgress, format_seconds


def test_describe_in_the_users_units():
    p = FitProgress(18, 40, iteration=18, n_iter=20, members_done=0, n_members=3, elapsed=9.0)
    assert p.describe() == "members 0/3 done · iteration 18/20 · about 11 s left"
    assert abs(p.fraction - 0.45) < 1e-9
    stack = p.replace(plane=1, n_planes=5, tile=2, n_tiles=4)
    assert stack.describe().startswith("plane 2/5 · tile 3/4 · ")
    classes = FitProgress(120, 350, stage="classes")
    assert classes.describe() == "self-training iteration 120 (at most 350)"


def test_time_left_is_unknown_before_the_first_step():
    assert FitProgress(0, 40).seconds_left is None
    assert "left" not in FitProgress(0, 40, n_iter=20, iteration=0).describe()
    assert format_seconds(75) == "1 min 15 s" and format_seconds(7300) == "2 h 01 min"


def test_the_time_left_is_measured_from_the_first_report_on():
    """Issue 31: the seconds before the first report (reading, planning) do not inflate
    the estimate, and nothing is said before a few seconds are measured."""
    from napari_dsp.core.progress import RunEstimate

    clock = iter([30.0, 31.0, 40.0, 50.0])  # 30 s of start-up before the first report
    estimate = RunEstimate(min_seconds=2.0, min_fraction=0.02, now=lambda: next(clock))
    assert estimate.seconds_left(0.0) is None  # the first report starts the clock
    assert estimate.seconds_left(0.01) is None  # too little measured yet
    assert estimate.seconds_left(0.2) == pytest.approx(40.0)  # 10 s for 20 %
    assert estimate.seconds_left(0.4) == pytest.approx(30.0)  # 20 s for 40 %
