"""The dock widget in a real napari viewer (run under Xvfb: napari's canvas needs OpenGL)."""

import numpy as np
import pytest
from napari.layers import Image, Labels
from napari.utils.notifications import notification_manager

from napari_dsp._synthetic import dark_on_bright
from napari_dsp._widget import DSPWidget

TIMEOUT = 120_000  # ms


@pytest.fixture
def viewer(make_napari_viewer):
    return make_napari_viewer()


@pytest.fixture
def notes():
    seen = []

    def keep(notification):
        seen.append(str(notification.message))

    notification_manager.notification_ready.connect(keep)
    yield seen
    notification_manager.notification_ready.disconnect(keep)


def open_widget(viewer) -> DSPWidget:
    _, widget = viewer.window.add_plugin_dock_widget("napari-dsp", "Deep Segmentation Prior")
    assert isinstance(widget, DSPWidget)
    return widget


def tiny(widget, n_iter=6, n_runs=2):
    widget._n_iter.value = n_iter
    widget._n_runs.value = n_runs
    widget._seed.value = 3
    widget._workers.value = 0


def run_and_wait(qtbot, widget):
    worker = widget.run()
    assert worker is not None
    # The widget's own handlers were connected before the thread started, so waiting on
    # their effect cannot miss a signal emitted before this line.
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT)
    return worker


def add_disc(viewer, name="cells"):
    image, mask = dark_on_bright((48, 64), seed=2)
    layer = viewer.add_image(image, name=name, scale=(2.0, 0.5), translate=(10.0, -4.0))
    return layer, mask


def test_widget_opens_through_the_manifest_and_follows_the_selection(viewer):
    first, _ = add_disc(viewer, "first")
    widget = open_widget(viewer)
    assert widget._image.value is first
    second, _ = add_disc(viewer, "second")
    viewer.layers.selection.active = second
    assert widget._image.value is second
    viewer.layers.selection.active = first
    assert widget._image.value is first


def test_run_adds_prior_and_labels_in_place_with_metadata(viewer, qtbot):
    layer, mask = add_disc(viewer)
    widget = open_widget(viewer)
    tiny(widget, n_iter=25, n_runs=3)
    run_and_wait(qtbot, widget)
    prior, labels = viewer.layers["cells prior"], viewer.layers["cells labels"]
    assert isinstance(prior, Image) and isinstance(labels, Labels)
    assert prior.data.shape == labels.data.shape == (48, 64)
    assert prior.data.dtype == np.float32 and labels.data.dtype == np.uint8
    for out in (prior, labels):
        np.testing.assert_allclose(out.scale, layer.scale)
        np.testing.assert_allclose(out.translate, layer.translate)
        meta = out.metadata["napari_dsp"]
        assert meta["settings"]["seed"] == 3 and meta["settings"]["n_iter"] == 25
        assert meta["device"] == "cpu" and "torch" in meta["versions"]
    fg = labels.data == 1
    assert np.logical_and(fg, mask).sum() / np.logical_or(fg, mask).sum() > 0.85
    assert widget._run.text == "Run"
    np.testing.assert_array_equal(layer.data, dark_on_bright((48, 64), seed=2)[0])


def test_rerun_updates_instead_of_duplicating(viewer, qtbot):
    add_disc(viewer)
    widget = open_widget(viewer)
    tiny(widget)
    run_and_wait(qtbot, widget)
    n_layers = len(viewer.layers)
    prior_layer = viewer.layers["cells prior"]
    widget._seed.value = 4
    run_and_wait(qtbot, widget)
    assert len(viewer.layers) == n_layers
    assert viewer.layers["cells prior"] is prior_layer
    assert prior_layer.metadata["napari_dsp"]["settings"]["seed"] == 4


