"""Image files: what a file holds (read from its header before any pixel is decoded), how
its axes are decided, its pixels, and the files a run writes.

Owns:

- :func:`read_info` -> :class:`ImageInfo`: shape, dtype, axes and pixel size of a TIFF
  (OME-TIFF and ImageJ hyperstacks included, any compression tifffile and imagecodecs
  decode), PNG, JPEG or ``.npy`` file, from the header alone;
- :func:`arrange` -> :class:`Arrangement`: which axes are planes, channels, Y and X. The
  file's metadata decides where it names the axes (OME and ImageJ: T, Z, C, Y, X and
  samples); a file whose metadata says Z or T is a stack, and a channel axis is never
  taken as planes. Where nothing is known, the rules of the Python API apply (the caller
  says ``channel_axis`` and ``stack``) and the assumption is recorded;
- :func:`read_pixels`: the pixels, arranged;
- writing: :func:`write_labels` (single-channel pages, the smallest unsigned dtype that
  holds the ids, ImageJ metadata with the axes and pixel size; OME-TIFF beyond 65535
  ids), :func:`write_image` (float32, same metadata), :func:`write_json` (strict JSON).
  Every file is written to a short temporary name in the output folder with the mode the
  user's umask gives a new file, and moved into place only when complete; an existing
  file is never replaced unless ``overwrite=True``. :class:`Staged` writes a run's
  outputs together, :func:`remove_stale_temps` removes what a killed run left.

Nothing here imports torch, napari or Qt.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import re
import secrets
import socket
import stat
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

#: File types read, by suffix (lower case).
READABLE = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".npy")
#: Axis letters whose meaning is known (tifffile's codes: S = samples of a pixel).
KNOWN_AXES = "TZCYXS"
#: Written into every TIFF napari-dsp writes (the TIFF Software tag).
SOFTWARE = "napari-dsp"
#: Largest id the ImageJ format holds (it has no 32-bit integers).
IMAGEJ_MAX_ID = 65535


class ImageFileError(ValueError):
    """A file that cannot be used; the message is one line that starts with the path."""


class OutputExistsError(FileExistsError):
    """An output exists and ``overwrite`` was not given."""


# ----------------------------------------------------------------------------- reading
@dataclass(frozen=True)
class ImageInfo:
    """What a file's header says, before any pixel is decoded.

    Attributes
    ----------
    path : Path
    format : str
        ``"ome-tiff"``, ``"imagej-tiff"``, ``"tiff"``, ``"png"``, ``"jpeg"`` or ``"npy"``.
    shape, dtype
        Of the stored array (the first image series of a TIFF).
    axes : str or None
        One letter per axis of ``shape`` where the file names them (tifffile's codes: T,
        Z, C, Y, X, S for samples, Q or I for an axis of unknown meaning); None where the
        format has no axes (``.npy``).
    pixel_size : dict
        Physical size per axis letter (``{"Z": 2.0, "Y": 0.5, "X": 0.5}``) where the file
        records it.
    unit : str or None
        Unit of ``pixel_size`` (``"µm"`` for micrometres).
    alpha : bool
        The last sample of a pixel is transparency, not a channel.
    software : str
        The TIFF Software tag (``"napari-dsp ..."`` for files this package wrote).
    notes : tuple of str
        What the reader had to decide (a file with several series, for example).
    """

    path: Path
    format: str
    shape: tuple
    dtype: np.dtype
    axes: Optional[str] = None
    pixel_size: dict = field(default_factory=dict)
    unit: Optional[str] = None
    alpha: bool = False
    software: str = ""
    notes: tuple = ()

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.float64)) * np.dtype(self.dtype).itemsize

    @property
    def axes_known(self) -> bool:
        """Every axis longer than 1 has a known meaning, and Y and X are named."""
        if self.axes is None or "Y" not in self.axes or "X" not in self.axes:
            return False
        return all(a in KNOWN_AXES for a, n in zip(self.axes, self.shape) if n > 1)

    @property
    def written_by_us(self) -> bool:
        return self.software.startswith(SOFTWARE)


def read_info(path) -> ImageInfo:
    """The header of an image file: shape, dtype, axes, pixel size. No pixel is decoded.

    Raises
    ------
    ImageFileError
        For an unsupported suffix, a missing or unreadable file, a file that is not what
        its suffix says; the message starts with the path and says what to do.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in READABLE:
        raise ImageFileError(f"{path}: unsupported file type '{suffix}' (use "
                             f"{', '.join(READABLE)})")
    try:
        _check_regular_file(path)
        if suffix in (".tif", ".tiff"):
            info = _tiff_info(path)
        elif suffix == ".npy":
            info = _npy_info(path)
        else:
            info = _png_info(path) or _pil_info(path)
    except ImageFileError:
        raise
    except (OSError, RuntimeError) as exc:
        # a symlink loop, a permission, a device error: the file's problem, one line
        raise ImageFileError(f"{path}: cannot be opened ({_first_line(exc)})") from None
    except Exception as exc:  # any reader failure is the file's problem, said in one line
        raise ImageFileError(f"{path}: cannot be read as an image ({type(exc).__name__}: "
                             f"{_first_line(exc) or 'corrupt file'})") from None
    if 0 in info.shape or not info.shape:
        raise ImageFileError(f"{path}: cannot be read as an image (no pixel data: corrupt "
                             f"or truncated file?)")
    if np.dtype(info.dtype).kind not in "biuf":
        raise ImageFileError(f"{path}: has pixels of type {info.dtype}; save it with "
                             f"integer or real (float) pixels")
    return info


