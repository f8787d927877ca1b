"""Quality on real images with reference masks (../shared/data/cases), default settings.

Marked slow (about 2 minutes on 2 cores); still part of the CI run. Skipped with a reason
where the shared data folder is absent.
"""

import numpy as np
import pytest

from napari_dsp import segment

#: Issue 2's floors for the default settings, no knowledge of the mask.
FLOORS = {"black_eagle": 0.80, "coins": 0.80, "dsb2018_nuclei": 0.68}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(FLOORS))
def test_foreground_iou_on_reference_cases(cases_dir, case):
    data = np.load(cases_dir / f"{case}.npz")
    labels = segment(data["image"], seed=0)
    assert labels.shape == data["mask"].shape
    fg, mask = labels == 1, data["mask"]
    iou = np.logical_and(fg, mask).sum() / np.logical_or(fg, mask).sum()
    assert iou >= FLOORS[case], f"{case}: IoU {iou:.3f} < {FLOORS[case]}"
