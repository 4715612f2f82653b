"""Study throughput: trials per minute of the quick space with full tracking, one worker vs two,
and what seed-level pruning saves.

    python benchmarks/bench_study.py [--trials 24] [--repeats 2] [--threads N] [--log-models]
                                     [--space configs/spaces/quick.yaml] [--smoke] [--json PATH]


Each measurement is one fresh `speccomp study` invocation, as a user runs it: a new folder
with its own MLflow database (sqlite, everything the study logs by default: one run per trial and
per seed, metrics, checkpoints, predictions, dataset inputs) and its own Optuna journal, the
default trial size (the space's `fixed` sizes, seeds 123,124,125, data seed 42), random sampler
with seed 0 (so every measurement draws the same parameters for the same trial number).

(a) one worker, `--pruner none`
(a') the same with `--no-record-writer`: each trial writes its MLflow records itself before it
     ends, instead of the record writer (`tracking.writer`) writing them while the next trial trains
(b) two workers on this machine, `--workers 2 --pruner none` (the second process is spawned by the
    first, so it starts a few seconds later: that is part of what a user gets; each worker gets
    half the cores as torch threads)
(b') two `speccomp study` processes started together with `--total-trials` (as on two machines), each
    with half the cores as torch threads: the throughput two workers can reach
(c) one worker, `--pruner median` (MedianPruner, 3 start-up trials; a pruned trial trains seed 123
    only)

Trials per minute = finished trials / the trials' span: the longer of Optuna's own (last trial
end - first trial start) and the one each `speccomp study` process reports ("N trial(s) run here
in S s": from before its first trial until the record writer has written its last trial's
records, `tracking.writer`; Optuna's end of the last trial comes before them). Process start-up
and the report are left out; the process wall time is shown too.
The five are measured in turn, `--repeats` times, and the best of each is kept (the least
disturbed by other work on the machine: a trial's time varies several-fold with the load).
Reports only; nothing is asserted.

--smoke: two trials of each kind, once, seeds 123 and 124, the space's parameters with tiny trials
(`SMOKE_FIXED`: 192 training spectra of 128 bins, 2 epochs); the median pruner gets
`SMOKE_PRUNER_TRIALS` (past its 3 start-up trials, so that a trial is pruned: with sampler seed 0,
the sixth); the five kinds run at once (seven processes and their record writers; their figures
mean nothing, the code paths are what a smoke checks).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml
from _common import Report, add_smoke_flag, machine_line
from _common import together as at_once

PROMISES = (  # measures every run prints (the smoke test checks them in the JSON); a prefix is enough
    'one worker: trials per minute',
    "one worker: the same records at MLflow's own price",
    "one worker: the trial's data generated alone",
    'one worker: floor of a trial that writes its own records',
    "one worker: time per trial / the trial's own training time",
    'one worker, --no-record-writer: time per trial',
    'two workers started together: trials per minute',
    'two workers vs one',
    'median pruner vs none',
)

REPO = Path(__file__).resolve().parents[1]
TRIALS_LINE = re.compile(r"\d+ trial\(s\) run here in ([0-9.]+) s")
STUDY = "bench"
SMOKE_FIXED = ["physics.n_bins=128", "data.splits.train.n_samples=192", "data.splits.test.n_samples=64",
               "data.validation.n_samples=64", "training.epochs=2", "training.hidden_dims=[32,16]",
               "training.checkpoint_ratio=0.5"]
SMOKE_PRUNER_TRIALS = 6


def smoke_space(space: Path, folder: Path) -> Path:
    """`space` with its `fixed` sizes replaced by SMOKE_FIXED (the same parameters, tiny trials)."""
    raw = yaml.safe_load(space.read_text())
    raw["fixed"] = SMOKE_FIXED
    path = folder / f"smoke-{space.name}"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@dataclass
class Measured:
    label: str
    wall_s: float
    span_s: float
    complete: int
    pruned: int
    mean_trial_s: float
    mean_complete_s: float
    mean_pruned_s: float
    mean_train_s: float
    """The trials' own training time (user attribute `train_seconds`), mean over finished trials."""
    floors: dict[str, float | str] | None = None
    """With `run_study(floors=True)`: the same records at MLflow's own price and the data's generation,
    seconds a trial (`_floors.py`), and what the records hold (counts, first trial)."""

    @property
    def finished(self) -> int:
        return self.complete + self.pruned

    @property
    def per_minute(self) -> float:
        return 60.0 * self.finished / self.span_s

    @property
    def seconds_per_trial(self) -> float:
        return self.span_s / self.finished


