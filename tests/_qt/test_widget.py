"""The dock widget in a real napari viewer, driven through its public surface only.

Run under Xvfb (napari's canvas needs OpenGL):

    xvfb-run -a -s "-screen 0 1280x1024x24" python -m pytest tests/_qt -x -q
"""

import re

import numpy as np
import pytest
from napari.layers import Image, Labels

from napari_dsp._qt.outputs import META_KEY
from napari_dsp._qt.widget import DSPWidget
from tests.fast import TINY
from tests.synthetic import dark_on_bright

TIMEOUT = 120_000  # ms
#: The settings every GUI test starts from (tests/fast.py), a little smaller.
FAST = dict(TINY, n_iter=6, n_members=2, seed=3)
#: A fit that runs until it is cancelled.
ENDLESS = dict(FAST, n_iter=3000, preview_every=1)


@pytest.fixture
def fake_gpu(monkeypatch):
    """torch believes in one CUDA device (this machine has none)."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=None: "Fake GPU")
    return monkeypatch


def open_widget(viewer, **settings) -> DSPWidget:
    _, widget = viewer.window.add_plugin_dock_widget("napari-dsp", "Deep Segmentation Prior")
    assert isinstance(widget, DSPWidget)
    widget.set_values(**{**FAST, **settings})
    return widget


def run_and_wait(qtbot, widget):
    worker = widget.run()
    assert worker is not None, widget.status
    # The widget's handlers were connected before the thread started, so waiting on
    # their effect cannot miss a signal emitted before this line.
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT)
    return worker


def wait_for_reports(qtbot, widget):
    qtbot.waitUntil(lambda: "iteration" in widget.status, timeout=TIMEOUT)


def cancel_and_wait(qtbot, widget, worker):
    with qtbot.waitSignal(worker.finished, timeout=5000):
        widget.cancel()


def iou(a, b) -> float:
    return np.logical_and(a, b).sum() / np.logical_or(a, b).sum()


def add_disc(viewer, name="cells"):
    image, mask = dark_on_bright((48, 64), seed=2)
    layer = viewer.add_image(image, name=name, scale=(2.0, 0.5), translate=(10.0, -4.0))
    return layer, mask


def names(viewer) -> list:
    return [layer.name for layer in viewer.layers]


# -- opening, form and rows ----------------------------------------------------------------
def test_widget_opens_through_the_manifest_and_follows_the_selection(viewer):
    first, _ = add_disc(viewer, "first")
    widget = open_widget(viewer)
    assert widget.image_layer is first
    second, _ = add_disc(viewer, "second")
    viewer.layers.selection.active = second
    assert widget.image_layer is second
    viewer.layers.selection.active = first
    assert widget.image_layer is first


def test_rows_follow_the_layer_and_the_method(viewer):
    add_disc(viewer)
    widget = open_widget(viewer)
    form = widget.form
    assert form["n_classes"].value == 2 and form.shown("n_classes")  # no greyed "3"
    assert not form.shown("planes") and not form.shown("level")  # a 2-D layer
    assert not form.shown("volumetric") and not form.shown("scribbles")
    widget.set_values(method="kanezaki")
    assert not form.shown("n_classes") and not form.shown("invert")
    assert form.shown("scribbles") and form.shown("min_labels")
    widget.set_values(method="kmeans", n_classes=4)
    assert not any(form.shown(n) for n in ("invert", "instances", "refine"))
    stack = viewer.add_image(np.random.default_rng(0).random((3, 32, 32)), name="z")
    widget.image_layer = stack
    assert form.shown("planes") and not form.shown("volumetric")
    widget.planes = "all planes"
    assert form.shown("volumetric")
    assert widget.settings().n_classes == 4


def test_dock_title_is_not_clipped_in_a_1400_pixel_window(make_napari_viewer, qtbot):
    viewer = make_napari_viewer(show=True)
    add_disc(viewer)
    viewer.window.resize(1400, 900)
    dock, widget = viewer.window.add_plugin_dock_widget("napari-dsp", "Deep Segmentation Prior")
    widget.form.advanced = True  # the widest form
    title = dock.title.title  # napari's title bar label
    assert title.text().startswith("Deep Segmentation Prior")
    # once the layout has settled (a condition, not a wait), the title has its room
    qtbot.waitUntil(lambda: title.width() >= title.sizeHint().width(), timeout=10_000)
    assert dock.width() <= 500  # the canvas keeps most of the window


# -- a run and its layers ------------------------------------------------------------------
def test_run_adds_labels_on_top_and_a_hidden_prior_in_place_with_metadata(viewer, qtbot):
    layer, mask = add_disc(viewer)
    widget = open_widget(viewer, n_iter=25, n_members=3)
    run_and_wait(qtbot, widget)
    prior, labels = viewer.layers["cells prior"], viewer.layers["cells labels"]
    assert isinstance(prior, Image) and isinstance(labels, Labels)
    assert prior.data.shape == labels.data.shape == (48, 64)
    assert prior.data.dtype == np.float32 and labels.data.dtype == np.uint8
    # The user's image stays visible under the labels; the prior does not hide it.
    assert layer.visible and labels.visible and not prior.visible
    assert (
        names(viewer).index("cells labels")
        > names(viewer).index("cells prior")
        > names(viewer).index("cells")
    )
    for out in (prior, labels):
        np.testing.assert_allclose(out.scale, layer.scale)
        np.testing.assert_allclose(out.translate, layer.translate)
        meta = out.metadata["napari_dsp"]
        assert meta["settings"]["seed"] == 3 and meta["settings"]["n_iter"] == 25
        assert meta["device"] == "cpu" and "torch" in meta["versions"]
    assert iou(labels.data == 1, mask) > 0.85
    assert widget.run_button.text == "Run" and not widget.running
    assert widget.status.startswith("done on cpu") and "seed 3" in widget.status
    np.testing.assert_array_equal(layer.data, dark_on_bright((48, 64), seed=2)[0])


def test_progress_bar_moves_and_the_status_speaks_in_the_users_units(viewer, qtbot):
    add_disc(viewer)
    widget = open_widget(viewer, n_iter=12, preview_every=1)
    statuses, values, descriptions = [], [], []
    worker = widget.run()
    bar = widget.progress
    bar.events.value.connect(lambda e: values.append(e.value))
    bar.events.description.connect(lambda e: descriptions.append(e.value))
    worker.yielded.connect(lambda p: statuses.append(widget.status))
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT)
    assert len(values) >= 3 and values == sorted(values) and values[-1] == bar.total
    assert bar.n == bar.total == 12
    assert any(re.search(r"members \d+/2 done · iteration \d+/12", s) for s in statuses), statuses
    # the activity panel's one line: the layer (and the plane), the details in the status
    assert descriptions and all(d.startswith("cells") and len(d) <= 40 for d in descriptions)
    assert not any(re.fullmatch(r"\d+ / \d+", s) for s in statuses)


def test_rerun_updates_instead_of_duplicating(viewer, qtbot):
    add_disc(viewer)
    widget = open_widget(viewer)
    run_and_wait(qtbot, widget)
    n_layers = len(viewer.layers)
    prior_layer = viewer.layers["cells prior"]
    widget.set_values(seed=4)
    run_and_wait(qtbot, widget)
    assert len(viewer.layers) == n_layers
    assert viewer.layers["cells prior"] is prior_layer and not prior_layer.visible
    assert prior_layer.metadata["napari_dsp"]["settings"]["seed"] == 4


def test_clustering_settings_recluster_without_refit(viewer, qtbot):
    add_disc(viewer)
    widget = open_widget(viewer, n_iter=20)
    run_and_wait(qtbot, widget)
    labels = viewer.layers["cells labels"]
    before = labels.data.copy()
    prior_before = viewer.layers["cells prior"].data.copy()
    widget.set_values(invert=True)
    assert not widget.running and widget.worker is None
    np.testing.assert_array_equal(labels.data, 1 - before)
    assert "no refit" in widget.status
    widget.set_values(invert=False, n_classes=3)
    assert not widget.running
    assert set(np.unique(labels.data)) == {1, 2, 3}
    assert labels.metadata["napari_dsp"]["settings"]["n_classes"] == 3
    assert labels.metadata["napari_dsp"]["settings"]["seed"] == 3
    widget.set_values(window=5)
    assert labels.metadata["napari_dsp"]["settings"]["window"] == 5
    np.testing.assert_array_equal(viewer.layers["cells prior"].data, prior_before)


def test_instances_checkbox_counts_objects_without_refit(viewer, qtbot):
    from tests.synthetic import nuclei

    image, _ = nuclei((96, 96), n=8, seed=5)
    viewer.add_image(image, name="nuc")
    widget = open_widget(viewer, n_iter=30, n_members=3)
    run_and_wait(qtbot, widget)
    widget.set_values(instances=True)
    labels = viewer.layers["nuc labels"].data
    count = int(labels.max())
    assert count >= 6 and widget.status.endswith(f"; {count} objects")
    assert len(np.unique(labels)) == count + 1
    widget.set_values(min_size=10**6)  # every object is a speck now
    assert viewer.layers["nuc labels"].data.max() == 0


def test_spread_layer_on_request_is_added_hidden(viewer, qtbot):
    add_disc(viewer)
    widget = open_widget(viewer)
    widget.show_spread = True
    run_and_wait(qtbot, widget)
    spread = viewer.layers["cells spread"]
    assert spread.data.shape == (48, 64) and spread.data.dtype == np.float32
    assert not spread.visible and viewer.layers["cells labels"].visible
    assert names(viewer)[-1] == "cells labels"


def test_texture_features_split_textures_and_show_their_prior_as_rgb(viewer, qtbot):
    """Two stripe textures of the same brightness: with the texture checkbox the labels
    follow them, and the texture channels' prior is added hidden as an RGB layer."""
    from tests.core.test_texture import two_textures

    image, truth = two_textures((64, 64))
    viewer.add_image(image, name="tex", scale=(0.5, 0.5))
    widget = open_widget(viewer, texture=True, n_iter=20)
    run_and_wait(qtbot, widget)
    layer = viewer.layers["tex texture prior"]
    assert layer.rgb and layer.data.shape == (64, 64, 3) and not layer.visible
    assert tuple(layer.scale) == (0.5, 0.5)
    labels = viewer.layers["tex labels"]
    assert isinstance(labels, Labels) and labels.metadata[META_KEY]["fit"]["texture"]
    fg = labels.data == 1
    assert max(np.mean(fg == (truth == 1)), np.mean(fg == (truth == 0))) > 0.9
    assert names(viewer)[-1] == "tex labels"
    widget.set_values(texture=False)  # a run without texture removes the stale layer
    run_and_wait(qtbot, widget)
    assert "tex texture prior" not in names(viewer)
    assert names(viewer) == ["tex", "tex prior", "tex labels"]


