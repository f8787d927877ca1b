"""napari-dsp: unsupervised segmentation with a Deep Segmentation Prior.

The public API works on numpy arrays and imports neither napari nor Qt::

    from napari_dsp import fit_prior, segment
    prior = fit_prior(image)              # PriorResult; np.asarray(prior) is the prior
    labels = segment(image)               # 0 = background, 1 = foreground
    labels = segment(prior=prior, n_classes=4)   # re-cluster, no refit
"""

__version__ = "0.1.0"

from ._fit import FitProgress, tune_cpu_allocator
from .segment import (
    PriorResult,
    SegmentResult,
    cluster,
    fit_prior,
    iter_fit_prior,
    iter_segment,
    iter_segment_stack,
    segment,
    segment_stack,
)
from .settings import FIELDS, Settings

__all__ = [
    "FIELDS",
    "FitProgress",
    "PriorResult",
    "SegmentResult",
    "Settings",
    "__version__",
    "cluster",
    "fit_prior",
    "iter_fit_prior",
    "iter_segment",
    "segment",
    "segment_stack",
    "iter_segment_stack",
    "tune_cpu_allocator",
]
