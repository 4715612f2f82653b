"""Helpers shared by the benchmark scripts: timing, machine state, verdicts, JSON results.

Benchmarks report; they never assert. A verdict is printed as PASS or FAIL next to each target.
"""

from __future__ import annotations

import json
import os
import platform
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

    def target(self, measure: str, value: float, fmt: str, target: str, ok: bool) -> bool:
        verdict = "PASS" if ok else "FAIL"
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
        data = {"name": self.name, "rows": [asdict(r) for r in self.rows], "notes": self.notes, "context": self.context}
        path.write_text(json.dumps(data, indent=2))
        print(f"results written to {path}")
