"""Helpers shared by the benchmark scripts: timing, machine state, verdicts, JSON results.

Benchmarks report; they never assert. A verdict is printed as PASS or FAIL next to each target
(with `--smoke`, every script's smallest size, none: "[smoke]" instead).

A benchmark that times parts of the code by wrapping functions by name finds each one with
`probed`: a function that is gone (renamed, moved) ends the script with exit code 3 and one line
naming it, instead of its time silently falling into "other".
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


def best_of(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """Fastest wall time of `repeats` calls (the least disturbed one) and the last result."""
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def machine_line() -> str:
    """CPU count, load average and torch's intra-op threads: the context every figure needs."""
    import torch

    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load average {load}, "
            f"torch {torch.__version__} with {torch.get_num_threads()} intra-op threads")


PROBE_MISSING = 3
"""Exit code of a benchmark whose probe names a function that no longer exists."""


class ProbeMissing(SystemExit):
    def __init__(self, where: str):
        print(f"probe: {where} does not exist (renamed or moved?); update the benchmark's probe list",
              file=sys.stderr, flush=True)
        super().__init__(PROBE_MISSING)


def probed(owner: Any, name: str) -> Callable:
    """`owner.name`, the function a probe wraps; ProbeMissing (exit 3, naming it) when it is gone."""
    fn = getattr(owner, name, None) if owner is not None else None
    if not callable(fn):
        where = getattr(owner, "__module__", "") if isinstance(owner, type) else ""
        where = ".".join(filter(None, [where, getattr(owner, "__name__", repr(owner)), name]))
        raise ProbeMissing(where)
    return fn


def together(*calls: Callable[[], Any]) -> list[Any]:
    """The calls' results, in order, the calls made at once in threads (each one waits on its own
    subprocess). For `--smoke` only, where the code paths count and the figures do not: two fresh
    processes side by side on a 2-core machine take about the time of one. Once every call has
    ended, the exception of the first call (in argument order) that raised is raised here."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        futures = [pool.submit(call) for call in calls]
    return [f.result() for f in futures]


def add_smoke_flag(parser) -> None:
    parser.add_argument("--smoke", action="store_true",
                        help="the same code paths at the smallest size that exercises them: a few seconds, "
                             "figures printed, no speed verdicts")


def load_now() -> float:
    return os.getloadavg()[0]


@dataclass
class Row:
    measure: str
    figure: str
    target: str
    verdict: str  # PASS, FAIL or "" (informational)


@dataclass
class Report:
    """What a benchmark measured; printed as it goes and optionally written as JSON."""

    name: str
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    context: dict[str, Any] = field(default_factory=dict)
    smoke: bool = False
    """A smoke run (tiny sizes): targets are printed without a verdict."""

    def target(self, measure: str, value: float, fmt: str, target: str, ok: bool) -> bool:
        verdict = "smoke" if self.smoke else "PASS" if ok else "FAIL"
        self.rows.append(Row(measure, fmt.format(value), target, verdict))
        print(f"  [{verdict}] {measure}: {fmt.format(value)} (target {target})")
        return ok

    def info(self, measure: str, figure: str) -> None:
        self.rows.append(Row(measure, figure, "", ""))
        print(f"  {measure}: {figure}")

    def note(self, text: str) -> None:
        self.notes.append(text)
        print(f"  note: {text}")

    def finish(self, path: str | Path | None) -> int:
        """Print and record the machine's state at the end (load may have changed), write the JSON."""
        line = machine_line()
        print("end:", line)
        self.context["machine_end"] = line
        self.write(path)
        return 0

    def write(self, path: str | Path | None) -> None:
        if not path:
            return
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {"name": self.name, "smoke": self.smoke, "rows": [asdict(r) for r in self.rows], "notes": self.notes, "context": self.context}
        path.write_text(json.dumps(data, indent=2))
        print(f"results written to {path}")
