"""Progress reports in the user's units."""

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