def _check_regular_file(path: Path) -> None:
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        what = "is a broken symbolic link" if os.path.islink(path) else "no such file"
        raise ImageFileError(f"{path}: {what}") from None
    if stat.S_ISDIR(mode):
        raise ImageFileError(f"{path}: is a folder, not a file")
    if not stat.S_ISREG(mode):  # a pipe or a device would block or never end
        raise ImageFileError(f"{path}: is not a regular file (a pipe or a device?); save "
                             f"the image to a file")


def _first_line(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc)
    return text.splitlines()[0] if text else type(exc).__name__


def _tiff_info(path: Path) -> ImageInfo:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        if not tif.series:
            raise ImageFileError(f"{path}: cannot be read as an image (no image in the "
                                 f"TIFF file)")
        series = tif.series[0]
        page = series.keyframe if hasattr(series, "keyframe") else tif.pages[0]
        notes = []
        if len(tif.series) > 1:
            notes.append(f"the file holds {len(tif.series)} images; the first, of shape "
                         f"{tuple(series.shape)}, is used")
        axes = series.axes
        pixel_size: dict = {}
        unit = None
        if tif.is_ome and series.kind == "ome":
            fmt = "ome-tiff"
            pixel_size, unit = _ome_pixel_size(tif.ome_metadata)
        elif tif.is_imagej:
            fmt = "imagej-tiff"
            pixel_size, unit = _imagej_pixel_size(tif.imagej_metadata or {}, page)
        else:
            fmt = "tiff"
            pixel_size, unit = _tiff_resolution(page)
        alpha = any(int(v) in (1, 2) for v in (getattr(page, "extrasamples", ()) or ()))
        software = str(getattr(page, "software", "") or "")
        # a codec that is not installed is said now, not after a long read
        compression = getattr(page, "compression", 1)
        try:
            from tifffile import TIFF

            if int(compression) != 1 and int(compression) not in TIFF.DECOMPRESSORS:
                raise ImageFileError(
                    f"{path}: its compression ({getattr(compression, 'name', compression)}) "
                    f"cannot be decoded here; install imagecodecs (pip install imagecodecs) "
                    f"or save it uncompressed or with LZW/deflate")
        except (ImportError, AttributeError, TypeError):  # pragma: no cover - old tifffile
            pass
        return ImageInfo(path, fmt, tuple(int(n) for n in series.shape),
                         np.dtype(series.dtype), axes.upper(), pixel_size, unit, alpha,
                         software, tuple(notes))


def _unit(text) -> Optional[str]:
    """A length unit as written by ImageJ or OME, in one spelling (µm for micrometres)."""
    if text is None:
        return None
    text = str(text).strip()
    if text.lower() in ("micron", "microns", "um", "µm", "μm", "\\u00b5m", "micrometer",
                        "micrometre"):
        return "µm"
    if text.lower() in ("", "pixel", "pixels", "none"):
        return None
    return text


def _positive(value) -> Optional[float]:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) and value > 0 else None


def _ome_pixel_size(xml: Optional[str]) -> tuple[dict, Optional[str]]:
    if not xml:
        return {}, None
    import xml.etree.ElementTree as ET

    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return {}, None
    pixels = next((el for el in root.iter() if el.tag.endswith("}Pixels") or
                   el.tag == "Pixels"), None)
    if pixels is None:
        return {}, None
    sizes, units = {}, set()
    for axis in "XYZ":
        value = _positive(pixels.get(f"PhysicalSize{axis}"))
        if value is not None:
            sizes[axis] = value
            units.add(_unit(pixels.get(f"PhysicalSize{axis}Unit", "µm")))
    if len(units) > 1:  # mixed units: convert what we know to µm
        scale = {"µm": 1.0, "nm": 1e-3, "mm": 1e3, "m": 1e6}
        if all(u in scale for u in units):
            sizes = {a: v * scale[_unit(pixels.get(f"PhysicalSize{a}Unit", "µm"))]
                     for a, v in sizes.items()}
            return sizes, "µm"
        return {}, None
    return sizes, (units.pop() if units else None)


