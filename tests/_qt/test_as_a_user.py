"""Issue 31: the widget as a microscopist meets it, in a real napari viewer, driven through
the widget's public surface and ``viewer.open`` as a user would: stacks with channels,
a source and its labels, progress, the live prior, messages, and the small things.

Run under Xvfb: xvfb-run -a -s "-screen 0 1280x1024x24" python -m pytest tests/_qt
"""

import re

import numpy as np
import pytest
import tifffile
from napari.layers import Labels
from scipy import ndimage as ndi

from tests._qt.test_widget import (
    ENDLESS,
    TIMEOUT,
    add_disc,
    cancel_and_wait,
    open_widget,
    run_and_wait,
)
from tests.fast import TINY_FLAGS


def zcyx_stack(n_z: int = 4, side: int = 48) -> np.ndarray:
    """A Z stack of two channels that look nothing alike: nuclei (discs, ~1000-3000) and
    a dim membrane-like ring pattern ten times brighter in places."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:side, :side]
    out = np.zeros((n_z, 2, side, side), np.uint16)
    for z in range(n_z):
        discs = np.zeros((side, side))
        for cy, cx in ((12, 12), (12, 34), (34, 20)):
            discs += ((yy - cy) ** 2 + (xx - cx - z) ** 2) < 36
        nuclei = 1000 + 2000 * ndi.gaussian_filter(discs, 1) + rng.normal(0, 50, discs.shape)
        rings = np.sin(xx / 3.0 + z) ** 2 * np.cos(yy / 5.0) ** 2
        other = 200 + 30000 * rings + rng.normal(0, 50, discs.shape)
        out[z, 0], out[z, 1] = np.clip(nuclei, 0, 65535), np.clip(other, 0, 65535)
    return out


@pytest.fixture
def zcyx_file(tmp_path):
    path = tmp_path / "embryo.ome.tif"
    tifffile.imwrite(
        path,
        zcyx_stack(),
        metadata={
            "axes": "ZCYX",
            "PhysicalSizeZ": 2.0,
            "PhysicalSizeY": 0.2,
            "PhysicalSizeX": 0.2,
        },
    )
    return path


def shows_on_every_channel(labels, source, channel_axis: int) -> bool:
    """Whether the labels' single channel entry is drawn whatever the channel slider."""
    point = np.zeros(source.ndim)
    for c in range(source.data.shape[channel_axis]):
        point[channel_axis] = source.data_to_world(np.eye(source.ndim)[channel_axis] * c)[
            channel_axis
        ]
        if round(float(labels.world_to_data(point)[channel_axis])) != 0:
            return False
    return True


# -- 1. a multichannel Z stack --------------------------------------------------------------
def test_1_a_zcyx_file_opened_by_napari_is_z_planes_with_two_channels(viewer, qtbot, zcyx_file):
    layer = viewer.open(zcyx_file)[0]  # napari's own reader: one 4-D layer at scale 1
    assert layer.data.shape == (4, 2, 48, 48)
    widget = open_widget(viewer)
    # the file says ZCYX: the channel axis is preset, Z is the plane axis
    assert widget.channel_axis == 1 and widget.form.shown("channel_axis")
    assert widget.form.shown("planes")
    widget.planes = "all planes"
    statuses = []
    worker = widget.run()
    worker.yielded.connect(lambda p: statuses.append(widget.status))
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT)
    assert any("plane 4/4" in s for s in statuses), statuses
    assert not any("/8" in s for s in statuses)
    labels = viewer.layers[f"{layer.name} labels"]
    assert labels.data.shape == (4, 1, 48, 48)
    assert shows_on_every_channel(labels, layer, 1)
    assert labels.metadata["napari_dsp"]["napari"]["channel_axis"] == 1
    prior = viewer.layers[f"{layer.name} prior"]
    assert prior.data.shape == layer.data.shape
    # one 3-D prior: offered, accepted, with the file's 2.0 um z spacing
    widget.set_values(volumetric=True)
    assert widget.form.shown("volumetric")
    run_and_wait(qtbot, widget)
    assert widget.status.startswith("done"), widget.status
    meta = viewer.layers[f"{layer.name} labels"].metadata["napari_dsp"]
    assert meta["napari"]["spacing"] == [2.0, 0.2, 0.2]
    assert meta["fit"]["volumetric"] is True


