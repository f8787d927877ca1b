"""The training loop: an ensemble of generator fits, 2-D or 3-D, as a generator of
progress; CPU ensembles shared out over threads; the median and spread of the members.

:func:`iter_members` fits members in groups (one grouped model per group) in the calling
thread and yields a :class:`~napari_dsp.core.progress.FitProgress` after every iteration, so
a consumer can stop within one iteration. :func:`iter_members_threaded` runs shares of
the ensemble in Python threads of this process, each with a single-threaded torch (torch
releases the GIL inside its kernels); their previews are every member at one iteration.
:func:`until_settled` ends a fit once the members' median has settled (the early stop).
:func:`summarize` turns the members' outputs into the prior (median) and its spread.
Nothing here knows about napari, Qt or files.
"""

from __future__ import annotations

import atexit
import copy
import queue
import threading
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch

from .heap import trimmed_heap, tune_allocator_for_fitting  # noqa: F401 - re-exported (scripts, benchmarks)
from .nets import NOISE_CHANNELS, make_noise
from .progress import FitProgress

#: What a device that runs out of memory raises (CUDA; MPS raises a RuntimeError).
OUT_OF_MEMORY = (getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError,)

#: ``make_net(n_members, seeds) -> nn.Module``: the grouped generator of one group.
NetFactory = Callable[[int, Sequence[int]], torch.nn.Module]


class FitStopped(RuntimeError):
    """A threaded fit was stopped from outside before it finished (the interpreter is
    exiting: :func:`_stop_all_at_exit`); raised to its consumer, which would otherwise
    wait for members that will never come."""


def release_device_memory(device: torch.device) -> None:
    """Hand cached blocks back to the driver after an out-of-memory error."""
    if device.type == "cuda":
        torch.cuda.empty_cache()


@dataclass
class WarmStart:
    """Weights carried from one fit to the next (the planes of a stack).

    ``start`` maps a group's key (``tag`` and the group's seeds) to the weights the
    group starts from, instead of its seeds' random ones (its input noise is still its
    seeds', so a member goes on from where it was). ``keep_at`` asks for the weights
    after that many optimiser steps (at most the fit's last), stored in ``kept`` under
    the same keys: what the next fit starts from. ``tag`` tells the pieces of a tiled
    fit apart. Each group writes its own keys, so the threads of one fit share it.
    """

    start: dict = field(default_factory=dict)
    keep_at: Optional[int] = None
    kept: dict = field(default_factory=dict)
    tag: tuple = ()
    optimizer: bool = False  # carry Adam's moments with the weights
    learning_rate: Optional[float] = None  # of a fit that starts from given weights

    def key(self, seeds: Sequence[int]) -> tuple:
        return (*self.tag, tuple(int(s) for s in seeds))

    def tagged(self, *tag) -> WarmStart:
        """The same carried weights for one piece (tile) of a fit."""
        return WarmStart(
            self.start, self.keep_at, self.kept, tuple(tag), self.optimizer, self.learning_rate
        )


def member_batches(n_members: int, batch_size: Optional[int]) -> list[range]:
    """Split ``range(n_members)`` into consecutive batches of at most ``batch_size``."""
    size = n_members if not batch_size else max(1, min(batch_size, n_members))
    return [range(i, min(i + size, n_members)) for i in range(0, n_members, size)]