def test_classes_and_invert_recluster_without_refit(viewer, qtbot):
    add_disc(viewer)
    widget = open_widget(viewer)
    tiny(widget, n_iter=20)
    run_and_wait(qtbot, widget)
    labels = viewer.layers["cells labels"]
    before = labels.data.copy()
    prior_before = viewer.layers["cells prior"].data.copy()
    widget._invert.value = True
    assert not widget.running
    np.testing.assert_array_equal(labels.data, 1 - before)
    widget._invert.value = False
    widget._mode.value = "K classes"
    widget._classes.value = 3
    assert not widget.running
    assert set(np.unique(labels.data)) == {1, 2, 3}
    np.testing.assert_array_equal(viewer.layers["cells prior"].data, prior_before)


def test_cancel_leaves_no_labels_and_no_partial_prior(viewer, qtbot):
    add_disc(viewer)
    widget = open_widget(viewer)
    tiny(widget, n_iter=3000, n_runs=2)
    widget._preview_every.value = 1
    worker = widget.run()
    assert widget._run.text == "Cancel"
    qtbot.waitUntil(lambda: widget._status.value.startswith("iteration"), timeout=TIMEOUT)
    qtbot.wait(600)  # let a preview reach the viewer
    with qtbot.waitSignal(worker.finished, timeout=5000):
        widget._run.changed.emit(True)  # the button, now reading "Cancel"
    names = [layer.name for layer in viewer.layers]
    assert names == ["cells"]
    assert widget._run.text == "Run" and widget._status.value == "cancelled"


def test_bad_input_becomes_a_notification(viewer, qtbot, notes):
    viewer.add_image(np.full((40, 40), 7.0), name="flat")
    widget = open_widget(viewer)
    tiny(widget)
    run_and_wait(qtbot, widget)
    assert any("constant" in n for n in notes), notes
    assert [layer.name for layer in viewer.layers] == ["flat"]
    assert widget._run.text == "Run"


def test_bad_settings_and_unsupported_layers_are_refused_up_front(viewer, notes):
    viewer.add_image(np.zeros((2, 2, 2, 40, 40)), name="stack")
    widget = open_widget(viewer)
    assert widget.run() is None
    assert any("5 dimensions; stacks up to T x Z x Y x X" in n for n in notes), notes
    widget._window.value = 4
    viewer.add_image(np.random.default_rng(0).random((40, 40)), name="plane")
    widget._image.value = viewer.layers["plane"]
    assert widget.run() is None
    assert any("window must be odd" in n for n in notes), notes
    assert len(viewer.layers) == 2


def test_event_loop_keeps_running_during_a_fit(viewer, qtbot):
    from qtpy.QtCore import QTimer

    image = np.random.default_rng(0).random((96, 96)).astype(np.float32)
    viewer.add_image(image, name="noise")
    widget = open_widget(viewer)
    tiny(widget, n_iter=3000, n_runs=3)
    ticks = []
    timer = QTimer()
    timer.setInterval(50)
    timer.timeout.connect(lambda: ticks.append(1))
    timer.start()
    worker = widget.run()
    qtbot.wait(3000)
    timer.stop()
    assert widget.running
    with qtbot.waitSignal(worker.finished, timeout=5000):
        widget.cancel()
    # 3 s at 20 Hz = 60 ticks; a blocked event loop would give a handful.
    assert len(ticks) >= 40, len(ticks)