def test_1_an_axis_whose_entries_differ_wildly_is_channels_and_the_widget_says_so(viewer):
    viewer.add_image(zcyx_stack(), name="no file")  # no axis labels, no file
    widget = open_widget(viewer)
    assert widget.channel_axis == 1
    assert "axis 1" in widget.status and "taken as channels" in widget.status
    # a Z stack whose planes look alike stays planes
    rng = np.random.default_rng(0)
    base = ndi.gaussian_filter(rng.random((40, 40)), 3)
    planes = np.stack([base + 0.01 * rng.random((40, 40)) for _ in range(3)])
    viewer.add_image(planes, name="z")
    assert widget.image_layer.name == "z" and widget.channel_axis is None
    # the user has the last word
    widget.image_layer = viewer.layers["no file"]
    widget.channel_axis = None
    assert widget.form.shown("planes")


def test_1_a_volume_of_a_t_x_z_layer_is_the_time_point_the_sliders_show(viewer, qtbot):
    from tests.synthetic import dark_on_bright

    disc = dark_on_bright((32, 32), seed=1)[0]
    layer = viewer.add_image(np.stack([np.stack([disc] * 3)] * 2), name="tz")
    widget = open_widget(viewer, n_members=1)
    widget.planes = "all planes"
    widget.set_values(volumetric=True)
    assert widget.form.shown("volumetric")  # offered, and not refused
    viewer.dims.set_point(0, 1)
    run_and_wait(qtbot, widget)
    assert widget.status.startswith("done"), widget.status
    labels = viewer.layers["tz labels"]
    assert labels.data.shape == layer.data.shape
    assert labels.data[1].any() and not labels.data[0].any()
    assert labels.metadata["napari_dsp"]["napari"]["volume"].startswith("time point 2 of 2")


# -- 2. a source and its labels -------------------------------------------------------------
def _cli(*args) -> None:
    from napari_dsp.cli import main

    assert main([*map(str, args), *TINY_FLAGS, "--quiet"]) == 0


def test_2_labels_land_on_their_source_however_it_was_opened(viewer, tmp_path):
    from tests.synthetic import dark_on_bright

    image = (dark_on_bright((40, 48))[0] * 1000).astype(np.uint16)
    source_file = tmp_path / "cells.tif"
    tifffile.imwrite(
        source_file,
        image,
        imagej=True,
        resolution=(1 / 0.2, 1 / 0.2),
        metadata={"unit": "micron"},
    )
    _cli("segment", source_file, "-o", tmp_path / "out")
    labels_file = tmp_path / "out" / "cells_labels.tif"

    # napari's own reader opens the source at scale 1: the labels land on it
    source = viewer.open(source_file)[0]
    np.testing.assert_allclose(source.scale, [1, 1])
    labels = viewer.open(labels_file, plugin="napari-dsp")[0]
    assert isinstance(labels, Labels)
    np.testing.assert_allclose(labels.extent.world, source.extent.world)
    assert labels.metadata["pixel_size"] == {"Y": 0.2, "X": 0.2}
    assert "cells" in labels.metadata["placed_on"]

    # a calibrated source (Fiji's way, a calibrated reader's): the labels follow it
    viewer.layers.clear()
    calibrated = viewer.add_image(image, name="cells", scale=(0.2, 0.2))
    labels = viewer.open(labels_file, plugin="napari-dsp")[0]
    np.testing.assert_allclose(labels.extent.world, calibrated.extent.world)

    # on their own, the labels keep the file's calibration
    viewer.layers.clear()
    labels = viewer.open(labels_file, plugin="napari-dsp")[0]
    np.testing.assert_allclose(labels.scale, [0.2, 0.2])


