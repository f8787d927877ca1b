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

from .signals import SIGNALS, Stopped

__all__ = ["main"]


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``napari-dsp`` command; returns the exit status (128 + the
    signal's number when SIGINT, SIGTERM or SIGHUP stopped it).

    Importing this package loads the standard library only: the signal handlers are
    installed first, and the rest is imported here, where a signal in the first second
    (numpy, tifffile... loading) ends the run with the same one line as later, not with
    a traceback or without a word. Called without ``argv`` (the command itself, which
    exits next), the signals are ignored once the last line is said, so that one
    arriving while the interpreter shuts down prints no traceback."""
    SIGNALS.install()
    try:
        return _main(argv)
    finally:
        SIGNALS.restore(exiting=argv is None)


def _main(argv: Optional[Sequence[str]]) -> int:
    try:
        from .common import error
        from .parser import build_parser

        parser = build_parser()
        args = parser.parse_args(argv)
    except Exception as exc:
        if SIGNALS.requested is None:
            raise
        return _stopped(exc, "while starting; nothing was written")  # an import's own error
    except KeyboardInterrupt as exc:
        return _stopped(exc, "while starting; nothing was written")
    try:
        if args.command == "demo":
            from .demo import run_demo

            return run_demo(args)
        from .segment import run_segment

        return run_segment(args)
    except KeyboardInterrupt as exc:
        outcome = getattr(
            exc, "outcome", "finished outputs are complete, the rest were not written"
        )
        return _stopped(exc, outcome)
    except Exception as exc:
        if SIGNALS.requested is not None:
            # a stop that a library turned into its own error (an import cut short)
            return _stopped(exc, "finished outputs are complete, the rest were not written")
        if not isinstance(exc, (TypeError, ValueError, OSError)):
            raise
        error(str(exc))
        return 2


def _stopped(exc: BaseException, outcome: str) -> int:
    """The last line of a run that a signal stopped, and its exit status. ``exc`` is
    :class:`Stopped`, a plain KeyboardInterrupt (SIGINT), or what a library made of
    the signal (then :attr:`Signals.requested` says which)."""
    SIGNALS.end()
    if isinstance(exc, Stopped):
        signum = exc.signum
    elif isinstance(exc, KeyboardInterrupt):
        signum = int(signal.SIGINT)
    else:
        signum = SIGNALS.requested
    name = signal.Signals(signum).name
    if outcome.startswith("while"):
        print(f"\nnapari-dsp: stopped by {name} {outcome}", file=sys.stderr)
    else:
        print(f"\nnapari-dsp: stopped by {name}; {outcome}", file=sys.stderr)
    return 128 + int(signum)
