"""Signals of a process that runs a batch (the command line): SIGINT, SIGTERM and SIGHUP
all raise :class:`Stopped` in the main thread, so a batch system's time limit or a
closed terminal stops a run the way Ctrl-C does; a signal that arrives inside
:meth:`Signals.held` (outputs being moved into place) waits until its end; a signal the
process was told to ignore (``nohup``, a background job) stays ignored.
"""

from __future__ import annotations

import contextlib
import signal
import sys
from typing import Optional


class Stopped(KeyboardInterrupt):
    """SIGINT, SIGTERM or SIGHUP: stop the run like Ctrl-C."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


class Signals:
    """SIGINT, SIGTERM and SIGHUP raise :class:`Stopped` in the main thread, except
    inside :meth:`held`, which delays them to its end.

    A second signal while the first one's :class:`Stopped` is being handled (the
    clean-up: fitting threads joined, files removed) is ignored. A stop that a library
    swallowed or turned into another exception (Python reports a KeyboardInterrupt
    raised in ``__set_name__``, e.g. during an import, as a RuntimeError) is not lost:
    :meth:`check` raises it again, and the next signal stops the run."""

    NAMES = ("SIGINT", "SIGTERM", "SIGHUP")

    def __init__(self):
        self.holding = False
        self.pending: Optional[int] = None
        self.previous: dict = {}
        #: the signal that asked this run to stop, if one did
        self.requested: Optional[int] = None
        self.ending = False

    def install(self) -> None:
        self.requested = None
        self.pending = None
        self.ending = False
        for name in self.NAMES:
            sig = getattr(signal, name, None)
            if sig is None or signal.getsignal(sig) is signal.SIG_IGN:
                continue  # ignored on purpose (nohup, a background job): stays ignored
            # not possible outside the main thread (a test, an embedding): left as is
            with contextlib.suppress(ValueError, OSError):
                self.previous[sig] = signal.signal(sig, self._handle)

    def restore(self, exiting: bool = False) -> None:
        """Put back the handlers found by :meth:`install`; with ``exiting`` (the
        process ends next) ignore the signals instead: a Ctrl-C while the interpreter
        shuts down (its exit handlers) would print a traceback after the last line."""
        for sig, handler in self.previous.items():
            with contextlib.suppress(ValueError, OSError, TypeError):
                signal.signal(sig, signal.SIG_IGN if exiting else handler)
        self.previous = {}

    def check(self) -> None:
        """Raise :class:`Stopped` if a signal asked the run to stop and its
        :class:`Stopped` did not get through (swallowed, or turned into another
        exception by a library): call it after each file."""
        if self.requested is not None:
            raise Stopped(self.requested)

    def end(self) -> None:
        """The run is over and says its last line: later signals are ignored."""
        self.ending = True

    def _handle(self, signum, frame) -> None:
        if self.ending:
            return
        if self.requested is not None and _stopping():
            # the stop is under way: a second Ctrl-C must not interrupt the clean-up (the
            # fitting threads being joined; torch aborted the process when they were not)
            return
        if self.holding:
            self.pending = signum
            return
        self.requested = signum
        raise Stopped(signum)

    @contextlib.contextmanager
    def held(self):
        self.holding = True
        try:
            yield
        finally:
            self.holding = False
            if self.pending is not None:
                signum, self.pending = self.pending, None
                self.requested = signum
                raise Stopped(signum)


def _stopping() -> bool:
    """Whether the code the signal interrupted is handling a :class:`Stopped` (in an
    ``except``/``finally`` block or an ``__exit__`` it runs, directly or as the cause or
    context of another exception): the run is cleaning up after a stop."""
    exc = sys.exc_info()[1]
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, Stopped):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


#: SIGINT, SIGTERM and SIGHUP of this process (installed by :func:`~napari_dsp.cli.main`).
SIGNALS = Signals()
