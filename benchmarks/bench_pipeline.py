"""Where the time of the default tracked 3-seed run goes, and how it compares with the tutorial's.

    python benchmarks/bench_pipeline.py [--seeds 123,124,125] [--skip-tutorial] [--smoke] [--json PATH]

Every measurement runs in a fresh subprocess, with a temporary working directory and a temporary
SQLite tracking store (MLFLOW_TRACKING_URI=sqlite:///<tmp>/mlflow.db):

1. imports: `python -c pass`, then each of torch, numpy, yaml, pandas, matplotlib, mlflow alone in
   its own process (startup subtracted), and all of them in one process in the order the
   pipeline meets them;
2. ours: the wall time of `speccomp run --seeds 123,124,125`, as a user runs it
   (a new store), again on the store the first run created, and with OMP_NUM_THREADS=1;
3. ours, by part: the same command in a process that wraps the pipeline's functions with timers
   (`--probe`, below) and attributes each second to the innermost timed part: imports,
   generation, training (its checkpoint evaluations, checkpoint files and metric flushes
   separately), tables, figures, and MLflow (runs/params/tags, metrics, dataset inputs,
   artifacts, models); what no timer covers is "other";
4. the tutorial, re-implemented in its own style (`tutorial_reference.py --mode runpy`: stages
   in subprocesses, per-spectrum generation, DataLoader training per seed, 21 checkpoints with
   CSV predictions, nine figures at 300 dpi redrawn after each stage), and with
   --with-one-process also `--mode single` (one process, figures drawn once; not always faster:
   its DataLoader workers fork a larger process);
   the published tutorial figure (`reference/tutorial/results.md`, about 61 s) is printed too.


Target: ours is a small fraction of the tutorial's wall time, read here as <= 0.25 of the
run.py-style reference measured in the same invocation (the ratio to the published 61 s is
printed beside it).

A probed function that no longer exists ends the probe, and this script, with exit code 3 and a
line naming it. --smoke: one seed on the `smoke` preset, the tutorial reference shrunk alike (512
training and 256 test spectra, 1 epoch), each import timed once, no second-store or one-thread
runs, no verdict.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROMISES = (  # measures every run prints (the smoke test checks them in the JSON); a prefix is enough
    'part: config load + validation',
    'part: generation',
    'part: training: optimiser steps',
    'part: training: checkpoint evaluations',
    'part: oracle floor',
    'part: figures: waiting for the figure worker',
    'part: mlflow: models',
    'part: mlflow: metrics',
    'part: mlflow: artifacts',
    'tutorial style, --mode',
    'wall time, ours / tutorial style',
)

HERE = Path(__file__).resolve().parent
TUTORIAL_PUBLISHED_S = 61.0
TARGET_FRACTION = 0.25
IMPORTS = ("torch", "numpy", "yaml", "pandas", "matplotlib", "mlflow")
PIPELINE_ORDER = ("numpy", "yaml", "pydantic", "torch", "pandas", "mlflow", "mlflow.pytorch",
                  "matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg")


# ------------------------------------------------------------------------------------------------
# subprocess helpers
# ------------------------------------------------------------------------------------------------
def _env(tmp: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp / 'mlflow.db'}"
    env.pop("MLFLOW_RUN_ID", None)
    return env


def timed_run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> tuple[float, str]:
    """Wall time and stdout of `cmd`; a failure ends this script with the command's exit code."""
    t0 = time.perf_counter()
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if out.returncode != 0:
        sys.stderr.write(out.stdout[-3000:] + out.stderr[-3000:])
        print(f"failed ({out.returncode}): {' '.join(cmd)}", file=sys.stderr)
        raise SystemExit(out.returncode)
    return seconds, out.stdout


def best_wall(cmd: list[str], cwd: Path, repeats: int) -> float:
    return min(timed_run(cmd, cwd)[0] for _ in range(repeats))


