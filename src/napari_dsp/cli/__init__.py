"""Command line: ``napari-dsp segment INPUT... -o OUTPUT`` and ``napari-dsp demo``.

The package holds the parser (:mod:`.parser`), what the commands share (:mod:`.common`:
signals, progress bar, messages), the two commands (:mod:`.segment`, :mod:`.demo`) and
the signal handling (:mod:`.signals`). :func:`main` is the ``napari-dsp`` entry point:
exit status 0, 1 when a file failed, 2 for a refused call, 128 + the signal's number
when SIGINT, SIGTERM or SIGHUP stopped a run. Importing it does not import torch:
``--help`` answers at once, and a file refused from its header is refused before
torch loads.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Sequence
from typing import Optional

from .signals import Stopped

__all__ = ["main"]


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``napari-dsp`` command; returns the exit status (128 + the
    signal's number when SIGINT, SIGTERM or SIGHUP stopped it).

    Importing this package loads the standard library only: the rest is imported here,
    where a Ctrl-C in the first second (numpy, tifffile... loading) ends the run with
    the same one line as later, not with a traceback."""
    try:
        from .common import SIGNALS, error
        from .parser import build_parser
    except KeyboardInterrupt:
        print(
            "\nnapari-dsp: stopped by SIGINT while starting; nothing was written", file=sys.stderr
        )
        return 128 + int(signal.SIGINT)
    parser = build_parser()
    args = parser.parse_args(argv)
    SIGNALS.install()
    try:
        if args.command == "demo":
            from .demo import run_demo

            return run_demo(args)
        from .segment import run_segment

        return run_segment(args)
    except KeyboardInterrupt as exc:
        signum = exc.signum if isinstance(exc, Stopped) else signal.SIGINT
        name = signal.Signals(signum).name
        outcome = getattr(
            exc, "outcome", "finished outputs are complete, the rest were not written"
        )
        print(f"\nnapari-dsp: stopped by {name}; {outcome}", file=sys.stderr)
        return 128 + int(signum)
    except (TypeError, ValueError, OSError) as exc:
        error(str(exc))
        return 2
    finally:
        SIGNALS.restore()