def _imagej_pixel_size(meta: dict, page) -> tuple[dict, Optional[str]]:
    sizes = {}
    for axis, tag in (("X", "XResolution"), ("Y", "YResolution")):
        try:
            num, den = page.tags[tag].value
            value = _positive(den / num) if num else None
        except (KeyError, TypeError, ValueError, ZeroDivisionError):
            value = None
        if value is not None:
            sizes[axis] = value
    z = _positive(meta.get("spacing"))
    if z is not None:
        sizes["Z"] = z
    unit = _unit(meta.get("unit"))
    if unit is None:  # ImageJ's "pixel": sizes without a unit say nothing
        return {}, None
    return sizes, unit


def _tiff_resolution(page) -> tuple[dict, Optional[str]]:
    """A plain TIFF's resolution tags, trusted only in centimetres (inches are the 72
    or 300 dpi of scanners and screenshots, not a pixel size)."""
    try:
        if int(page.tags["ResolutionUnit"].value) != 3:  # RESUNIT.CENTIMETER
            return {}, None
        sizes = {}
        for axis, tag in (("X", "XResolution"), ("Y", "YResolution")):
            num, den = page.tags[tag].value
            value = _positive(1e4 * den / num) if num else None
            if value is not None:
                sizes[axis] = value
        return sizes, "µm" if sizes else None
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return {}, None


def _npy_info(path: Path) -> ImageInfo:
    with open(path, "rb") as fh:
        head = fh.read(8)
        if head.startswith(b"PK\x03\x04"):
            raise ImageFileError(f"{path}: is a zip archive (an .npz file named .npy?), "
                                 f"not one array; save one array with numpy.save")
        fh.seek(0)
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
        else:
            shape, _, dtype = np.lib.format._read_array_header(fh, version)
    if dtype.hasobject:
        raise ImageFileError(f"{path}: holds Python objects, not pixels; save a numeric "
                             f"array")
    return ImageInfo(path, "npy", tuple(int(n) for n in shape), np.dtype(dtype))


#: PIL modes -> (dtype, samples per pixel, last sample is alpha).
_PIL_MODES = {"1": (np.bool_, 1, False), "L": (np.uint8, 1, False),
              "LA": (np.uint8, 2, True), "La": (np.uint8, 2, True),
              "P": (np.uint8, 3, False), "PA": (np.uint8, 4, True),
              "RGB": (np.uint8, 3, False), "RGBA": (np.uint8, 4, True),
              "RGBa": (np.uint8, 4, True), "RGBX": (np.uint8, 3, False),
              "CMYK": (np.uint8, 3, False), "YCbCr": (np.uint8, 3, False),
              "LAB": (np.uint8, 3, False), "HSV": (np.uint8, 3, False),
              "I": (np.int32, 1, False), "I;16": (np.uint16, 1, False),
              "I;16B": (np.uint16, 1, False), "I;16L": (np.uint16, 1, False),
              "F": (np.float32, 1, False)}


#: PNG colour types -> (samples per pixel, last sample is alpha).
_PNG_COLOUR = {0: (1, False), 2: (3, False), 3: (3, False), 4: (2, True), 6: (4, True)}


def _png_info(path: Path) -> Optional[ImageInfo]:
    """A PNG's header (IHDR), read directly: Pillow reports 16-bit colour PNGs as 8-bit.
    None for a file that is not a PNG (Pillow then says what it is)."""
    with open(path, "rb") as fh:
        head = fh.read(33)
    if len(head) < 33 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return None
    width, height = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    depth, colour = head[24], head[25]
    if colour not in _PNG_COLOUR:
        raise ImageFileError(f"{path}: is a damaged PNG (colour type {colour})")
    samples, alpha = _PNG_COLOUR[colour]
    dtype = np.uint16 if depth == 16 and colour != 3 else np.uint8
    shape = (height, width) if samples == 1 else (height, width, samples)
    frames = _apng_frames(path)
    notes = (f"the file has {frames} frames; the first is used",) if frames > 1 else ()
    return ImageInfo(path, "png", shape, np.dtype(dtype), "YX" if samples == 1 else "YXS",
                     alpha=alpha, notes=notes)


def _apng_frames(path: Path) -> int:
    """Frames of an animated PNG (its acTL chunk, before the first IDAT); 1 otherwise."""
    with open(path, "rb") as fh:
        fh.seek(8)
        for _ in range(1000):
            head = fh.read(8)
            if len(head) < 8:
                return 1
            size, kind = int.from_bytes(head[:4], "big"), head[4:]
            if kind == b"acTL":
                return max(1, int.from_bytes(fh.read(4), "big"))
            if kind in (b"IDAT", b"IEND"):
                return 1
            fh.seek(size + 4, os.SEEK_CUR)
    return 1