def test_2_labels_of_a_zcyx_file_land_on_the_4d_layer_napari_opened(viewer, zcyx_file, tmp_path):
    _cli("segment", zcyx_file, "-o", tmp_path / "out")
    source = viewer.open(zcyx_file)[0]
    labels = viewer.open(tmp_path / "out" / "embryo_labels.tif", plugin="napari-dsp")[0]
    assert labels.data.shape == (4, 1, 48, 48)
    assert shows_on_every_channel(labels, source, 1)
    z = source.extent.world[:, 0]
    np.testing.assert_allclose(labels.extent.world[:, 0], z)


# -- 3. progress for stacks -----------------------------------------------------------------
def test_3_the_bar_counts_the_whole_stack_and_the_status_says_members(viewer, qtbot):
    rng = np.random.default_rng(0)
    viewer.add_image(rng.random((3, 32, 32)).astype(np.float32), name="z")
    # two threads fit members side by side: their reports interleave
    widget = open_widget(viewer, preview_every=1, n_members=4, n_threads=2)
    widget.planes = "all planes"
    seen = []
    worker = widget.run()
    bar = widget.progress
    worker.yielded.connect(lambda p: seen.append((p.plane, bar.n, bar.total, widget.status)))
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT)
    first = [(n, total) for plane, n, total, _ in seen if plane == 0]
    assert first and all(n < total for n, total in first), first  # not full after plane 1
    counts = [n for _, n, _, _ in seen]
    assert counts == sorted(counts) and bar.n == bar.total
    assert any("plane 2/3 · members" in s and "iteration" in s for *_, s in seen), seen
    where = [
        tuple(int(v) for v in m.groups())
        for *_, s in seen
        if (m := re.search(r"plane (\d)/3 · members (\d)/4 done · .*iteration (\d+)/", s))
    ]
    for (plane, done, it), (plane2, done2, it2) in zip(where, where[1:]):
        assert (plane, done) != (plane2, done2) or it2 >= it, where  # never backwards
    assert len(bar.desc) <= 40


# -- 4. the image stays in sight while fitting ----------------------------------------------
def test_4_the_live_prior_is_translucent_and_leaves_unfitted_planes_clear(viewer, qtbot):
    rng = np.random.default_rng(0)
    viewer.add_image(rng.random((3, 32, 32)).astype(np.float32), name="z")
    widget = open_widget(viewer, **ENDLESS)
    widget.planes = "all planes"
    worker = widget.run()
    qtbot.waitUntil(lambda: "z prior (running)" in viewer.layers, timeout=TIMEOUT)
    running = viewer.layers["z prior (running)"]
    assert running.opacity < 1
    assert np.isnan(running.data[1:]).all()  # napari draws NaN transparent
    cancel_and_wait(qtbot, widget, worker)
    assert "z prior (running)" not in viewer.layers


def test_4_a_volume_fit_shows_its_live_prior(viewer, qtbot):
    rng = np.random.default_rng(0)
    viewer.add_image(rng.random((4, 32, 32)).astype(np.float32), name="v")
    widget = open_widget(viewer, **dict(ENDLESS, n_members=1))
    widget.planes = "all planes"
    widget.set_values(volumetric=True)
    worker = widget.run()
    qtbot.waitUntil(lambda: "v prior (running)" in viewer.layers, timeout=TIMEOUT)
    assert viewer.layers["v prior (running)"].data.shape == (4, 32, 32)
    cancel_and_wait(qtbot, widget, worker)