def iter_members(
    target: np.ndarray,
    crop: tuple,
    *,
    make_net: NetFactory,
    seeds: Sequence[int],
    n_iter: int,
    learning_rate: float,
    device: torch.device,
    precision: str = "float32",
    preview_every: int = 0,
    batch_size: Optional[int] = None,
    dtype: torch.dtype = torch.float32,
    channels_last: Optional[bool] = None,
    stop: Optional[threading.Event] = None,
    warm: Optional[WarmStart] = None,
) -> Generator[FitProgress, None, np.ndarray]:
    """Fit one generator per seed to ``target``; return every member's final output.

    Parameters
    ----------
    target : ndarray, shape (C, H, W) or (C, D, H, W), float32 in [0, 1]
        The padded image or volume (every stage divides its size).
    crop : tuple of slice
        Region of the padded target that is the user's data (one slice per spatial axis).
    make_net : callable
        Builds the grouped generator of ``n`` members from their seeds.
    seeds : sequence of int
        One seed per ensemble member (weights and noise).
    n_iter : int
        Forward passes per member; the prior is the output of the last one (so ``n_iter
        - 1`` optimiser steps are taken: a backward pass after the last forward would
        change nothing that is returned).
    preview_every : int
        Every this many iterations, ``FitProgress.preview`` holds the cropped current
        outputs of all members so far, ``(n, C, ...)`` float32 (0 = never).
    batch_size : int, optional
        Members trained together as one grouped model (default: all).
    dtype : torch.dtype
        Parameter dtype (float64 is for tests of exactness).
    channels_last : bool, optional
        Memory format of 2-D fits (default: channels-last on CPU, where oneDNN is faster).
    stop : threading.Event, optional
        Checked every iteration; when set, the fit ends early (returns None).
    warm : WarmStart, optional
        Weights to start each group from, and the weights to keep for the next fit.

    Returns
    -------
    ndarray, shape (len(seeds), C, ...), float32
        The members' outputs after ``n_iter`` forward passes, cropped.
    """
    c, *spatial = target.shape
    dims = tuple(range(2, 2 + len(spatial)))
    batches = member_batches(len(seeds), batch_size)
    total = n_iter * len(batches)
    target_all = torch.from_numpy(np.ascontiguousarray(target)).to(device=device, dtype=dtype)
    if channels_last is None:
        channels_last = device.type == "cpu" and len(spatial) == 2
    use_autocast = precision == "bfloat16"
    outputs: list[torch.Tensor] = []  # finished members, each (C, ...) cropped, on device
    step = 0

    def members(out: torch.Tensor, g: int) -> torch.Tensor:
        return out.detach().float()[0].view(g, c, *spatial)[(slice(None), slice(None), *crop)]

    for batch in batches:
        g = len(batch)
        group_seeds = [int(seeds[i]) for i in batch]
        net = make_net(g, group_seeds).to(device=device, dtype=dtype)
        key = warm.key(group_seeds) if warm is not None else None
        started = key is not None and key in warm.start
        if started:
            net.load_state_dict(warm.start[key]["net"])
        keep_at = None if warm is None or warm.keep_at is None else min(warm.keep_at, n_iter - 1)
        noise = make_noise(group_seeds, NOISE_CHANNELS, *spatial).to(device=device, dtype=dtype)
        if channels_last:
            net = net.to(memory_format=torch.channels_last)
            noise = noise.contiguous(memory_format=torch.channels_last)
        goal = target_all.repeat(g, *([1] * len(spatial)))[None]
        lr = warm.learning_rate if started and warm.learning_rate else learning_rate
        opt = torch.optim.Adam(net.parameters(), lr=lr)
        if started and warm.optimizer and warm.start[key].get("opt") is not None:
            opt.load_state_dict(warm.start[key]["opt"])
            for group in opt.param_groups:
                group["lr"] = lr
        net.train()
        out = None

        try:
            for it in range(n_iter):
                if stop is not None and stop.is_set():
                    _keep_early(warm, key, keep_at, net, opt)
                    return None
                last = it == n_iter - 1
                if it == keep_at:  # the weights after `it` optimiser steps
                    _keep_weights(warm, key, net, opt)
                with (
                    torch.set_grad_enabled(not last),
                    torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_autocast),
                ):
                    out = net(noise)
                loss_value = None
                if not last:
                    # Sum of the members' mean L1 losses: each member gets exactly the gradient
                    # of its own loss, as if it were trained alone.
                    loss = (out.float() - goal).abs().mean(dim=(0, *dims)).view(g, c).mean(1).sum()
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                step += 1
                preview = None
                if preview_every and (step % preview_every == 0 or last):
                    current = members(out, g)
                    preview = (
                        (torch.cat([torch.stack(outputs), current], 0) if outputs else current)
                        .cpu()
                        .numpy()
                    )
                    if not last:
                        loss_value = float(loss.detach()) / g
                yield FitProgress(
                    step,
                    total,
                    preview,
                    loss_value,
                    iteration=it + 1,
                    n_iter=n_iter,
                    members_done=len(outputs) + (g if last else 0),
                    n_members=len(seeds),
                )
        except GeneratorExit:  # the consumer ended the fit (settled, cancelled)
            _keep_early(warm, key, keep_at, net, opt)
            raise
        outputs.extend(members(out, g).unbind(0))
        del net, opt, out, noise, goal
    return torch.stack(outputs, 0).cpu().numpy()


def _keep_weights(warm: WarmStart, key: tuple, net, opt) -> None:
    warm.kept[key] = {
        "net": {k: v.detach().clone() for k, v in net.state_dict().items()},
        "opt": copy.deepcopy(opt.state_dict()) if warm.optimizer else None,
    }


def _keep_early(warm: Optional[WarmStart], key, keep_at: Optional[int], net, opt) -> None:
    """A fit that ended before ``keep_at`` (it settled, or was stopped) keeps the weights
    it ended with: the next plane starts from them (else it would start from scratch
    with a neighbour's few iterations)."""
    if keep_at is not None and key not in warm.kept:
        _keep_weights(warm, key, net, opt)


def warm_up() -> None:
    """Import what a first fit would import on the way (torch's first optimiser pulls in
    ``torch._dynamo`` and about 800 modules: 1.1 s on two cores), so that a fit started
    afterwards reports its first iteration without that wait. Safe to run in a
    background thread; idempotent."""
    torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))])


