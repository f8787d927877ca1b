"""The command line's parser: ``segment`` and ``demo`` with their own options, and
the setting flags built from :data:`~napari_dsp.settings.FIELDS` (only the options a
user sets are forwarded, so the library's defaults live in one place)."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ..settings import FIELDS, GROUPS, RESEARCH_FIT, Settings

#: Flags of earlier versions, still accepted (hidden from --help): old flag -> setting.
RENAMED_FLAGS = {"--runs": "n_members", "--workers": "n_threads", "--no-prior": "prior_superpixels"}


def add_setting_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per setting (:data:`~napari_dsp.settings.FIELDS`), in ``--help`` groups
    by what they govern (:data:`~napari_dsp.settings.GROUPS`)."""
    defaults = Settings()
    groups = {name: parser.add_argument_group(f"settings: {text}") for name, text in GROUPS.items()}
    for name, spec in FIELDS.items():
        default = getattr(defaults, name)
        group = groups[spec.group]
        text = spec.help.replace("%", "%%")  # argparse formats help texts with %
        helptext = f"{text} (default: {spec.none_text or default})"
        if isinstance(default, bool):
            # a setting on by default has the flag that turns it off: say that
            what = f"turn off '{spec.label}' (on by default). " if default else ""
            group.add_argument(
                spec.flag,
                dest=name,
                action="store_false" if default else "store_true",
                default=None,
                help=what + text,
            )
        elif spec.choices:
            group.add_argument(
                spec.flag, dest=name, choices=spec.choices, default=None, help=helptext
            )
        elif isinstance(default, str):
            group.add_argument(spec.flag, dest=name, default=None, metavar="NAME", help=helptext)
        else:
            kind = finite_float if isinstance(default, float) else int
            group.add_argument(
                spec.flag, dest=name, type=kind, default=None, metavar="N", help=helptext
            )
    for flag, name in RENAMED_FLAGS.items():
        if isinstance(getattr(defaults, name), bool):
            parser.add_argument(
                flag, dest=name, action="store_false", default=None, help=argparse.SUPPRESS
            )
        else:
            parser.add_argument(flag, dest=name, type=int, default=None, help=argparse.SUPPRESS)
    research = " ".join(f"{FIELDS[k].flag} {v}" for k, v in RESEARCH_FIT.items())
    parser.add_argument(
        "--research-defaults",
        action="store_true",
        help=f"fit as the research procedure: {research} (slower; other flags still apply)",
    )
    parser.add_argument(
        "--channel-axis",
        type=int,
        default=None,
        metavar="AXIS",
        help="axis of the channels of a multichannel image (RGB(A) with "
        "channels last, and channels named by OME or ImageJ metadata "
        "are recognised by themselves)",
    )


def finite_float(text: str) -> float:
    value = float(text)
    if not np.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def positive_float(text: str) -> float:
    value = finite_float(text)
    if not 1e-12 <= value <= 1e12:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a positive number between 1e-12 and 1e12"
        )
    return value


def output_path(text: str) -> Path:
    """``-o``: a path, never an empty one (``-o "$OUT"`` with OUT unset would otherwise
    write into the current folder without a word)."""
    if not text.strip():
        raise argparse.ArgumentTypeError(
            "-o is empty (is a shell variable unset?); give an output folder"
        )
    return Path(text)


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="napari-dsp", description="Unsupervised segmentation with a Deep Segmentation Prior."
    )
    parser.add_argument("--version", action="version", version=f"napari-dsp {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    seg = sub.add_parser(
        "segment",
        help="segment image files",
        description="Segment image files. Writes a label image per input (an ImageJ "
        "TIFF of class or object ids, 0 = background, with the input's "
        "axes and pixel size) and a JSON file with the settings used next to "
        "it. Axes come from OME-TIFF and ImageJ metadata where the file has "
        "them: a file whose metadata says Z or T is a stack without --stack. "
        "Every output is planned first: a batch in which two inputs would "
        "write the same file, or an output would replace an input, is "
        "refused before anything is computed.",
    )
    seg.add_argument(
        "inputs",
        nargs="+",
        type=Path,
        metavar="INPUT",
        help="image files (.tif/.tiff incl. OME-TIFF, ImageJ and compressed TIFF; "
        ".png, .jpg, .npy)",
    )
    seg.add_argument(
        "-o",
        "--output",
        type=output_path,
        required=True,
        help="output file for one input, or a directory (one <stem>_labels.tif per input)",
    )
    seg.add_argument(
        "--prior",
        action="store_true",
        help="also write the prior as "
        "<stem>_prior.tif (float32; with --texture, its texture channels as "
        "<stem>_prior_texture.tif)",
    )
    seg.add_argument(
        "--overwrite",
        action="store_true",
        help="replace existing outputs (labels, prior and sidecar); "
        "without it an input with any existing output is skipped",
    )
    seg.add_argument(
        "--scribbles",
        type=Path,
        default=None,
        metavar="FILE",
        help="label image of user strokes (0 = unlabelled) for --method "
        "kanezaki; same height and width as the input(s)",
    )
    seg.add_argument(
        "--stack",
        action="store_true",
        help="treat leading axes (Z, T, T x Z) as planes: every plane gets "
        "its own prior, classes are shared across planes (files whose "
        "metadata names Z or T are stacks without it)",
    )
    seg.add_argument(
        "--spacing",
        type=positive_float,
        nargs=3,
        default=None,
        metavar=("Z", "Y", "X"),
        help="voxel size of a Z stack for the fit of --volumetric (e.g. 2 0.5 "
        "0.5; only the ratios matter); default: the file's metadata, "
        "else isotropic. The outputs keep the file's own calibration",
    )
    seg.add_argument(
        "--max-pixels",
        type=positive_float,
        default=67.2e6,
        metavar="N",
        help="refuse images with more pixels per plane than this (default "
        "67.2e6, 8192x8192): a guard for batches of unknown files; "
        "large planes are fitted at the working size (--working-size)",
    )
    seg.add_argument(
        "--scheduler",
        default=None,
        metavar="ADDRESS",
        help="run the files on a dask cluster, one task per file: local:N "
        "starts N single-threaded worker processes on this machine; "
        "an address (tcp://host:8786) uses a running dask scheduler, "
        "whose workers must see the inputs and -o at the same paths. "
        'Needs pip install "napari-dsp[distributed]"',
    )
    seg.add_argument("--quiet", action="store_true", help="no progress bar")
    add_setting_flags(seg)
    demo = sub.add_parser(
        "demo",
        help="segment a built-in sample image (scikit-image's coins) and print a summary",
        description="Runs the main job on built-in data, no files needed.",
    )
    demo.add_argument(
        "-o",
        "--output",
        type=output_path,
        default=None,
        help="directory to also write the labels, prior and settings to",
    )
    demo.add_argument(
        "--overwrite", action="store_true", help="replace the outputs in -o if they exist"
    )
    demo.add_argument("--quiet", action="store_true", help="no progress bar")
    add_setting_flags(demo)
    return parser
