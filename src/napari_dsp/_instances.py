"""Foreground -> one id per object, for counting (connected components, touching round
objects split by a distance-transform watershed, holes filled, specks removed)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi


def instances(foreground: np.ndarray, *, min_size: int = 16, split: bool = True,
              fill_holes: bool = True, min_distance: int = 3, sampling=None) -> np.ndarray:
    """Label the objects of a 2-D or 3-D foreground mask.

    Parameters
    ----------
    foreground : ndarray, shape (Y, X) or (Z, Y, X), bool (or labels: ``> 0`` is
        foreground)
    min_size : int
        Objects with fewer pixels (voxels) are removed (specks).
    sampling : sequence of float, optional
        Pixel size per axis (e.g. a z-stack's spacing), so distances are physical.
    split : bool
        Split touching objects at the saddles of the distance transform (watershed from
        its maxima at least ``min_distance`` apart, peaks lower than 2 pixels ignored).
    fill_holes : bool
        Fill holes inside objects first.

    Returns
    -------
    ndarray, same shape, int32
        0 = background, objects 1..N (N = the count).

    Raises
    ------
    ValueError
        For a mask that is not 2-D or 3-D or a negative ``min_size``.
    """
    fg = np.asarray(foreground)
    if fg.ndim not in (2, 3):
        raise ValueError(f"instances() takes a 2-D or 3-D mask, got shape {fg.shape}; "
                         f"call it per plane or per volume")
    if min_size < 0 or min_distance < 1:
        raise ValueError("min_size must be >= 0 and min_distance >= 1")
    fg = fg > 0
    if fill_holes:
        fg = ndi.binary_fill_holes(fg)
    if split and fg.any():
        from skimage.feature import peak_local_max
        from skimage.segmentation import watershed

        dist = ndi.distance_transform_edt(fg, sampling=sampling)
        if sampling is not None:  # back to units of the finest axis
            dist = dist / float(min(sampling))
        # Smooth a little so ragged outlines do not make several peaks per object.
        sigma = 1.0 if sampling is None else \
            tuple(min(sampling) / float(v) for v in sampling)
        smooth = ndi.gaussian_filter(dist, sigma)
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