# -- 5. messages in the form's words --------------------------------------------------------
def test_5_refusals_say_what_to_do_in_the_widget(viewer, notes):
    image = np.ones((40, 40), np.float32)
    image[3, 4] = np.nan
    viewer.add_image(image, name="holes")
    widget = open_widget(viewer)
    assert widget.run() is None
    assert "copy of the layer" in notes[-1] and "np." not in notes[-1]
    viewer.add_image(np.ones((6, 40, 40, 3, 3), np.float32), name="six")
    widget.image_layer = viewer.layers["six"]
    widget.channel_axis = None
    assert widget.run() is None  # a 3 x 3 plane: an axis is channels
    assert "under 'channels'" in notes[-1] and "channel_axis=" not in notes[-1]
    widget.planes = "all planes"
    assert widget.run() is None
    assert "under 'channels'" in notes[-1] and "viewer." not in notes[-1]


# -- 6. small things ------------------------------------------------------------------------
def test_6_a_5d_layer_segments_its_current_plane(viewer, qtbot):
    rng = np.random.default_rng(0)
    layer = viewer.add_image(rng.random((2, 2, 3, 32, 32)).astype(np.float32), name="tzq")
    widget = open_widget(viewer)
    widget.channel_axis = None
    assert widget.planes == "current plane"
    run_and_wait(qtbot, widget)
    assert widget.status.startswith("done"), widget.status
    assert viewer.layers["tzq labels"].data.shape == layer.data.shape


def test_6_after_a_stack_run_a_change_says_it_will_refit(viewer, qtbot):
    rng = np.random.default_rng(0)
    viewer.add_image(rng.random((2, 32, 32)).astype(np.float32), name="z")
    widget = open_widget(viewer)
    widget.planes = "all planes"
    run_and_wait(qtbot, widget)
    widget.set_values(n_classes=3)
    assert "fits the prior again" in widget.status and not widget.running


def test_6_texture_hides_sharpen_and_the_result_is_selected(viewer, qtbot):
    add_disc(viewer)
    widget = open_widget(viewer, instances=True)
    widget.form.advanced = True
    assert widget.form.shown("refine")
    widget.set_values(texture=True)
    assert not widget.form.shown("refine")  # skipped with texture features: not offered
    widget.set_values(texture=False)
    run_and_wait(qtbot, widget)
    assert widget.status.endswith("; 1 object"), widget.status
    widget.set_values(texture=True)
    run_and_wait(qtbot, widget)
    assert viewer.layers.selection.active is viewer.layers["cells labels"]


def test_6_the_plugin_is_called_napari_dsp_in_the_menus():
    from npe2 import PluginManager

    manifest = PluginManager.instance().get_manifest("napari-dsp")
    assert manifest.display_name == "napari-dsp"  # File > Open Sample > napari-dsp
    assert [w.display_name for w in manifest.contributions.widgets] == ["Deep Segmentation Prior"]


# -- 7. modalities (issue 28) ------------------------------------------------------------
def test_7_the_widget_suggests_a_modality_and_runs_it(viewer, qtbot, notes):
    """A phase-contrast image: the default run says in its status line that it looks like
    phase contrast; with the modality chosen in the form the rods are found, the local
    contrast's prior is a hidden layer, and no suggestion is made. A stained-section
    modality on a grey layer is refused with what to do, and the viewer goes on."""
    from tests.synthetic import phase_contrast

    image, cells = phase_contrast(seed=0)
    viewer.add_image(image, name="rods")
    widget = open_widget(viewer, n_iter=30)
    assert widget.form.shown("modality")
    run_and_wait(qtbot, widget)
    assert "looks like phase contrast: try the modality 'phase contrast'" in widget.status
    widget.set_values(modality="phase")
    run_and_wait(qtbot, widget)
    assert "looks like" not in widget.status and widget.status.startswith("done"), widget.status
    found = np.asarray(viewer.layers["rods labels"].data) > 0
    assert (found & cells).sum() / (found | cells).sum() >= 0.9
    contrast = viewer.layers["rods local contrast prior"]
    assert not contrast.visible and contrast.data.shape == image.shape
    widget.set_values(modality="brightfield-stain")
    assert widget.run() is None  # refused before anything is fitted
    assert "'brightfield-stain' needs an RGB image" in notes[-1], notes[-3:]
    assert "rods" in viewer.layers and "rods labels" in viewer.layers