def test_sample_data_opens_and_segments_sensibly(viewer, qtbot):
    viewer.open_sample("napari-dsp", "nuclei")
    assert names(viewer) == ["synthetic nuclei", "synthetic nuclei reference mask"]
    viewer.open_sample("napari-dsp", "coins")
    assert viewer.layers["coins"].data.shape == (303, 384)
    widget = open_widget(viewer, n_iter=30, n_members=3, seed=0)
    widget.image_layer = viewer.layers["synthetic nuclei"]
    run_and_wait(qtbot, widget)
    fg = viewer.layers["synthetic nuclei labels"].data == 1
    assert iou(fg, viewer.layers["synthetic nuclei reference mask"].data == 1) > 0.7


# -- cancel, errors, refusals ---------------------------------------------------------------
def test_cancel_leaves_no_labels_and_no_partial_prior(viewer, qtbot):
    add_disc(viewer)
    widget = open_widget(viewer, **ENDLESS)
    worker = widget.run()
    assert widget.run_button.text == "Cancel"
    qtbot.waitUntil(lambda: "cells prior (running)" in names(viewer), timeout=TIMEOUT)
    assert viewer.layers["cells prior (running)"].visible  # the live preview
    with qtbot.waitSignal(worker.finished, timeout=5000):
        widget.run_button.clicked.emit(True)  # the button, now reading "Cancel"
    assert names(viewer) == ["cells"]
    assert widget.run_button.text == "Run" and widget.status == "cancelled"


