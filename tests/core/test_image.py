import numpy as np
import pytest

from napari_dsp.core import image as _image
from napari_dsp.core.image import normalize, pad_to_multiple, to_channels_first


def test_sixteen_bit_narrow_range_is_stretched_not_flat(rng):
    image = rng.integers(33_000, 35_001, size=(64, 64)).astype(np.uint16)
    out = normalize(to_channels_first(image))
    assert out.dtype == np.float32 and out.shape == (1, 64, 64)
    assert out.min() >= 0 and out.max() <= 1
    assert out.max() - out.min() > 0.99
    assert out.std() > 0.2


@pytest.mark.parametrize(
    "shape, axis, expected",
    [
        ((40, 50), None, (1, 40, 50)),
        ((40, 50, 3), None, (3, 40, 50)),
        ((40, 50, 4), None, (3, 40, 50)),  # alpha dropped
        ((5, 40, 50), 0, (5, 40, 50)),
        ((40, 5, 50), 1, (5, 40, 50)),
        ((40, 50, 2), -1, (2, 40, 50)),
    ],
)
def test_layouts(shape, axis, expected):
    assert to_channels_first(np.zeros(shape), axis).shape == expected


def test_bool_maps_to_zero_one():
    image = np.zeros((20, 20), bool)
    image[5:10] = True
    out = normalize(to_channels_first(image))
    assert set(np.unique(out)) == {0.0, 1.0}


@pytest.mark.parametrize("h, w", [(17, 33), (16, 16), (40, 41)])
def test_pad_to_multiple_and_crop_back(h, w, rng):
    chw = rng.random((2, h, w)).astype(np.float32)
    padded, crop = pad_to_multiple(chw)
    assert padded.shape[1] % 8 == 0 and padded.shape[2] % 8 == 0
    np.testing.assert_array_equal(padded[:, crop[0], crop[1]], chw)


@pytest.mark.parametrize(
    "image, kwargs, error, match",
    [
        (np.zeros((0, 10)), {}, ValueError, "empty"),
        (np.zeros((8, 30)), {}, ValueError, "at least 16x16"),
        (np.zeros((1, 1)), {}, ValueError, "image is 1x1 pixels; at least 16x16"),
        (np.zeros((3, 3)), {}, ValueError, "image is 3x3 pixels; at least 16x16"),
        (np.zeros((2, 2, 2, 2, 32, 32)), {}, ValueError, "6 dimensions"),
        (np.zeros((4, 4, 4, 4)), {}, ValueError, "4 dimensions"),
        (np.zeros((40, 40, 7)), {}, ValueError, "channel_axis"),
        (np.zeros((40, 40), complex), {}, TypeError, "np.abs"),
        (np.zeros((40, 40, 3)), {"channel_axis": 3}, ValueError, "out of range"),
        (np.zeros((40, 40)), {"channel_axis": 0}, ValueError, "needs a 3-D image"),
        (np.zeros((40, 40, 3)), {"channel_axis": 1.0}, TypeError, "integer or None"),
        ("not an image", {}, TypeError, "dtype|numpy array"),
    ],
)
def test_bad_inputs(image, kwargs, error, match):
    with pytest.raises(error, match=match):
        to_channels_first(image, **kwargs)


def test_nan_inf_and_constant_are_refused():
    bad = np.ones((32, 32), np.float32)
    bad[3, 3] = np.nan
    with pytest.raises(ValueError, match="1 NaN or infinite.*nan_to_num"):
        normalize(to_channels_first(bad))
    bad[3, 3] = np.inf
    with pytest.raises(ValueError, match="NaN or infinite"):
        normalize(to_channels_first(bad))
    with pytest.raises(ValueError, match="constant"):
        normalize(to_channels_first(np.full((32, 32), 7, np.uint8)))
    with pytest.raises(ValueError, match="constant"):
        normalize(to_channels_first(np.zeros((32, 32), bool)))


def test_int64_with_huge_values_and_floats_outside_unit_range(rng):
    big = rng.integers(-(2**62), 2**62, size=(32, 32), dtype=np.int64)
    out = normalize(to_channels_first(big))
    assert out.dtype == np.float32 and out.min() >= 0 and out.max() <= 1 and out.std() > 0.2
    wide = rng.normal(0, 1e6, (32, 32))
    assert normalize(to_channels_first(wide)).max() == 1.0


def test_channel_first_rgb_is_not_guessed():
    with pytest.raises(ValueError, match="channel_axis=0 for a \\(C, Y, X\\)"):
        to_channels_first(np.zeros((3, 64, 64)))
    assert to_channels_first(np.zeros((3, 64, 64)), channel_axis=0).shape == (3, 64, 64)


def test_normalize_values_near_the_float64_limit(recwarn):
    """+-1e308 would overflow (hi - lo = inf) and give garbage with warnings."""
    base = np.zeros((32, 32))
    base[8:24, 8:24] = 1.0
    out = normalize(to_channels_first(np.where(base > 0, 1e308, -1e308)))
    np.testing.assert_array_equal(out[0], base.astype(np.float32))
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


@pytest.mark.parametrize("size, radius", [(256, (2, 4)), (512, (6, 12)), (512, (16, 24))])
def test_the_object_radius_is_found_on_blobs_of_known_size(size, radius):
    from tests.synthetic import nuclei

    image, _mask = nuclei(
        (size, size), n=int(20 * (size / 256) ** 2 * (8 / radius[1]) ** 2), radius=radius, seed=0
    )
    estimate = _image.object_radius(_image.normalize(_image.to_channels_first(image)))
    assert radius[0] / 1.5 <= estimate <= radius[1] * 1.5
