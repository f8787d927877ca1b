"""Modalities (issue 28): what each one fits and decides, on procedural images with a
known answer, through the API, the command line and the prior's re-clustering; empty
fields stay empty in every modality; the suggestion for an image that looks like one."""

import json

import numpy as np
import pytest
import tifffile

from napari_dsp import NothingToSegmentWarning, Settings, fit_prior, segment, segment_stack
from napari_dsp.cli import main
from napari_dsp.core import modality as M
from napari_dsp.core.image import normalize, to_channels_first
from tests.fast import TINY, TINY_FLAGS
from tests.synthetic import bright_crowd, nuclei, phase_contrast, stained_section

#: A fit long enough for the prior to look like the image (a few seconds on 96 x 96).
FIT = dict(TINY, n_iter=30)


def iou(a, b):
    a, b = np.asarray(a) > 0, np.asarray(b) > 0
    return (a & b).sum() / (a | b).sum()


def looks(image):
    raw = to_channels_first(np.asarray(image))
    return M.suggest(raw, normalize(raw))


@pytest.mark.parametrize(
    "kwargs, clash",
    [
        (dict(n_classes=3), "n_classes=3"),
        (dict(method="kanezaki"), "method='kanezaki'"),
        (dict(texture=True), "texture=True"),
        (dict(volumetric=True), "volumetric=True"),
    ],
)
def test_a_modality_is_for_foreground_background_of_2d_images(kwargs, clash):
    with pytest.raises(ValueError, match="modality='phase' is for foreground/background") as e:
        Settings(modality="phase", **kwargs)
    assert clash in str(e.value) and "modality='auto'" in str(e.value)
    assert Settings(modality="auto", **kwargs).modality == "auto"


def test_unknown_modality_names_the_choices():
    with pytest.raises(ValueError, match="'auto', 'fluorescence', 'phase', 'brightfield-stain'"):
        Settings(modality="brightfield")


def test_phase_keeps_halos_and_the_gap_between_touching_cells_out():
    """Dark rods with bright halos: 'phase' finds the rods (the halo and the one-pixel
    gap between two touching rods stay background); 'auto' does worse on the same fit
    settings, and says the image looks like phase contrast."""
    image, cells = phase_contrast(seed=0)
    result = segment(image, modality="phase", full_output=True, **FIT)
    fg = result.labels > 0
    assert iou(fg, cells) >= 0.9
    halo = (image > np.percentile(image, 97)) & ~cells
    assert fg[halo].mean() < 0.05
    clustering = result.metadata["clustering"]
    assert clustering["modality"] == "phase" and "phase_cut" in clustering
    assert result.metadata["fit"]["derived"] == {
        "modality": "phase",
        "channels": ["local contrast"],
    }
    assert result.prior.texture.shape == (1, *image.shape)  # the local contrast's prior
    auto = segment(image, full_output=True, **FIT)
    assert iou(auto.labels, cells) < iou(fg, cells)
    assert auto.metadata["clustering"]["suggestion"]["modality"] == "phase"
    assert "--modality phase" in auto.metadata["clustering"]["suggestion"]["message"]


def test_stained_section_takes_the_haematoxylin_rich_class():
    image, nuclei_mask = stained_section(seed=1)
    result = segment(image, modality="brightfield-stain", full_output=True, **FIT)
    assert iou(result.labels, nuclei_mask) >= 0.8
    assert result.metadata["fit"]["derived"]["channels"] == ["haematoxylin", "eosin", "DAB"]
    assert np.asarray(result.prior).shape == image.shape  # the colour prior, as the image
    assert (
        segment(image, full_output=True, **FIT).metadata["clustering"]["suggestion"]["modality"]
        == "brightfield-stain"
    )


def test_stain_needs_colour():
    image, _ = phase_contrast(seed=0)
    with pytest.raises(ValueError, match="needs an RGB image .* Choose another modality"):
        segment(image, modality="brightfield-stain", **TINY)
    with pytest.raises(ValueError, match="needs an RGB image"):
        fit_prior(image, modality="brightfield-stain", **TINY)


def test_fluorescence_keeps_the_bright_side_when_cells_cover_the_border():
    """A crowded field: the border rule of 'auto' takes the dark pockets for objects;
    'fluorescence' knows objects are bright."""
    image, cells = bright_crowd(seed=0)
    assert iou(segment(image, **FIT), cells) < 0.2
    result = segment(image, modality="fluorescence", full_output=True, **FIT)
    assert iou(result.labels, cells) >= 0.8
    assert "brighter" in result.metadata["clustering"]["foreground_rule"]


def test_fluorescence_agrees_with_auto_where_the_border_rule_is_right():
    image, _ = nuclei((128, 128), n=10)
    auto = segment(image, **FIT)
    fluo = segment(image, modality="fluorescence", **FIT)
    assert iou(auto, fluo) >= 0.95