def _pil_info(path: Path) -> ImageInfo:
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(path) as im:
                width, height = im.size
                mode = im.mode
                frames = int(getattr(im, "n_frames", 1) or 1)
                fmt = (im.format or path.suffix[1:]).lower()
        except Image.DecompressionBombError:
            raise ImageFileError(f"{path}: is an image of more pixels than Pillow opens "
                                 f"(a decompression-bomb guard); downsample or crop it, or "
                                 f"save it as TIFF") from None
    if mode not in _PIL_MODES:
        raise ImageFileError(f"{path}: pixel mode {mode!r} is not supported; save it as "
                             f"grayscale or RGB")
    dtype, samples, alpha = _PIL_MODES[mode]
    notes = (f"the file has {frames} frames; the first is used",) if frames > 1 else ()
    shape = (height, width) if samples == 1 else (height, width, samples)
    return ImageInfo(path, "jpeg" if fmt in ("jpeg", "mpo") else fmt, shape, np.dtype(dtype),
                     "YX" if samples == 1 else "YXS", alpha=alpha, notes=notes)


# ------------------------------------------------------------------------ arrangement
@dataclass(frozen=True)
class Arrangement:
    """How a file's axes are used.

    Attributes
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
        return "".join(a for a in self.axes if a in "TZ")


def arrange(info: ImageInfo, channel_axis: Optional[int] = None,
            stack: bool = False) -> Arrangement:
    """Decide the planes, channels, Y and X of a file from its header.

    With axes named by the file's metadata: T and Z are planes (so the file is a stack
    whether or not ``stack`` is set), C and S are channels, axes of length 1 are dropped.
    ``channel_axis`` (an axis of the stored array) may name the channel axis of a file
    whose metadata calls it something else (a channel stack saved as slices). Without
    axes metadata: the rules of :func:`napari_dsp.segment` and
    :func:`napari_dsp.segment_stack`, and the planes' letters are assumed.

    Raises
    ------
    ImageFileError
        For contradictory or unsupported axes; the message says what to pass.
    """
    ndim = len(info.shape)
    if channel_axis is not None:
        if isinstance(channel_axis, bool) or not isinstance(channel_axis, (int, np.integer)):
            raise TypeError(f"channel_axis must be an integer or None, got {channel_axis!r}")
        if not -ndim <= channel_axis < ndim:
            raise ImageFileError(f"{info.path}: has shape {info.shape}: --channel-axis "
                                 f"{channel_axis} is out of range for {ndim} dimensions")
        channel_axis = int(channel_axis) % ndim
    if info.axes_known:
        return _arrange_known(info, channel_axis, stack)
    return _arrange_assumed(info, channel_axis, stack)


def _arrange_known(info: ImageInfo, channel_axis: Optional[int], stack: bool
                   ) -> Arrangement:
    path, shape = info.path, info.shape
    letters = list(info.axes)
    notes = list(info.notes)
    if channel_axis is not None and letters[channel_axis] in "YX":
        raise ImageFileError(f"{path}: --channel-axis {channel_axis} is its "
                             f"{letters[channel_axis]} axis (axes {info.axes}); leave "
                             f"--channel-axis out, the file's metadata names its axes")
    if channel_axis is not None and letters[channel_axis] not in "CS":
        named = [i for i, a in enumerate(letters) if a in "CS" and shape[i] > 1]
        if named:
            raise ImageFileError(
                f"{path}: its metadata gives the axes {info.axes} (channels: axis "
                f"{named[0]}); --channel-axis {channel_axis} names another axis; leave "
                f"--channel-axis out or correct the file's metadata")
        notes.append(f"--channel-axis {channel_axis} overrides the file's axes "
                     f"{info.axes}: its {letters[channel_axis]} axis is taken as channels")
        letters[channel_axis] = "C"
    drop_alpha = info.alpha and "S" in letters and shape[letters.index("S")] > 1
    sizes = [n - 1 if (a == "S" and drop_alpha) else n for a, n in zip(letters, shape)]
    keep = [i for i, n in enumerate(sizes) if n > 1 or letters[i] in "YX"]
    squeeze = tuple(i for i in range(len(shape)) if i not in keep)
    kept = ["C" if letters[i] == "S" else letters[i] for i in keep]
    if kept.count("C") > 1:
        raise ImageFileError(f"{path}: has both channels and samples per pixel (axes "
                             f"{info.axes}, shape {shape}); split the channels first")
    if len(set(kept)) != len(kept):
        raise ImageFileError(f"{path}: its metadata repeats an axis ({info.axes}); save it "
                             f"with one T, Z, C, Y and X axis each")
    axes = "".join(kept)
    plane = (sizes[letters.index("Y")], sizes[letters.index("X")])
    if axes.replace("C", "")[-2:] != "YX":
        raise ImageFileError(f"{path}: its axes {info.axes} do not end with Y and X; save "
                             f"it with rows and columns last")
    is_stack = stack or any(a in "TZ" for a in axes)
    described = info.format in ("ome-tiff", "imagej-tiff") or \
        bool(set(info.axes) - set("YXS"))
    return Arrangement(axes, True, axes.index("C") if "C" in axes else None, is_stack,
                       plane, squeeze, drop_alpha, tuple(notes),
                       "metadata" if described else "file layout")


def _arrange_assumed(info: ImageInfo, channel_axis: Optional[int], stack: bool
                     ) -> Arrangement:
    shape = info.shape
    ndim = len(shape)
    notes = list(info.notes)
    letters = ["?"] * ndim
    drop_alpha = False
    if channel_axis is None and info.axes and len(info.axes) == ndim and \
            info.axes[-1] == "S" and shape[-1] > 1:
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
        for i, a in zip(lead, "TZ"[2 - len(lead):]):
            letters[i] = a
        why = "a .npy file has no axes" if info.format == "npy" else \
            "the file has no axes metadata"
        taken = " x ".join(letters[i] for i in lead)
        which = "its leading axis was" if len(lead) == 1 else "its leading axes were"
        notes.append(f"{why}: {which} taken as {taken} planes")
    plane = tuple(shape[i] for i in rest[-2:]) if len(rest) >= 2 else \
        (1, int(np.prod(shape)))
    # channel_axis stays the caller's: an RGB(A) last axis is the API's rule (alpha dropped)
    return Arrangement("".join(letters), False, channel_axis, stack, plane, (), drop_alpha,
                       tuple(notes))


def spacing_of(info: ImageInfo, arrangement: Arrangement) -> Optional[tuple]:
    """(z, y, x) voxel size of a Z stack from the file's metadata, or None where any of
    the three is not recorded."""
    if "Z" not in arrangement.axes or not arrangement.from_metadata:
        return None
    sizes = info.pixel_size
    if not all(a in sizes for a in "ZYX"):
        return None
    return (sizes["Z"], sizes["Y"], sizes["X"])


def read_pixels(info: ImageInfo, arrangement: Optional[Arrangement] = None) -> np.ndarray:
    """The pixels of ``info``'s file, arranged (length-1 axes of a file with axes metadata
    dropped, alpha dropped); the stored array where ``arrangement`` is None.

    Raises
    ------
    ImageFileError
        For a file that cannot be decoded (truncated, corrupt).
    """
    path = info.path
    try:
        if info.format in ("ome-tiff", "imagej-tiff", "tiff"):
            import tifffile

            with tifffile.TiffFile(path) as tif:
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
        raise ImageFileError(f"{path}: cannot be read as an image ({type(exc).__name__}: "
                             f"{_first_line(exc) or 'corrupt file'})") from None
    if not isinstance(data, np.ndarray) or data.size == 0:
        raise ImageFileError(f"{path}: cannot be read as an image (no pixel data: corrupt "
                             f"or truncated file?)")
    if tuple(data.shape) != tuple(info.shape):
        raise ImageFileError(f"{path}: its pixels ({data.shape}) do not match its header "
                             f"({info.shape}); the file is damaged")
    if arrangement is None:
        return data
    if arrangement.drop_alpha:
        s = info.axes.index("S")
        data = np.take(data, range(info.shape[s] - 1), axis=s)
    if arrangement.from_metadata and arrangement.squeeze:
        data = data.reshape([n for i, n in enumerate(data.shape)
                             if i not in arrangement.squeeze])
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


# ---------------------------------------------------------------------------- writing
#: Temporary files: ``.napari-dsp-<host>-<pid>-<random>.part``, short whatever the output
#: name (a legal output name never becomes too long), and named after the process that
#: writes them, so a later run can tell a dead run's leftovers from a live run's file.
TEMP_PREFIX = ".napari-dsp-"
_TEMP_RE = re.compile(r"^\.napari-dsp-([0-9a-f]{8})-(\d+)-[0-9a-f]{6}\.part$")
#: Temporary files of napari-dsp 0.1 (``tempfile.mkstemp`` next to ``<stem>_labels.tif``,
#: ``<stem>_prior.tif`` and ``<stem>_labels.json``): removed once this old.
_LEGACY_TEMP_RE = re.compile(r"^\..+_(labels|prior)\.[a-z0-9_]{8}\.(tif|json)\.part$")
LEGACY_TEMP_AGE = 3600.0
#: A temporary file of another machine (a shared folder) is removed once this old.
FOREIGN_TEMP_AGE = 24 * 3600.0


def _host_tag() -> str:
    """This machine and process-id namespace (containers with one host name but their
    own process ids differ), in 8 hex digits."""
    try:
        namespace = str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        namespace = ""
    return hashlib.sha1(f"{socket.gethostname()}/{namespace}".encode()).hexdigest()[:8]


def _lock(fd: int) -> bool:
    """Take an exclusive lock on an open file without waiting; False if another
    process holds it (True where file locks do not exist)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    except OSError:  # a file system without locks
        return True


