"""Progress of long work on stderr: what is being done, how far, the elapsed time and an ETA.

On a terminal a live tqdm bar; elsewhere (CI, `mlflow run` logs, a pipe) plain lines, one per
update, at most every `every_s` seconds (default 5 s) and never two progress lines within
`MIN_GAP_S` (1 s) of each other in one process, whichever `Progress` printed them.

API (for any entry point; `main`, `study`, `nas`, `meta` and `meta-eval` use it):

`Progress(what, total=None, unit="step", every_s=EVERY_S, stream=None, tty=None)`
    bar = Progress("meta-training", total=1000, unit="it")
    for i in range(1000):
        ...
        bar.update(1, note=f"elbo {elbo:.3g}")   # prints when due (every 5 s at most)
    bar.close()                                  # "meta-training: 1000/1000 it in 2 min 3 s"
`Progress.say(text)`: one line now, prefixed with the elapsed time (an event: a finished trial,
    a meta-test pair done); lines from `say` are never held back, so that they appear within
    moments of the event.
`training_progress(what="training") -> callable`: what `speccomp.core.training.train` takes as its
    `progress` argument: called with (total steps, number of seeds), it returns the `Progress`
    the loop updates once per optimiser step.
`stage_progress(what, total, unit) -> Progress`: the `steps` argument of the meta-learner
    (`speccomp.meta.run.run_meta`): one `Progress` per stage (meta-training, the ablation, meta-test).
`say(text)`: one line now (a stage starting), counted as progress by the heartbeat.
`heartbeat(what, every_s=HEARTBEAT_S) -> context manager`: while the block runs, a line
    `what: working (stage) · 25 s elapsed` whenever no progress line was printed for `every_s`
    (work that has no loop to update: figures, model logging, a store round trip). `set_stage(text)`
    names what is being done (a `Progress` names itself while it runs).
    with heartbeat("main"):
        set_stage("drawing figures")
        ...
`duration(seconds) -> str`: "4.2 s", "3 min 5 s", "1 h 2 min".
"""

from __future__ import annotations

import contextlib
import math
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import IO, Any

from tracking import interrupts

EVERY_S = 5.0
"""Seconds between two progress lines of one task where the output is not a terminal (read when
a `Progress` starts, so that a test may shorten it)."""
HEARTBEAT_S = 10.0
"""Silence after which the heartbeat speaks (read when it starts)."""
MIN_GAP_S = 1.0
"""No two progress lines (of any task of this process) closer than this, off a terminal."""

_gate_lock = threading.Lock()
_last_line = [-math.inf]  # when this process last printed a progress line (time.monotonic)
_stage = [""]  # what this process is doing, for the heartbeat


def set_stage(text: str) -> None:
    _stage[0] = text


def _mark_line(now: float) -> None:
    with _gate_lock:
        _last_line[0] = now


def say(text: str, stream: IO[str] | None = None) -> None:
    """One line now, counted as progress (the heartbeat waits its interval after it)."""
    _mark_line(time.monotonic())
    print(text, file=stream if stream is not None else sys.stderr, flush=True)


def duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = max(seconds, 0.0)
    if seconds < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60)} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60)} min"


