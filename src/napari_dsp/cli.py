"""Command line: ``napari-dsp segment INPUT... -o OUTPUT`` and ``napari-dsp demo``.

The setting flags are built from :data:`~napari_dsp.settings.FIELDS`, and only the
options a user sets are forwarded to :class:`~napari_dsp.Settings`, so the library's
defaults live in one place. Importing this module does not import torch: ``--help``
answers at once.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

import numpy as np

from .core.image import plane_shape
from .settings import FIELDS, Settings

READABLE = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".npy")


class InputError(Exception):
    """A file that cannot be used; its message is one line for the user."""


def read_image(path: Path) -> np.ndarray:
    """Read a .tif/.tiff, .png, .jpg/.jpeg or .npy file as a numpy array."""
    suffix = path.suffix.lower()
    if suffix not in READABLE:
        raise InputError(f"{path}: unsupported file type '{suffix}' (use "
                         f"{', '.join(READABLE)})")
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        if suffix in (".tif", ".tiff"):
            import tifffile

            data = np.asarray(tifffile.imread(path))
        elif suffix == ".npy":
            data = np.load(path, allow_pickle=False)
        else:
            import imageio.v3 as iio

            data = np.asarray(iio.imread(path))
    except Exception as exc:  # any reader failure is the file's problem, said in one line
        raise InputError(f"{path}: cannot be read as an image ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else 'corrupt file'})"
                         ) from None
    if data.size == 0:
        raise InputError(f"{path}: cannot be read as an image (no pixel data: corrupt or "
                         f"truncated file?)")
    return data


def write_atomic(path: Path, write) -> None:
    """Write through a temporary file in the same folder, then rename: an interrupted run
    never leaves a partial output under the final name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix + ".part",
                               dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_tiff(path: Path, data: np.ndarray) -> None:
    import tifffile

    write_atomic(path, lambda tmp: tifffile.imwrite(tmp, data, compression="zlib"))


def write_json(path: Path, data: dict) -> None:
    def _write(tmp):
        with open(tmp, "w") as fh:
            json.dump(data, fh, indent=2, default=_json_default)
            fh.write("\n")

    write_atomic(path, _write)


def _json_default(obj):
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, tuple):
        return list(obj)
    return str(obj)


class ProgressBar:
    """A one-line text progress bar on stderr, in the user's units
    (:meth:`~napari_dsp.progress.FitProgress.describe`)."""

    def __init__(self, label: str, stream=None, width: int = 24):
        self.label, self.width = label, width
        self.stream = stream if stream is not None else sys.stderr
        self.last = -1.0
        self.stage: Optional[str] = None
        self.shown = 0

    def __call__(self, progress) -> None:
        now = time.perf_counter()
        done = progress.step >= progress.total
        if self.stage is not None and progress.stage != self.stage and self.last >= 0:
            self.stream.write("\n")  # the prior is done; the self-training starts
        self.stage = progress.stage
        if not done and now - self.last < 0.2:
            return
        self.last = now
        fill = int(round(progress.fraction * self.width))
        line = (f"{self.label} [{'#' * fill}{'.' * (self.width - fill)}] "
                f"{progress.describe()}")
        self.stream.write("\r" + line.ljust(self.shown))
        self.shown = len(line)
        if done:
            self.stream.write("\n")
        self.stream.flush()


def _add_setting_flags(parser: argparse.ArgumentParser) -> None:
    defaults = Settings()
    for name, spec in FIELDS.items():
        default = getattr(defaults, name)
        text = spec.help.replace("%", "%%")  # argparse formats help texts with %
        helptext = f"{text} (default: {spec.none_text or default})"
        if isinstance(default, bool):
            parser.add_argument(spec.flag, dest=name, action="store_false" if default else
                                "store_true", default=None, help=text)
        elif spec.choices:
            parser.add_argument(spec.flag, dest=name, choices=spec.choices, default=None,
                                help=helptext)
        elif isinstance(default, str):
            parser.add_argument(spec.flag, dest=name, default=None, metavar="NAME",
                                help=helptext)
        else:
            kind = _finite_float if isinstance(default, float) else int
            parser.add_argument(spec.flag, dest=name, type=kind, default=None, metavar="N",
                                help=helptext)
    parser.add_argument("--channel-axis", type=int, default=None, metavar="AXIS",
                        help="axis of the channels of a multichannel image (RGB(A) with "
                             "channels last is recognised by itself)")


