"""Texture channels: right bands respond, textures of equal brightness separate, the
same image gives the same channels, bad input is refused."""

import numpy as np
import pytest
from sklearn.cluster import KMeans

from napari_dsp.core.texture import (
    COMPONENTS,
    FREQUENCIES,
    ORIENTATIONS,
    gabor_energies,
    local_means,
    texture_channels,
)


def stripes(shape, period, theta, phase=0.0):
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(float)
    return 0.5 + 0.2 * np.sin(
        2 * np.pi * (xx * np.cos(theta) + yy * np.sin(theta)) / period + phase
    )


def two_textures(shape=(96, 96)):
    """Left half vertical stripes, right half horizontal: the same mean and spread."""
    image = stripes(shape, 8, 0.0)
    image[:, shape[1] // 2 :] = stripes(shape, 8, np.pi / 2)[:, shape[1] // 2 :]
    truth = np.zeros(shape, int)
    truth[:, shape[1] // 2 :] = 1
    return image.astype(np.float32), truth


@pytest.mark.parametrize("band", [(0, 0), (1, 0), (2, 2), (3, 1)])
def test_the_band_of_a_sinusoid_responds_most(band):
    """Left half: a sinusoid at one of the bank's frequencies and orientations; right
    half: another band. That filter's energy rises from right to left more than any
    other's."""
    fi, oi = band
    f, theta = FREQUENCIES[fi], oi * np.pi / ORIENTATIONS
    other = (FREQUENCIES[(fi + 2) % len(FREQUENCIES)], theta + np.pi / 2)
    image = stripes((128, 192), 1 / f, theta)
    image[:, 96:] = stripes((128, 192), 1 / other[0], other[1])[:, 96:]
    e = gabor_energies(image)
    assert e.shape == (len(FREQUENCIES) * ORIENTATIONS, 128, 192)
    rise = e[:, 40:-40, 20:60].mean((1, 2)) - e[:, 40:-40, 132:172].mean((1, 2))
    assert int(np.argmax(rise)) == fi * ORIENTATIONS + oi


def test_equal_brightness_textures_separate_on_the_channels_not_on_the_pixels():
    image, truth = two_textures()
    channels = texture_channels(image[None])
    assert channels.shape == (COMPONENTS, 96, 96) and channels.dtype == np.float32
    assert channels.min() >= 0 and channels.max() <= 1

    def agreement(features):
        km = (
            KMeans(2, n_init=10, random_state=0)
            .fit_predict(features.reshape(len(features), -1).T)
            .reshape(truth.shape)
        )
        return max(np.mean(km == truth), np.mean(km != truth))

    assert agreement(channels) > 0.95
    assert agreement(image[None]) < 0.75  # brightness alone cannot tell them apart


def test_local_means_are_the_mean_of_each_side_away_from_a_step():
    image = np.full((64, 96), 0.2, np.float32)
    image[:, 48:] = 0.7
    m = local_means(image)
    assert m.shape == (2, 64, 96) and m.dtype == np.float32
    np.testing.assert_allclose(local_means(np.full((40, 50), 0.3, np.float32)), 0.3, atol=1e-5)
    # the finer scale (a few pixels) is flat a little away from the step
    np.testing.assert_allclose(m[0][:, :20], 0.2, atol=1e-3)
    np.testing.assert_allclose(m[0][:, -20:], 0.7, atol=1e-3)
    assert m[1][:, 40].mean() < m[1][:, 56].mean()
    # at every scale, up to the image's edges, the mirrored Gaussian mean: nothing
    # wraps round from the opposite edge (the coarse scale reaches 67 px)
    from scipy import ndimage as ndi

    from napari_dsp.core.texture import MEAN_SCALES, SIGMA_CYCLES

    for plane, scale in zip(m, MEAN_SCALES):
        sigma = scale * SIGMA_CYCLES / FREQUENCIES[0]
        np.testing.assert_allclose(
            plane, ndi.gaussian_filter(image, sigma, mode="mirror"), atol=2e-3
        )


def test_same_image_same_channels_and_rgb_uses_luminance():
    image, _ = two_textures((64, 80))
    a = texture_channels(image[None])
    np.testing.assert_array_equal(a, texture_channels(image[None]))
    # RGB: the channels of its luminance (the mean of the channels), not of one channel
    rgb = np.stack([image * 0.5, image * 1.5, np.full_like(image, 0.3)])
    np.testing.assert_allclose(
        texture_channels(rgb), texture_channels(rgb.mean(0)[None]), atol=1e-5
    )
    assert np.abs(texture_channels(rgb) - texture_channels(rgb[2:])).max() > 0.1


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.full((1, 32, 32), np.nan, np.float32), "NaN"),
        (np.zeros((32, 32), np.float32), r"\(C, Y, X\)"),
    ],
)
def test_bad_input_is_refused(bad, match):
    with pytest.raises(ValueError, match=match):
        texture_channels(bad)


def test_separation_is_large_between_textures_and_small_within_noise():
    from napari_dsp.core.texture import MIN_SEPARATION, separation

    image, truth = two_textures((96, 96))
    assert separation(image[None], truth) > 2 * MIN_SEPARATION
    noise = np.random.default_rng(1).normal(0.5, 0.1, (96, 96)).astype(np.float32)
    halves = np.zeros((96, 96), int)
    halves[:, 48:] = 1
    assert separation(noise[None], halves) < MIN_SEPARATION / 2