def _new_temp(folder: Path) -> tuple[Path, int]:
    """Create an empty temporary file in ``folder`` with the mode the umask gives a new
    file (``tempfile.mkstemp`` would make it 0600), locked while this process writes it.
    Returns its path and the open descriptor that holds the lock."""
    for _ in range(100):
        path = folder / f"{TEMP_PREFIX}{_host_tag()}-{os.getpid()}-{secrets.token_hex(3)}.part"
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        _lock(fd)
        return path, fd
    raise OSError(errno.EEXIST, f"cannot create a temporary file in {folder}")


def _pid_alive(pid: int) -> bool:
    import psutil

    return psutil.pid_exists(pid)


def remove_stale_temps(folder) -> list[Path]:
    """Remove the temporary files a killed run left in ``folder``: this machine's whose
    process is gone, another machine's after a day, an older version's after an hour;
    never one whose lock a running process holds. Returns the files removed."""
    folder = Path(folder)
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    host, now = _host_tag(), time.time()
    for entry in entries:
        name = entry.name
        if not name.startswith(".") or not name.endswith(".part"):
            continue
        try:
            if not entry.is_file(follow_symlinks=False):
                continue
            age = now - entry.stat(follow_symlinks=False).st_mtime
        except OSError:
            continue
        m = _TEMP_RE.match(name)
        if m:
            stale = (not _pid_alive(int(m.group(2))) if m.group(1) == host
                     else age > FOREIGN_TEMP_AGE)
        else:
            stale = bool(_LEGACY_TEMP_RE.match(name)) and age > LEGACY_TEMP_AGE
        if stale and _remove_unlocked(entry.path):
            removed.append(Path(entry.path))
    return removed


