"""The meta-learner end to end (`python -m speccomp_cli meta`) in a fresh process: wall time, peak
memory, meta-iterations per second and the share of meta-training spent in the inner loop (read
back from the run's `time/*` metrics). Reports only; nothing is asserted.

    python benchmarks/bench_meta.py                          # smoke preset, target < 60 s
    python benchmarks/bench_meta.py --config default         # the default run (100/20/1000), target < 10 min
    python benchmarks/bench_meta.py --config default --json benchmarks/results/meta.json
    python benchmarks/bench_meta.py --smoke                  # the smoke preset shrunk further (a few seconds), no verdict;
                                      # meta and a one-repetition meta-eval side by side (their peaks: the
                                      # larger of the runs ended so far), each on a new MLflow store
                                      # (a copy of the cached empty one, speccomp_compat/store_template.py)
    python benchmarks/bench_meta.py --config default --evaluation 3 --eval-threads 1,2
                                      # then `speccomp meta-eval` too: its wall time, peak RSS and the
                                      # cost of one repetition
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

from _common import Report, add_smoke_flag, machine_line, together

PROMISES = (  # measures every run prints (the smoke test checks them in the JSON); a prefix is enough
    'meta (smoke): end to end',
    'meta: peak RSS',
    'meta: meta-iterations per second',
    'meta: parts (s)',
    'meta-eval: end to end',
    'meta-eval: one repetition',
    'meta-eval: peak RSS',
)

REPO = Path(__file__).resolve().parent.parent
TARGET_S = {"smoke": 60.0, "default": 600.0}
MEMORY_TARGET_MB = 2048.0
SMOKE_ARGS = [  # four training and two test tasks of 64-bin spectra, a few steps of everything
    "--num-meta-training-tasks", "4", "--num-meta-testing-tasks", "2", "--architecture-search-iterations", "6",
    "--overrides",
    "experiment.overrides=[physics.n_bins=64] tasks.n_single=12 tasks.n_empty=12 tasks.n_val_single=6 "
    "tasks.n_query=8 tasks.n_test=16 adapt.candidates=1 adapt.candidate_steps=2 adapt.search_steps=2 "
    "adapt.finetune_steps=3 baselines.nas_iterations=2 log_every=4",
]


def run_once(config: str, threads: str, extra: list[str], command: str = "meta") -> tuple[float, float, dict[str, float]]:
    """(wall s, peak RSS MB of the child, parent-run metrics) of one fresh-process run of
    `speccomp <command>`. The peak is the largest child process this benchmark has waited for so
    far (getrusage): the larger of the runs so far."""
    from mlflow import MlflowClient

    with tempfile.TemporaryDirectory(prefix="bench-meta-") as tmp:
        uri = f"sqlite:///{tmp}/mlflow.db"
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
        env.update(MLFLOW_TRACKING_URI=uri, PYTHONPATH=str(REPO), MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false")
        cmd = [sys.executable, "-m", "speccomp_cli", command, "--config", config, "--threads", threads,
               "--run-name", "bench", *extra]
        t0 = time.perf_counter()
        done = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if done.returncode != 0:
            raise SystemExit(f"{command} run failed ({done.returncode}): {done.stderr[-2000:]}")
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        client = MlflowClient(uri)
        exps = [e.experiment_id for e in client.search_experiments()]
        (run,) = [r for r in client.search_runs(exps) if r.info.run_name == "bench"]
        print(done.stdout)
        return wall, peak_mb, dict(run.data.metrics)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="smoke", help="meta config name or file (smoke, default)")
    parser.add_argument("--threads", default="2", help="torch threads of the run (default 2, the machine's cores)")
    parser.add_argument("--evaluation", type=int, default=0, metavar="N",
                        help="then `speccomp meta-eval --repetitions N` of the same config (0: not)")
    parser.add_argument("--eval-threads", default=None, metavar="A,B",
                        help="meta-eval's --threads (default: --threads)")
    parser.add_argument("--json", default=None)
    parser.add_argument("extra", nargs="*", help="more arguments for speccomp meta (after --)")
    add_smoke_flag(parser)
    args = parser.parse_args()
    if args.smoke:
        args.config, args.threads, args.extra = "smoke", "1", [*SMOKE_ARGS, *args.extra]
        args.evaluation = args.evaluation or 1
    print("start:", machine_line())
    report = Report(f"meta-{args.config}", smoke=args.smoke)
    report.context["machine_start"] = machine_line()
    threads = args.eval_threads or args.threads
    meta_eval = ["--repetitions", str(args.evaluation), *args.extra]
    if args.smoke and args.evaluation:  # side by side: two fresh processes, about the time of one
        (wall, peak_mb, metrics), evaluated = together(
            lambda: run_once(args.config, args.threads, args.extra),
            lambda: run_once(args.config, threads, meta_eval, command="meta-eval"))
    else:
        wall, peak_mb, metrics = run_once(args.config, args.threads, args.extra)
        evaluated = None
    target = TARGET_S.get(Path(args.config).stem)
    if target is not None:
        report.target(f"meta ({args.config}): end to end, fresh process", wall, "{:.1f} s", f"< {target:.0f} s", wall < target)
    else:
        report.info(f"meta ({args.config}): end to end, fresh process", f"{wall:.1f} s")
    report.target("meta: peak RSS of the run", peak_mb, "{:.0f} MB", f"< {MEMORY_TARGET_MB:.0f} MB", peak_mb < MEMORY_TARGET_MB)
    meta_s, inner_s = metrics.get("time/meta_train_s", float("nan")), metrics.get("time/inner_loop_s", float("nan"))
    report.info("meta: meta-iterations per second", f"{metrics.get('time/meta_iterations_per_s', float('nan')):.2f}")
    report.info("meta: share of meta-training in the inner loop", f"{inner_s / meta_s:.0%} ({inner_s:.1f} s of {meta_s:.1f} s)")
    parts = {k.removeprefix("time/").removesuffix("_s"): v for k, v in metrics.items()
             if k.startswith("time/") and k.endswith("_s") and k != "time/meta_iterations_per_s"}
    report.info("meta: parts (s)", ", ".join(f"{k} {v:.1f}" for k, v in parts.items()))
    science = sum(v for k, v in parts.items() if k != "inner_loop")
    report.info("meta: rest of the wall time (interpreter, imports, MLflow store and logging, figures)",
                f"{wall - science:.1f} s of {wall:.1f} s")
    if args.evaluation:
        e_wall, e_peak, _ = evaluated or run_once(args.config, threads, meta_eval, command="meta-eval")
        units = args.evaluation * len(threads.split(","))
        report.info(f"meta-eval: end to end, {args.evaluation} repetitions at threads {threads}, fresh process",
                    f"{e_wall:.1f} s")
        report.info("meta-eval: one repetition (meta-training, the ablations, every meta-test pair of every "
                    "method; wall ÷ repetitions × thread counts)",
                    f"{e_wall / units:.1f} s ({e_wall / units / wall:.2f}x the single meta run above)")
        report.target("meta-eval: peak RSS of the largest run so far", e_peak, "{:.0f} MB",
                      f"< {MEMORY_TARGET_MB:.0f} MB", e_peak < MEMORY_TARGET_MB)
    raise SystemExit(report.finish(args.json))


if __name__ == "__main__":
    main()
