"""Label images written by napari-dsp open in a real napari viewer as Labels layers, with
the input's pixel size, axes and unit (the reader contribution in napari.yaml)."""

import numpy as np
import pytest
import tifffile
from napari.layers import Image, Labels

from napari_dsp import io


@pytest.fixture
def viewer(make_napari_viewer):
    return make_napari_viewer()


@pytest.fixture
def stack_labels(tmp_path):
    labels = np.zeros((3, 32, 40), np.uint16)
    labels[:, 5:15, 5:25] = 1
    labels[1, 20:30, 20:35] = 300
    path = io.write_labels(
        tmp_path / "cells_labels.tif",
        labels,
        axes="ZYX",
        pixel_size={"Z": 2.0, "Y": 0.5, "X": 0.5},
        unit="µm",
    )
    return path, labels


def test_labels_file_opens_as_labels_with_its_pixel_size(viewer, stack_labels):
    path, labels = stack_labels
    layers = viewer.open(path, plugin="napari-dsp")
    assert len(layers) == 1 and isinstance(layers[0], Labels)
    layer = layers[0]
    np.testing.assert_array_equal(layer.data, labels)
    np.testing.assert_allclose(layer.scale, [2.0, 0.5, 0.5])
    assert tuple(layer.axis_labels) == ("z", "y", "x")
    assert all(str(u) == "micrometer" for u in layer.units)
    assert layer.name == "cells_labels"
    assert layer.metadata["written_by_napari_dsp"] is True


def test_the_reader_is_offered_for_labels_files_and_a_saved_choice_is_used(viewer, stack_labels):
    from napari.errors import MultipleReaderError
    from napari.settings import get_settings

    path, _ = stack_labels
    # with no saved choice napari asks (its reader dialog lists napari-dsp)
    with pytest.raises(MultipleReaderError) as err:
        viewer.open(path, plugin=None)
    assert "napari-dsp" in err.value.available_plugins
    settings = get_settings().plugins
    before = dict(settings.extension2reader)
    try:
        settings.extension2reader = {**before, "*_labels.tif": "napari-dsp"}
        layer = viewer.open(path, plugin=None)[0]
        assert isinstance(layer, Labels)
        # other TIFFs still go to napari's own reader
        image = path.with_name("raw.tif")
        tifffile.imwrite(image, np.zeros((32, 40), np.uint16))
        assert isinstance(viewer.open(image, plugin=None)[0], Image)
    finally:
        settings.extension2reader = before


@pytest.mark.parametrize(
    "pixels, rgb",
    [
        (np.random.default_rng(0).random((32, 40)).astype(np.float32), False),  # not ids
        (np.random.default_rng(0).integers(0, 255, (32, 40, 3), dtype=np.uint8), True),
        (np.random.default_rng(0).integers(0, 255, (32, 40, 4), dtype=np.uint8), True),
    ],
    ids=["float", "rgb", "rgba"],
)
def test_a_labels_named_file_that_is_not_labels_is_left_to_napari(viewer, tmp_path, pixels, rgb):
    """A foreign file called *_labels.tif that holds no label image is declined from its
    header, so napari's own reader opens it as the picture it is (an RGB one made the
    reader report three axes for napari's 2-D RGB image, and napari crashed)."""
    from napari_dsp._reader import get_reader

    path = tmp_path / "photo_labels.tif"
    tifffile.imwrite(path, pixels, photometric="rgb" if rgb else "minisblack")
    assert get_reader(str(path)) is None
    [layer] = viewer.open(path)  # as a user opens it: no plugin named
    assert isinstance(layer, Image) and layer.rgb is rgb
    np.testing.assert_array_equal(np.asarray(layer.data), pixels)
    broken = tmp_path / "broken_labels.tif"
    broken.write_bytes(b"II*\x00not a tiff")
    assert get_reader(str(broken)) is None  # napari's reader says what is wrong


def test_the_cli_output_round_trips_through_napari(viewer, tmp_path):
    """A 2-D labels file from the command line: Labels, scale from the input's ImageJ
    calibration."""
    from napari_dsp.cli import main
    from tests.fast import TINY_FLAGS
    from tests.synthetic import dark_on_bright

    image, _ = dark_on_bright((40, 48))
    tifffile.imwrite(
        tmp_path / "img.tif",
        (image * 1000).astype(np.uint16),
        imagej=True,
        resolution=(1 / 0.325, 1 / 0.325),
        metadata={"unit": "micron"},
    )
    assert (
        main(
            [
                "segment",
                str(tmp_path / "img.tif"),
                "-o",
                str(tmp_path / "o"),
                *TINY_FLAGS,
                "--quiet",
            ]
        )
        == 0
    )
    layer = viewer.open(tmp_path / "o" / "img_labels.tif", plugin="napari-dsp")[0]
    assert isinstance(layer, Labels) and layer.data.shape == (40, 48)
    np.testing.assert_allclose(layer.scale, [0.325, 0.325])
    assert set(np.unique(layer.data)) <= {0, 1}
