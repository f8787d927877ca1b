"""The files a run writes: :func:`write_labels` (single-channel pages, the smallest
unsigned dtype that holds the ids, ImageJ metadata with the axes and pixel size;
OME-TIFF beyond 65535 ids or 4 GB), :func:`write_image` (float32, same metadata),
:func:`write_json` (strict JSON), each atomic; :class:`Staged` writes a run's outputs
together and rolls them back if one cannot be placed.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Optional

import numpy as np

from .header import SOFTWARE, positive_or_none, unit_name
from .temps import OutputExistsError, commit_file, new_temp

#: Largest id the ImageJ format holds (it has no 32-bit integers).
IMAGEJ_MAX_ID = 65535


class Staged:
    """Outputs written to temporary files first and moved into place together by
    :meth:`commit`; leaving the ``with`` block without committing removes them.

    Parameters
    ----------
    overwrite : bool or collection of path, default False
        True replaces any existing output; a collection of paths replaces those only
        (what an interrupted run of the same job left).

    Examples
    --------
    >>> with Staged(overwrite=False) as out:            # doctest: +SKIP
    ...     out.labels(folder / "cell_labels.tif", labels, axes="YX")
    ...     out.json(folder / "cell_labels.json", metadata)
    ...     out.commit()
    """

    def __init__(self, overwrite=False):
        """See the class's Parameters."""
        if isinstance(overwrite, bool):
            self.overwrite, self._replace = overwrite, frozenset()
        else:
            self.overwrite, self._replace = False, frozenset(Path(p) for p in overwrite)
        self._files: list[tuple[Path, Path]] = []
        self._fds: list[int] = []
        self._created: list[Path] = []  # every temporary file, named before it exists

    def __enter__(self) -> Staged:
        return self

    def __exit__(self, *exc) -> None:
        self.discard()

    def replaces(self, path) -> bool:
        """Whether ``path`` may be replaced if it exists.

        Parameters
        ----------
        path : str or Path
            An output.

        Returns
        -------
        bool
            True if ``overwrite`` allows replacing it.
        """
        return self.overwrite or Path(path) in self._replace

    def discard(self) -> None:
        """Remove every staged file not yet moved into place."""
        for tmp in dict.fromkeys([*(tmp for tmp, _ in self._files), *self._created]):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        for fd in self._fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._files, self._fds, self._created = [], [], []

    def _stage(self, path, write: Callable[[Path], None]) -> Path:
        path = Path(path)
        if not self.replaces(path) and os.path.lexists(path):
            raise OutputExistsError(errno.EEXIST, "exists (use overwrite to replace it)", str(path))
        if os.path.isdir(path):
            raise IsADirectoryError(
                errno.EISDIR, "is a folder; an output file cannot replace it", str(path)
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp, fd = new_temp(path.parent, self._created)
        self._fds.append(fd)
        self._files.append((tmp, path))
        write(tmp)
        return path

    def labels(
        self,
        path,
        labels,
        *,
        axes: str,
        pixel_size: Optional[dict] = None,
        unit: Optional[str] = None,
        info: Optional[dict] = None,
    ) -> Path:
        """Stage a label image.

        Parameters
        ----------
        path : str or Path
            Where it goes on :meth:`commit`.
        labels : array_like of int
            The ids.
        axes : str
            One of T, Z, Y, X per axis.
        pixel_size : dict, optional
            Size per axis letter, in ``unit``.
        unit : str, optional
            Unit of ``pixel_size``.
        info : dict, optional
            Stored as the ImageJ ``Info`` property (JSON).

        Returns
        -------
        Path
            ``path``.

        See Also
        --------
        write_labels : The same, written at once.
        """
        data, kind = _label_array(labels, axes)
        ome = kind == "ome" or is_ome_name(path)
        return self._stage(
            path, lambda tmp: _write_tiff(tmp, data, axes, pixel_size, unit, info, ome=ome)
        )

    def image(
        self,
        path,
        image,
        *,
        axes: str,
        pixel_size: Optional[dict] = None,
        unit: Optional[str] = None,
        info: Optional[dict] = None,
    ) -> Path:
        """Stage a float32 image.

        Parameters
        ----------
        path : str or Path
            Where it goes on :meth:`commit`.
        image : array_like
            The image, written as float32.
        axes : str
            One of T, Z, C, Y, X per axis.
        pixel_size : dict, optional
            Size per axis letter, in ``unit``.
        unit : str, optional
            Unit of ``pixel_size``.
        info : dict, optional
            Stored as the ImageJ ``Info`` property (JSON).

        Returns
        -------
        Path
            ``path``.

        See Also
        --------
        write_image : The same, written at once.
        """
        data = np.asarray(image, dtype=np.float32)
        _check_axes(data, axes)
        return self._stage(
            path,
            lambda tmp: _write_tiff(tmp, data, axes, pixel_size, unit, info, ome=is_ome_name(path)),
        )

    def json(self, path, data: dict) -> Path:
        """Stage a strict JSON file (NaN and infinities written as null).

        Parameters
        ----------
        path : str or Path
            Where it goes on :meth:`commit`.
        data : dict
            What to write.

        Returns
        -------
        Path
            ``path``.
        """
        text = json.dumps(jsonable(data), indent=2, allow_nan=False) + "\n"
        return self._stage(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))

    def commit(self) -> list[Path]:
        """Move every staged file into place. If one cannot be placed, the set is rolled
        back: files this call created are removed, and files it replaced (with
        ``overwrite``) get their earlier content back; then the error is raised.

        Returns
        -------
        list of Path
            The files placed, in the order they were staged.
        """
        placed: list[Path] = []
        backups: list[tuple[Path, Path]] = []
        try:
            for tmp, path in self._files:
                if self.replaces(path) and os.path.lexists(path):
                    backups.append((self._backup(path), path))
                commit_file(tmp, path, self.replaces(path))
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
        bak, fd = new_temp(path.parent)
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
    if (
        not isinstance(axes, str)
        or len(axes) != data.ndim
        or any(a not in "TZCYX" for a in axes)
        or len(set(axes)) != len(axes)
        or axes.replace("C", "")[-2:] != "YX"
    ):
        raise ValueError(
            f"axes must name each of the {data.ndim} axes of the data once "
            f"with T, Z, C, Y, X, ending with Y and X (plus C), got {axes!r}"
        )


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


