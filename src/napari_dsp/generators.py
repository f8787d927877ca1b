"""The generator forms of the long-running entry points, in one place.

Each takes the arguments of the function of the same name in :mod:`napari_dsp` (and
checks them at the call: a bad image, setting or output raises before anything runs),
then yields a :class:`~napari_dsp.FitProgress` every iteration and returns what that
function returns in full (a :class:`~napari_dsp.PriorResult` or
:class:`~napari_dsp.SegmentResult`). Closing the generator stops the work within an
iteration and leaves no partial output: this is what the napari widget runs in its
worker thread. The plain functions are these generators run to their end, handing each
report to an optional ``progress`` callback.

Where nothing stands out from the noise, the generators put the message in the result's
``metadata["clustering"]["decision"]`` instead of raising the
:class:`~napari_dsp.NothingToSegmentWarning` (their caller shows it).

>>> from napari_dsp import generators              # doctest: +SKIP
>>> gen = generators.segment(image, n_classes=3)
>>> result = generators.run(gen, progress=lambda p: print(p.describe()))
>>> result.labels
"""

from __future__ import annotations

from .api import iter_fit_prior as fit_prior
from .api import iter_segment as segment
from .core.progress import ProgressCallback, drain
from .stack import iter_segment_stack as segment_stack

__all__ = ["fit_prior", "run", "segment", "segment_stack"]


def run(gen, progress: ProgressCallback | None = None):
    """Run a generator of this module to its end.

    Parameters
    ----------
    gen : generator
        A generator from :func:`fit_prior`, :func:`segment` or :func:`segment_stack`.
    progress : callable, optional
        Called with every :class:`~napari_dsp.FitProgress` the generator yields.

    Returns
    -------
    PriorResult or SegmentResult
        What the generator returns.

    Examples
    --------
    >>> import numpy as np
    >>> from napari_dsp import generators
    >>> image = np.zeros((64, 64), np.float32)
    >>> image[16:48, 16:48] = 1.0
    >>> gen = generators.segment(image, n_members=3, n_iter=10, seed=0)
    >>> result = generators.run(gen, progress=lambda p: None)
    >>> result.labels.shape
    (64, 64)
    """
    return drain(gen, progress)
