"""What a run returns and how it is described: :class:`PriorResult`,
:class:`SegmentResult`, the run's seed, and its metadata (one layout for every entry
point, so a result can be reproduced and read by other tools).

Metadata keys: ``settings`` (every setting, the seed actually used included),
``device``, ``versions``, ``input`` (shape, dtype, channel axis), and where they apply
``fit`` (the plan: working shape, tiles, threads, members per group...), ``clustering``
(foreground rule, refinement, count), ``kanezaki`` (iterations, classes found),
``stack`` (planes, volumetric spacing).
"""

from __future__ import annotations

import platform
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np


class NothingToSegmentWarning(UserWarning):
    """The image shows nothing that stands out from its noise (or only isolated pixels):
    the labels are empty (or those pixels). The decision and its statistic are in the
    result's ``metadata["clustering"]["decision"]``."""


@dataclass(frozen=True)
class PriorResult:
    """The prior of one image (or stack), with the ensemble's spread and how it was made.

    Returned by :func:`~napari_dsp.fit_prior`; pass it to :func:`~napari_dsp.segment` as
    ``prior=`` to re-cluster without a refit. ``np.asarray(result)`` gives
    ``result.prior``.

    Parameters
    ----------
    prior : ndarray, float32 in [0, 1]
        Same layout as the input image (``(Y, X)`` or channels where the input had them).
    spread : ndarray, shape (Y, X) (or the stack's planes), float32
        Per-pixel standard deviation across the ensemble members (mean over channels): an
        uncertainty map, high where the fits disagree.
    metadata : dict
        Settings actually used (the seed included), device, package versions.
    channel_axis : int or None
        Where the channels of ``prior`` are (None for grayscale).
    texture : ndarray, shape (K, Y, X), float32 in [0, 1], or None
        With ``texture=True``: the prior of the texture channels, fitted together with
        the image (:mod:`napari_dsp.core.texture`); clustering uses both.
    """

    prior: np.ndarray
    spread: np.ndarray
    metadata: dict = field(default_factory=dict)
    channel_axis: Optional[int] = None
    texture: Optional[np.ndarray] = None

    def __array__(self, dtype=None, copy=None):
        """``np.asarray(result)`` is the prior itself (no copy, as for any array);
        ``np.array(result)`` (``copy=True``) a copy the caller may change freely."""
        if dtype is not None and np.dtype(dtype) != self.prior.dtype:
            if copy is False:
                raise ValueError(f"the prior is {self.prior.dtype}: {dtype} needs a copy")
            return self.prior.astype(dtype)
        return self.prior.copy() if copy else self.prior

    @property
    def shape(self) -> tuple:
        """The prior's shape (the input's layout)."""
        return self.prior.shape

    def channels_first(self) -> np.ndarray:
        """The prior with its channels first.

        Returns
        -------
        ndarray, shape (C, Y, X)
            A view of the prior (C = 1 for grayscale).
        """
        if self.channel_axis is None:
            return self.prior[None]
        return np.moveaxis(self.prior, self.channel_axis, 0)

    def features(self) -> np.ndarray:
        """What clustering looks at.

        Returns
        -------
        ndarray, shape (C, Y, X)
            The prior's channels, followed by the texture channels' prior where there
            is one.
        """
        if self.texture is None:
            return self.channels_first()
        return np.concatenate([self.channels_first(), self.texture], 0)


@dataclass(frozen=True)
class SegmentResult:
    """Labels with the prior they came from and the metadata of the run.

    Returned by :func:`~napari_dsp.segment` and :func:`~napari_dsp.segment_stack` with
    ``full_output=True``, and by the generators of :mod:`napari_dsp.generators`.

    Parameters
    ----------
    labels : ndarray
        Class or object ids, 0 = background; the image's plane shape (or the stack's).
    prior : PriorResult or None
        The prior the labels came from (None for ``method='kanezaki'`` with
        ``prior_superpixels=False``, and for a stack segmented into zarr).
    metadata : dict
        Settings actually used (the seed included), device, package versions, and
        what the clustering decided (``metadata["clustering"]``).
    """

    labels: np.ndarray
    prior: Optional[PriorResult]
    metadata: dict


def versions() -> dict:
    """Versions of the packages that determine a result."""
    import sklearn
    import torch

    from . import __version__

    return {
        "napari_dsp": __version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "scikit-learn": sklearn.__version__,
        "python": platform.python_version(),
    }


def resolve_seed(*candidates: Optional[int]) -> int:
    """The first seed given (the settings' seed, then e.g. the prior's), else a fresh
    one drawn in [0, 2**32)."""
    for seed in candidates:
        if seed is not None:
            return int(seed)
    return int(np.random.SeedSequence().entropy % (2**32))


def make_metadata(
    settings,
    *,
    device: str,
    image_shape: tuple,
    image_dtype,
    channel_axis: Optional[int],
    **parts: Any,
) -> dict:
    """The metadata of a run: ``settings`` (a :class:`~napari_dsp.Settings` with the
    seed resolved), the device, versions, the input, and the given ``parts`` (``fit``,
    ``clustering``, ``kanezaki``, ``stack``); parts that are None are left out."""
    meta = {
        "settings": settings.to_dict(),
        "device": device,
        "versions": versions(),
        "input": {
            "shape": [int(v) for v in image_shape],
            "dtype": str(image_dtype),
            "channel_axis": channel_axis,
        },
    }
    meta.update({k: v for k, v in parts.items() if v is not None})
    return meta


def prior_seed(prior: Optional[PriorResult]) -> Optional[int]:
    """The seed a prior was fitted with, when its metadata says."""
    if prior is None:
        return None
    return prior.metadata.get("settings", {}).get("seed")