def _write_tiff(
    path: Path,
    data: np.ndarray,
    axes: str,
    pixel_size: Optional[dict],
    unit: Optional[str],
    info: Optional[dict],
    ome: bool = False,
) -> None:
    import tifffile

    from .. import __version__

    big = data.nbytes > IMAGEJ_MAX_BYTES
    ome = ome or big
    data, axes = _imagej_order(data, axes)
    sizes = {a: v for a, v in (pixel_size or {}).items() if positive_or_none(v) is not None}
    unit = unit_name(unit) if sizes else None
    software = f"{SOFTWARE} {__version__}"
    if ome:
        meta: dict[str, Any] = {"axes": axes}
        for a in "XYZ":
            if a in sizes and (a != "Z" or "Z" in axes):
                meta[f"PhysicalSize{a}"] = float(sizes[a])
                if unit:
                    meta[f"PhysicalSize{a}Unit"] = unit
        tifffile.imwrite(
            path,
            data,
            ome=True,
            bigtiff=big,
            photometric="minisblack",
            compression="zlib",
            metadata=meta,
            software=software,
        )
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
    tifffile.imwrite(
        path,
        data,
        imagej=True,
        photometric="minisblack",
        compression="zlib",
        resolution=resolution,
        metadata=meta,
        software=software,
    )


