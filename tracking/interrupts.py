"""An interrupt raised but not yet answered (Ctrl-C, SIGTERM within `tracking.runs.guarded`).

Python drops an exception raised inside a weakref callback, a `__del__` or the garbage collector
("Exception ignored in ..."): a Ctrl-C landing there would be lost and the run would go on (CI
once saw a 5,000-seed run keep training after SIGINT). So the signal handlers record the signal
(`raised`) as well as raise; the next step of work going on (`check`, called by
`tracking.progress.Progress.update` once per training step, search iteration, meta-iteration, and
by `tracking.runs.RunTracker.start` before each new run) raises it again, until the guard's cleanup answers it (`acknowledge`). Nothing is re-raised while
the first exception unwinds (no progress is made then), and nothing from another thread.
Standard library only: `tracking.progress` imports it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C: runs end as KILLED."""


_pending: list[int | None] = [None]


def raised(signum: int) -> None:
    _pending[0] = signum


def acknowledge() -> None:
    _pending[0] = None


def pending() -> int | None:
    return _pending[0]


def check() -> None:
    """Raise the interrupt that was raised and not answered (main thread only; else nothing)."""
    signum = _pending[0]
    if signum is None or threading.current_thread() is not threading.main_thread():
        return
    if signum == signal.SIGTERM:
        raise Terminated(f"signal {signum} (delivered again: the first was dropped)")
    raise KeyboardInterrupt


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Within the block a Ctrl-C or SIGTERM is held, and delivered as the handler in force would
    deliver it (KeyboardInterrupt, `Terminated`) when the block ends: so that a run is never made in
    the store without being known to its tracker, whatever the instant of the signal (a signal
    during `create_run` used to leave that run RUNNING). Main thread only; elsewhere a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held = _record_signals()
    try:
        yield
    finally:
        _restore_signals(*held)


def _record_signals() -> tuple[dict, list[int]]:
    """Ctrl-C and SIGTERM recorded instead of acted on: the handlers in force before, and the list
    the signals that arrive are appended to."""
    caught: list[int] = []

    def record(signum, frame):  # noqa: ARG001
        caught.append(signum)

    return {sig: signal.signal(sig, record) for sig in (signal.SIGINT, signal.SIGTERM)}, caught


def _restore_signals(previous: dict, caught: list[int]) -> None:
    """The handlers before `_record_signals` again, and the first signal recorded delivered now."""
    for sig, handler in previous.items():
        signal.signal(sig, handler)
    if caught:
        _deliver(caught[0], previous[caught[0]])


_held: list[tuple[dict, list[int]]] = []  # `hold`'s `_record_signals`, until `release`


def hold() -> None:
    """Hold Ctrl-C and SIGTERM from now until `release` (as `signals_held`, across two calls):
    a study's worker holds them as its objective returns, so that Optuna's own record of the
    trial's end is never cut in two (Optuna 4's `_run_trial` turns a KeyboardInterrupt raised inside its
    `tell` into an UnboundLocalError). Main thread only; once (a second `hold` does nothing)."""
    if threading.current_thread() is not threading.main_thread() or _held:
        return
    _held.append(_record_signals())


def release() -> None:
    """End `hold`: the handlers before it again, and a signal caught meanwhile delivered now."""
    if _held:
        _restore_signals(*_held.pop())


def _deliver(signum: int, handler) -> None:
    """What `handler` (as returned by signal.signal) does with `signum`, done now."""
    if callable(handler):
        handler(signum, None)  # Python's default SIGINT handler raises KeyboardInterrupt; ours raise Terminated
    elif handler == signal.SIG_DFL:
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        os.kill(os.getpid(), signum)  # the default action (SIGTERM: the process ends)
