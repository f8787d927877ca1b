"""What an image file holds, from its header alone: :func:`read_info` ->
:class:`ImageInfo` (shape, dtype, axes, pixel size and unit) of a TIFF (OME-TIFF and
ImageJ hyperstacks included, any compression tifffile and imagecodecs decode), PNG, JPEG
or ``.npy`` file, before any pixel is decoded; and :class:`ImageFileError`, the one-line
error of a file that cannot be used.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import stat
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Optional

import numpy as np

#: File types read, by suffix (lower case).
READABLE = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".npy")
#: Axis letters whose meaning is known (tifffile's codes: S = samples of a pixel).
KNOWN_AXES = "TZCYXS"
#: Written into every TIFF napari-dsp writes (the TIFF Software tag).
SOFTWARE = "napari-dsp"


class ImageFileError(ValueError):
    """A file that cannot be used; the message is one line that starts with the path."""


@dataclass(frozen=True)
class ImageInfo:
    """What a file's header says, before any pixel is decoded.

    Made by :func:`read_info`.

    Parameters
    ----------
    path : Path
        The file.
    format : str
        ``"ome-tiff"``, ``"imagej-tiff"``, ``"tiff"``, ``"png"``, ``"jpeg"`` or ``"npy"``.
    shape : tuple of int
        Of the stored array (the first image series of a TIFF).
    dtype : numpy.dtype
        Of the stored array.
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
        """Bytes of the stored array once decoded."""
        return int(np.prod(self.shape, dtype=np.float64)) * np.dtype(self.dtype).itemsize

    @property
    def axes_known(self) -> bool:
        """Every axis longer than 1 has a known meaning, and Y and X are named."""
        if self.axes is None or "Y" not in self.axes or "X" not in self.axes:
            return False
        return all(a in KNOWN_AXES for a, n in zip(self.axes, self.shape) if n > 1)

    @property
    def written_by_us(self) -> bool:
        """The file was written by napari-dsp (its Software tag)."""
        return self.software.startswith(SOFTWARE)


def read_info(path) -> ImageInfo:
    """The header of an image file: shape, dtype, axes, pixel size. No pixel is decoded.

    Parameters
    ----------
    path : str or Path
        A TIFF (plain, OME, ImageJ, BigTIFF, compressed), PNG, JPEG or ``.npy`` file.

    Returns
    -------
    ImageInfo
        What the header says.

    Raises
    ------
    ImageFileError
        For an unsupported suffix, a missing or unreadable file, a file that is not what
        its suffix says; the message starts with the path and says what to do.
    """
    if str(path) == "-":
        raise ImageFileError(
            "-: reading an image from standard input is not supported; save it to a file "
            "and pass its path"
        )
    path = Path(path)
    suffix = path.suffix.lower()
    if os.path.isdir(path):
        raise ImageFileError(
            f"{path}: is a folder; pass the image files in it (e.g. {path / '*.tif'})"
        )
    if suffix not in READABLE:
        raise ImageFileError(
            f"{path}: unsupported file type '{suffix}' (use {', '.join(READABLE)})"
        )
    try:
        _check_regular_file(path)
        _check_kind(path, suffix)
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
        raise ImageFileError(f"{path}: cannot be opened ({first_line(exc)})") from None
    except Exception as exc:  # any reader failure is the file's problem, said in one line
        raise ImageFileError(
            f"{path}: cannot be read as an image ({type(exc).__name__}: "
            f"{first_line(exc) or 'corrupt file'})"
        ) from None
    if 0 in info.shape or not info.shape:
        raise ImageFileError(
            f"{path}: cannot be read as an image (no pixel data: corrupt or truncated file?)"
        )
    if np.dtype(info.dtype).kind not in "biuf":
        raise ImageFileError(
            f"{path}: has pixels of type {info.dtype}; save it with integer or real (float) pixels"
        )
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
        raise ImageFileError(
            f"{path}: is not a regular file (a pipe or a device?); save the image to a file"
        )