def is_terminal(stream: IO[str]) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class Progress:
    """One task's progress (see the module docstring). `clock` is for tests (default: the module's
    `time.monotonic`, the clock of `say` and the heartbeat)."""

    def __init__(self, what: str, total: float | None = None, unit: str = "step", every_s: float | None = None,
                 stream: IO[str] | None = None, tty: bool | None = None, clock: Callable[[], float] | None = None,
                 after: str | None = None):
        self.what = what
        self.after = after or f"after {what}"
        """What the heartbeat says is being done once this task is closed."""
        self.total = total
        self.unit = unit
        self.every_s = EVERY_S if every_s is None else every_s
        self.stream = stream if stream is not None else sys.stderr
        self.tty = is_terminal(self.stream) if tty is None else tty
        self.clock = clock if clock is not None else time.monotonic  # looked up now: a test may slow or speed it
        self.started = self.clock()
        self.done = 0.0
        self.note = ""
        self._last = self.started  # the first line comes `every_s` after the start
        self._bar = None
        set_stage(what)
        if self.tty:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=what, unit=unit, file=self.stream, leave=False, dynamic_ncols=True)

    # -- reading ---------------------------------------------------------------------------------
    def elapsed(self) -> float:
        return self.clock() - self.started

    def eta(self) -> float:
        """Seconds left at the rate so far (NaN without a total or before the first unit)."""
        if not self.total or self.done <= 0:
            return math.nan
        return self.elapsed() / self.done * max(self.total - self.done, 0)

    def status(self) -> str:
        """`training 3 seeds: 1200/4000 steps (30 %) · 12 s elapsed · ETA 28 s · note`."""
        count = f"{self.done:g}/{self.total:g}" if self.total else f"{self.done:g}"
        parts = [f"{self.what}: {count} {self.unit}{'s' if self.unit and not self.unit.endswith('s') else ''}"
                 + (f" ({100 * self.done / self.total:.0f} %)" if self.total else "")]
        parts.append(f"{duration(self.elapsed())} elapsed")
        if math.isfinite(self.eta()):
            parts.append(f"ETA {duration(self.eta())}")
        if self.note:
            parts.append(self.note)
        return " · ".join(parts)

    # -- writing ---------------------------------------------------------------------------------
    def update(self, n: float = 1, note: str | None = None) -> bool:
        """`n` more units done; returns whether a line was printed. Raises an interrupt that was
        dropped on its way (`tracking.interrupts.check`): work going on is where it can act."""
        interrupts.check()
        self.done += n
        if note is not None:
            self.note = note
        if self._bar is not None:
            self._bar.update(n)
            if note is not None:
                self._bar.set_postfix_str(note, refresh=False)
            return False
        now = self.clock()
        if now - self._last < self.every_s:
            return False
        with _gate_lock:
            if now - _last_line[0] < MIN_GAP_S:
                return False
            _last_line[0] = now
        self._last = now
        self._write(self.status())
        return True

    def say(self, text: str) -> None:
        """One line now, with the elapsed time (an event worth a line of its own)."""
        line = f"[{duration(self.elapsed())}] {text}"
        if self._bar is not None:
            self._bar.write(line, file=self.stream)
            return
        _mark_line(self.clock())
        self._write(line)

    def close(self, note: str | None = None) -> None:
        """The task's last line: how much was done in how long (off a terminal only when the task
        took longer than `every_s`, so that short work stays quiet, and not within `MIN_GAP_S` of
        another progress line, which said about as much)."""
        if note is not None:
            self.note = note
        set_stage(self.after)
        if self._bar is not None:
            self._bar.close()
            self._bar = None
            return
        if self.elapsed() >= self.every_s:
            now = self.clock()
            with _gate_lock:
                if now - _last_line[0] < MIN_GAP_S:  # a line came a moment ago: it said about as much
                    return
                _last_line[0] = now
            count = f"{self.done:g}/{self.total:g}" if self.total else f"{self.done:g}"
            unit = f"{self.unit}{'s' if self.unit and not self.unit.endswith('s') else ''}"
            self._write(f"{self.what}: {count} {unit} in {duration(self.elapsed())}"
                        + (f" · {self.note}" if self.note else ""))

    def _write(self, line: str) -> None:
        print(line, file=self.stream, flush=True)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def training_progress(what: str = "training", stream: IO[str] | None = None, every_s: float | None = None,
                      after: str | None = None) -> Callable[[int, int], Progress]:
    """The `progress` argument of `speccomp.core.training.train` (and of the experiment and the
    tracked pipeline that pass it on): a factory of one `Progress` per ensemble trained."""
    def start(total_steps: int, n_seeds: int) -> Progress:
        return Progress(f"{what} {n_seeds} seed{'s' if n_seeds != 1 else ''}", total=total_steps, unit="step",
                        every_s=every_s, stream=stream, after=after)

    return start


def stage_progress(what: str, total: int, unit: str) -> Progress:
    """A `Progress` made from (what, total, unit): the `steps` argument of `speccomp.meta.run.run_meta`
    (and of `speccomp.meta.evaluate.evaluate`), one per stage."""
    return Progress(what, total=total, unit=unit)


class Heartbeat:
    """The heartbeat's clockwork: `tick(now)` returns the line due at `now` (None when a progress
    line was printed within `every_s`), and counts it as printed."""

    def __init__(self, what: str, every_s: float, started: float):
        self.what = what
        self.every_s = every_s
        self.started = started

    def tick(self, now: float) -> str | None:
        with _gate_lock:
            if now - _last_line[0] < max(self.every_s, MIN_GAP_S):
                return None
            _last_line[0] = now
        stage = f" ({_stage[0]})" if _stage[0] else ""
        return f"{self.what}: working{stage} · {duration(now - self.started)} elapsed"


@contextlib.contextmanager
def heartbeat(what: str, every_s: float | None = None, stream: IO[str] | None = None) -> Iterator[None]:
    """See the module docstring (`every_s` defaults to `HEARTBEAT_S`). A daemon thread; on a
    terminal the live bars say enough, so it prints only where the output is not a terminal."""
    every_s = HEARTBEAT_S if every_s is None else every_s
    stream = stream if stream is not None else sys.stderr
    if is_terminal(stream):
        yield
        return
    clock = Heartbeat(what, every_s, time.monotonic())
    stop = threading.Event()
    _mark_line(clock.started)

    def beat() -> None:
        while not stop.wait(min(1.0, every_s)):
            line = clock.tick(time.monotonic())
            if line is not None:
                print(line, file=stream, flush=True)

    thread = threading.Thread(target=beat, name=f"heartbeat-{what}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=2.0)
        set_stage("")