def import_times(repeats: int, alone: tuple[str, ...] = IMPORTS) -> dict[str, float]:
    """Seconds of importing each of `alone` in a fresh process (start-up subtracted), all of
    IMPORTS in one, and each of PIPELINE_ORDER in one process in that order."""
    py = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        base = best_wall([py, "-c", "pass"], cwd, repeats)
        out = {"python startup": base}
        for mod in alone:
            out[mod] = best_wall([py, "-c", f"import {mod}"], cwd, repeats) - base
        if alone == IMPORTS:
            out["all six, one process"] = best_wall([py, "-c", "import " + ", ".join(IMPORTS)], cwd, repeats) - base
        code = ("import time, json, importlib; t=time.perf_counter(); r={}\n"
                f"for m in {PIPELINE_ORDER!r}:\n"
                "    a=time.perf_counter(); importlib.import_module(m); r[m]=time.perf_counter()-a\n"
                "print(json.dumps(r))")
        runs = [json.loads(timed_run([py, "-c", code], cwd)[1]) for _ in range(repeats)]
        for mod in PIPELINE_ORDER:
            out[f"in pipeline order: {mod}"] = min(r[mod] for r in runs)
    return out


# ------------------------------------------------------------------------------------------------
# the probe: tracking.main with every part timed (runs in its own process)
# ------------------------------------------------------------------------------------------------
class SelfTimer:
    """Exclusive ("self") time per part: a timed call's time minus that of timed calls inside it."""

    def __init__(self):
        self.spent: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self.stack: list[list] = []  # [part, start, time in timed children]

    def wrap(self, owner, name: str, part: str, inherit: bool = False) -> None:
        """Time `owner.name` as `part`; with `inherit`, a call made inside another timed call
        counts for that one (client methods called by a higher-level logging function). A name
        that is gone ends the process (exit 3, naming it)."""
        from _common import probed

        fn = probed(owner, name)
        timer = self

        def wrapper(*args, **kwargs):
            if inherit and timer.stack:
                return fn(*args, **kwargs)
            frame = [part, time.perf_counter(), 0.0]
            timer.stack.append(frame)
            try:
                return fn(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - frame[1]
                timer.stack.pop()
                timer.spent[part] = timer.spent.get(part, 0.0) + elapsed - frame[2]
                timer.calls[part] = timer.calls.get(part, 0) + 1
                if timer.stack:
                    timer.stack[-1][2] += elapsed

        wrapper.__wrapped__ = fn
        setattr(owner, name, wrapper)

    def add(self, part: str, seconds: float) -> None:
        self.spent[part] = self.spent.get(part, 0.0) + seconds


def probe(argv: list[str]) -> int:
    mono_start = time.monotonic()  # CLOCK_MONOTONIC: comparable with the parent's clock
    t_start = time.perf_counter()
    timer = SelfTimer()
    import importlib

    for mod in PIPELINE_ORDER:  # imported up front so that every later part is pure work
        t0 = time.perf_counter()
        importlib.import_module(mod)
        timer.add(f"imports: {mod.split('.')[0]}", time.perf_counter() - t0)
    t0 = time.perf_counter()
    import mlflow

    import speccomp.core.experiment as experiment
    import speccomp.core.figure_worker as figure_worker
    import speccomp.core.training as training
    import speccomp.spectra.figures as figures
    import tracking.logger as tlogger
    import tracking.main as tmain
    import tracking.pipeline as pipeline
    import tracking.runs as runs
    from speccomp.spectra.task import SpectraTask

    timer.add("imports: speccomp + tracking", time.perf_counter() - t0)

    plan = [
        (tmain, "_Inputs", "config load + validation"),
        (SpectraTask, "generate", "generation"),
        (experiment, "train", "training: optimiser steps (rest of train())"),
        (training, "_evaluate", "training: checkpoint evaluations"),
        (training, "_optimizer", "training: optimiser creation"),
        (training, "_save_checkpoint", "training: checkpoint files"),
        (tlogger.MlflowTrainingLogger, "flush", "mlflow: metrics"),
        (experiment, "write_tables", "tables (csv, npy)"),
        (experiment, "write_config", "tables (csv, npy)"),
        (experiment, "draw_figures", "figures: drawn in this process (building the plots)"),
        (figures, "save_figure", "figures: drawn in this process (savefig)"),
        (figure_worker.FigureWorker, "result", "figures: waiting for the figure worker"),
        (SpectraTask, "floor", "oracle floor (fit_oracle + CRB on the test split)"),
        (pipeline, "log_final_model", "mlflow: models (mlflow.pytorch.log_model)"),
        (pipeline, "log_dataset_inputs", "mlflow: dataset inputs"),
        (pipeline, "log_parent_artifacts", "mlflow: artifacts"),
        (pipeline, "log_params", "mlflow: runs, params, tags"),
        (pipeline, "set_tags", "mlflow: runs, params, tags"),
        (pipeline, "log_metric_dict", "mlflow: metrics"),
        (pipeline, "log_mean_curves", "mlflow: metrics"),
        (pipeline, "aggregate_finals", "tables (csv, npy)"),
        (runs.RunTracker, "start", "mlflow: runs, params, tags"),
        (runs.RunTracker, "finish", "mlflow: runs, params, tags"),
        (mlflow.MlflowClient, "log_artifacts", "mlflow: artifacts"),
        (mlflow.MlflowClient, "log_artifact", "mlflow: artifacts"),
        (mlflow.MlflowClient, "log_text", "mlflow: artifacts"),
        (mlflow.MlflowClient, "log_batch", "mlflow: metrics"),
        (mlflow.MlflowClient, "create_experiment", "mlflow: runs, params, tags"),
        (mlflow.MlflowClient, "get_experiment_by_name", "mlflow: runs, params, tags"),
        (mlflow.MlflowClient, "get_run", "mlflow: runs, params, tags"),
        (mlflow, "set_tracking_uri", "mlflow: store set-up"),
        (tmain, "_print_summary", "summary printout"),
    ]
    for owner, name, part in plan:
        timer.wrap(owner, name, part, inherit=owner in (mlflow.MlflowClient, runs.RunTracker))
    # The store: MLflow creates the SQLite schema on the first client call; time it apart.
    t0 = time.perf_counter()
    from tracking import store

    store.configure()
    mlflow.MlflowClient().search_experiments(max_results=1)
    timer.add("mlflow: store set-up", time.perf_counter() - t0)

    t_main = time.perf_counter()
    from speccomp_cli.main import main as cli

    code = cli(["run", *argv])
    t_end = time.perf_counter()
    covered = sum(v for k, v in timer.spent.items() if not k.startswith("imports") and k != "mlflow: store set-up")
    timer.add("other (untimed code in main)", (t_end - t_main) - covered)
    result = {"parts": timer.spent, "calls": timer.calls, "in_process_s": t_end - t_start,
              "mono_start": mono_start, "mono_end": time.monotonic()}
    print("PROBE " + json.dumps(result), flush=True)
    return code


# ------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    sys.path.insert(0, str(HERE))
    if argv[:1] == ["--probe"]:
        return probe(argv[1:])
    from _common import Report, add_smoke_flag, machine_line

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="123,124,125")
    p.add_argument("--repeats", type=int, default=1, help="runs of each pipeline (the fastest counts)")
    p.add_argument("--import-repeats", type=int, default=3)
    p.add_argument("--skip-tutorial", action="store_true")
    p.add_argument("--skip-one-thread", action="store_true", help="skip the run with OMP_NUM_THREADS=1")
    p.add_argument("--with-one-process", action="store_true", help="also time the tutorial reference in one process")
    p.add_argument("--json", default="")
    add_smoke_flag(p)
    args = p.parse_args(argv)
    py = sys.executable
    size: list[str] = []  # options of `speccomp run`
    tutorial_size: list[str] = []
    if args.smoke:
        args.seeds, args.repeats, args.import_repeats, args.skip_one_thread = "123", 1, 1, True
        size = ["--preset", "smoke"]
        tutorial_size = ["--n-train", "512", "--n-test", "256", "--epochs", "1", "--dpi", "30"]
    report = Report("pipeline", smoke=args.smoke)
    print("bench_pipeline:", machine_line())
    report.context["machine_start"] = machine_line()

    print("\nimports (fresh processes, best of", args.import_repeats, "):")
    imports = import_times(args.import_repeats, ("yaml",) if args.smoke else IMPORTS)
    for name, seconds in imports.items():
        report.info(f"import {name}" if name != "python startup" else name, f"{seconds:.2f} s")

    ours_cmd = [py, "-m", "speccomp_cli", "run", "--seeds", args.seeds, *size]
    ours, ours_again, ours_one_thread = [], [], []
    for _ in range(0 if args.smoke else args.repeats):  # smoke: the probe's run is the only one
        with tempfile.TemporaryDirectory(prefix="bench-ours-") as tmp:
            ours.append(timed_run(ours_cmd, Path(tmp), _env(Path(tmp)))[0])  # a new store, as on a first run
            if not args.smoke:
                ours_again.append(timed_run(ours_cmd, Path(tmp), _env(Path(tmp)))[0])  # the store exists now
        if not args.skip_one_thread:
            with tempfile.TemporaryDirectory(prefix="bench-ours-1t-") as tmp:
                ours_one_thread.append(timed_run(ours_cmd, Path(tmp), {**_env(Path(tmp)), "OMP_NUM_THREADS": "1"})[0])
    if ours:
        print("\nours:")
        report.info(f"speccomp run --seeds {args.seeds} (wall, fresh process, new SQLite store)", f"{min(ours):.1f} s")
    if ours_again:
        report.info("the same again on the existing store", f"{min(ours_again):.1f} s")
    if ours_one_thread:
        report.info("the same with OMP_NUM_THREADS=1 (torch on one thread; new store)", f"{min(ours_one_thread):.1f} s")

    with tempfile.TemporaryDirectory(prefix="bench-probe-") as tmp:
        mono0 = time.monotonic()
        seconds, stdout = timed_run([py, str(Path(__file__).resolve()), "--probe", "--seeds", args.seeds, *size],
                                    Path(tmp), _env(Path(tmp)))
        mono1 = time.monotonic()
    line = next(ln for ln in stdout.splitlines() if ln.startswith("PROBE "))
    probed = json.loads(line[len("PROBE "):])
    parts = probed["parts"]
    parts["interpreter start-up"] = probed["mono_start"] - mono0
    parts["interpreter shut-down (after main returned)"] = mono1 - probed["mono_end"]
    print(f"\nours by part (instrumented run: {seconds:.1f} s wall):")
    groups: dict[str, float] = {}
    for name, value in parts.items():
        key = name.split(":")[0] if name.startswith(("imports", "mlflow", "figures", "training")) else name
        groups[key] = groups.get(key, 0.0) + value
    for name, value in sorted(parts.items(), key=lambda kv: -kv[1]):
        report.info(f"  part: {name}", f"{value:.2f} s ({value / seconds:.0%})")
    report.info("  groups", ", ".join(f"{k} {v:.1f} s" for k, v in sorted(groups.items(), key=lambda kv: -kv[1])))
    report.context["probe"] = probed
    ours_s = min(ours) if ours else seconds

    if not args.skip_tutorial:
        print("\nthe tutorial, re-implemented in its style (tutorial_reference.py):")
        refs = {}
        # smoke: one process (the stages' code without their three interpreters)
        modes = ["single"] if args.smoke else ["runpy", "single"] if args.with_one_process else ["runpy"]
        for mode in modes:
            best = float("inf")
            for _ in range(args.repeats):
                with tempfile.TemporaryDirectory(prefix=f"bench-tutorial-{mode}-") as tmp:
                    s, out = timed_run([py, str(HERE / "tutorial_reference.py"), "--out", str(Path(tmp) / "exp"),
                                        "--seeds", args.seeds, "--mode", mode, *tutorial_size], Path(tmp))
                    if s < best:
                        best = s
                        refs[mode] = json.loads(next(ln for ln in out.splitlines() if ln.startswith("TIMINGS "))[8:])
            refs[mode]["wall"] = best
            stages = ", ".join(f"{k} {v:.1f} s" for k, v in refs[mode].items() if k in ("generate", "train", "analyse", "figures"))
            report.info(f"tutorial style, --mode {mode}", f"{best:.1f} s wall ({stages}; {refs[mode]['figures_drawn']} figure draws)")
        report.info("tutorial, published figure (results.md)", f"about {TUTORIAL_PUBLISHED_S:.0f} s")
        report.info("ours / published 61 s", f"{ours_s / TUTORIAL_PUBLISHED_S:.2f}")
        fraction = ours_s / refs[modes[0]]["wall"]
        report.target(f"wall time, ours / tutorial style (--mode {modes[0]}), same invocation", fraction, "{:.2f}",
                      f"<= {TARGET_FRACTION} (a small fraction)", fraction <= TARGET_FRACTION)
        report.context["tutorial"] = refs
    report.context["ours_s"] = ours
    report.context["ours_existing_store_s"] = ours_again
    report.context["ours_one_thread_s"] = ours_one_thread
    return report.finish(args.json)


if __name__ == "__main__":
    raise SystemExit(main())
