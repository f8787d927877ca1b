"""Fields with nothing to segment stay empty, with a warning everywhere; one bright spot
is the spot; a few real objects are still found (the bar tests of the empty-field
decision, on real fits)."""

import json
import warnings

import numpy as np
import pytest
import tifffile

from napari_dsp import NothingToSegmentWarning, segment, segment_stack
from napari_dsp.cli import main

#: Default fit, fewer members: the decision does not depend on the ensemble size.
FIT = dict(n_members=5, n_threads=1)


def poisson_field(seed, lam=10, shape=(96, 96)):
    return np.random.default_rng(seed).poisson(lam, shape).astype(np.uint16)


def few_objects(seed):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:96, :96]
    mask = np.zeros((96, 96), bool)
    for cy, cx in [(20, 22), (32, 70), (72, 42)]:
        mask |= np.hypot(yy - cy, xx - cx) < 7
    return (rng.poisson(20, (96, 96)) + 25 * mask).astype(np.uint16), mask


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_camera_noise_alone_gives_empty_labels_and_a_warning(seed):
    with pytest.warns(NothingToSegmentWarning, match="stands out from its noise"):
        result = segment(poisson_field(seed), seed=seed, full_output=True, **FIT)
    assert not result.labels.any()
    decision = result.metadata["clustering"]["decision"]
    assert decision["result"] == "empty" and decision["separated"] is False
    assert decision["statistic"] < decision["threshold"]


@pytest.mark.parametrize("background", ["zeros", "poisson"])
def test_one_bright_pixel_on_a_dark_field_is_that_pixel(background):
    image = np.zeros((96, 96), np.uint16) if background == "zeros" else poisson_field(5, lam=5)
    image[40, 50] = 1000
    with pytest.warns(NothingToSegmentWarning, match="1 pixel"):
        result = segment(image, seed=0, full_output=True, instances=True, **FIT)
    assert result.labels[40, 50] > 0 and np.count_nonzero(result.labels) == 1
    assert result.metadata["clustering"]["count"] == 1


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_few_real_objects_are_still_found(seed):
    image, mask = few_objects(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("error", NothingToSegmentWarning)
        result = segment(image, seed=seed, full_output=True, **FIT)
    fg = result.labels == 1
    assert (fg & mask).sum() / (fg | mask).sum() > 0.7
    assert result.metadata["clustering"]["decision"]["result"] == "prior"


def test_a_noise_stack_is_empty_in_every_plane():
    stack = np.stack([poisson_field(s) for s in range(3)])
    with pytest.warns(NothingToSegmentWarning):
        labels = segment_stack(stack, seed=0, n_iter=30, **FIT)
    assert labels.shape == (3, 96, 96) and not labels.any()


def test_the_command_line_says_it_in_one_line(tmp_path, capsys):
    tifffile.imwrite(tmp_path / "noise.tif", poisson_field(7))
    code = main(
        [
            "segment",
            str(tmp_path / "noise.tif"),
            "-o",
            str(tmp_path / "o"),
            "--members",
            "5",
            "--threads",
            "1",
            "--seed",
            "0",
            "--quiet",
        ]
    )
    err = capsys.readouterr().err
    assert code == 0
    assert err.count("napari-dsp: note:") == 1 and "stands out from its noise" in err
    assert "Warning" not in err  # not Python's warning print-out
    assert not tifffile.imread(tmp_path / "o" / "noise_labels.tif").any()
    meta = json.loads((tmp_path / "o" / "noise_labels.json").read_text())
    assert meta["clustering"]["decision"]["result"] == "empty"
