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

import threading


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
    import signal

    signum = _pending[0]
    if signum is None or threading.current_thread() is not threading.main_thread():
        return
    if signum == signal.SIGTERM:
        raise Terminated(f"signal {signum} (delivered again: the first was dropped)")
    raise KeyboardInterrupt