def test_cancel_of_a_rerun_restores_the_earlier_result(viewer, qtbot):
    add_disc(viewer)
    widget = open_widget(viewer)
    run_and_wait(qtbot, widget)
    prior = viewer.layers["cells prior"]
    before = prior.data.copy()
    widget.set_values(**ENDLESS)
    worker = widget.run()
    qtbot.waitUntil(lambda: prior.name.endswith("(running)"), timeout=TIMEOUT)
    assert prior.visible
    cancel_and_wait(qtbot, widget, worker)
    assert prior.name == "cells prior" and not prior.visible
    np.testing.assert_array_equal(prior.data, before)


def test_bad_input_is_refused_at_run_before_any_thread(viewer, notes):
    viewer.add_image(np.full((40, 40), 7.0), name="flat")
    widget = open_widget(viewer)
    assert widget.run() is None and widget.worker is None and not widget.running
    assert any("constant" in n for n in notes), notes
    widget.set_values(window=4)
    viewer.add_image(np.random.default_rng(0).random((40, 40)), name="plane")
    widget.image_layer = viewer.layers["plane"]
    assert widget.run() is None
    assert any("window must be odd" in n for n in notes), notes
    widget.set_values(window=3)
    viewer.add_image(np.zeros((2, 2, 2, 40, 40)), name="5d")
    widget.image_layer = viewer.layers["5d"]
    widget.planes = "all planes"  # (its current plane is a plane like any other)
    assert widget.run() is None
    assert any("has 3 plane axes" in n for n in notes), notes
    assert names(viewer) == ["flat", "plane", "5d"] and widget.run_button.text == "Run"


