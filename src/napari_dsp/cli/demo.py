"""``napari-dsp demo``: the quick start's first run, on scikit-image's bundled *coins*
image (nothing is downloaded). The parser and messages
are :mod:`napari_dsp.cli`'s; this module only runs the demo."""

from __future__ import annotations

import sys
import time

import numpy as np

from .. import io as _io
from ..io.places import probe_folder
from .common import ProgressBar, error, settings_from_args, tune_allocator
from .signals import SIGNALS


def run_demo(args) -> int:
    """``napari-dsp demo``: segment scikit-image's *coins* and report what was found;
    with ``-o``, write its labels, prior and metadata there (never over existing files
    without ``--overwrite``)."""
    from skimage import data

    settings = settings_from_args(args)
    out = args.output
    names = ("coins_labels.tif", "coins_prior.tif", "coins_labels.json")
    if out is not None:
        if out.exists() and not out.is_dir():
            error(f"-o {out} is a file; pass a folder")
            return 2
        problem, _ = probe_folder(out)  # as segment does: before anything is fitted
        if problem:
            error(f"-o {out}: {problem}; pass another folder; nothing was computed")
            return 2
        present = [out / n for n in names if (out / n).exists()]
        if present and not args.overwrite:
            error(
                f"{', '.join(map(str, present))} exist(s); pass --overwrite to replace "
                f"them or another -o folder"
            )
            return 2
    from ..api import segment

    tune_allocator()
    image = data.coins()
    print(
        f"napari-dsp demo: scikit-image 'coins' ({image.shape[0]}x{image.shape[1]}, "
        f"{image.dtype}); fitting {settings.n_members} members x {settings.n_iter} iterations",
        file=sys.stderr,
    )
    t0 = time.perf_counter()
    bar = None if args.quiet else ProgressBar("coins")
    result = segment(image, settings=settings, progress=bar, full_output=True)
    labels = result.labels
    n_fg = int((labels == 1).sum())
    print(
        f"done in {time.perf_counter() - t0:.1f} s on {result.metadata['device']}; "
        f"seed {result.metadata['settings']['seed']}"
    )
    if settings.n_classes == 2:
        from scipy import ndimage as ndi

        _, n_objects = ndi.label(labels == 1)
        print(
            f"foreground: {100.0 * n_fg / labels.size:.1f} % of the image, "
            f"{n_objects} connected objects"
        )
    else:
        counts = np.bincount(labels.ravel(), minlength=settings.n_classes + 1)[1:]
        print("pixels per class: " + ", ".join(f"{k}: {c}" for k, c in enumerate(counts, 1)))
    if out is not None:
        with _io.Staged(args.overwrite) as staged:
            staged.labels(out / names[0], labels, axes="YX")
            staged.image(out / names[1], result.prior.prior, axes="YX")
            staged.json(out / names[2], result.metadata)
            with SIGNALS.held():
                staged.commit()
        print(f"wrote {out / names[0]}, {names[1]} and {names[2]}")
    return 0
