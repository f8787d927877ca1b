"""How a file's axes are used, and its pixels: :func:`arrange` -> :class:`Arrangement`
(which axes are planes, channels, Y and X: the file's metadata decides where it names
the axes, so a file whose metadata says Z or T is a stack and a channel axis is never
taken as planes; where nothing is known the rules of the Python API apply and the
assumption is recorded), :func:`spacing_of` (a Z stack's voxel size) and
:func:`read_pixels` (the pixels, arranged).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from ..core.image import check_axis_type
from .header import ImageFileError, ImageInfo, first_line, tifffile_messages


@dataclass(frozen=True)
class Arrangement:
    """How a file's axes are used. Made by :func:`arrange`.

    Parameters
    ----------
    axes : str
        One letter per axis of the arranged array (:func:`read_pixels`): T, Z (planes), C
        (channels), Y, X.
    from_metadata : bool
        The file named every axis (its metadata, or a layout with one meaning: a 2-D or
        RGB plane); False where they were assumed (recorded in ``notes`` and the sidecar).
    channel_axis : int or None
        Of the arranged array, for :func:`napari_dsp.segment`.
    stack : bool
        Planes (T, Z) are segmented one by one with shared classes
        (:func:`napari_dsp.segment_stack`).
    plane : (int, int)
        Y and X sizes.
    squeeze : tuple of int
        Axes of the stored array dropped because they have length 1.
    drop_alpha : bool
        The last sample is transparency and is dropped.
    notes : tuple of str
        What was assumed or decided, for the user.
    source : str, default 'assumed'
        Not set by :func:`arrange` (it stays ``"assumed"``); ``from_metadata`` says
        whether the file named the axes.
    """

    axes: str
    from_metadata: bool
    channel_axis: Optional[int]
    stack: bool
    plane: tuple
    squeeze: tuple = ()
    drop_alpha: bool = False
    notes: tuple = ()

    source: str = "assumed"

    @property
    def labels_axes(self) -> str:
        """Axes of the label image: the arranged axes without the channels."""
        return self.axes.replace("C", "")

    @property
    def plane_axes(self) -> str:
        """The plane axes (T, Z) of the arranged array, in order."""
        return "".join(a for a in self.axes if a in "TZ")


def arrange(
    info: ImageInfo, channel_axis: Optional[int] = None, stack: bool = False
) -> Arrangement:
    """Decide the planes, channels, Y and X of a file from its header.

    With axes named by the file's metadata: T and Z are planes (so the file is a stack
    whether or not ``stack`` is set), C and S are channels, axes of length 1 are dropped.
    ``channel_axis`` (an axis of the stored array) may name the channel axis of a file
    whose metadata calls it something else (a channel stack saved as slices). Without
    axes metadata: the rules of :func:`napari_dsp.segment` and
    :func:`napari_dsp.segment_stack`, and the planes' letters are assumed.

    Parameters
    ----------
    info : ImageInfo
        The file's header (:func:`read_info`).
    channel_axis : int, optional
        The channel axis of the stored array, where the metadata does not name it.
    stack : bool, default False
        Take leading axes of a file without axes metadata as planes (Z, or T x Z).

    Returns
    -------
    Arrangement
        The axes of the arranged array and what was assumed.

    Raises
    ------
    ImageFileError
        For contradictory or unsupported axes; the message says what to pass.
    """
    ndim = len(info.shape)
    if channel_axis is not None:
        check_axis_type(channel_axis)
        if not -ndim <= channel_axis < ndim:
            raise ImageFileError(
                f"{info.path}: has shape {info.shape}: --channel-axis "
                f"{channel_axis} is out of range for {ndim} dimensions"
            )
        channel_axis = int(channel_axis) % ndim
    if info.axes_known:
        return _arrange_known(info, channel_axis, stack)
    return _arrange_assumed(info, channel_axis, stack)


def _arrange_known(info: ImageInfo, channel_axis: Optional[int], stack: bool) -> Arrangement:
    path, shape = info.path, info.shape
    letters = list(info.axes)
    notes = list(info.notes)
    if channel_axis is not None and letters[channel_axis] in "YX":
        raise ImageFileError(
            f"{path}: --channel-axis {channel_axis} is its "
            f"{letters[channel_axis]} axis (axes {info.axes}); leave "
            f"--channel-axis out, the file's metadata names its axes"
        )
    if channel_axis is not None and letters[channel_axis] not in "CS":
        named = [i for i, a in enumerate(letters) if a in "CS" and shape[i] > 1]
        if named:
            raise ImageFileError(
                f"{path}: its metadata gives the axes {info.axes} (channels: axis "
                f"{named[0]}); --channel-axis {channel_axis} names another axis; leave "
                f"--channel-axis out or correct the file's metadata"
            )
        notes.append(
            f"--channel-axis {channel_axis} overrides the file's axes "
            f"{info.axes}: its {letters[channel_axis]} axis is taken as channels"
        )
        letters[channel_axis] = "C"
    drop_alpha = info.alpha and "S" in letters and shape[letters.index("S")] > 1
    sizes = [n - 1 if (a == "S" and drop_alpha) else n for a, n in zip(letters, shape)]
    keep = [i for i, n in enumerate(sizes) if n > 1 or letters[i] in "YX"]
    squeeze = tuple(i for i in range(len(shape)) if i not in keep)
    kept = ["C" if letters[i] == "S" else letters[i] for i in keep]
    if kept.count("C") > 1:
        raise ImageFileError(
            f"{path}: has both channels and samples per pixel (axes "
            f"{info.axes}, shape {shape}); split the channels first"
        )
    if len(set(kept)) != len(kept):
        raise ImageFileError(
            f"{path}: its metadata repeats an axis ({info.axes}); save it "
            f"with one T, Z, C, Y and X axis each"
        )
    axes = "".join(kept)
    plane = (sizes[letters.index("Y")], sizes[letters.index("X")])
    if axes.replace("C", "")[-2:] != "YX":
        raise ImageFileError(
            f"{path}: its axes {info.axes} do not end with Y and X; save "
            f"it with rows and columns last"
        )
    is_stack = stack or any(a in "TZ" for a in axes)
    described = info.format in ("ome-tiff", "imagej-tiff") or bool(set(info.axes) - set("YXS"))
    return Arrangement(
        axes,
        True,
        axes.index("C") if "C" in axes else None,
        is_stack,
        plane,
        squeeze,
        drop_alpha,
        tuple(notes),
        "metadata" if described else "file layout",
    )


def _arrange_assumed(info: ImageInfo, channel_axis: Optional[int], stack: bool) -> Arrangement:
    shape = info.shape
    ndim = len(shape)
    notes = list(info.notes)
    letters = ["?"] * ndim
    drop_alpha = False
    if (
        channel_axis is None
        and info.axes
        and len(info.axes) == ndim
        and info.axes[-1] == "S"
        and shape[-1] > 1
    ):
        # the file knows its samples (a multi-page RGB TIFF): channels, whatever else
        channel_axis = ndim - 1
        drop_alpha = info.alpha
    if channel_axis is not None:
        letters[channel_axis] = "C"
    elif not stack and ndim == 3 and shape[-1] in (3, 4):
        letters[-1] = "C"  # RGB(A), the rule of the Python API
    rest = [i for i in range(ndim) if letters[i] == "?"]
    for i, a in zip(rest[-2:], "YX"):
        letters[i] = a
    lead = rest[:-2]
    if stack and 0 < len(lead) <= 2:
        for i, a in zip(lead, "TZ"[2 - len(lead) :]):
            letters[i] = a
        why = "a .npy file has no axes" if info.format == "npy" else "the file has no axes metadata"
        taken = " x ".join(letters[i] for i in lead)
        which = "its leading axis was" if len(lead) == 1 else "its leading axes were"
        notes.append(f"{why}: {which} taken as {taken} planes")
    plane = tuple(shape[i] for i in rest[-2:]) if len(rest) >= 2 else (1, int(np.prod(shape)))
    # channel_axis stays the caller's: an RGB(A) last axis is the API's rule (alpha dropped)
    return Arrangement(
        "".join(letters), False, channel_axis, stack, plane, (), drop_alpha, tuple(notes)
    )


def spacing_of(info: ImageInfo, arrangement: Arrangement) -> Optional[tuple]:
    """The voxel size of a Z stack from the file's metadata.

    Parameters
    ----------
    info : ImageInfo
        The file's header.
    arrangement : Arrangement
        How its axes are used.

    Returns
    -------
    tuple of 3 floats or None
        ``(z, y, x)``, or None where any of the three is not recorded.
    """
    if "Z" not in arrangement.axes or not arrangement.from_metadata:
        return None
    sizes = info.pixel_size
    if not all(a in sizes for a in "ZYX"):
        return None
    return (sizes["Z"], sizes["Y"], sizes["X"])


def read_pixels(info: ImageInfo, arrangement: Optional[Arrangement] = None) -> np.ndarray:
    """The pixels of ``info``'s file, arranged.

    Parameters
    ----------
    info : ImageInfo
        The file's header (:func:`read_info`).
    arrangement : Arrangement, optional
        How to arrange the axes (:func:`arrange`): length-1 axes of a file with axes
        metadata and alpha dropped. None: the stored array as it is.

    Returns
    -------
    ndarray
        The pixels, in the arranged axes (``arrangement.axes``).

    Raises
    ------
    ImageFileError
        For a file that cannot be decoded (truncated, corrupt).
    """
    path = info.path
    try:
        if info.format in ("ome-tiff", "imagej-tiff", "tiff"):
            import tifffile

            # what tifffile says was said when the header was read (ImageInfo.notes)
            with tifffile_messages(), tifffile.TiffFile(path) as tif:
                data = np.asarray(tif.series[0].asarray())
        elif info.format == "npy":
            data = np.load(path, allow_pickle=False)
        elif info.format == "png":
            data = _png_pixels(path, info)
        else:
            data = _pil_pixels(path)
    except ImageFileError:
        raise
    except MemoryError:
        raise
    except Exception as exc:
        raise ImageFileError(
            f"{path}: cannot be read as an image ({type(exc).__name__}: "
            f"{first_line(exc) or 'corrupt file'})"
        ) from None
    if not isinstance(data, np.ndarray) or data.size == 0:
        raise ImageFileError(
            f"{path}: cannot be read as an image (no pixel data: corrupt or truncated file?)"
        )
    if tuple(data.shape) != tuple(info.shape):
        raise ImageFileError(
            f"{path}: its pixels ({data.shape}) do not match its header "
            f"({info.shape}); the file is damaged"
        )
    if arrangement is None:
        return data
    if arrangement.drop_alpha:
        s = info.axes.index("S")
        data = np.take(data, range(info.shape[s] - 1), axis=s)
    if arrangement.from_metadata and arrangement.squeeze:
        data = data.reshape([n for i, n in enumerate(data.shape) if i not in arrangement.squeeze])
    return data


def _png_pixels(path: Path, info: ImageInfo) -> np.ndarray:
    """PNG pixels at their bit depth (imagecodecs: palettes expanded to colours); a
    transparency the header did not announce (a palette's or a gray image's tRNS entry)
    is dropped."""
    import imagecodecs

    data = np.asarray(imagecodecs.png_decode(path.read_bytes()))
    expected = info.shape[2] if len(info.shape) == 3 else 1
    got = data.shape[2] if data.ndim == 3 else 1
    if got == expected + 1:
        data = data[..., :expected] if expected > 1 else data[..., 0]
    if data.dtype == np.uint8 and info.dtype == np.uint16:
        raise ImageFileError(f"{path}: decoded at 8 bits, its header says 16")
    return data


def _pil_pixels(path: Path) -> np.ndarray:
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(path) as im:
            if im.mode in ("P", "CMYK", "YCbCr", "LAB", "HSV", "RGBX"):
                im = im.convert("RGB")
            elif im.mode == "PA":
                im = im.convert("RGBA")
            elif im.mode in ("I;16B", "I;16L"):
                im = im.convert("I;16")
            return np.array(im)


def pixel_size_for(axes: str, info: ImageInfo) -> dict:
    """The file's pixel sizes for the axes of an output.

    Parameters
    ----------
    axes : str
        The output's axes (``"YX"``, ``"ZYX"``...).
    info : ImageInfo
        The input file's header.

    Returns
    -------
    dict
        Size per axis letter, for the axes of ``axes`` the file records.
    """
    return {a: v for a, v in info.pixel_size.items() if a in axes}
