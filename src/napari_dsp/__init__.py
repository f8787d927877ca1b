"""napari-dsp: unsupervised segmentation with a Deep Segmentation Prior.

The public API works on numpy arrays and imports neither napari nor Qt::

    from napari_dsp import fit_prior, segment
    prior = fit_prior(image)              # PriorResult; np.asarray(prior) is the prior
    labels = segment(image)               # 0 = background, 1 = foreground
    labels = segment(image, prior=prior, n_classes=4)   # re-cluster, no refit
    labels = segment_stack(stack)         # planes with shared classes
    segment_stack(big, out="labels.zarr")  # larger than memory: plane by plane to zarr

Files (axes and pixel size from OME/ImageJ metadata, labels other tools read):
:mod:`napari_dsp.io`. The generator forms (progress every iteration, cancel by closing):
:mod:`napari_dsp.generators`.

Importing the package is cheap: torch is imported when a function that needs it is
first used (PEP 562 module ``__getattr__``), so ``napari-dsp --help`` and napari's plugin
discovery stay fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

#: public name -> the module that defines it
_EXPORTS = {
    "fit_prior": "api",
    "segment": "api",
    "segment_stack": "stack",
    "Settings": "settings",
    "PriorResult": "results",
    "SegmentResult": "results",
    "NothingToSegmentWarning": "results",
    "FitProgress": "core.progress",
}

#: the whole public surface: eight names and two modules (``io``: files;
#: ``generators``: the generator forms the napari widget runs)
__all__ = [
    "FitProgress",
    "NothingToSegmentWarning",
    "PriorResult",
    "SegmentResult",
    "Settings",
    "fit_prior",
    "generators",
    "io",
    "segment",
    "segment_stack",
]


#: submodules reachable as attributes (``napari_dsp.io.read_info``)
_SUBMODULES = ("io", "generators")


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'napari_dsp' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # pragma: no cover
    from . import generators, io
    from .api import fit_prior, segment
    from .core.progress import FitProgress
    from .results import NothingToSegmentWarning, PriorResult, SegmentResult
    from .settings import Settings
    from .stack import segment_stack