def _remove_unlocked(path: str) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return False
    try:
        if not _lock(fd):
            return False  # a live run is writing it
        os.unlink(path)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def name_max(folder: Path) -> int:
    """Longest file name (bytes) the file system of ``folder`` (or its nearest existing
    parent) allows."""
    folder = Path(os.path.abspath(folder))
    for candidate in (folder, *folder.parents):
        if candidate.exists():
            try:
                return int(os.pathconf(candidate, "PC_NAME_MAX"))
            except (OSError, ValueError, AttributeError):
                return 255
    return 255


def _commit(tmp: Path, path: Path, overwrite: bool) -> None:
    """Move a complete temporary file to ``path``; without ``overwrite`` never replace a
    file, even one created meanwhile by another process."""
    if not os.path.exists(tmp):
        raise OSError(errno.ENOENT, "its temporary file was removed by another process; "
                      "run it again", str(path))
    if overwrite:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)  # fails if path exists, atomically
    except FileExistsError:
        raise OutputExistsError(errno.EEXIST, "exists (use overwrite to replace it)",
                                str(path)) from None
    except OSError as exc:
        if exc.errno not in _NO_LINKS:
            raise
        # no hard links here (FAT, exFAT, some network shares): claim the name with an
        # exclusive create, then move the file onto the claim
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            raise OutputExistsError(errno.EEXIST, "exists (use overwrite to replace it)",
                                    str(path)) from None
        os.replace(tmp, path)
        return
    os.unlink(tmp)


#: What os.link raises where a file system has no hard links.
_NO_LINKS = {getattr(errno, name) for name in ("EPERM", "ENOTSUP", "EOPNOTSUPP", "EXDEV",
                                               "EMLINK", "ENOSYS", "EACCES")
             if hasattr(errno, name)}