def _finite_float(text: str) -> float:
    value = float(text)
    if not np.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="napari-dsp",
        description="Unsupervised segmentation with a Deep Segmentation Prior.")
    sub = parser.add_subparsers(dest="command", required=True)
    seg = sub.add_parser(
        "segment", help="segment image files",
        description="Segment image files. Writes a label image (uint8 TIFF, 0 = "
                    "background) and a JSON file with the settings used next to it.")
    seg.add_argument("inputs", nargs="+", type=Path, metavar="INPUT",
                     help="image files (.tif, .tiff, .png, .jpg, .npy)")
    seg.add_argument("-o", "--output", type=Path, required=True,
                     help="output file for one input, or a directory (one "
                          "<stem>_labels.tif per input)")
    seg.add_argument("--prior", action="store_true",
                     help="also write the prior as <stem>_prior.tif (float32)")
    seg.add_argument("--overwrite", action="store_true",
                     help="replace existing outputs (otherwise they are kept and the "
                          "input is skipped)")
    seg.add_argument("--scribbles", type=Path, default=None, metavar="FILE",
                     help="label image of user strokes (0 = unlabelled) for --method "
                          "kanezaki; same height and width as the input(s)")
    seg.add_argument("--stack", action="store_true",
                     help="treat leading axes (Z, T, T x Z) as planes: every plane gets "
                          "its own prior, classes are shared across planes")
    seg.add_argument("--spacing", type=float, nargs=3, default=None,
                     metavar=("Z", "Y", "X"),
                     help="voxel size of a Z stack for --stack --volumetric (e.g. 2 0.5 "
                          "0.5); default isotropic")
    seg.add_argument("--max-pixels", type=_finite_float, default=67.2e6, metavar="N",
                     help="refuse images with more pixels per plane than this (default "
                          "67.2e6, 8192x8192): a guard for batches of unknown files; "
                          "large planes are fitted at the working size (--working-size)")
    seg.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_setting_flags(seg)
    demo = sub.add_parser("demo", help="segment a built-in sample image (scikit-image's "
                                       "coins) and print a summary",
                          description="Runs the main job on built-in data, no files "
                                      "needed.")
    demo.add_argument("-o", "--output", type=Path, default=None,
                      help="directory to also write the labels, prior and settings to")
    demo.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_setting_flags(demo)
    return parser


def _settings_from_args(args) -> Settings:
    chosen = {name: getattr(args, name) for name in FIELDS if getattr(args, name) is not None}
    # no live display here: previews are never computed, whatever --preview-every says
    return Settings().replace(**{**chosen, "preview_every": 0})


def _plan_outputs(inputs: Sequence[Path], output: Path) -> list[tuple[Path, Path]]:
    single_file = len(inputs) == 1 and output.suffix.lower() in (".tif", ".tiff")
    if single_file:
        return [(inputs[0], output)]
    if output.exists() and not output.is_dir():
        raise InputError(f"{output}: is a file; with several inputs -o must be a directory")
    return [(p, output / f"{p.stem}_labels.tif") for p in inputs]


def _companions(labels_path: Path) -> tuple[Path, Path]:
    stem = labels_path.stem
    base = stem[: -len("_labels")] if stem.endswith("_labels") else stem
    return (labels_path.with_name(base + "_prior.tif"),
            labels_path.with_name(labels_path.stem + ".json"))


