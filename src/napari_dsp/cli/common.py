"""What every command of the command line shares: the text progress bar, the one-line
error and note messages, the settings read from the parsed flags, and the allocator tuning right
before the first fit."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np

from .. import io as _io
from ..settings import FIELDS, Settings


def read_image(path: Path) -> np.ndarray:
    """Read a .tif/.tiff, .png, .jpg/.jpeg or .npy file as a numpy array (as stored)."""
    return _io.read_pixels(_io.read_info(path))


class ProgressBar:
    """A one-line text progress bar on stderr, in the user's units
    (:meth:`~napari_dsp.core.progress.FitProgress.describe`)."""

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
        line = f"{self.label} [{'#' * fill}{'.' * (self.width - fill)}] {progress.describe()}"
        self.stream.write("\r" + line.ljust(self.shown))
        self.shown = len(line)
        if done:
            self.stream.write("\n")
            self.shown = 0
        self.stream.flush()

    def close(self) -> None:
        """End a line the bar left open (a failure, or a fit that stopped early)."""
        if self.shown:
            self.stream.write("\n")
            self.stream.flush()
            self.shown = 0


def settings_from_args(args) -> Settings:
    chosen = {name: getattr(args, name) for name in FIELDS if getattr(args, name) is not None}
    # no live display here: previews are never computed, whatever --preview-every says
    base = Settings.research() if getattr(args, "research_defaults", False) else Settings()
    try:
        return base.replace(**{**chosen, "preview_every": 0})
    except (TypeError, ValueError) as exc:
        raise type(exc)(in_flags(str(exc))) from None


def in_flags(text: str) -> str:
    """A message of the settings' checks in the command line's words: ``n_iter`` as
    ``--iterations``, ``device='cuda'`` as ``--device cuda``."""
    import re

    for name in sorted(FIELDS, key=len, reverse=True):
        flag = FIELDS[name].flag
        text = re.sub(rf"\b{name}=(['\"]?)([^'\"\s,;)]*)\1", rf"{flag} \2", text)
        text = re.sub(rf"(?<![-\w]){name}\b", flag, text)
    return text


def error(text: str) -> None:
    print(f"napari-dsp: error: {text}", file=sys.stderr)


def note(text: str) -> None:
    print(f"napari-dsp: note: {text}", file=sys.stderr)


class Once:
    """Calls ``action`` the first time it is called (the allocator tuning, right before
    the first fit: a file refused from its header never loads torch)."""

    def __init__(self, action):
        self.action, self.done = action, False

    def __call__(self) -> None:
        if not self.done:
            self.done = True
            self.action()


def tune_allocator() -> None:
    from ..core.heap import tune_allocator_for_fitting

    tune_allocator_for_fitting()  # this process only fits: keep activations in the heap
