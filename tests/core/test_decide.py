"""Is there anything to segment? (napari_dsp.core.decide), without fitting."""

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_dsp.core import decide


def test_noise_sigma_is_the_noise_not_the_edges():
    rng = np.random.default_rng(0)
    flat = rng.normal(0, 2.0, (200, 200))
    assert decide.noise_sigma(flat) == pytest.approx(2.0, rel=0.1)
    steps = flat + 100.0 * (np.arange(200)[None, :] > 100) + 50 * (np.arange(200)[:, None] > 60)
    assert decide.noise_sigma(steps) == pytest.approx(2.0, rel=0.1)


def _blob_split(noise: np.ndarray) -> np.ndarray:
    """Classes cut out of the noise's own smooth blobs, as K-means on a prior does."""
    smooth = ndi.gaussian_filter(noise, 4.0)
    return smooth > np.median(smooth)


@pytest.mark.parametrize("seed", range(5))
def test_a_split_of_pure_noise_is_not_believed(seed):
    noise = np.random.default_rng(seed).poisson(10, (96, 96)).astype(np.uint16)
    result = decide.separation([noise[None]], [_blob_split(noise.astype(float))])
    assert not result["separated"] and result["statistic"] < 2.5


def test_a_real_but_faint_disc_is_believed():
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:96, :96]
    disc = np.hypot(yy - 48, xx - 48) < 10
    image = rng.normal(100, 5, (96, 96)) + 5 * disc  # contrast of one noise sigma
    result = decide.separation([image[None]], [disc])
    assert result["separated"] and result["statistic"] > 5


def test_one_bright_pixel_on_a_dark_field_is_the_foreground():
    for background in (
        np.zeros((96, 96), np.uint16),
        np.random.default_rng(2).poisson(5, (96, 96)).astype(np.uint16),
    ):
        image = background.copy()
        image[40, 50] = 200
        blobs = _blob_split(np.random.default_rng(3).normal(size=(96, 96)))
        [fg], decision = decide.decide([image[None]], [blobs])
        assert decision["result"] == "outliers"
        assert fg[40, 50] and fg.sum() == 1
        assert "1 pixel(s) stands out" in decision["message"]


@pytest.mark.parametrize("lam", [0.5, 2, 10, 1000])
def test_poisson_fields_give_no_spots(lam):
    false = sum(
        bool(
            decide.outliers(
                [np.random.default_rng(s).poisson(lam, (96, 96)).astype(np.uint16)[None]]
            )[0].any()
        )
        for s in range(40)
    )
    assert false <= 1


def test_pure_noise_gives_empty_labels_and_a_message():
    noise = np.random.default_rng(4).normal(100, 5, (96, 96))
    [fg], decision = decide.decide([noise[None]], [_blob_split(noise)])
    assert decision["result"] == "empty" and not fg.any()
    assert "nothing in this image stands out from its noise" in decision["message"]
    assert decision["statistic"] < decision["threshold"] == decide.MIN_SEPARATION


def test_z_threshold_grows_with_the_image():
    assert decide.z_threshold(100) == decide.MIN_Z
    assert decide.z_threshold(10**9) > decide.MIN_Z