def _run_segment(args) -> int:
    from .api import segment

    try:
        settings = _settings_from_args(args)
        plan = _plan_outputs(args.inputs, args.output)
        scribbles = read_image(args.scribbles) if args.scribbles is not None else None
    except (InputError, TypeError, ValueError) as exc:
        print(f"napari-dsp: error: {exc}", file=sys.stderr)
        return 2
    failures = 0
    for i, (src, dst) in enumerate(plan, 1):
        prior_path, json_path = _companions(dst)
        try:
            if src.resolve() in {dst.resolve(), prior_path.resolve(), json_path.resolve()}:
                raise InputError(f"{src}: the output would overwrite the input; choose "
                                 f"another output")
            if dst.exists() and not args.overwrite:
                print(f"napari-dsp: {dst} exists, skipped (use --overwrite to replace it)",
                      file=sys.stderr)
                continue
            image = read_image(src)
            spatial = plane_shape(image.shape, args.channel_axis, args.stack)
            plane = int(np.prod(spatial))
            if plane > args.max_pixels:
                raise InputError(f"{src}: {spatial[0]}x{spatial[1]} = "
                                 f"{plane / 1e6:.1f} megapixels is above --max-pixels "
                                 f"{args.max_pixels:.3g}; downsample it first or raise "
                                 f"--max-pixels")
            bar = None if args.quiet else ProgressBar(f"[{i}/{len(plan)}] {src.name}")
            if args.stack:
                from .stack import segment_stack

                result = segment_stack(image, channel_axis=args.channel_axis,
                                       settings=settings, progress=bar, full_output=True,
                                       spacing=args.spacing)
            else:
                result = segment(image, channel_axis=args.channel_axis, settings=settings,
                                 progress=bar, full_output=True, scribbles=scribbles)
            if args.prior and result.prior is not None:
                write_tiff(prior_path, result.prior.prior)
            meta = dict(result.metadata, input_file=str(src), labels_file=str(dst))
            write_json(json_path, meta)
            write_tiff(dst, result.labels)
        except (InputError, TypeError, ValueError) as exc:
            failures += 1
            msg = str(exc) if str(exc).startswith(str(src)) else f"{src}: {exc}"
            print(f"napari-dsp: error: {msg}", file=sys.stderr)
        except OSError as exc:
            failures += 1
            print(f"napari-dsp: error: {src}: cannot write output ({exc.strerror or exc})",
                  file=sys.stderr)
        except (RuntimeError, MemoryError) as exc:  # torch failures, out of memory
            failures += 1
            text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            print(f"napari-dsp: error: {src}: the fit failed ({text}); try fewer --runs, "
                  f"a --working-size, or --device cpu", file=sys.stderr)
    done = len(plan) - failures
    if len(plan) > 1 or failures:
        print(f"napari-dsp: {done} of {len(plan)} file(s) done, {failures} failed",
              file=sys.stderr)
    return 1 if failures else 0


def _run_demo(args) -> int:
    from skimage import data

    from .api import segment

    settings = _settings_from_args(args)
    image = data.coins()
    print(f"napari-dsp demo: scikit-image 'coins' ({image.shape[0]}x{image.shape[1]}, "
          f"{image.dtype}); fitting {settings.n_runs} runs x {settings.n_iter} iterations",
          file=sys.stderr)
    t0 = time.perf_counter()
    bar = None if args.quiet else ProgressBar("coins")
    result = segment(image, settings=settings, progress=bar, full_output=True)
    labels = result.labels
    n_fg = int((labels == 1).sum())
    print(f"done in {time.perf_counter() - t0:.1f} s on {result.metadata['device']}; "
          f"seed {result.metadata['settings']['seed']}")
    if settings.n_classes == 2:
        from scipy import ndimage as ndi

        _, n_objects = ndi.label(labels == 1)
        print(f"foreground: {100.0 * n_fg / labels.size:.1f} % of the image, "
              f"{n_objects} connected objects")
    else:
        counts = np.bincount(labels.ravel(), minlength=settings.n_classes + 1)[1:]
        print("pixels per class: " + ", ".join(f"{k}: {c}" for k, c in
                                               enumerate(counts, 1)))
    if args.output is not None:
        out = args.output
        write_tiff(out / "coins_labels.tif", labels)
        write_tiff(out / "coins_prior.tif", result.prior.prior)
        write_json(out / "coins_labels.json", result.metadata)
        print(f"wrote {out / 'coins_labels.tif'}, coins_prior.tif and coins_labels.json")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``napari-dsp`` command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    from .core.fit import tune_allocator_for_fitting

    tune_allocator_for_fitting()  # this process only fits: keep activations in the heap
    try:
        if args.command == "demo":
            return _run_demo(args)
        return _run_segment(args)
    except KeyboardInterrupt:
        print("\nnapari-dsp: interrupted; finished outputs are complete, the rest were not "
              "written", file=sys.stderr)
        return 130
    except (TypeError, ValueError) as exc:
        print(f"napari-dsp: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
