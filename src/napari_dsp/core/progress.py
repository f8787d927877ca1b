"""Progress of a running fit: the :class:`FitProgress` reports every long computation
yields, their text in the user's units, and the two generator plumbing helpers
(:func:`relay`, :func:`drain`) the API uses to pass reports on.

No torch, no napari: the command line, the widget and scripts all read these reports.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, Optional

#: ``FitProgress.describe``'s default: the time left the report itself carries.
SEEN_LEFT = object()


@dataclass(frozen=True)
class FitProgress:
    """One step of a running fit, as progress callbacks and the generators receive it.

    ``step`` of ``total`` are the units of a progress bar (iterations summed over member
    groups, tiles and planes); the other fields say the same in the user's units, and
    :meth:`describe` writes them as one line.

    Parameters
    ----------
    step : int
        Steps done.
    total : int
        Steps in all (for ``stage="classes"`` it shrinks once the stopping point is
        known).
    preview : ndarray or None
        On preview steps, the running prior in the image's layout, or the current
        ``(Y, X)`` label map in the ``"classes"`` stage; else None.
    loss : float or None
        The mean loss of the reporting fit, on preview steps.
    stage : {'prior', 'classes'}
        The generator fits, or the self-training of ``method="kanezaki"``.
    iteration : int
        Iteration of the generator fit that reported (1-based).
    n_iter : int
        Iterations of one fit.
    members_done : int
        Ensemble members finished.
    n_members : int
        Ensemble size.
    tile : int
        Tile being fitted (0-based) of a plane fitted in tiles.
    n_tiles : int
        Tiles of the plane.
    plane : int
        Plane (0-based) of a stack.
    n_planes : int
        Planes of the stack.
    elapsed : float
        Seconds since the run started.
    """

    step: int
    total: int
    preview: Any = None
    loss: Optional[float] = None
    stage: str = "prior"
    iteration: int = 0
    n_iter: int = 0
    members_done: int = 0
    n_members: int = 0
    tile: int = 0
    n_tiles: int = 1
    plane: int = 0
    n_planes: int = 1
    elapsed: float = 0.0

    def replace(self, **changes: Any) -> FitProgress:
        """A copy with some fields changed.

        Parameters
        ----------
        **changes
            New values by field name.

        Returns
        -------
        FitProgress
            The new report.
        """
        return dataclasses.replace(self, **changes)

    @property
    def fraction(self) -> float:
        """``step / total`` in [0, 1] (0 before the total is known)."""
        return min(1.0, self.step / self.total) if self.total > 0 else 0.0

    @property
    def seconds_left(self) -> Optional[float]:
        """Estimated seconds to the end of this stage (None before it can be told)."""
        if self.step <= 0 or self.elapsed <= 0 or self.total <= 0:
            return None
        return self.elapsed * (self.total - self.step) / self.step

    def describe(self, left=SEEN_LEFT, iteration: Optional[int] = None) -> str:
        """The report as one line in the user's units (the command line's bar, the
        widget's status line).

        Parameters
        ----------
        left : float or None, optional
            Seconds left to show (None: show none); default :attr:`seconds_left`, not
            shown while the classes self-train.
        iteration : int, optional
            The iteration to show (default :attr:`iteration`; the widget shows the
            furthest reached, so the count never steps back).

        Returns
        -------
        str
            E.g. ``"plane 2/5 · members 4/11 done · iteration 18/50 · about 12 s left"``.
        """
        if left is SEEN_LEFT:
            left = self.seconds_left if self.stage != "classes" else None
        iteration = self.iteration if iteration is None else iteration
        parts = []
        if self.n_planes > 1:
            parts.append(f"plane {self.plane + 1}/{self.n_planes}")
        if self.n_tiles > 1:
            parts.append(f"tile {self.tile + 1}/{self.n_tiles}")
        if self.stage == "classes":
            parts.append(f"self-training iteration {self.step} (at most {self.total})")
        else:
            if self.n_members:
                parts.append(f"members {self.members_done}/{self.n_members} done")
            if self.n_iter:
                # members are fitted in groups: each group counts its own iterations
                later = 0 < self.members_done < self.n_members
                parts.append(
                    f"{'next members at ' if later else ''}iteration {iteration}/{self.n_iter}"
                )
        if left is not None:
            parts.append(f"about {format_seconds(left)} left")
        return " · ".join(parts)


def format_seconds(seconds: float) -> str:
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, rest = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {rest:02d} s"
    return f"{minutes // 60} h {minutes % 60:02d} min"


ProgressCallback = Callable[[FitProgress], Any]


def relay(gen: Generator, transform: Callable[[FitProgress], FitProgress]):
    """Yield ``transform(p)`` for every report of ``gen`` and return its value. A
    consumer that stops early closes ``gen`` at once (and the threads it runs)."""
    try:
        while True:
            try:
                p = next(gen)
            except StopIteration as stop:
                return stop.value
            yield transform(p)
    finally:
        gen.close()


def drain(gen: Generator, callback: Optional[ProgressCallback] = None):
    """Run ``gen`` to its end, handing every report to ``callback``; return its value."""
    while True:
        try:
            item = next(gen)
        except StopIteration as stop:
            return stop.value
        if callback is not None:
            callback(item)


def check_callback(progress) -> None:
    if progress is not None and not callable(progress):
        raise TypeError(f"progress must be a callable taking a FitProgress, got {progress!r}")


class Clock:
    """Stamps reports with the seconds since the run started."""

    def __init__(self, start: Optional[float] = None):
        import time

        self._now = time.perf_counter
        self.start = self._now() if start is None else start

    def stamp(self, p: FitProgress) -> FitProgress:
        return p.replace(elapsed=self._now() - self.start)


class RunEstimate:
    """Seconds left of a run from the fraction of it done (``FitProgress.fraction``:
    its units count the whole run, every plane of a stack), at the rate measured since
    the first report (the start-up before it, reading and planning, is not work that
    repeats). Says nothing until ``min_seconds`` of work and ``min_fraction`` of the
    run have been measured: an estimate from the first iterations alone is far off."""

    def __init__(self, min_seconds: float = 2.0, min_fraction: float = 0.02, now=None):
        import time

        self._now = now or time.monotonic
        self.min_seconds, self.min_fraction = min_seconds, min_fraction
        self._first: Optional[tuple] = None

    def seconds_left(self, fraction: float) -> Optional[float]:
        now = self._now()
        if self._first is None:
            self._first = (now, fraction)
            return None
        t0, f0 = self._first
        dt, df = now - t0, fraction - f0
        if dt < self.min_seconds or df < self.min_fraction or df <= 0:
            return None
        return max(0.0, (1.0 - fraction) * dt / df)