@pytest.mark.parametrize(
    "name, modality",
    [
        ("grey", "auto"),
        ("grey", "fluorescence"),
        ("grey", "phase"),
        ("rgb", "brightfield-stain"),
        ("rgb", "auto"),
    ],
)
def test_a_field_of_noise_stays_empty_in_every_modality(name, modality):
    rng = np.random.default_rng(3)
    field = {
        "grey": rng.poisson(30, (96, 96)).astype(np.uint16),
        "rgb": np.clip(rng.normal(210, 8, (96, 96, 3)), 0, 255).astype(np.uint8),
    }[name]
    said = "no nuclei stand out" if modality == "brightfield-stain" else "nothing in this image"
    with pytest.warns(NothingToSegmentWarning, match=said):
        result = segment(field, modality=modality, full_output=True, **FIT)
    assert not np.any(result.labels)
    assert result.metadata["clustering"]["decision"]["result"] == "empty"
    assert "suggestion" not in result.metadata["clustering"]


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda: phase_contrast(seed=2)[0], "phase"),
        (lambda: stained_section(seed=2)[0], "brightfield-stain"),
        (lambda: nuclei((128, 128), n=10)[0], None),
        (lambda: bright_crowd(seed=2)[0], None),
        (lambda: np.random.default_rng(0).poisson(20, (64, 64)), None),
    ],
)
def test_suggestion(make, expected):
    found = looks(make())
    assert (found and found["modality"]) == expected


def test_a_prior_is_clustered_with_the_modality_it_was_fitted_for():
    image, cells = phase_contrast(seed=1)
    prior = fit_prior(image, modality="phase", **FIT)
    again = segment(image, prior=prior, full_output=True)
    assert again.metadata["settings"]["modality"] == "phase"
    assert np.array_equal(again.labels, segment(image, modality="phase", **FIT))
    plain = fit_prior(image, **FIT)
    with pytest.raises(ValueError, match="fitted for modality='auto', not 'phase'; refit"):
        segment(image, prior=plain, modality="phase")
    # fluorescence fits the image alone: a plain prior serves it
    assert segment(image, prior=plain, modality="fluorescence").shape == image.shape
    with pytest.raises(ValueError, match="draws the cells from the image's pixels"):
        segment(prior=prior)


def test_stacks_refuse_a_modality_for_now():
    image, _ = phase_contrast((32, 32))
    with pytest.raises(ValueError, match="is for single 2-D images in this version"):
        segment_stack(np.stack([image, image]), modality="phase", **TINY)


def test_command_line_modality_and_its_suggestion(tmp_path, capsys):
    image, cells = phase_contrast(seed=0)
    src = tmp_path / "phase.tif"
    tifffile.imwrite(src, image)
    flags = [*TINY_FLAGS, "--iterations", "30"]
    assert main(["segment", str(src), "-o", str(tmp_path / "auto"), *flags]) == 0
    assert "looks like phase contrast" in capsys.readouterr().err
    out = tmp_path / "phase"
    assert main(["segment", str(src), "-o", str(out), "--modality", "phase", *flags]) == 0
    assert "looks like" not in capsys.readouterr().err
    assert iou(tifffile.imread(out / "phase_labels.tif"), cells) >= 0.9
    meta = json.loads((out / "phase_labels.json").read_text())
    assert meta["settings"]["modality"] == "phase"
    bad = ["segment", str(src), "-o", str(tmp_path / "x"), "--modality", "phase", "--classes", "3"]
    assert main([*bad, *flags]) == 2
    err = capsys.readouterr().err
    assert "--modality phase is for foreground/background" in err and "--classes 3" in err
    assert "Traceback" not in err


def test_a_stained_section_without_nuclei_is_empty_not_the_glass():
    """Eosin-pink tissue beside bare glass and no nuclei: the two classes split glass from
    tissue, and neither has haematoxylin: nothing is segmented, with a warning."""
    image, _ = stained_section(seed=1)
    rng = np.random.default_rng(0)
    pink = np.clip(rng.normal((225, 150, 200), 6, image.shape), 0, 255).astype(np.uint8)
    glass = np.all(image > 235, -1)
    pink[glass] = image[glass]
    with pytest.warns(NothingToSegmentWarning, match="no nuclei stand out"):
        result = segment(pink, modality="brightfield-stain", full_output=True, **FIT)
    assert not np.any(result.labels)


def test_fluorescence_composites_are_not_taken_for_stained_sections():
    a, _ = nuclei((64, 64), n=6, seed=0)
    b, _ = nuclei((64, 64), n=4, seed=1)
    empty = np.zeros_like(a)
    assert looks(np.stack([b, empty, a], -1)) is None  # red and blue, no green
    assert looks(np.stack([a, empty, empty], -1)) is None  # red only


def test_a_modality_prior_reclusters_into_more_classes_and_records_what_ran():
    image, _ = phase_contrast(seed=1)
    prior = fit_prior(image, modality="phase", **FIT)
    three = segment(image, prior=prior, n_classes=3, full_output=True)
    assert set(np.unique(three.labels)) == {1, 2, 3}
    assert three.metadata["settings"]["modality"] == "auto"
    plain = fit_prior(image, **FIT)
    fluo = segment(image, prior=plain, modality="fluorescence", full_output=True)
    assert fluo.metadata["settings"]["modality"] == "fluorescence"
    stained, _ = stained_section(seed=0)
    with pytest.raises(ValueError, match="needs an RGB image"):
        segment(image, prior=fit_prior(stained, modality="brightfield-stain", **TINY))
