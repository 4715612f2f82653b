"""Torch threads under contention: every core (torch's own default) vs one thread, with the
machine as it is and with one core kept busy by another process (`python -c 'while True: pass'`).

    python benchmarks/bench_threads.py [--repeats 3] [--skip-tracked] [--smoke] [--json benchmarks/results/threads.json]

1. `train()`: the default config, one seed, in this process (`torch.set_num_threads`), best of
   `--repeats`;
2. the tracked default run: `speccomp run` (3 seeds, models and figures included) in a fresh
   process on a temporary SQLite store, with `--threads <cores>` and `--threads 1`, once each.


Printed as ratios (time with every core / time with one thread) side by side in one invocation.
The project's default is the policy that is never much worse: a ratio well above 1 under
contention (every core collapses) and close to 1 without it (one thread loses little) make one
thread the default (`speccomp.core.threads.default_threads`).

--smoke: the `smoke` preset (512 training spectra of 256 bins, 2 epochs), one repeat; the tracked
run once, with the machine as it is, at one thread (the second run of the same command at every core
would only repeat the code path; no ratio), started first and run while `train()` is timed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import Report, add_smoke_flag, best_of, machine_line  # noqa: E402

PROMISES = (  # measures every run prints (the smoke test checks them in the JSON); a prefix is enough
    'train(), 1 seed, as it is',
    'train(), 1 seed, one core busy',
    'speccomp run (3 seeds, tracked), as it is',
)

REPO = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def busy_core(on: bool):
    """One core kept busy by another process for the duration (or nothing)."""
    if not on:
        yield
        return
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        yield
    finally:
        proc.kill()
        proc.wait()


def time_train(threads: int, repeats: int, presets: list[str]) -> float:
    import torch

    from speccomp.core.config import default_config_dir, load_config
    from speccomp.core.training import train
    from speccomp.spectra.data import generate_datasets

    cfg = load_config(default_config_dir(), presets=presets)
    datasets = generate_datasets(cfg, 42)
    torch.set_num_threads(threads)
    train(cfg, datasets, [123])  # warm-up
    best, _ = best_of(lambda: train(cfg, datasets, [123]), repeats)
    return best


def time_tracked(threads: int, presets: list[str], smoke: bool = False) -> float:
    with tempfile.TemporaryDirectory(prefix="bench-threads-") as tmp:
        env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/mlflow.db", "PYTHONPATH": str(REPO)}
        env.pop("MLFLOW_RUN_ID", None)
        env.pop("OMP_NUM_THREADS", None)
        if not smoke:  # the store made beforehand (a smoke's run copies the cached empty one itself)
            subprocess.run([sys.executable, "-c", "from mlflow import MlflowClient; MlflowClient().search_experiments()"],
                           cwd=tmp, env=env, check=True, capture_output=True)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "speccomp_cli", "run", "--threads", str(threads),
                        *(f"--preset={p}" for p in presets)], cwd=tmp, env=env, check=True, capture_output=True)
        return time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-tracked", action="store_true")
    parser.add_argument("--json", default=None)
    add_smoke_flag(parser)
    args = parser.parse_args()
    presets = ["smoke"] if args.smoke else []
    if args.smoke:
        args.repeats = 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    report = Report("threads", smoke=args.smoke)
    early = None  # smoke: the tracked run, started first, runs while train() is timed
    if args.smoke and not args.skip_tracked:
        early = ThreadPoolExecutor(1).submit(time_tracked, 1, presets, True)
    print("start:", machine_line())
    report.context["machine_start"] = machine_line()
    for busy in (False, True):
        where = "one core busy" if busy else "as it is"
        with busy_core(busy):
            many, one = time_train(cores, args.repeats, presets), time_train(1, args.repeats, presets)
        report.info(f"train(), 1 seed, {where}: {cores} threads vs 1", f"{many:.3f} s vs {one:.3f} s = {many / one:.2f}x")
    if early is not None:
        report.info("speccomp run (3 seeds, tracked), as it is: 1 thread only (smoke: no ratio)",
                    f"{early.result():.1f} s")
    elif not args.skip_tracked:
        for busy in (False, True):
            where = "one core busy" if busy else "as it is"
            with busy_core(busy):
                many, one = time_tracked(cores, presets), time_tracked(1, presets)
            report.info(f"speccomp run (3 seeds, tracked), {where}: {cores} threads vs 1",
                        f"{many:.1f} s vs {one:.1f} s = {many / one:.2f}x")
    report.note("ratio = time with every core / time with one thread: above 1, one thread is faster")
    return report.finish(args.json)


if __name__ == "__main__":
    sys.exit(main())
