"""Signals of a process that runs a batch (the command line): SIGINT, SIGTERM and SIGHUP
all raise :class:`Stopped` in the main thread, so a batch system's time limit or a
closed terminal stops a run the way Ctrl-C does; a signal that arrives inside
:meth:`Signals.held` (outputs being moved into place) waits until its end; a signal the
process was told to ignore (``nohup``, a background job) stays ignored.
"""

from __future__ import annotations

import contextlib
import signal
from typing import Optional


class Stopped(KeyboardInterrupt):
    """SIGINT, SIGTERM or SIGHUP: stop the run like Ctrl-C."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


class Signals:
    """SIGINT, SIGTERM and SIGHUP raise :class:`Stopped` in the main thread, except
    inside :meth:`held`, which delays them to its end."""

    NAMES = ("SIGINT", "SIGTERM", "SIGHUP")

    def __init__(self):
        self.holding = False
        self.pending: Optional[int] = None
        self.previous: dict = {}
        self.stopping = False

    def install(self) -> None:
        self.stopping = False
        for name in self.NAMES:
            sig = getattr(signal, name, None)
            if sig is None or signal.getsignal(sig) is signal.SIG_IGN:
                continue  # ignored on purpose (nohup, a background job): stays ignored
            # not possible outside the main thread (a test, an embedding): left as is
            with contextlib.suppress(ValueError, OSError):
                self.previous[sig] = signal.signal(sig, self._handle)

    def restore(self) -> None:
        for sig, handler in self.previous.items():
            with contextlib.suppress(ValueError, OSError, TypeError):
                signal.signal(sig, handler)
        self.previous = {}

    def _handle(self, signum, frame) -> None:
        if self.stopping:
            # already stopping: a second Ctrl-C must not interrupt the clean-up (the
            # fitting threads being joined; torch aborted the process when they were not)
            return
        if self.holding:
            self.pending = signum
            return
        self.stopping = True
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
                self.stopping = True
                raise Stopped(signum)