def test_failure_inside_the_worker_becomes_a_notification(viewer, qtbot, notes):
    stack = np.stack([np.full((40, 40), 3.0), np.full((40, 40), 3.0)])
    layer = viewer.add_image(stack, name="flat stack")
    widget = open_widget(viewer)
    widget.planes = "all planes"  # a stack is read inside the worker
    run_and_wait(qtbot, widget)
    assert any("the fit failed" in n and "constant" in n for n in notes), notes
    assert names(viewer) == ["flat stack"] and widget.status.startswith("failed")
    np.testing.assert_array_equal(layer.data, stack)


def test_a_runtime_error_in_the_fit_is_reported_not_lost(viewer, qtbot, notes, monkeypatch):
    # superqt drops a RuntimeError leaving a worker (no errored, no finished signal);
    # torch reports CUDA out of memory as one. It must still reach the user.
    from napari_dsp.core import cluster

    def boom(*args, **kwargs):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(cluster, "fit_cluster_model", boom)
    layer, _ = add_disc(viewer)
    widget = open_widget(viewer, preview_every=1)
    run_and_wait(qtbot, widget)
    assert any("out of memory" in n and "fewer members" in n for n in notes), notes
    assert names(viewer) == ["cells"] and widget.run_button.text == "Run"


def test_cuda_device_can_be_chosen_and_a_failure_on_it_is_reported(fake_gpu, viewer, qtbot, notes):
    layer, _ = add_disc(viewer)
    widget = open_widget(viewer)
    device = widget.form["device"]
    assert "CUDA 0: Fake GPU" in [device.native.itemText(i) for i in range(device.native.count())]
    widget.set_values(device="cuda:0")
    assert widget.settings().device == "cuda:0"
    # torch has no CUDA here, so the fit fails inside the worker: a notification, the
    # viewer lives on and the user's layers are untouched.
    run_and_wait(qtbot, widget)
    assert any("the fit failed" in n and "cuda:0" in n for n in notes), notes
    assert names(viewer) == ["cells"] and widget.run_button.text == "Run"
    np.testing.assert_array_equal(layer.data, dark_on_bright((48, 64), seed=2)[0])
    # With CUDA gone the device is refused at Run, before any thread.
    fake_gpu.setattr("torch.cuda.is_available", lambda: False)
    assert widget.run() is None
    assert any("CUDA is not available" in n for n in notes), notes
    widget.set_values(device="cpu")
    run_and_wait(qtbot, widget)
    assert "cells labels" in names(viewer)


def test_a_second_run_is_refused_while_one_runs(viewer, qtbot, notes):
    add_disc(viewer)
    widget = open_widget(viewer, **ENDLESS)
    worker = widget.run()
    assert widget.run() is None
    assert any("already running" in n for n in notes), notes
    cancel_and_wait(qtbot, widget, worker)