class Staged:
    """Outputs written to temporary files first and moved into place together by
    :meth:`commit`; leaving the ``with`` block without committing removes them.

    >>> with Staged(overwrite=False) as out:            # doctest: +SKIP
    ...     out.labels(folder / "cell_labels.tif", labels, axes="YX")
    ...     out.json(folder / "cell_labels.json", metadata)
    ...     out.commit()
    """

    def __init__(self, overwrite: bool = False):
        self.overwrite = bool(overwrite)
        self._files: list[tuple[Path, Path]] = []
        self._fds: list[int] = []

    def __enter__(self) -> Staged:
        return self

    def __exit__(self, *exc) -> None:
        self.discard()

    def discard(self) -> None:
        for tmp, _ in self._files:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        for fd in self._fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._files, self._fds = [], []

    def _stage(self, path, write: Callable[[Path], None]) -> Path:
        path = Path(path)
        if not self.overwrite and os.path.lexists(path):
            raise OutputExistsError(errno.EEXIST, "exists (use overwrite to replace it)",
                                    str(path))
        if os.path.isdir(path):
            raise IsADirectoryError(errno.EISDIR, "is a folder; an output file cannot "
                                    "replace it", str(path))
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp, fd = _new_temp(path.parent)
        self._fds.append(fd)
        self._files.append((tmp, path))
        write(tmp)
        return path

    def labels(self, path, labels, *, axes: str, pixel_size: Optional[dict] = None,
               unit: Optional[str] = None, info: Optional[dict] = None) -> Path:
        """Stage a label image (see :func:`write_labels`)."""
        data, kind = _label_array(labels, axes)
        ome = kind == "ome" or is_ome_name(path)
        return self._stage(path, lambda tmp: _write_tiff(tmp, data, axes, pixel_size,
                                                         unit, info, ome=ome))

    def image(self, path, image, *, axes: str, pixel_size: Optional[dict] = None,
              unit: Optional[str] = None, info: Optional[dict] = None) -> Path:
        """Stage a float32 image (see :func:`write_image`)."""
        data = np.asarray(image, dtype=np.float32)
        _check_axes(data, axes)
        return self._stage(path, lambda tmp: _write_tiff(tmp, data, axes, pixel_size,
                                                         unit, info, ome=is_ome_name(path)))

    def json(self, path, data: dict) -> Path:
        """Stage a strict JSON file (NaN and infinities written as null)."""
        text = json.dumps(jsonable(data), indent=2, allow_nan=False) + "\n"
        return self._stage(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))

    def commit(self) -> list[Path]:
        """Move every staged file into place. If one cannot be placed, the set is rolled
        back: files this call created are removed, and files it replaced (with
        ``overwrite``) get their earlier content back; then the error is raised."""
        placed: list[Path] = []
        backups: list[tuple[Path, Path]] = []
        try:
            for tmp, path in self._files:
                if self.overwrite and os.path.lexists(path):
                    backups.append((self._backup(path), path))
                _commit(tmp, path, self.overwrite)
                placed.append(path)
        except BaseException:
            backed = {path: bak for bak, path in backups}
            for path in reversed(placed):
                with contextlib.suppress(OSError):
                    if path in backed:
                        os.replace(backed.pop(path), path)  # its earlier content
                    else:
                        os.unlink(path)  # created by this call
            for bak in backed.values():  # never replaced: the backup is not needed
                with contextlib.suppress(OSError):
                    os.unlink(bak)
            raise
        else:
            for bak, _ in backups:
                with contextlib.suppress(OSError):
                    os.unlink(bak)
        finally:
            self.discard()
        return placed

    @staticmethod
    def _backup(path: Path) -> Path:
        """A second name for ``path``'s current content (a hard link, else a copy), named
        like a temporary file so a killed run's is cleaned up like one."""
        bak, fd = _new_temp(path.parent)
        os.close(fd)
        os.unlink(bak)
        try:
            os.link(path, bak)
        except OSError:
            import shutil

            shutil.copy2(path, bak)
        return bak


def is_ome_name(path) -> bool:
    """A ``.ome.tif`` name: readers that go by the name expect OME-XML in it."""
    return str(path).lower().endswith((".ome.tif", ".ome.tiff"))


