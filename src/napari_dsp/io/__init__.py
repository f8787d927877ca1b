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

The package: :mod:`.header` (what a file holds), :mod:`.layout` (its axes and pixels),
:mod:`.temps` (temporary files, atomic placement, clean-up), :mod:`.write` (labels,
prior, sidecar). Nothing here imports torch, napari or Qt.
"""

from .header import READABLE, ImageFileError, ImageInfo, read_info
from .layout import Arrangement, arrange, pixel_size_for, read_pixels, spacing_of
from .temps import OutputExistsError, remove_stale_temps
from .write import Staged, write_image, write_json, write_labels

#: What a user calls; the rest is in the modules (:mod:`.header`, :mod:`.layout`,
#: :mod:`.temps`, :mod:`.write`, :mod:`.places`) for the package's own use.
__all__ = [
    "READABLE",
    "Arrangement",
    "ImageFileError",
    "ImageInfo",
    "OutputExistsError",
    "Staged",
    "arrange",
    "pixel_size_for",
    "read_info",
    "read_pixels",
    "remove_stale_temps",
    "spacing_of",
    "write_image",
    "write_json",
    "write_labels",
]