def run_study(label: str, space: Path, n_trials: int, *extra: str, processes: int = 1, floors: bool = False) -> Measured:
    """One study of `n_trials` in a fresh folder; `processes` > 1: that many `speccomp study`
    processes started together, sharing the budget with `--total-trials`. `floors`: also measure,
    from the study's own store, what its trials' records and data cost at the least (`_floors.py`)."""
    import optuna
    from optuna.trial import TrialState

    from study.storage import open_storage

    with tempfile.TemporaryDirectory(prefix="bench-study-") as tmp:
        folder = Path(tmp)
        env = {
            **os.environ,
            "MLFLOW_TRACKING_URI": f"sqlite:///{folder}/mlflow.db",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        }
        for name in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID"):
            env.pop(name, None)
        command = [sys.executable, "-m", "speccomp_cli", "study", "--n-trials", str(n_trials), "--study-name", STUDY,
                   "--storage", str(folder / "optuna.log"), "--space", str(space), "--sampler-seed", "0",
                   "--no-report", *extra]
        if processes > 1:
            command += ["--total-trials", str(n_trials)]
        print(f"  {label}: {processes} x {' '.join(command[3:])}", flush=True)
        started = time.perf_counter()
        workers = [subprocess.Popen(command, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True) for _ in range(processes)]
        outputs = [w.communicate() for w in workers]
        wall_s = time.perf_counter() - started
        for w, (out, err) in zip(workers, outputs, strict=True):
            if w.returncode != 0:
                raise SystemExit(f"{label} failed ({w.returncode}):\n{out[-2000:]}\n{err[-4000:]}")
        study = optuna.load_study(study_name=STUDY, storage=open_storage(str(folder / "optuna.log")))
        trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
        floor = measure_floors(folder, trials, extra) if floors else None

    def mean_duration(states) -> float:
        durations = [t.duration.total_seconds() for t in trials if t.state in states]
        return sum(durations) / len(durations) if durations else float("nan")

    span = max(t.datetime_complete for t in trials) - min(t.datetime_start for t in trials)
    reported = [float(x) for out, _ in outputs for x in TRIALS_LINE.findall(out)]  # spawned workers' lines too
    if len(reported) < processes:
        raise SystemExit(f"{label}: a study process did not report its trials' time ({TRIALS_LINE.pattern!r})")
    return Measured(
        label=label,
        wall_s=wall_s,
        span_s=max(span.total_seconds(), *reported),
        complete=sum(t.state == TrialState.COMPLETE for t in trials),
        pruned=sum(t.state == TrialState.PRUNED for t in trials),
        mean_trial_s=mean_duration((TrialState.COMPLETE, TrialState.PRUNED)),
        mean_complete_s=mean_duration((TrialState.COMPLETE,)),
        mean_pruned_s=mean_duration((TrialState.PRUNED,)),
        mean_train_s=sum(t.user_attrs.get("train_seconds", float("nan")) for t in trials) / len(trials),
        floors=floor,
    )