def test_only_image_layers_are_offered(viewer, notes):
    viewer.add_labels(np.zeros((32, 32), np.uint8), name="a labels layer")
    viewer.add_points(np.zeros((3, 2)), name="some points")
    widget = open_widget(viewer)
    assert widget.form["image"].choices == ()
    assert widget.run() is None  # nothing to run on: a notification, no worker
    assert any("choose an Image layer" in n for n in notes), notes


# -- the viewer stays responsive and consistent ---------------------------------------------
def test_event_loop_keeps_running_during_a_fit(viewer, qtbot):
    """While the fit runs, the GUI thread keeps answering: events posted to it are
    handled, again and again, with previews arriving in between (a fit on the GUI thread
    would hold them all until it ends, which ENDLESS never does)."""
    from qtpy.QtCore import QTimer

    viewer.add_image(np.random.default_rng(0).random((96, 96)).astype(np.float32), name="noise")
    widget = open_widget(viewer, **dict(ENDLESS, n_members=3))
    worker = widget.run()
    statuses = set()
    for _ in range(5):
        handled: list = []
        QTimer.singleShot(0, lambda seen=handled: seen.append(widget.status))
        qtbot.waitUntil(lambda seen=handled: bool(seen), timeout=TIMEOUT)
        statuses.add(handled[0])
        qtbot.waitUntil(lambda: widget.status not in statuses, timeout=TIMEOUT)  # progress
    assert widget.running
    cancel_and_wait(qtbot, widget, worker)