def stem(path) -> str:
    """A file's name without its suffix, ``.ome.tif`` counted as one suffix."""
    name = Path(path).name
    for suffix in (".ome.tif", ".ome.tiff"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(path).stem


def _check_axes(data: np.ndarray, axes: str) -> None:
    if not isinstance(axes, str) or len(axes) != data.ndim or \
            any(a not in "TZCYX" for a in axes) or len(set(axes)) != len(axes) or \
            axes.replace("C", "")[-2:] != "YX":
        raise ValueError(f"axes must name each of the {data.ndim} axes of the data once "
                         f"with T, Z, C, Y, X, ending with Y and X (plus C), got {axes!r}")


def _label_array(labels, axes: str) -> tuple[np.ndarray, str]:
    """Labels in the smallest unsigned dtype that holds their ids; the format that holds
    that dtype (ImageJ to 65535, OME-TIFF beyond)."""
    labels = np.asarray(labels)
    if labels.dtype.kind not in "biu":
        raise TypeError(f"labels must be integers, got dtype {labels.dtype}")
    if "C" in axes:
        raise ValueError(f"a label image has no channel axis (axes {axes!r})")
    _check_axes(labels, axes)
    if labels.size and labels.min() < 0:
        raise ValueError("labels must not be negative")
    top = int(labels.max()) if labels.size else 0
    dtype = np.uint8 if top <= 255 else np.uint16 if top <= IMAGEJ_MAX_ID else np.uint32
    return labels.astype(dtype, copy=False), "imagej" if top <= IMAGEJ_MAX_ID else "ome"


def written_axes(axes: str) -> str:
    """The order in which a TIFF written here stores ``axes`` (ImageJ's T, Z, C, Y, X)."""
    return "".join(a for a in "TZCYX" if a in axes)


def _imagej_order(data: np.ndarray, axes: str) -> tuple[np.ndarray, str]:
    order = [axes.index(a) for a in "TZCYX" if a in axes]
    return np.transpose(data, order), "".join(axes[i] for i in order)


#: Beyond this many bytes of pixels the ImageJ format (a classic TIFF) cannot hold a file:
#: OME-TIFF in BigTIFF instead.
IMAGEJ_MAX_BYTES = 2**32 - 2**26


def _write_tiff(path: Path, data: np.ndarray, axes: str, pixel_size: Optional[dict],
                unit: Optional[str], info: Optional[dict], ome: bool = False) -> None:
    import tifffile

    from . import __version__

    big = data.nbytes > IMAGEJ_MAX_BYTES
    ome = ome or big
    data, axes = _imagej_order(data, axes)
    sizes = {a: v for a, v in (pixel_size or {}).items() if _positive(v) is not None}
    unit = _unit(unit) if sizes else None
    software = f"{SOFTWARE} {__version__}"
    if ome:
        meta: dict[str, Any] = {"axes": axes}
        for a in "XYZ":
            if a in sizes and (a != "Z" or "Z" in axes):
                meta[f"PhysicalSize{a}"] = float(sizes[a])
                if unit:
                    meta[f"PhysicalSize{a}Unit"] = unit
        tifffile.imwrite(path, data, ome=True, bigtiff=big, photometric="minisblack",
                         compression="zlib", metadata=meta, software=software)
        return
    meta = {"axes": axes}
    if unit:
        meta["unit"] = "micron" if unit == "µm" else unit
    if "Z" in sizes and "Z" in axes:
        meta["spacing"] = float(sizes["Z"])
    if info:
        meta["Info"] = json.dumps(jsonable(info), allow_nan=False)
    resolution = None
    if "X" in sizes and "Y" in sizes and all(1e-9 < float(sizes[a]) < 1e9 for a in "XY"):
        resolution = (1.0 / float(sizes["X"]), 1.0 / float(sizes["Y"]))
    tifffile.imwrite(path, data, imagej=True, photometric="minisblack",
                     compression="zlib", resolution=resolution, metadata=meta,
                     software=software)


def write_labels(path, labels, *, axes: Optional[str] = None,
                 pixel_size: Optional[dict] = None, unit: Optional[str] = None,
                 overwrite: bool = False, info: Optional[dict] = None) -> Path:
    """Write a label image that napari, Fiji and QuPath open as one channel of integer ids.

    Single-channel pages, the smallest unsigned dtype that holds the ids (uint8 to 255,
    uint16 to 65535: an ImageJ hyperstack TIFF with the axes, the pixel size and its unit;
    uint32 beyond: OME-TIFF, which ImageJ cannot hold), zlib-compressed.

    Parameters
    ----------
    axes : str, optional
        One of T, Z, Y, X per axis (default: the last two are Y, X, leading ones Z or T x Z).
    pixel_size : dict, optional
        Size per axis letter, e.g. ``{"Z": 2.0, "Y": 0.5, "X": 0.5}``, in ``unit``.
    overwrite : bool
        Replace an existing file; without it an existing ``path`` raises
        :class:`OutputExistsError` (nothing is written).
    info : dict, optional
        Stored as the ImageJ ``Info`` property (JSON): how the labels were made.
    """
    labels = np.asarray(labels)
    axes = axes if axes is not None else _default_axes(labels.ndim)
    with Staged(overwrite) as out:
        out.labels(path, labels, axes=axes, pixel_size=pixel_size, unit=unit, info=info)
        return out.commit()[0]


def write_image(path, image, *, axes: Optional[str] = None,
                pixel_size: Optional[dict] = None, unit: Optional[str] = None,
                overwrite: bool = False, info: Optional[dict] = None) -> Path:
    """Write a float32 image (the prior) with ImageJ metadata; as :func:`write_labels`,
    and ``axes`` may contain C (channels)."""
    image = np.asarray(image)
    axes = axes if axes is not None else _default_axes(image.ndim)
    with Staged(overwrite) as out:
        out.image(path, image, axes=axes, pixel_size=pixel_size, unit=unit, info=info)
        return out.commit()[0]


def write_json(path, data: dict, *, overwrite: bool = False) -> Path:
    """Write strict JSON (NaN and infinities as null), atomically."""
    with Staged(overwrite) as out:
        out.json(path, data)
        return out.commit()[0]


def _default_axes(ndim: int) -> str:
    if not 2 <= ndim <= 4:
        raise ValueError(f"pass axes=... for data with {ndim} dimensions")
    return "TZYX"[4 - ndim:]


def jsonable(obj):
    """``obj`` with numpy scalars and arrays, tuples and paths made JSON types, and NaN
    and infinities replaced by None (JSON has no NaN)."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(float(obj)) else None
    if obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, (os.PathLike, np.dtype, type)):
        return str(obj)
    return str(obj)


def pixel_size_for(axes: str, info: ImageInfo) -> dict:
    """The file's pixel sizes for the axes of an output (Y, X and Z where recorded)."""
    return {a: v for a, v in info.pixel_size.items() if a in axes}


def existing(paths: Iterable[Path]) -> list[Path]:
    return [p for p in paths if os.path.lexists(p)]