def measure_floors(folder: Path, trials, options: tuple[str, ...]) -> dict[str, float | str]:
    """Seconds a trial, on average over `trials`: their MLflow records written again with plain
    client calls, and their data generated again; the counts of the first trial's records. What
    cannot be measured is said ("why") instead of ending the benchmark after its study ran."""
    import _floors

    if "--log-models" in options:  # MLflow 3 keeps logged models outside the run's artifacts: not replayed
        return {"why": "not measured with --log-models (the models would be left out)"}
    try:
        records = [_floors.trial_records(folder / "mlflow.db", t.user_attrs["mlflow_run_id"]) for t in trials]
        data = [(r[0]["artifacts"] / "config.yaml", int(r[1]["tags"]["data_seed"]))  # logged config, a seed's tag
                for r in records]
        return {"records_s": _floors.replay_records(records), "generation_s": _floors.generation_seconds(data),
                **{f"count: {k}": v for k, v in _floors.count(records[0]).items()}}
    except Exception as exc:  # a report, not a verdict: say why and go on
        return {"why": f"not measured ({type(exc).__name__}: {exc})"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=24, help="trials per measurement (default 24)")
    parser.add_argument("--log-models", action="store_true", help="also log every seed's model (off by default)")
    parser.add_argument("--repeats", type=int, default=2, help="measurements of each kind; the best is kept")
    parser.add_argument("--threads", default="", help="pass --threads N to every study (default: the study's own "
                        "choice: torch's default with one worker, the cores shared out with two)")
    parser.add_argument("--space", default=str(REPO / "configs" / "spaces" / "quick.yaml"))
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    add_smoke_flag(parser)
    args = parser.parse_args()
    seeds: tuple[str, ...] = ()
    if args.smoke:
        args.trials, args.repeats = 2, 1
        seeds = ("--seeds", "123,124")  # the median pruner needs two
        tmp = tempfile.TemporaryDirectory(prefix="bench-study-space-")
        args.space = str(smoke_space(Path(args.space), Path(tmp.name)))

    report = Report("bench_study", smoke=args.smoke)
    print(f"machine: {machine_line()}")
    report.context = {"machine": machine_line(), "trials": args.trials, "space": args.space,
                      "threads": args.threads or "default"}
    threads = ("--threads", args.threads) if args.threads else ()
    half = str(max(1, len(os.sched_getaffinity(0)) // 2))
    kinds = {  # label: (options, processes)
        "one worker": ((), 1),
        "one worker, --no-record-writer": (("--no-record-writer",), 1),
        "two workers (--workers 2)": (("--workers", "2"), 1),
        "two workers started together": (() if threads else ("--threads", half), 2),
        "one worker, median pruner": (("--pruner", "median"), 1),
    }
    if args.log_models:
        threads = (*threads, "--log-models")
    threads = (*threads, *seeds)
    best: dict[str, Measured] = {}

    def measure(label: str) -> Measured:
        extra, processes = kinds[label]
        trials = SMOKE_PRUNER_TRIALS if args.smoke and "--pruner" in extra else args.trials
        m = run_study(label, Path(args.space), trials, *extra, *threads, processes=processes,
                      floors=label == "one worker")
        print(f"    {label}: {m.per_minute:.1f} trials/min, {m.seconds_per_trial:.2f} s a trial, {m.pruned} pruned, "
              f"load {os.getloadavg()[0]:.2f}", flush=True)
        return m

    for _ in range(args.repeats):
        if args.smoke:
            measured = at_once(*(lambda label=label: measure(label) for label in kinds))
        else:
            measured = [measure(label) for label in kinds]
        for m in measured:
            if m.label not in best or m.per_minute > best[m.label].per_minute:
                best[m.label] = m
    one, pruned = best["one worker"], best["one worker, median pruner"]
    spawned, together = best["two workers (--workers 2)"], best["two workers started together"]

    print(f"results (best of {args.repeats}):")
    for m in best.values():
        report.info(
            f"{m.label}: trials per minute",
            f"{m.per_minute:.1f} ({m.finished} trials in {m.span_s:.1f} s, {m.seconds_per_trial:.2f} s a trial; "
            f"process wall {m.wall_s:.1f} s; mean trial duration {m.mean_trial_s:.2f} s)",
        )
    report.target("one worker: time per trial / the trial's own training time",
                  one.seconds_per_trial / one.mean_train_s, "{:.2f}x",
                  f"<= 1.5x ({one.seconds_per_trial:.2f} s a trial, {one.mean_train_s:.2f} s of it training)",
                  one.seconds_per_trial / one.mean_train_s <= 1.5)
    own = best["one worker, --no-record-writer"]
    report.info("one worker, --no-record-writer: time per trial / the trial's own training time",
                f"{own.seconds_per_trial / own.mean_train_s:.2f}x ({own.seconds_per_trial:.2f} s a trial, "
                f"{own.mean_train_s:.2f} s of it training; with the record writer {one.seconds_per_trial:.2f} s, "
                f"{1 - one.seconds_per_trial / own.seconds_per_trial:.0%} less)")
    floors = one.floors or {"why": "not measured"}
    if "why" in floors:
        for measure in PROMISES[1:4]:
            report.info(measure, str(floors["why"]))
    else:
        least = one.mean_train_s + floors["records_s"] + floors["generation_s"]
        counts = ", ".join(f"{v} {k.removeprefix('count: ')}" for k, v in floors.items() if k.startswith("count: "))
        report.info("one worker: the same records at MLflow's own price",
                    f"{floors['records_s'] * 1000:.0f} ms a trial ({counts}; read back from the study's store and "
                    "written again into a new one, one MlflowClient call per kind of record per run)")
        report.info("one worker: the trial's data generated alone", f"{floors['generation_s'] * 1000:.0f} ms a trial")
        report.info("one worker: floor of a trial that writes its own records / training",
                    f"{least / one.mean_train_s:.2f}x (training + those records + that generation; Optuna's own "
                    f"writes and the oracle fits left out) against {own.seconds_per_trial / own.mean_train_s:.2f}x "
                    "measured with --no-record-writer; the record writer takes the records off the trial's path: "
                    f"{one.seconds_per_trial / one.mean_train_s:.2f}x")
    report.info("two workers vs one: throughput ratio",
                f"--workers 2: {spawned.per_minute / one.per_minute:.2f}x; started together: "
                f"{together.per_minute / one.per_minute:.2f}x")
    report.info(
        "median pruner vs none: time per trial",
        f"{pruned.seconds_per_trial:.2f} s vs {one.seconds_per_trial:.2f} s "
        f"({1 - pruned.seconds_per_trial / one.seconds_per_trial:+.0%} saved); {pruned.pruned} of "
        f"{pruned.finished} trials pruned; a pruned trial took {pruned.mean_pruned_s:.2f} s, "
        f"a complete one {pruned.mean_complete_s:.2f} s",
    )
    report.note(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    report.write(args.json)
    if args.smoke and pruned.pruned == 0:  # the smoke exists to take the pruned-trial path too
        raise SystemExit(f"smoke: no trial of the median-pruner run was pruned ({pruned.finished} finished); "
                         "raise SMOKE_PRUNER_TRIALS")


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