def write_labels(
    path,
    labels,
    *,
    axes: Optional[str] = None,
    pixel_size: Optional[dict] = None,
    unit: Optional[str] = None,
    overwrite: bool = False,
    info: Optional[dict] = None,
) -> Path:
    """Write a label image that napari, Fiji and QuPath open as one channel of integer ids.

    Single-channel pages, the smallest unsigned dtype that holds the ids (uint8 to 255,
    uint16 to 65535: an ImageJ hyperstack TIFF with the axes, the pixel size and its unit;
    uint32 beyond: OME-TIFF, which ImageJ cannot hold), zlib-compressed.

    Parameters
    ----------
    path : str or Path
        The file to write (``.ome.tif`` for an OME-TIFF).
    labels : array_like of int
        The ids, 0 = background.
    axes : str, optional
        One of T, Z, Y, X per axis (default: the last two are Y, X, leading ones Z or T x Z).
    pixel_size : dict, optional
        Size per axis letter, e.g. ``{"Z": 2.0, "Y": 0.5, "X": 0.5}``, in ``unit``.
    unit : str, optional
        Unit of ``pixel_size`` (``"µm"``).
    overwrite : bool, default False
        Replace an existing file; without it an existing ``path`` raises
        :class:`OutputExistsError` (nothing is written).
    info : dict, optional
        Stored as the ImageJ ``Info`` property (JSON): how the labels were made.

    Returns
    -------
    Path
        The file written.

    Raises
    ------
    OutputExistsError
        If ``path`` exists and ``overwrite`` is False.

    Examples
    --------
    >>> import numpy as np
    >>> from napari_dsp.io import write_labels
    >>> labels = np.zeros((64, 64), np.uint8)
    >>> write_labels("cell_labels.tif", labels, pixel_size={"Y": 0.5, "X": 0.5},
    ...              unit="µm")  # doctest: +SKIP
    """
    labels = np.asarray(labels)
    axes = axes if axes is not None else _default_axes(labels.ndim)
    with Staged(overwrite) as out:
        out.labels(path, labels, axes=axes, pixel_size=pixel_size, unit=unit, info=info)
        return out.commit()[0]


def write_image(
    path,
    image,
    *,
    axes: Optional[str] = None,
    pixel_size: Optional[dict] = None,
    unit: Optional[str] = None,
    overwrite: bool = False,
    info: Optional[dict] = None,
) -> Path:
    """Write a float32 image (the prior) with ImageJ metadata, atomically.

    Parameters
    ----------
    path : str or Path
        The file to write (``.ome.tif`` for an OME-TIFF).
    image : array_like
        The image, written as float32.
    axes : str, optional
        One of T, Z, C, Y, X per axis (default: as :func:`write_labels`).
    pixel_size : dict, optional
        Size per axis letter, in ``unit``.
    unit : str, optional
        Unit of ``pixel_size``.
    overwrite : bool, default False
        Replace an existing file.
    info : dict, optional
        Stored as the ImageJ ``Info`` property (JSON).

    Returns
    -------
    Path
        The file written.

    Raises
    ------
    OutputExistsError
        If ``path`` exists and ``overwrite`` is False.
    """
    image = np.asarray(image)
    axes = axes if axes is not None else _default_axes(image.ndim)
    with Staged(overwrite) as out:
        out.image(path, image, axes=axes, pixel_size=pixel_size, unit=unit, info=info)
        return out.commit()[0]


def write_json(path, data: dict, *, overwrite: bool = False) -> Path:
    """Write strict JSON (NaN and infinities as null), atomically.

    Parameters
    ----------
    path : str or Path
        The file to write.
    data : dict
        What to write.
    overwrite : bool, default False
        Replace an existing file.

    Returns
    -------
    Path
        The file written.

    Raises
    ------
    OutputExistsError
        If ``path`` exists and ``overwrite`` is False.
    """
    with Staged(overwrite) as out:
        out.json(path, data)
        return out.commit()[0]


def _default_axes(ndim: int) -> str:
    if not 2 <= ndim <= 4:
        raise ValueError(f"pass axes=... for data with {ndim} dimensions")
    return "TZYX"[4 - ndim :]


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


def existing(paths: Iterable[Path]) -> list[Path]:
    return [p for p in paths if os.path.lexists(p)]