def split(seeds: Sequence[int], n: int) -> list[list[int]]:
    """Consecutive, nearly equal shares of ``seeds`` (the larger shares first)."""
    base, extra = divmod(len(seeds), n)
    out, start = [], 0
    for i in range(n):
        size = base + (1 if i < extra else 0)
        out.append(list(seeds[start : start + size]))
        start += size
    return [s for s in out if s]


def iter_members_threaded(
    target: np.ndarray,
    crop: tuple,
    *,
    threads: int,
    seeds: Sequence[int],
    preview_every: int = 0,
    **fit_kwargs,
) -> Generator[FitProgress, None, np.ndarray]:
    """:func:`iter_members` with the ensemble shared out over ``threads`` Python threads
    of this process, each running torch single-threaded (members in seed order, so the
    result does not depend on the number of threads beyond floating-point rounding).

    Previews are every member at one step: a step is previewed once all threads have
    reached it (a thread that has finished shows its final members), every step once
    and in order, however the threads' reports interleave; so what is shown, and the
    early stop that watches it, does not depend on timing.

    Closing the generator stops every thread within one iteration and waits for them;
    an exception in a thread is raised here, as it was raised there.
    """
    shares = split(list(seeds), threads)
    inbox: queue.Queue = queue.Queue()
    stop = threading.Event()
    _single_threaded_torch(+1)

    def work(k: int, share: list) -> None:
        try:
            torch.set_num_threads(1)  # this thread's OpenMP/oneDNN pool: one thread
            fit = iter_members(
                target, crop, seeds=share, preview_every=preview_every, stop=stop, **fit_kwargs
            )
            while True:
                try:
                    p = next(fit)
                except StopIteration as done:
                    inbox.put((k, "done", done.value))
                    return
                inbox.put((k, "progress", p))
        except BaseException as exc:  # handed to the consumer, raised there
            inbox.put((k, "error", exc))

    workers = [
        threading.Thread(target=work, args=(k, share), daemon=True, name=f"napari-dsp-fit-{k}")
        for k, share in enumerate(shares)
    ]
    _RUNNING.add(stop)
    try:
        for w in workers:
            w.start()
        n = len(shares)
        reports: list[Optional[FitProgress]] = [None] * n
        # previews by step, per thread, until every thread has reached that step: a
        # preview is always every member at the same step (threads run side by side, one
        # may be ahead). Every step is shown once, in order, however the threads' reports
        # interleave, so what is shown does not depend on timing.
        pending: list[dict] = [{} for _ in range(n)]
        results: list[Optional[np.ndarray]] = [None] * n

        def ready() -> Generator[tuple[int, np.ndarray], None, None]:
            """(step, preview) of every step all unfinished threads have reached (all
            steps left, once every thread has finished); a finished thread shows its
            members at that step while it has them, its final members after its last."""
            live = [j for j in range(n) if results[j] is None]
            steps = (
                set.intersection(*(set(pending[j]) for j in live))
                if live
                else set().union(*pending)
            )
            for at in sorted(steps):
                yield (
                    at,
                    np.concatenate(
                        [pending[j].pop(at) if at in pending[j] else results[j] for j in range(n)],
                        0,
                    ),
                )

        def report(value: FitProgress, preview=None, at=None) -> FitProgress:
            known = [r for r in reports if r is not None]
            # the iteration of the group furthest behind (threads run side by side; a
            # report per thread would make the count jump back and forth), or the one
            # the preview shows
            running = [
                r.iteration
                for k, r in enumerate(reports)
                if r is not None and results[k] is None and r.step < r.total
            ]
            iteration = min(running) if running else value.iteration
            loss = value.loss
            if at is not None:
                iteration = (at - 1) % value.n_iter + 1
                loss = value.loss if at == value.step else None  # a backlog step's: unknown
            return value.replace(
                loss=loss,
                iteration=iteration,
                step=sum(r.step for r in known),
                total=sum(r.total for r in known)
                + sum(
                    value.n_iter * -(-len(s) // (fit_kwargs.get("batch_size") or len(s)))
                    for s, r in zip(shares, reports)
                    if r is None
                ),
                members_done=sum(r.members_done for r in known),
                n_members=len(seeds),
                preview=preview,
            )

        while any(r is None for r in results):
            k, kind, value = inbox.get()
            if kind == "error":
                raise value
            if kind == "done" and value is None:  # stopped from outside (exit)
                raise FitStopped("the fit was stopped before it finished (the program is exiting)")
            if kind == "done":
                results[k] = value
                if reports[k] is not None:  # others' steps may be complete now
                    for at, preview in ready():
                        yield report(reports[k], preview, at)
                continue
            reports[k] = value
            shown = False
            if value.preview is not None:
                pending[k][value.step] = value.preview
                for at, preview in ready():
                    yield report(value, preview, at)
                    shown = True
            if not shown:
                yield report(value)
        return np.concatenate(results, 0)
    finally:
        stop.set()
        for w in workers:
            w.join()
        _RUNNING.discard(stop)
        _single_threaded_torch(-1)


#: The stop flags of the threaded fits running now (see :func:`_stop_all_at_exit`).
_RUNNING: set = set()


@atexit.register
def _stop_all_at_exit() -> None:
    """At interpreter exit, stop every fitting thread still running (a fit abandoned by
    its consumer: a closed viewer, an interrupted script) and give it an iteration to
    end: torch must not be torn down under a running kernel."""
    for stop in list(_RUNNING):
        stop.set()
    for t in threading.enumerate():
        if t.name.startswith("napari-dsp-fit-"):
            t.join(timeout=10)


_THREADS_LOCK = threading.Lock()
_THREADS_USERS = 0
_THREADS_BEFORE = 1


def _single_threaded_torch(change: int) -> None:
    """Count the threaded fits running in this process; the first one in records torch's
    thread setting, the last one out restores it. (The fitting threads set torch to one
    thread each, and torch keeps that setting process-wide: while a threaded CPU fit
    runs, other torch work in the process runs single-threaded too.)"""
    global _THREADS_USERS, _THREADS_BEFORE
    with _THREADS_LOCK:
        if change > 0 and _THREADS_USERS == 0:
            _THREADS_BEFORE = torch.get_num_threads()
        _THREADS_USERS += change
        if change < 0 and _THREADS_USERS == 0:
            torch.set_num_threads(_THREADS_BEFORE)


def iter_ensemble(
    target: np.ndarray, crop: tuple, *, threads: int, device: torch.device, **fit_kwargs
):
    """The ensemble on ``threads`` CPU threads (:func:`iter_members_threaded`), or in the
    calling thread (:func:`iter_members`: a GPU, or ``threads == 0``)."""
    if threads >= 1 and device.type == "cpu":
        return iter_members_threaded(target, crop, threads=threads, device=device, **fit_kwargs)
    return iter_members(target, crop, device=device, **fit_kwargs)


#: The earliest iteration a fit may stop at when the prior has settled.
MIN_SETTLE_ITER = 10


def until_settled(
    fit: Generator,
    settle: float,
    *,
    preview_every: int,
    info: dict,
    min_iter: int = MIN_SETTLE_ITER,
) -> Generator[FitProgress, None, np.ndarray]:
    """Relay ``fit``, whose reports carry every member's output at one iteration, every
    iteration, and end it once the prior has settled: when the median's mean absolute
    change since the previous iteration (in units of the normalised image) falls below
    ``settle``, from ``min_iter`` on. Previews go on as medians every ``preview_every``
    iterations. Returns the members' outputs at the last iteration fitted; ``info``
    gets ``iterations`` (fitted), ``settled`` and the last ``change``."""
    previous, change, iteration = None, None, 0
    try:
        while True:
            try:
                p = next(fit)
            except StopIteration as done:
                info.update(iterations=iteration, settled=False, change=change)
                return done.value
            if p.preview is None:
                yield p
                continue
            members, iteration = p.preview, p.iteration
            med = median(members)
            if previous is not None:
                change = float(np.abs(med - previous).mean())
            previous = med
            if change is not None and iteration >= min_iter and change < settle:
                info.update(iterations=iteration, settled=True, change=change)
                return members
            show = preview_every and iteration % preview_every == 0
            yield p.replace(preview=med if show else None)
    finally:
        fit.close()  # stops the fitting threads, whether settled, finished or cancelled


def summarize(stack: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel median ``(C, ...)`` and spread ``(...)`` of members ``(n, C, ...)``.

    The spread is the standard deviation across members, averaged over channels.
    """
    t = torch.from_numpy(np.ascontiguousarray(stack, dtype=np.float32))
    med = _median(t)
    spread = t.std(dim=0, unbiased=False).mean(0) if t.shape[0] > 1 else torch.zeros(t.shape[2:])
    return med.numpy(), spread.numpy()


def median(stack: np.ndarray) -> np.ndarray:
    """Per-pixel median ``(C, ...)`` of members ``(n, C, ...)`` (a preview: no spread)."""
    return _median(torch.from_numpy(np.ascontiguousarray(stack, dtype=np.float32))).numpy()


def _median(stack: torch.Tensor) -> torch.Tensor:
    """Per-pixel median over dim 0 (mean of the two middle values for even counts)."""
    n = stack.shape[0]
    if n == 1:
        return stack[0]
    ordered = stack.sort(dim=0).values
    if n % 2:
        return ordered[n // 2]
    return 0.5 * (ordered[n // 2 - 1] + ordered[n // 2])