def test_closing_the_viewer_during_a_run_stops_the_worker(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    add_disc(viewer)
    widget = open_widget(viewer, **ENDLESS)
    worker = widget.run()
    wait_for_reports(qtbot, widget)
    with qtbot.waitSignal(worker.finished, timeout=5000):
        viewer.close()


def test_closing_the_dock_during_a_run_stops_the_worker(viewer, qtbot):
    layer, _ = add_disc(viewer)
    dock, widget = viewer.window.add_plugin_dock_widget("napari-dsp", "Deep Segmentation Prior")
    widget.set_values(**ENDLESS)
    worker = widget.run()
    wait_for_reports(qtbot, widget)
    with qtbot.waitSignal(worker.finished, timeout=5000):
        viewer.window.remove_dock_widget(dock)
    assert names(viewer) == ["cells"]  # the live preview went with the run
    second = viewer.add_image(np.ones((8, 8)), name="after")  # no dead widget reacts
    viewer.layers.selection.active = second
    viewer.layers.remove(layer)
    assert names(viewer)[-1] == "after"


def test_removing_the_layer_during_a_run_cancels(viewer, qtbot):
    layer, _ = add_disc(viewer)
    viewer.add_image(np.ones((8, 8)), name="other")
    widget = open_widget(viewer, **ENDLESS)
    widget.image_layer = layer
    worker = widget.run()
    wait_for_reports(qtbot, widget)
    with qtbot.waitSignal(worker.finished, timeout=5000):
        viewer.layers.remove(layer)
    assert names(viewer) == ["other"]


def test_repeated_cancel_and_restart_leaves_the_viewer_consistent(viewer, qtbot):
    add_disc(viewer)
    widget = open_widget(viewer, **ENDLESS)
    rng = np.random.default_rng(0)
    for _ in range(8):
        worker = widget.run()
        qtbot.wait(int(rng.integers(0, 400)))
        cancel_and_wait(qtbot, widget, worker)
        assert names(viewer) == ["cells"]
    widget.set_values(n_iter=5)
    run_and_wait(qtbot, widget)
    assert names(viewer) == ["cells", "cells prior", "cells labels"]


def test_two_widgets_on_two_layers_run_at_once_without_mixing(viewer, qtbot):
    a, mask_a = add_disc(viewer, "left")
    b = viewer.add_image(1.0 - dark_on_bright((40, 40), seed=7)[0], name="right")
    w1 = open_widget(viewer, n_iter=30)
    w2 = DSPWidget(viewer)
    viewer.window.add_dock_widget(w2, name="second")
    w2.set_values(**dict(FAST, n_iter=30))
    w1.image_layer, w2.image_layer = a, b
    assert w1.run() is not None and w2.run() is not None
    qtbot.waitUntil(lambda: not w1.running and not w2.running, timeout=TIMEOUT)
    assert viewer.layers["left labels"].data.shape == (48, 64)
    assert viewer.layers["right labels"].data.shape == (40, 40)
    assert iou(viewer.layers["left labels"].data == 1, mask_a) > 0.8


# -- self-training ------------------------------------------------------------------------
def test_self_training_mode_with_scribbles_and_cancel(viewer, qtbot):
    from sklearn.metrics import adjusted_rand_score

    from tests.synthetic import scribbles_for, textured_regions

    image, truth = textured_regions(3, size=64, seed=1)
    viewer.add_image(image, name="regions")
    viewer.add_labels(scribbles_for(truth, 1), name="strokes")
    widget = open_widget(viewer, n_iter=30, n_members=3, preview_every=1)
    widget.image_layer = viewer.layers["regions"]
    widget.set_values(method="kanezaki")
    assert widget.form.shown("scribbles") and widget.form.shown("min_labels")
    widget.scribbles_layer = viewer.layers["strokes"]
    # Cancel during the self-training stage: its live labels layer goes away.
    worker = widget.run()
    stages = []
    worker.yielded.connect(lambda p: stages.append(p.stage))
    qtbot.waitUntil(lambda: "classes" in stages, timeout=TIMEOUT)
    qtbot.waitUntil(lambda: "self-training" in widget.status, timeout=TIMEOUT)
    cancel_and_wait(qtbot, widget, worker)
    assert "regions labels" not in names(viewer)
    assert not any(n.endswith("(running)") for n in names(viewer))
    # A full run: exactly the painted classes, good agreement, strokes untouched.
    run_and_wait(qtbot, widget)
    labels = viewer.layers["regions labels"]
    assert set(np.unique(labels.data)) == {1, 2, 3}
    assert adjusted_rand_score(truth.ravel(), labels.data.ravel()) > 0.85
    assert labels.metadata["napari_dsp"]["settings"]["method"] == "kanezaki"
    assert labels.visible and names(viewer)[-1] == "regions labels"
    np.testing.assert_array_equal(viewer.layers["strokes"].data, scribbles_for(truth, 1))


# -- stacks, pyramids, lazy data ------------------------------------------------------------
def test_stack_layer_current_plane_and_all_planes(viewer, qtbot):
    img, mask = dark_on_bright((40, 48), seed=4)
    stack = np.stack([img, np.roll(img, 6, axis=1), img[::-1]])
    layer = viewer.add_image(stack, name="z", scale=(3.0, 0.5, 0.5), translate=(0, 5, 5))
    widget = open_widget(viewer, n_iter=25)
    assert widget.form.shown("planes")
    viewer.dims.set_point(0, 3.0)  # world z = 3 -> plane 1
    widget.planes = "current plane"
    run_and_wait(qtbot, widget)
    labels = viewer.layers["z labels"]
    assert labels.data.shape == stack.shape
    np.testing.assert_allclose(labels.scale, layer.scale)
    np.testing.assert_allclose(labels.translate, layer.translate)
    assert labels.data[0].max() == 0 and labels.data[2].max() == 0  # only plane 1 done
    moved = np.roll(mask, 6, axis=1)
    assert iou(labels.data[1] == 1, moved) > 0.8
    assert viewer.layers["z prior"].data.shape == stack.shape
    widget.planes = "all planes"
    statuses = []
    worker = widget.run()
    worker.yielded.connect(lambda p: statuses.append(widget.status))
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT)
    assert any(s.startswith("plane 3/3 · members") for s in statuses), statuses
    assert viewer.layers["z labels"] is labels  # updated, not duplicated
    for z, m in enumerate([mask, moved, mask[::-1]]):
        assert iou(labels.data[z] == 1, m) > 0.8
    widget.set_values(n_classes=3)  # no re-clustering of a stack: it says so
    assert "next Run" in widget.status and labels.data.max() == 1


def test_rgb_stack_all_planes_keeps_the_colour_axis(viewer, qtbot):
    img, mask = dark_on_bright((32, 40), seed=2)
    rgb = np.stack([img, 0.5 * img, 1.0 - img], axis=-1)
    layer = viewer.add_image(np.stack([rgb, rgb[::-1]]), name="rgb", rgb=True)
    widget = open_widget(viewer, n_iter=25)
    assert layer.rgb and widget.form.shown("planes")
    widget.planes = "all planes"
    run_and_wait(qtbot, widget)
    assert viewer.layers["rgb labels"].data.shape == (2, 32, 40)
    prior = viewer.layers["rgb prior"]
    assert prior.rgb and prior.data.shape == (2, 32, 40, 3)
    assert iou(viewer.layers["rgb labels"].data[1] == 1, mask[::-1]) > 0.8


