import numpy as np
import pytest

from napari_dsp import segment
from napari_dsp.core.postprocess import instances
from tests.synthetic import dark_on_bright, nuclei, touching_discs


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_touching_discs_are_counted_within_ten_percent(seed):
    mask, count = touching_discs((128, 160), seed=seed)
    labels = instances(mask)
    assert labels.dtype == np.int32 and labels.shape == mask.shape
    n = int(labels.max())
    assert abs(n - count) <= 0.1 * count, (n, count)
    np.testing.assert_array_equal(np.unique(labels), np.arange(n + 1))  # compact
    assert np.array_equal(labels > 0, mask)  # nothing lost, nothing added


def test_without_splitting_touching_pairs_are_one_object():
    mask, count = touching_discs((128, 160), seed=0)
    assert instances(mask, split=False).max() == count // 2


def test_specks_removed_and_holes_filled():
    mask = np.zeros((40, 40), bool)
    mask[5:20, 5:20] = True
    mask[10, 10] = False  # a hole
    mask[30, 30] = True  # a speck
    labels = instances(mask, min_size=4)
    assert labels.max() == 1 and labels[10, 10] == 1 and labels[30, 30] == 0


def test_segment_counts_nuclei():
    image, mask = nuclei((128, 128), n=12, seed=3)
    from scipy import ndimage as ndi

    truth = ndi.label(mask)[1]
    result = segment(
        image, instances=True, n_iter=30, n_members=3, n_threads=1, seed=0, full_output=True
    )
    count = result.metadata["clustering"]["count"]
    assert result.labels.max() == count
    assert abs(count - truth) <= max(1, 0.1 * truth), (count, truth)


def test_instances_errors():
    with pytest.raises(ValueError, match="2-D or 3-D mask"):
        instances(np.zeros((2, 2, 8, 8), bool))
    with pytest.raises(ValueError, match="instances=True needs foreground/background"):
        segment(dark_on_bright()[0], instances=True, n_classes=3)


def test_touching_balls_are_split_in_3d_with_anisotropic_spacing():
    # two touching balls, z sampled every 2 pixels: 2 objects, not 1
    zz, yy, xx = np.mgrid[0:12, 0:40, 0:56]
    z = zz * 2.0
    mask = ((z - 12) ** 2 + (yy - 20) ** 2 + (xx - 16) ** 2 <= 81) | (
        (z - 12) ** 2 + (yy - 20) ** 2 + (xx - 33) ** 2 <= 81
    )
    labels = instances(mask, sampling=(2.0, 1.0, 1.0))
    assert labels.shape == mask.shape and labels.max() == 2
    assert np.array_equal(labels > 0, mask)


def test_stack_instances_count_per_plane_with_unique_ids():
    from napari_dsp import segment_stack

    frames = []
    for seed in (0, 1):
        disc_mask, count = touching_discs((96, 128), seed=seed)
        rng = np.random.default_rng(seed)
        frames.append(np.where(disc_mask, 0.8, 0.2) + rng.normal(0, 0.05, disc_mask.shape))
    result = segment_stack(
        np.stack(frames).astype(np.float32),
        instances=True,
        n_iter=30,
        n_members=2,
        n_threads=1,
        seed=0,
        full_output=True,
    )
    info = result.metadata["clustering"]
    counts = info["counts_per_plane"]
    assert len(counts) == 2 and info["count"] == sum(counts)
    for t, n in enumerate(counts):
        _, truth = touching_discs((96, 128), seed=t)
        assert abs(n - truth) <= 0.1 * truth, (n, truth)
    ids0 = set(np.unique(result.labels[0])) - {0}
    ids1 = set(np.unique(result.labels[1])) - {0}
    assert not ids0 & ids1 and len(ids0) + len(ids1) == info["count"]