#: The first bytes of each kind of file read here, and the suffixes of that kind.
_MAGIC = (
    ("TIFF", (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"), (".tif", ".tiff")),
    ("PNG", (b"\x89PNG\r\n\x1a\n",), (".png",)),
    ("JPEG", (b"\xff\xd8\xff",), (".jpg", ".jpeg")),
    ("NumPy", (b"\x93NUMPY",), (".npy",)),
)


def _check_kind(path: Path, suffix: str) -> None:
    """A file whose first bytes say another kind than its name: refused with the name it
    should have, whichever way round (a PNG called .tif, a TIFF called .png)."""
    with open(path, "rb") as f:
        head = f.read(8)
    for kind, magics, suffixes in _MAGIC:
        if head.startswith(magics) and suffix not in suffixes:
            raise ImageFileError(
                f"{path}: is a {kind} file named {suffix}; rename it to "
                f"{path.with_suffix(suffixes[0]).name}"
            )


def first_line(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc)
    return text.splitlines()[0] if text else type(exc).__name__


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list = []

    def emit(self, record) -> None:
        text = record.getMessage()
        # tifffile starts its messages with the file's repr: the caller names the file
        if text.startswith("<tifffile.") and "> " in text:
            text = text.split("> ", 1)[1]
        self.messages.append(text)


@contextlib.contextmanager
def tifffile_messages():
    """tifffile's own warnings while the block reads (a series shape that does not
    match its pages, a corrupt tag...), collected into the list it yields instead of
    reaching the terminal or napari's console as a bare log line: they become notes
    of the file (:class:`ImageInfo`). tifffile's logger is left as it was afterwards.
    """
    log = logging.getLogger("tifffile")
    collect = _Collect()
    propagate = log.propagate
    log.addHandler(collect)
    log.propagate = False
    try:
        yield collect.messages
    finally:
        log.removeHandler(collect)
        log.propagate = propagate


def _tiff_info(path: Path) -> ImageInfo:
    with tifffile_messages() as said:
        info = _read_tiff_info(path)
    if not said:
        return info
    notes = tuple(f"tifffile: {text}" for text in dict.fromkeys(said))
    return replace(info, notes=info.notes + notes)


def _read_tiff_info(path: Path) -> ImageInfo:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        if not tif.series:
            raise ImageFileError(f"{path}: cannot be read as an image (no image in the TIFF file)")
        series = tif.series[0]
        page = series.keyframe if hasattr(series, "keyframe") else tif.pages[0]
        notes = []
        if len(tif.series) > 1:
            notes.append(
                f"the file holds {len(tif.series)} images; the first, of shape "
                f"{tuple(series.shape)}, is used"
            )
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
                    f"or save it uncompressed or with LZW/deflate"
                )
        except (ImportError, AttributeError, TypeError):  # pragma: no cover - old tifffile
            pass
        return ImageInfo(
            path,
            fmt,
            tuple(int(n) for n in series.shape),
            np.dtype(series.dtype),
            axes.upper(),
            pixel_size,
            unit,
            alpha,
            software,
            tuple(notes),
        )


def unit_name(text) -> Optional[str]:
    """A length unit as written by ImageJ or OME, in one spelling (µm for micrometres)."""
    if text is None:
        return None
    text = str(text).strip()
    if text.lower() in (
        "micron",
        "microns",
        "um",
        "µm",
        "μm",
        "\\u00b5m",
        "micrometer",
        "micrometre",
    ):
        return "µm"
    if text.lower() in ("", "pixel", "pixels", "none"):
        return None
    return text


def positive_or_none(value) -> Optional[float]:
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
    pixels = next(
        (el for el in root.iter() if el.tag.endswith("}Pixels") or el.tag == "Pixels"), None
    )
    if pixels is None:
        return {}, None
    sizes, units = {}, set()
    for axis in "XYZ":
        value = positive_or_none(pixels.get(f"PhysicalSize{axis}"))
        if value is not None:
            sizes[axis] = value
            units.add(unit_name(pixels.get(f"PhysicalSize{axis}Unit", "µm")))
    if len(units) > 1:  # mixed units: convert what we know to µm
        scale = {"µm": 1.0, "nm": 1e-3, "mm": 1e3, "m": 1e6}
        if all(u in scale for u in units):
            sizes = {
                a: v * scale[unit_name(pixels.get(f"PhysicalSize{a}Unit", "µm"))]
                for a, v in sizes.items()
            }
            return sizes, "µm"
        return {}, None
    return sizes, (units.pop() if units else None)


def _imagej_pixel_size(meta: dict, page) -> tuple[dict, Optional[str]]:
    sizes = {}
    for axis, tag in (("X", "XResolution"), ("Y", "YResolution")):
        try:
            num, den = page.tags[tag].value
            value = positive_or_none(den / num) if num else None
        except (KeyError, TypeError, ValueError, ZeroDivisionError):
            value = None
        if value is not None:
            sizes[axis] = value
    z = positive_or_none(meta.get("spacing"))
    if z is not None:
        sizes["Z"] = z
    unit = unit_name(meta.get("unit"))
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
            value = positive_or_none(1e4 * den / num) if num else None
            if value is not None:
                sizes[axis] = value
        return sizes, "µm" if sizes else None
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return {}, None


def _npy_info(path: Path) -> ImageInfo:
    with open(path, "rb") as fh:
        head = fh.read(8)
        if head.startswith(b"PK\x03\x04"):
            raise ImageFileError(
                f"{path}: is a zip archive (an .npz file named .npy?), "
                f"not one array; save one array with numpy.save"
            )
        fh.seek(0)
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
        else:
            shape, _, dtype = np.lib.format._read_array_header(fh, version)
    if dtype.hasobject:
        raise ImageFileError(f"{path}: holds Python objects, not pixels; save a numeric array")
    return ImageInfo(path, "npy", tuple(int(n) for n in shape), np.dtype(dtype))


#: PIL modes -> (dtype, samples per pixel, last sample is alpha).
_PIL_MODES = {
    "1": (np.bool_, 1, False),
    "L": (np.uint8, 1, False),
    "LA": (np.uint8, 2, True),
    "La": (np.uint8, 2, True),
    "P": (np.uint8, 3, False),
    "PA": (np.uint8, 4, True),
    "RGB": (np.uint8, 3, False),
    "RGBA": (np.uint8, 4, True),
    "RGBa": (np.uint8, 4, True),
    "RGBX": (np.uint8, 3, False),
    "CMYK": (np.uint8, 3, False),
    "YCbCr": (np.uint8, 3, False),
    "LAB": (np.uint8, 3, False),
    "HSV": (np.uint8, 3, False),
    "I": (np.int32, 1, False),
    "I;16": (np.uint16, 1, False),
    "I;16B": (np.uint16, 1, False),
    "I;16L": (np.uint16, 1, False),
    "F": (np.float32, 1, False),
}


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
    return ImageInfo(
        path,
        "png",
        shape,
        np.dtype(dtype),
        "YX" if samples == 1 else "YXS",
        alpha=alpha,
        notes=notes,
    )


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


#: The EXIF tag of a photo's orientation (1 = as stored).
_EXIF_ORIENTATION = 0x0112


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
                orientation = im.getexif().get(_EXIF_ORIENTATION)
        except Image.DecompressionBombError:
            raise ImageFileError(
                f"{path}: is an image of more pixels than Pillow opens "
                f"(a decompression-bomb guard); downsample or crop it, or "
                f"save it as TIFF"
            ) from None
    if mode not in _PIL_MODES:
        raise ImageFileError(
            f"{path}: pixel mode {mode!r} is not supported; save it as grayscale or RGB"
        )
    dtype, samples, alpha = _PIL_MODES[mode]
    notes = (f"the file has {frames} frames; the first is used",) if frames > 1 else ()
    if orientation not in (None, 1):
        notes += (
            f"the file's EXIF orientation ({orientation}: shown rotated or mirrored by "
            f"photo viewers) is not applied: the labels follow the pixels as stored, as "
            f"Fiji and napari read them",
        )
    shape = (height, width) if samples == 1 else (height, width, samples)
    return ImageInfo(
        path,
        "jpeg" if fmt in ("jpeg", "mpo") else fmt,
        shape,
        np.dtype(dtype),
        "YX" if samples == 1 else "YXS",
        alpha=alpha,
        notes=notes,
    )