def test_multiscale_layer_segments_the_chosen_level_in_place(viewer, qtbot):
    img, mask = dark_on_bright((96, 128), seed=5)
    small = img.reshape(48, 2, 64, 2).mean((1, 3))
    layer = viewer.add_image(
        [img, small],
        multiscale=True,
        name="pyr",
        scale=(0.5, 0.5),
        translate=(7.0, -3.0),
        rotate=30,
    )
    widget = open_widget(viewer, n_iter=25)
    widget.image_layer = layer
    assert widget.form.shown("level") and widget.form["level"].max == 1
    assert widget.level == 0  # small enough to take the finest level
    widget.level = 1
    run_and_wait(qtbot, widget)
    labels = viewer.layers["pyr labels"]
    assert labels.data.shape == small.shape
    np.testing.assert_allclose(labels.scale, [1.0, 1.0])  # level 1: pixels twice as big
    np.testing.assert_allclose(labels.rotate, layer.rotate)
    np.testing.assert_allclose(labels.translate, layer.translate)
    # the disc lands where it is in the world
    fg = np.argwhere(labels.data == 1).mean(0)
    world_fg = np.asarray(labels.data_to_world(fg))
    world_truth = np.asarray(layer.data_to_world(np.argwhere(mask).mean(0)))
    assert np.linalg.norm(world_fg - world_truth) < 1.0


def test_dask_stack_and_affine_placement_per_plane(viewer, qtbot):
    da = pytest.importorskip("dask.array")
    img, mask = dark_on_bright((40, 48), seed=6)
    stack = np.stack([img, np.roll(img, 5, axis=0)])
    affine = np.eye(4)
    c, s = np.cos(0.4), np.sin(0.4)
    affine[1:3, 1:3] = [[c, -s], [s, c]]
    affine[1:3, 3] = [4.0, -2.0]
    layer = viewer.add_image(
        da.from_array(stack, chunks=(1, 40, 48)), name="lazy", scale=(2.0, 0.7, 0.7), affine=affine
    )
    widget = open_widget(viewer, n_iter=25)
    viewer.dims.set_point(0, 2.0)  # world z = 2 -> plane 1
    widget.planes = "current plane"
    run_and_wait(qtbot, widget)
    labels = viewer.layers["lazy labels"]
    assert labels.data.shape == stack.shape and labels.data[0].max() == 0
    moved = np.roll(mask, 5, axis=0)
    fg = labels.data[1] == 1
    assert iou(fg, moved) > 0.8
    np.testing.assert_allclose(labels.affine.affine_matrix, layer.affine.affine_matrix)
    np.testing.assert_allclose(labels.scale, layer.scale)
    # a labelled pixel and the same pixel of the source map to the same world point
    pixel = (1, *np.argwhere(fg)[0])
    np.testing.assert_allclose(labels.data_to_world(pixel), layer.data_to_world(pixel))
    widget.planes = "all planes"
    run_and_wait(qtbot, widget)
    assert viewer.layers["lazy labels"] is labels
    for z, m in enumerate([mask, moved]):
        assert iou(labels.data[z] == 1, m) > 0.8


