"""Matrices domain: generation throughput (vectorised vs a per-matrix loop) and the default
`configs/raven` run with three seeds, end to end.

    python benchmarks/bench_matrices.py [--n 10000] [--loop-n 1000] [--repeats 3] [--pipeline] [--smoke] [--json PATH]

- generation: `speccomp.matrices.generator.generate` for `--n` matrices on the default ranges and
  rules (every rule on every attribute, 8 candidates) plus their panel encoding, the fastest of
  `--repeats` runs; target < 1 s for 10,000;
- reference: the same generator written one matrix at a time in plain Python/NumPy (draw the rules,
  the rows, reject a context that does not determine its rule, build the I-RAVEN tree, encode),
  timed on `--loop-n` matrices and extrapolated per matrix to `--n`; the ratio is printed;
- `--pipeline`: `python -m speccomp_cli run --config-dir configs/raven --seeds 123,124,125` in a
  subprocess against a fresh SQLite store in a temporary folder; wall time and the child's CPU
  time (target: < 2 min), with the machine's load beside them.
- `--smoke`: 500 matrices, the loop on 20, one repeat, no verdict (with `--pipeline`: 2 epochs,
  one seed).
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import Report, add_smoke_flag, best_of, machine_line

from speccomp.matrices.generator import (
    ATTRIBUTES,
    LEVELS,
    N_SLOTS,
    PROGRESSION_DELTAS,
    RULES,
    SplitSpec,
    encode,
    generate,
)

PROMISES = (  # measures every run prints (the smoke test checks them in the JSON); a prefix is enough
    'vectorised generation + encoding of',
    'per-matrix loop',
    'speed-up of the vectorised generator',
)

REPO = Path(__file__).resolve().parent.parent
TARGET_S = 1.0
TARGET_PIPELINE_S = 120.0


# ------------------------------------------------------------------------------------------------
# the reference: one matrix at a time
# ------------------------------------------------------------------------------------------------
def _row_rules(rows: list[list[int]]) -> int:
    """Number of rule variants the rows satisfy (the same variants as the vectorised checker)."""
    n = int(all(a == b == c for a, b, c in rows))
    n += sum(all(b - a == d and c - b == d for a, b, c in rows) for d in PROGRESSION_DELTAS)
    n += sum(all(c == a + s * b and b >= 1 for a, b, c in rows) for s in (1, -1))
    first = rows[0]
    if len(set(first)) == 3:
        n += int(rows[1] == first[1:] + first[:1]) + int(rows[1] == first[2:] + first[:2])
    return n


def _draw_rows(rng: np.random.Generator, family: int, lo: int, hi: int) -> list[list[int]]:
    if family == 0:
        return [[x] * 3 for x in rng.integers(lo, hi + 1, 3)]
    if family == 1:
        d = int(rng.choice([d for d in PROGRESSION_DELTAS if 2 * abs(d) <= hi - lo]))
        starts = rng.integers(lo - min(0, 2 * d), hi - max(0, 2 * d) + 1, 3)
        return [[int(s), int(s) + d, int(s) + 2 * d] for s in starts]
    if family == 2:
        minus = rng.random() < 0.5
        rows = []
        for _ in range(3):
            b = int(rng.integers(max(1, lo), hi - lo + 1))
            a = int(rng.integers(lo + b, hi + 1)) if minus else int(rng.integers(lo, hi - b + 1))
            rows.append([a, b, a - b if minus else a + b])
        return rows
    three = [int(v) for v in rng.permutation(np.arange(lo, hi + 1))[:3]]
    shift = 1 if rng.random() < 0.5 else -1
    return [three, three[shift:] + three[:shift], three[2 * shift:] + three[:2 * shift]]


def loop_matrix(rng: np.random.Generator, ranges: np.ndarray, n_candidates: int = 8):
    """One matrix: (16, PANEL_DIM) encoding and the answer's index."""
    while True:
        grids = []
        for a in range(len(ATTRIBUTES)):
            family = int(rng.integers(0, len(RULES)))
            grids.append(_draw_rows(rng, family, int(ranges[a, 0]), int(ranges[a, 1])))
        if all(_row_rules(g[:2]) == 1 for g in grids):
            break
    answer = [g[2][2] for g in grids]
    levels = rng.permutation(len(ATTRIBUTES))[: int(np.log2(n_candidates))]
    cands = []
    for leaf in range(n_candidates):
        c = list(answer)
        for j, a in enumerate(levels):
            if (leaf >> j) & 1:
                lo, hi = ranges[a]
                c[a] = int(lo + (answer[a] - lo + rng.integers(1, hi - lo + 1)) % (hi - lo + 1))
        cands.append(c)
    order = rng.permutation(n_candidates)
    cands = [cands[i] for i in order]
    context = [[g[k // 3][k % 3] for g in grids] for k in range(8)]
    values = np.array(context + cands)
    slots = np.zeros((len(values), N_SLOTS), bool)
    for p, v in enumerate(values):
        slots[p, rng.permutation(N_SLOTS)[: v[0]]] = True
    return encode(values, slots), int(np.argmax(order == 0))


# ------------------------------------------------------------------------------------------------
def bench_generation(report: Report, n: int, loop_n: int, repeats: int) -> None:
    ranges = np.array([LEVELS[a] for a in ATTRIBUTES])
    spec = SplitSpec(ranges, np.ones((len(RULES), len(ATTRIBUTES)), bool), 8)

    def vectorised():
        batch = generate(np.random.default_rng(0), spec, n)
        return encode(batch.values, batch.positions)

    vectorised()  # warm-up
    cpu0 = time.process_time()
    fast_s, panels = best_of(vectorised, repeats)
    fast_cpu = (time.process_time() - cpu0) / repeats
    report.info(f"vectorised generation + encoding, CPU time per run (mean of {repeats})", f"{fast_cpu:.3f} s")
    report.info("matrices generated", f"{panels.shape[0]:,} of shape {tuple(panels.shape[1:])}")
    report.target(f"vectorised generation + encoding of {n:,} matrices", fast_s, "{:.3f} s", f"< {TARGET_S:g} s",
                  fast_s < TARGET_S)

    def loop():
        rng = np.random.default_rng(0)
        return [loop_matrix(rng, ranges) for _ in range(loop_n)]

    cpu0 = time.process_time()
    loop_s, _ = best_of(loop, 1)
    loop_cpu = (time.process_time() - cpu0) / loop_n * n
    per_matrix = loop_s / loop_n
    report.info(f"per-matrix loop ({loop_n:,} matrices, extrapolated to {n:,})",
                f"{per_matrix * n:.2f} s wall, {loop_cpu:.2f} s CPU")
    report.info("speed-up of the vectorised generator over the loop",
                f"{per_matrix * n / fast_s:.0f}x (wall), {loop_cpu / fast_cpu:.0f}x (CPU time)")


def bench_pipeline(report: Report, smoke: bool = False) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-raven-") as tmp:
        env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/mlflow.db",
               "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
        env.pop("MLFLOW_RUN_ID", None)
        load_before = os.getloadavg()[0]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "speccomp_cli", "run", "--config-dir", str(REPO / "configs" / "raven"),
             *(["--seeds", "123", "--set", "training.epochs=2"] if smoke else ["--seeds", "123,124,125"])],
            cwd=tmp, env=env, capture_output=True, text=True,
        )
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        report.note(f"the run failed (exit {proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}")
        return
    summary = [line for line in proc.stdout.splitlines() if line.startswith("mean ± std")]
    report.info("default raven run (3 seeds), result", summary[0] if summary else "?")
    report.target("default raven run, 3 seeds, end to end: CPU time", cpu, "{:.0f} s", f"< {TARGET_PIPELINE_S:.0f} s",
                  cpu < TARGET_PIPELINE_S)
    report.info("same run, wall time (load average at start "
                f"{load_before:.1f} on {os.cpu_count()} CPUs)", f"{wall:.0f} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--loop-n", type=int, default=1_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pipeline", action="store_true", help="also time the default raven run end to end")
    parser.add_argument("--json", default=None)
    add_smoke_flag(parser)
    args = parser.parse_args()
    if args.smoke:
        args.n, args.loop_n, args.repeats = 500, 20, 1
    report = Report("matrices", smoke=args.smoke)
    print("start:", machine_line())
    report.context["machine_start"] = machine_line()
    bench_generation(report, args.n, args.loop_n, args.repeats)
    if args.pipeline:
        bench_pipeline(report, args.smoke)
    return report.finish(args.json)


if __name__ == "__main__":
    sys.exit(main())