def test_closing_the_viewer_during_a_run_stops_the_worker(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    add_disc(viewer)
    widget = open_widget(viewer)
    tiny(widget, n_iter=3000)
    worker = widget.run()
    qtbot.waitUntil(lambda: widget._status.value.startswith("iteration"), timeout=TIMEOUT)
    with qtbot.waitSignal(worker.finished, timeout=5000):
        viewer.close()


def test_removing_the_layer_during_a_run_cancels(viewer, qtbot, notes):
    layer, _ = add_disc(viewer)
    viewer.add_image(np.ones((8, 8)), name="other")
    widget = open_widget(viewer)
    widget._image.value = layer
    tiny(widget, n_iter=3000)
    worker = widget.run()
    qtbot.waitUntil(lambda: widget._status.value.startswith("iteration"), timeout=TIMEOUT)
    with qtbot.waitSignal(worker.finished, timeout=5000):
        viewer.layers.remove(layer)
    assert [x.name for x in viewer.layers] == ["other"]


def test_spread_layer_on_request(viewer, qtbot):
    add_disc(viewer)
    widget = open_widget(viewer)
    tiny(widget)
    widget._show_spread.value = True
    run_and_wait(qtbot, widget)
    spread = viewer.layers["cells spread"]
    assert spread.data.shape == (48, 64) and spread.data.dtype == np.float32


def test_sample_data_opens_and_segments_sensibly_with_defaults(viewer, qtbot):
    viewer.open_sample("napari-dsp", "nuclei")
    assert [x.name for x in viewer.layers] == ["synthetic nuclei",
                                               "synthetic nuclei reference mask"]
    viewer.open_sample("napari-dsp", "coins")
    assert viewer.layers["coins"].data.shape == (303, 384)
    widget = open_widget(viewer)
    widget._image.value = viewer.layers["synthetic nuclei"]
    widget._seed.value = 0
    run_and_wait(qtbot, widget)  # the default settings: 11 runs x 50 iterations
    fg = viewer.layers["synthetic nuclei labels"].data == 1
    mask = viewer.layers["synthetic nuclei reference mask"].data == 1
    assert np.logical_and(fg, mask).sum() / np.logical_or(fg, mask).sum() > 0.7


def test_self_training_mode_with_scribbles_and_cancel(viewer, qtbot):
    from sklearn.metrics import adjusted_rand_score

    from napari_dsp._synthetic import scribbles_for, textured_regions

    image, truth = textured_regions(3, size=64, seed=1)
    viewer.add_image(image, name="regions")
    viewer.add_labels(scribbles_for(truth, 1), name="strokes")
    widget = open_widget(viewer)
    widget._image.value = viewer.layers["regions"]
    widget._mode.value = "self-training (finds classes)"
    assert not widget._scribbles.native.isHidden() and not widget._min_labels.native.isHidden()
    widget._scribbles.value = viewer.layers["strokes"]
    tiny(widget, n_iter=30, n_runs=3)
    widget._preview_every.value = 1
    # Cancel during the self-training stage: its live labels layer goes away.
    worker = widget.run()
    stages = []
    worker.yielded.connect(lambda p: stages.append(p.stage))
    qtbot.waitUntil(lambda: "classes" in stages, timeout=TIMEOUT)
    qtbot.wait(500)
    with qtbot.waitSignal(worker.finished, timeout=5000):
        widget.cancel()
    assert "regions labels" not in [x.name for x in viewer.layers]
    assert not any(x.name.endswith("(running)") for x in viewer.layers)
    # A full run: exactly the painted classes, good agreement, strokes untouched.
    run_and_wait(qtbot, widget)
    labels = viewer.layers["regions labels"].data
    assert set(np.unique(labels)) == {1, 2, 3}
    assert adjusted_rand_score(truth.ravel(), labels.ravel()) > 0.85
    assert viewer.layers["regions labels"].metadata["napari_dsp"]["settings"]["method"] == \
        "kanezaki"
    np.testing.assert_array_equal(viewer.layers["strokes"].data, scribbles_for(truth, 1))


def test_instances_checkbox_counts_objects_without_refit(viewer, qtbot):
    from napari_dsp._synthetic import nuclei

    image, mask = nuclei((96, 96), n=8, seed=5)
    viewer.add_image(image, name="nuc")
    widget = open_widget(viewer)
    tiny(widget, n_iter=30, n_runs=3)
    run_and_wait(qtbot, widget)
    widget._instances.value = True
    labels = viewer.layers["nuc labels"].data
    count = int(labels.max())
    assert count >= 6 and widget._status.value.endswith(f"; {count} objects")
    assert len(np.unique(labels)) == count + 1


def test_a_second_run_is_refused_while_one_runs(viewer, qtbot, notes):
    add_disc(viewer)
    widget = open_widget(viewer)
    tiny(widget, n_iter=3000)
    worker = widget.run()
    assert widget.run() is None
    assert any("already running" in n for n in notes), notes
    with qtbot.waitSignal(worker.finished, timeout=5000):
        widget.cancel()


def test_two_widgets_on_two_layers_run_at_once_without_mixing(viewer, qtbot):
    a, mask_a = add_disc(viewer, "left")
    image_b = 1.0 - dark_on_bright((40, 40), seed=7)[0]
    b = viewer.add_image(image_b, name="right")
    w1 = open_widget(viewer)
    w2 = DSPWidget(viewer)
    viewer.window.add_dock_widget(w2, name="second")
    for w, layer in ((w1, a), (w2, b)):
        w._image.value = layer
        tiny(w, n_iter=30, n_runs=2)
    w1.run()
    w2.run()
    qtbot.waitUntil(lambda: not w1.running and not w2.running, timeout=TIMEOUT)
    assert viewer.layers["left labels"].data.shape == (48, 64)
    assert viewer.layers["right labels"].data.shape == (40, 40)
    fg = viewer.layers["left labels"].data == 1
    assert np.logical_and(fg, mask_a).sum() / np.logical_or(fg, mask_a).sum() > 0.8


def test_repeated_cancel_and_restart_leaves_the_viewer_consistent(viewer, qtbot):
    add_disc(viewer)
    widget = open_widget(viewer)
    tiny(widget, n_iter=3000)
    widget._preview_every.value = 1
    rng = np.random.default_rng(0)
    for _ in range(8):
        worker = widget.run()
        qtbot.wait(int(rng.integers(0, 400)))
        with qtbot.waitSignal(worker.finished, timeout=5000):
            widget.cancel()
        assert [x.name for x in viewer.layers] == ["cells"]
    tiny(widget, n_iter=5)
    run_and_wait(qtbot, widget)
    assert [x.name for x in viewer.layers] == ["cells", "cells prior", "cells labels"]


def test_only_image_layers_are_offered(viewer):
    viewer.add_labels(np.zeros((32, 32), np.uint8), name="a labels layer")
    viewer.add_points(np.zeros((3, 2)), name="some points")
    widget = open_widget(viewer)
    assert widget._image.choices == ()
    assert widget.run() is None  # nothing to run on: a notification, no worker


def test_stack_layer_current_plane_and_all_planes(viewer, qtbot):
    img, mask = dark_on_bright((40, 48), seed=4)
    stack = np.stack([img, np.roll(img, 6, axis=1), img[::-1]])
    layer = viewer.add_image(stack, name="z", scale=(3.0, 0.5, 0.5), translate=(0, 5, 5))
    widget = open_widget(viewer)
    tiny(widget, n_iter=25, n_runs=2)
    viewer.dims.set_point(0, 3.0)  # world z = 3 -> plane 1
    widget._planes.value = "current plane"
    run_and_wait(qtbot, widget)
    labels = viewer.layers["z labels"]
    assert labels.data.shape == stack.shape
    np.testing.assert_allclose(labels.scale, layer.scale)
    np.testing.assert_allclose(labels.translate, layer.translate)
    assert labels.data[0].max() == 0 and labels.data[2].max() == 0  # only plane 1 done
    fg = labels.data[1] == 1
    moved = np.roll(mask, 6, axis=1)
    assert np.logical_and(fg, moved).sum() / np.logical_or(fg, moved).sum() > 0.8
    assert viewer.layers["z prior"].data.shape == stack.shape
    widget._planes.value = "all planes"
    run_and_wait(qtbot, widget)
    assert viewer.layers["z labels"] is labels  # updated, not duplicated
    for z, m in enumerate([mask, moved, mask[::-1]]):
        fg = labels.data[z] == 1
        assert np.logical_and(fg, m).sum() / np.logical_or(fg, m).sum() > 0.8


def test_multiscale_layer_segments_the_chosen_level_in_place(viewer, qtbot):
    img, mask = dark_on_bright((96, 128), seed=5)
    small = img.reshape(48, 2, 64, 2).mean((1, 3))
    layer = viewer.add_image([img, small], multiscale=True, name="pyr", scale=(0.5, 0.5),
                             translate=(7.0, -3.0), rotate=30)
    widget = open_widget(viewer)
    widget._image.value = layer
    assert not widget._level.native.isHidden() and widget._level.max == 1
    assert widget._level.value == 0  # small enough to take the finest level
    widget._level.value = 1
    tiny(widget, n_iter=25, n_runs=2)
    run_and_wait(qtbot, widget)
    labels = viewer.layers["pyr labels"]
    assert labels.data.shape == small.shape
    np.testing.assert_allclose(labels.scale, [1.0, 1.0])  # level 1: pixels twice as big
    np.testing.assert_allclose(labels.rotate, layer.rotate)
    np.testing.assert_allclose(labels.translate, layer.translate)
    # the disc lands where it is in the world
    fg = np.argwhere(labels.data == 1).mean(0)
    truth = np.argwhere(mask).mean(0)
    world_fg = np.asarray(labels.data_to_world(fg))
    world_truth = np.asarray(layer.data_to_world(truth))
    assert np.linalg.norm(world_fg - world_truth) < 1.0


def test_dask_stack_and_affine_placement_per_plane(viewer, qtbot):
    da = pytest.importorskip("dask.array")
    img, mask = dark_on_bright((40, 48), seed=6)
    stack = np.stack([img, np.roll(img, 5, axis=0)])
    affine = np.eye(4)
    c, s = np.cos(0.4), np.sin(0.4)
    affine[1:3, 1:3] = [[c, -s], [s, c]]
    affine[1:3, 3] = [4.0, -2.0]
    layer = viewer.add_image(da.from_array(stack, chunks=(1, 40, 48)), name="lazy",
                             scale=(2.0, 0.7, 0.7), affine=affine)
    widget = open_widget(viewer)
    tiny(widget, n_iter=25, n_runs=2)
    viewer.dims.set_point(0, 2.0)  # world z = 2 -> plane 1
    widget._planes.value = "current plane"
    run_and_wait(qtbot, widget)
    labels = viewer.layers["lazy labels"]
    assert labels.data.shape == stack.shape and labels.data[0].max() == 0
    moved = np.roll(mask, 5, axis=0)
    fg = labels.data[1] == 1
    assert np.logical_and(fg, moved).sum() / np.logical_or(fg, moved).sum() > 0.8
    np.testing.assert_allclose(labels.affine.affine_matrix, layer.affine.affine_matrix)
    np.testing.assert_allclose(labels.scale, layer.scale)
    # a labelled pixel and the same pixel of the source map to the same world point
    pixel = (1, *np.argwhere(fg)[0])
    np.testing.assert_allclose(labels.data_to_world(pixel), layer.data_to_world(pixel))
    widget._planes.value = "all planes"
    run_and_wait(qtbot, widget)
    assert viewer.layers["lazy labels"] is labels
    for z, m in enumerate([mask, moved]):
        fg = labels.data[z] == 1
        assert np.logical_and(fg, m).sum() / np.logical_or(fg, m).sum() > 0.8


def test_volume_mode_fits_one_3d_prior_with_the_layer_spacing(viewer, qtbot):
    zz, yy, xx = np.mgrid[0:8, 0:40, 0:40]
    mask = ((zz - 4) * 2.0) ** 2 + (yy - 20) ** 2 + (xx - 18) ** 2 <= 10 ** 2
    image = np.where(mask, 0.7, 0.3) + np.random.default_rng(0).normal(0, 0.08, mask.shape)
    layer = viewer.add_image(image.astype(np.float32), name="vol", scale=(2.0, 1.0, 1.0))
    widget = open_widget(viewer)
    tiny(widget, n_iter=25, n_runs=2)
    widget._planes.value = "volume (3-D prior)"
    run_and_wait(qtbot, widget)
    labels = viewer.layers["vol labels"]
    assert labels.data.shape == image.shape
    np.testing.assert_allclose(labels.scale, layer.scale)
    meta = labels.metadata["napari_dsp"]
    assert meta["volumetric"] is True and tuple(meta["spacing"]) == (2.0, 1.0, 1.0)
    fg = labels.data == 1
    assert np.logical_and(fg, mask).sum() / np.logical_or(fg, mask).sum() > 0.85
