"""Foreground -> one id per object, for counting (connected components, touching round
objects split by a distance-transform watershed, holes filled, specks removed)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi


def instances(foreground: np.ndarray, *, min_size: int = 16, split: bool = True,
              fill_holes: bool = True, min_distance: int = 3) -> np.ndarray:
    """Label the objects of a 2-D foreground mask.

    Parameters
    ----------
    foreground : ndarray, shape (Y, X), bool (or labels: ``> 0`` is foreground)
    min_size : int
        Objects with fewer pixels are removed (specks).
    split : bool
        Split touching objects at the saddles of the distance transform (watershed from
        its maxima at least ``min_distance`` apart, peaks lower than 2 pixels ignored).
    fill_holes : bool
        Fill holes inside objects first.

    Returns
    -------
    ndarray, shape (Y, X), int32
        0 = background, objects 1..N (N = the count).

    Raises
    ------
    ValueError
        For a mask that is not 2-D or a negative ``min_size``.
    """
    fg = np.asarray(foreground)
    if fg.ndim != 2:
        raise ValueError(f"instances() takes a 2-D mask, got shape {fg.shape}; call it "
                         f"per plane")
    if min_size < 0 or min_distance < 1:
        raise ValueError("min_size must be >= 0 and min_distance >= 1")
    fg = fg > 0
    if fill_holes:
        fg = ndi.binary_fill_holes(fg)
    if split and fg.any():
        from skimage.feature import peak_local_max
        from skimage.segmentation import watershed

        dist = ndi.distance_transform_edt(fg)
        # Smooth a little so ragged outlines do not make several peaks per object.
        smooth = ndi.gaussian_filter(dist, 1.0)
        peaks = peak_local_max(smooth, min_distance=min_distance, threshold_abs=2.0,
                               labels=ndi.label(fg)[0], exclude_border=False)
        markers = np.zeros(fg.shape, np.int32)
        markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
        labels = watershed(-smooth, markers, mask=fg)
        # Components without a peak (thin or tiny ones) keep their own id.
        rest, n_rest = ndi.label(fg & (labels == 0))
        labels = np.where(rest > 0, rest + labels.max(), labels)
    else:
        labels, _ = ndi.label(fg)
    if min_size:
        sizes = np.bincount(labels.ravel())
        small = sizes < min_size
        small[0] = False
        labels[small[labels]] = 0
    # compact ids 1..N
    ids = np.unique(labels)
    ids = ids[ids > 0]
    lut = np.zeros(int(labels.max()) + 1, np.int32)
    lut[ids] = np.arange(1, len(ids) + 1)
    return lut[labels]