def test_lazy_stack_all_planes_goes_to_disk_with_bounded_memory(viewer, qtbot, tmp_path):
    """A dask-backed stack in all-planes mode is segmented plane by plane into zarr; the
    labels layer reads that output lazily and matches segment_stack_to_zarr."""
    da = pytest.importorskip("dask.array")
    pytest.importorskip("zarr")
    from napari_dsp.large import segment_stack_to_zarr
    from tests.synthetic import nuclei

    stack = np.stack([nuclei((48, 48), n=3, radius=(5, 8), seed=i)[0] for i in range(5)])
    layer = viewer.add_image(da.from_array(stack, chunks=(1, 48, 48)), name="lazy stack")
    widget = open_widget(viewer)
    widget.image_layer = layer
    widget.planes = "all planes"
    run_and_wait(qtbot, widget)
    labels = viewer.layers["lazy stack labels"]
    assert isinstance(labels, Labels) and not isinstance(labels.data, np.ndarray)
    where = re.search(r"labels on disk in (\S+\.zarr)", widget.status)
    assert where, widget.status
    assert "lazy stack prior" not in names(viewer)  # no prior is kept for a lazy stack
    reference = segment_stack_to_zarr(
        stack, tmp_path / "ref.zarr", **{**FAST, **widget_seed(labels)}
    )
    import zarr

    np.testing.assert_array_equal(
        np.asarray(labels.data), zarr.open_array(str(reference), mode="r")[:]
    )
    assert np.asarray(labels.data).max() == 1
    assert isinstance(layer.data, da.Array)  # the source layer is untouched
    # a cancelled run leaves neither its output nor its new folder
    import tempfile
    from pathlib import Path

    before = set(Path(tempfile.gettempdir()).glob("napari-dsp-*"))
    widget.set_values(n_iter=300)
    worker = widget.run()
    qtbot.waitUntil(lambda: "plane" in widget.status, timeout=TIMEOUT)
    cancel_and_wait(qtbot, widget, worker)
    assert widget.status == "cancelled"
    assert set(Path(tempfile.gettempdir()).glob("napari-dsp-*")) == before
    assert Path(where.group(1)).exists()  # the finished run's output stays


def widget_seed(labels) -> dict:
    return {"seed": labels.metadata[META_KEY]["settings"]["seed"]}


def test_volumetric_setting_fits_one_3d_prior_with_the_layer_spacing(viewer, qtbot):
    zz, yy, xx = np.mgrid[0:8, 0:40, 0:40]
    mask = ((zz - 4) * 2.0) ** 2 + (yy - 20) ** 2 + (xx - 18) ** 2 <= 10**2
    image = np.where(mask, 0.7, 0.3) + np.random.default_rng(0).normal(0, 0.08, mask.shape)
    layer = viewer.add_image(image.astype(np.float32), name="vol", scale=(2.0, 1.0, 1.0))
    widget = open_widget(viewer, n_iter=25)
    widget.planes = "all planes"
    widget.set_values(volumetric=True)
    assert widget.settings().volumetric
    run_and_wait(qtbot, widget)
    labels = viewer.layers["vol labels"]
    assert labels.data.shape == image.shape
    np.testing.assert_allclose(labels.scale, layer.scale)
    fit = labels.metadata["napari_dsp"]["fit"]
    assert fit["volumetric"] is True and tuple(fit["spacing"]) == (2.0, 1.0, 1.0)
    assert iou(labels.data == 1, mask) > 0.85
    widget.planes = "current plane"  # the setting no longer applies
    assert not widget.settings().volumetric


def test_a_field_of_noise_gives_empty_labels_and_one_notification(viewer, qtbot, notes):
    noise = np.random.default_rng(5).poisson(10, (96, 96)).astype(np.uint16)
    viewer.add_image(noise, name="noise")
    widget = open_widget(viewer, n_iter=30, n_members=5)
    run_and_wait(qtbot, widget)
    labels = viewer.layers["noise labels"]
    assert isinstance(labels, Labels) and not labels.data.any()
    said = [n for n in notes if "stands out from its noise" in n]
    assert len(said) == 1, notes
    assert "nothing stands out from the noise" in widget.status
    decision = labels.metadata["napari_dsp"]["clustering"]["decision"]
    assert decision["result"] == "empty"


@pytest.mark.parametrize("path", ["image", "stack", "lazy stack"])
def test_closing_napari_right_after_a_cancel_lets_the_process_exit(path):
    """Cancel, close the viewer at once, exit: on every path the process ends (a lazy
    stack's fit once kept it waiting for its stopped threads for ever)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    if path == "lazy stack":
        pytest.importorskip("dask.array")
        pytest.importorskip("zarr")
    root = Path(__file__).resolve().parents[2]
    script = Path(__file__).with_name("exit_after_cancel.py")
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])
    )
    try:
        done = subprocess.run(
            [sys.executable, str(script), path],
            env=env,
            cwd=root,
            capture_output=True,
            text=True,
            timeout=240,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(
            f"the process did not exit within 240 s after the cancel and the "
            f"close ({path}): {exc.stdout!r} {exc.stderr!r}"
        )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "closed" in done.stdout
