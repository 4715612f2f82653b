"""The `study` entry point: an Optuna study of how sensitive the compositional gap is to
architecture and split settings, every trial tracked in MLflow, ending with a sensitivity report.

    mlflow run . --env-manager local -e study -P n_trials=20 -P space=configs/spaces/quick.yaml
    python -m study.main --n-trials 20 --space configs/spaces/quick.yaml --workers 2

Many machines: the same command everywhere, with `--storage postgresql://...` and
MLFLOW_TRACKING_URI pointing at a tracking server, and `--total-trials N` for a shared budget.
Everything (seeds, config, space, sampler, pruner, storage, study directions) is checked before
any run or trial exists; a problem prints one line and exits with code 2.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

USER_ERROR = 2
UNREACHABLE = 3
"""Exit code of a worker that stopped because the tracking server did not answer within MLflow's retries."""
RECORDS_FAILED = 1
"""Exit code of a worker whose record writer could not write a trial's records (`tracking.writer`)."""
SAMPLERS = ("random", "qmc", "tpe", "nsga2")
PRUNERS = ("none", "median", "successive_halving", "wilcoxon")
DEFAULT_SPACE = "configs/spaces/quick.yaml"
STORAGE_ENV = "SPECCOMP_STORAGE"


@dataclass
class StudyOptions:
    """What `speccomp study` (and the MLproject `study` entry point) hands to `main`, parsed and
    typed by the front end (`speccomp_cli`). Spawned workers receive it as a file
    (`write_worker_file`), with the resolved base config, instead of a rebuilt command line."""

    n_trials: int = 10
    """Trials this invocation runs (per worker budget)."""
    total_trials: int | None = None
    """Study-wide budget: stop when the study holds this many trials, whoever ran them."""
    study_name: str = "speccomp-sensitivity"
    storage: str = ""
    """Journal file path (default optuna.log), sqlite:///PATH or postgresql://USER@HOST:PORT/DB;
    empty: the environment variable SPECCOMP_STORAGE, else the journal file."""
    space: str = DEFAULT_SPACE
    seeds: list[int] | None = None
    """Training seeds of every trial; None takes `training.seed` from the config."""
    data_seed: int = 42
    objective: str = "test_mse"
    sampler: str = "random"
    sampler_seed: int | None = None
    """None: derived from the study name (`name_seed`), so that studies of other names draw other
    trials; an integer pins it (the same trials whatever the name)."""
    pruner: str = "none"
    workers: int = 1
    threads: int | None = None
    config_dir: str | None = None
    presets: list[str] = field(default_factory=list)
    overrides: list[str] = field(default_factory=list)
    experiment_name: str | None = None
    log_models: bool = False
    parent_run_id: str | None = None
    """Set for spawned workers: the launcher owns the study run."""
    no_report: bool = False
    record_writer: bool = True
    """Trials' MLflow records written by a second process while the next trial trains
    (`tracking.writer`); False: by this process, before the trial ends."""
    resolved_config: dict | None = None
    """Set for spawned workers: the launcher's resolved base config (presets and overrides applied)."""


@dataclass
class Settings:
    n_trials: int
    total_trials: int | None
    seeds: list[int]
    data_seed: int
    workers: int
    sampler_seed: int
    threads: int | None = None


def _validate(args: StudyOptions):
    """Everything checked before any run or trial exists. Returns what the study needs."""
    from speccomp.core.config import ConfigError, parse_seed_list
    from speccomp.core.task import config_from_any_dict, task_for, task_for_dir
    from study.objective import MEASURES, check_measure, configure_trial_size
    from study.space import load_space

    if args.objective not in MEASURES:
        raise ConfigError(f"objective: unknown {args.objective!r}; allowed: {', '.join(MEASURES)}")
    if args.sampler not in SAMPLERS:
        raise ConfigError(f"sampler: unknown {args.sampler!r}; allowed: {', '.join(SAMPLERS)}")
    if args.pruner not in PRUNERS:
        raise ConfigError(f"pruner: unknown {args.pruner!r}; allowed: {', '.join(PRUNERS)}")
    if args.objective == "pareto" and args.pruner != "none":
        raise ConfigError("pruner: Optuna cannot prune two-objective (pareto) studies; use --pruner none")
    overrides = configure_trial_size(list(args.overrides))
    if args.resolved_config is not None:  # a spawned worker: the launcher resolved it
        base = config_from_any_dict(args.resolved_config)
    else:  # a folder holding matrices.yaml selects the matrices domain
        task, presets = task_for_dir(args.config_dir or None), [p for p in args.presets if p]
        base = task.load_config(args.config_dir or None, overrides, presets)
        with_log = configure_trial_size(list(args.overrides), base.training.log_every_n_step)
        if with_log != overrides:  # the config logs every step: trials log fewer (TRIAL_LOG_EVERY_N_STEP)
            overrides, base = with_log, task.load_config(args.config_dir or None, with_log, presets)
    check_measure(args.objective, task_for(base).name)
    settings = Settings(
        n_trials=args.n_trials,
        total_trials=args.total_trials,
        seeds=parse_seed_list(args.seeds if args.seeds is not None else base.training.seeds, "seeds"),
        data_seed=args.data_seed,
        workers=args.workers,
        sampler_seed=args.sampler_seed if args.sampler_seed is not None else name_seed(args.study_name),
        threads=args.threads,
    )
    if args.pruner != "none" and len(settings.seeds) < 2:
        raise ConfigError("pruner: needs at least two seeds (results after the first seed decide); give --seeds a,b,...")
    space = load_space(_space_path(args.space), base)
    return settings, base, space, overrides


def _space_path(text: str) -> Path:
    """The space file; the default one is the project's, wherever the command runs from."""
    from speccomp.core.config import default_config_dir

    path = Path(text)
    if str(text) == DEFAULT_SPACE and not path.exists():
        return default_config_dir() / "spaces" / path.name
    return path


def name_seed(study_name: str) -> int:
    """The sampler seed of a study whose seed is not pinned: derived from its name (stable across
    processes and machines, so every worker of one study agrees), so that two studies of other
    names draw other trials."""
    from speccomp.core.seeding import derive_seed

    return derive_seed(0, "sampler", study_name) % 2**31


def make_sampler(name: str, seed: int, n_objectives: int):
    """The sampler, its random streams reseeded before every trial from (seed, trial number):
    reproducible in a fresh study, and workers that share a study and a seed never draw the same
    values for different trials (with one seed each, a plain seeded sampler repeats itself in
    every worker)."""
    import optuna

    if name == "random":
        return trial_seeded(optuna.samplers.RandomSampler, seed)
    if name == "qmc":  # the QMC sequence is indexed study-wide; only its independent sampler needs this
        return trial_seeded(optuna.samplers.QMCSampler, seed, scramble=True, warn_independent_sampling=False)
    if name == "tpe":
        return trial_seeded(optuna.samplers.TPESampler, seed, multivariate=True, group=True)
    return trial_seeded(optuna.samplers.NSGAIISampler, seed)


def trial_seeded(sampler_class, seed: int, **kwargs):
    """An instance of `sampler_class` whose random states are reseeded in place from
    (seed, trial number) before each trial."""
    from speccomp.core.seeding import derive_seed
    from speccomp_compat import sampler_random_states

    class TrialSeeded(sampler_class):
        def before_trial(self, study, trial) -> None:
            for name, state in sampler_random_states(self):
                state.seed(derive_seed(seed, "trial", trial.number, *name) % 2**32)
            super().before_trial(study, trial)

    TrialSeeded.__name__ = TrialSeeded.__qualname__ = f"TrialSeeded{sampler_class.__name__}"
    return TrialSeeded(seed=seed, **kwargs)


def make_pruner(name: str, n_seeds: int):
    import optuna

    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0)
    if name == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=2)
    if name == "wilcoxon":
        return optuna.pruners.WilcoxonPruner(p_threshold=0.1, n_startup_steps=1)
    return optuna.pruners.NopPruner()


def main(args: StudyOptions) -> int:
    import tracking  # noqa: F401  (MLflow environment first)
    from speccomp.core.config import ConfigError
    from study.space import SpaceError
    from study.storage import StorageError, describe, open_storage
    from tracking import store as tracking_store
    from tracking.runs import refused, stopped

    if tracking_store.has_password(args.storage):
        return _refuse_password(args.storage)
    if args.storage.strip().lower() in ("", "auto"):  # not given (MLproject's default is the word auto)
        args.storage = os.environ.get(STORAGE_ENV, "")
    try:
        settings, base, space, overrides = _validate(args)
        storage = open_storage(args.storage, on_stale=close_dead_trial_runs)
        _check_existing_study(storage, args)
        tracking_store.check_store(tracking_store.tracking_uri())
    except (ConfigError, SpaceError, StorageError) as exc:
        return refused(str(exc))
    try:
        return _run(args, settings, base, space, overrides, storage, describe(args.storage))
    except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM: the guard has ended the runs KILLED
        return stopped(exc, "the study's runs opened here ended KILLED, its running trial FAIL")
    except Exception as exc:
        from tracking.writer import RecordWriterFailed

        line = tracking_store.unreachable(exc)
        if line is None and isinstance(exc, RecordWriterFailed):  # e.g. the writer killed: a fault, in one line
            print(f"error: {exc}; this worker stopped, its runs whose records were not all written ended FAILED "
                  "with it (the trials Optuna holds are as they ended), its running trial FAIL in Optuna",
                  file=sys.stderr)
            return RECORDS_FAILED
        if line is None:
            raise
        print(f"error: {line}; this worker stopped, its running trial ended FAIL in Optuna", file=sys.stderr)
        return UNREACHABLE


def _check_existing_study(storage, args: StudyOptions) -> None:
    import optuna

    from study.objective import directions
    from study.storage import StorageError

    wanted = [optuna.study.StudyDirection.MAXIMIZE if d == "maximize" else optuna.study.StudyDirection.MINIMIZE
              for d in directions(args.objective)]
    try:
        existing = optuna.load_study(study_name=args.study_name, storage=storage)
    except KeyError:
        return
    if list(existing.directions) != wanted:
        have = ", ".join(d.name.lower() for d in existing.directions)
        raise StorageError(
            f"study_name: study {args.study_name!r} exists with directions [{have}], but objective "
            f"{args.objective!r} needs [{', '.join(w.name.lower() for w in wanted)}]; use another --study-name"
        )


def close_dead_trial_runs(study, trial) -> None:
    """A trial failed by the heartbeat (its worker was killed or lost): its MLflow run and the
    seed runs still open under it end FAILED with the reason, instead of staying RUNNING."""
    from mlflow import MlflowClient

    from study.objective import STATE_TAG
    from tracking.runs import record_error

    run_id = trial.user_attrs.get("mlflow_run_id")
    if not run_id:  # killed after Optuna made the trial, before its run existed: only a study run can be open
        message = (f"worker stopped responding (stale heartbeat) before Optuna trial {trial.number} of study "
                   f"{study.study_name!r} had a run")
        client = MlflowClient()
        experiments = [e.experiment_id for e in client.search_experiments()]
        for r in client.search_runs(experiments, filter_string="tags.`speccomp.role` = 'study' and "
                                    "attributes.status = 'RUNNING'", max_results=1000):
            if r.data.tags.get("optuna.study_name") == study.study_name:  # in Python: a name may hold quotes
                _close_dead_study_run(client, r.info.run_id, message, trial_known=False)
        return
    client = MlflowClient()
    run = client.get_run(run_id)
    children = client.search_runs(
        [run.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{run_id}'", max_results=1000
    )
    message = (f"worker stopped responding (stale heartbeat); Optuna trial {trial.number} of study "
               f"{study.study_name!r} was failed and re-queued")
    for r in [*children, run]:
        if r.info.status == "RUNNING":
            record_error(client, r.info.run_id, message)
            client.set_terminated(r.info.run_id, status="FAILED")
    client.set_tag(run_id, STATE_TAG, "FAIL")
    _close_dead_study_run(client, run.data.tags.get("mlflow.parentRunId"), message)


def _close_dead_study_run(client, run_id: str | None, message: str, trial_known: bool = True) -> None:
    """The dead worker's own study run (a worker started as `speccomp study` on its machine), when
    it is still RUNNING and its process is gone (this host) or cannot be checked (another host: its
    trial's heartbeat stopped, so the process stopped too). A run whose process is alive here (a
    launcher of `--workers N`, whose spawned worker died) is left to that process. Without
    `trial_known` (the dead trial had no run to name its study run) only a study run whose process
    is known gone on this host is ended."""
    from tracking.runs import record_error
    from tracking.stale import process_gone

    if not run_id:
        return
    study_run = client.get_run(run_id)
    if study_run.info.status != "RUNNING" or study_run.data.tags.get("speccomp.role") != "study":
        return
    gone = process_gone(study_run.data.tags)
    if gone is False or (gone is None and not trial_known):  # without the trial's run, only a known-dead process
        return
    record_error(client, run_id, f"{message}; the worker's study run ended FAILED with it")
    client.set_terminated(run_id, status="FAILED")


def _refuse_password(storage: str) -> int:
    """A password on the command line shows in `ps` and shell history, and `mlflow run -P
    storage=...` has already recorded it as a parameter of the run it created (MLflow logs every
    -P value before the command starts): refused, and that run ended FAILED and removed for good
    (`tracking.purge`: MLflow's deletion and garbage collection of that run), once `mlflow run`,
    which records the run's end after the command exits, is done with it."""
    from tracking import store
    from tracking.purge import owning_mlflow_run, purge_after, purge_run
    from tracking.store import redact_url

    message = (f"storage: {redact_url(storage)} carries a password, which is refused on the command line; "
               f"give the URL in the environment ({STORAGE_ENV}, used when --storage is empty) or the password in "
               "PGPASSWORD or ~/.pgpass, and --storage without it")
    run_id = os.environ.get("MLFLOW_RUN_ID")
    if not run_id:
        print(f"error: {message}", file=sys.stderr)
        return USER_ERROR
    from mlflow import MlflowClient

    from tracking.runs import fail_attached_run

    fail_attached_run(message)
    uri, client = store.tracking_uri(), MlflowClient()
    owner = owning_mlflow_run()
    if owner is not None:
        purge_after(run_id, owner)
        done = "is being removed for good (MLflow's delete and gc of that run) as soon as `mlflow run` ends"
    elif purge_run(client, uri, run_id):
        done = "is now removed for good (MLflow's delete and gc of that run)"
    else:
        done = (f"is now deleted; a tracking server keeps deleted runs until its operator runs `mlflow gc "
                f"--run-ids {run_id}` on its backend store")
    print(f"error: {message}; `mlflow run -P storage=...` had logged it as a parameter of run {run_id}, which "
          f"{done}; change the password", file=sys.stderr)
    return USER_ERROR


def _run(args, settings: Settings, base, space, overrides, storage, storage_text: str) -> int:
    import optuna

    from speccomp.core.task import task_for
    from study.objective import Objective, directions
    from study.records import StudyProgress, TrialLines, link_study, record_study, save_note, study_note
    from tracking import store
    from tracking.describe import closing_lines, run_url
    from tracking.pipeline import log_params, set_tags
    from tracking.progress import heartbeat, say
    from tracking.runs import RunTracker, guarded, parent_experiment
    from tracking.ui import seed_list

    settings.threads = _set_threads(settings)
    uri = store.configure()
    client = store.tracking_client()
    from speccomp.core import import_phase

    import_phase.end()  # the libraries are in (begun by the command line): trials collect without walking them
    attached = os.environ.get("MLFLOW_RUN_ID") or None
    parent_given = args.parent_run_id
    if parent_given and not _run_exists(client, parent_given):  # a spawned worker on another store
        print(f"error: parent_run_id: no run {parent_given} in the tracking store {store.redact_url(uri)}; a worker "
              "file names its launcher's study run, which must be in the same store", file=sys.stderr)
        return USER_ERROR
    if parent_given:  # a spawned worker: its launcher has tidied and prepared the experiment already
        experiment_id = client.get_run(parent_given).info.experiment_id
    else:
        experiment_id = parent_experiment(client, uri, args.experiment_name, attached)
    tracker = RunTracker(client, experiment_id)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=args.study_name,
        storage=storage,
        directions=directions(args.objective),
        sampler=make_sampler(args.sampler, settings.sampler_seed, len(directions(args.objective))),
        pruner=make_pruner(args.pruner, len(settings.seeds)),
        load_if_exists=True,
    )
    if study.user_attrs.get("objective") != args.objective:
        study.set_user_attr("objective", args.objective)  # the report leaves out a duplicate target
    beat = heartbeat("study", every_s=30.0) if not parent_given else contextlib.nullcontext()
    # The work folder outlives the guard: a stopped study's record writer still logs artifacts from
    # it while the guard ends the runs (`RunTracker.close_all`).
    with tempfile.TemporaryDirectory(prefix="speccomp-study-") as tmp, guarded(tracker), beat:
        if args.record_writer:  # the trials' records written beside the next trial (`tracking.writer`)
            from tracking.writer import DeferredClient

            client = tracker.client = DeferredClient.start(client, uri)
        if parent_given:
            parent = parent_given  # a spawned worker: the launcher owns the study run
        else:
            parent = tracker.open_parent(study_run_name(args, settings, task_for(base).name), attached)
            set_tags(client, parent, {
                # objective, sampler and pruner are params (study.*), the host is speccomp.host: no tag repeats them
                "speccomp.role": "study", "optuna.study_name": args.study_name, "optuna.storage": storage_text,
                "space": str(args.space), "seeds": seed_list(settings.seeds),
                "domain": task_for(base).name,
            })
            log_params(client, parent, _study_params(args, settings, space, base))
            link_study(study, args.objective, experiment_id, client.get_experiment(experiment_id).name, parent,
                       store.ui_command(uri), task_for(base).name)
            save_note(study, study_note(study, uri, experiment_id, parent))
        budget = settings.total_trials
        if settings.workers > 1 and budget is None:  # the invocation's n_trials, shared by its workers
            budget = _alive(study) + settings.n_trials
        helpers = (_spawn_workers(args, settings, parent, budget, base, Path(tmp))
                   if settings.workers > 1 else [])
        objective = Objective(
            base=base, space=space, seeds=settings.seeds, data_seed=settings.data_seed,
            measure=args.objective, tracker=tracker, study_run_id=parent, work_root=Path(tmp),
            total_trials=budget, pruning=args.pruner != "none", log_models=args.log_models, uri=uri,
        )
        started = time.perf_counter()
        try:
            ran = run_worker(study, objective, settings.n_trials, budget,
                             callbacks=[StudyProgress(client, parent),
                                        TrialLines(settings.n_trials, budget, settings.workers)],
                             storage=storage)
            if args.record_writer:
                client.wait()  # the last trial's records are part of the trials' time
            elapsed = time.perf_counter() - started  # this worker's trials (not the spawned workers' exit)
        except BaseException:
            for proc in helpers:  # stopped or failed: so are the workers it started (their runs end KILLED)
                proc.terminate()
            raise
        finally:
            for proc in helpers:
                proc.wait()
        if helpers and any(p.returncode != 0 for p in helpers):
            print(f"warning: {sum(p.returncode != 0 for p in helpers)} worker(s) exited with an error",
                  file=sys.stderr)
        report = None
        if not args.no_report and not parent_given:
            say("study: writing the sensitivity report ...")
            from study.report import build_report  # scikit-learn and scipy: only when a report is written

            report = build_report(study, Path(tmp) / "report")
            client.log_artifacts(parent, str(report.folder), "report")
        if not parent_given:
            record_study(client, parent, study, args.objective, report, task_for(base).name, uri=uri)
            tracker.finish(parent)
        if args.record_writer:
            client.close()  # every record written (a failure is the guard's); from here on, writes are made here
    print(f"\n{ran} trial(s) run here in {elapsed:.1f} s; study {args.study_name!r} in {storage_text}")
    if report is not None:
        print("\n".join(["", *report_summary(report.text),
                         "", f"full report (tables, figures): artifact report/report.md of the study run, "
                         f"{run_url(uri, experiment_id, parent)}"]))
    if not parent_given:
        print()
        print("\n".join(closing_lines(uri, client.get_run(parent).info)))
    return 0


def study_run_name(args: StudyOptions, settings: Settings, domain: str) -> str:
    """`study speccomp-sensitivity space quick seeds 123-125` (`raven` after `study` for the matrices
    domain): the study, its space file and its seeds."""
    from tracking.describe import domain_word, run_name

    return run_name("study", domain_word(domain) if domain != "spectra" else "", args.study_name,
                    f"space {Path(str(args.space)).stem}", seeds=settings.seeds)


def report_summary(text: str) -> list[str]:
    """The report's opening lines and its summary section (up to the next section), not its tables."""
    out, section = [], None
    for line in text.splitlines():
        if line.startswith("## "):
            section = line
        if section is None or section.startswith("## Summary"):
            out.append(line)
    while out and not out[-1].strip():
        out.pop()
    return out


def _run_exists(client, run_id: str) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        client.get_run(run_id)
    except MlflowException:
        return False
    return True


def _set_threads(settings: Settings) -> int:
    """Torch's intra-op threads for this worker: `--threads`, else one
    (`speccomp.core.threads`): threads that each want a core slow each other down many times over
    when workers (or other processes) hold the cores (OpenMP threads spin while they wait)."""
    from speccomp.core.threads import apply_threads

    return apply_threads(settings.threads)


def _alive(study) -> int:
    from optuna.trial import TrialState

    states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)
    return len(study.get_trials(deepcopy=False, states=states))


def _study_params(args, settings: Settings, space, base) -> dict[str, str]:
    """The study run's params: its settings, the space's distributions, and the base config's
    params that no search dimension varies (names as in the `run` runs, so the columns line up)."""
    from tracking.ui import run_params

    varied = {p.name for p in space.params}
    return ({"study.objective": args.objective, "study.sampler": args.sampler,
             "study.sampler_seed": str(settings.sampler_seed), "study.pruner": args.pruner,
             "study.n_trials": str(settings.n_trials), "study.workers": str(settings.workers)}
            | {f"space.{p.name}": str(p.distribution) for p in space.params}
            | {k: v for k, v in run_params(base).items() if k not in varied})


SILENT_BEATS = 1.5
"""A trial whose heartbeat is older than this many intervals may have lost its worker."""


def run_worker(study, objective, n_trials: int, budget: int | None, callbacks=(), storage=None) -> int:
    """Run up to `n_trials` trials, stopping early when the study holds `budget` trials.

    When the budget is reached while a trial of another worker has missed its heartbeats (its
    worker may have died: SIGKILL, a lost machine), that trial only frees its place when the
    heartbeat's grace period fails it, and is then re-queued (WAITING) for someone to run. So the
    worker (given the heartbeat `storage`) waits while such a silent trial exists, at most the
    grace period plus two beats, and runs the re-queued trial if one appears. Trials that keep
    beating for `SILENT_BEATS` intervals after the budget is reached are left to their workers (a
    worker that dies later than that is re-run only by a worker still running)."""
    import optuna

    from speccomp_compat import silent_trial_ids
    from speccomp_compat import study_id as id_of
    from study.objective import SurplusTrial
    from study.storage import GRACE_PERIOD_S, HEARTBEAT_INTERVAL_S
    from tracking import interrupts

    def held_as_it_returns(trial):
        """The objective, with Ctrl-C and SIGTERM held from its end until Optuna has recorded the
        trial (`tracking.interrupts.hold`; released after `optimize`)."""
        try:
            return objective(trial)
        finally:
            interrupts.hold()

    limit = GRACE_PERIOD_S + 2 * HEARTBEAT_INTERVAL_S
    ran, waited_since = 0, None
    while ran < n_trials:
        if budget is not None and _alive(study) >= budget:
            if storage is None:
                break
            optuna.storages.fail_stale_trials(study)  # a dead worker's trial: FAIL, its retry queued
            if not study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,)):
                if not study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
                    break
                waited_since = waited_since or time.monotonic()
                waited = time.monotonic() - waited_since
                silent = silent_trial_ids(storage, id_of(study), SILENT_BEATS * HEARTBEAT_INTERVAL_S)
                if waited > limit or (not silent and waited >= SILENT_BEATS * HEARTBEAT_INTERVAL_S):
                    break  # every running trial has beaten since we started waiting: its worker is alive
                time.sleep(min(2.0, HEARTBEAT_INTERVAL_S / 2))
                continue
        try:
            study.optimize(held_as_it_returns, n_trials=1, catch=(ValueError, RuntimeError, ArithmeticError),
                           callbacks=list(callbacks))
        except SurplusTrial:
            break  # another worker filled the budget between our check and our trial
        finally:
            interrupts.release()  # a Ctrl-C since the objective returned acts here
        ran += 1
        waited_since = None
    return ran


def _spawn_workers(args: StudyOptions, settings: Settings, parent: str, budget: int | None,
                   base, folder: Path) -> list[subprocess.Popen]:
    """Start `workers - 1` more processes on this machine, each reading the same worker file."""
    path = write_worker_file(args, settings, parent, budget, base, folder)
    argv = [sys.executable, "-m", "speccomp_cli", "study-worker", str(path)]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_RUN_ID"}
    env[STORAGE_ENV] = args.storage  # not in the file nor on the command line: it may hold a password
    return [subprocess.Popen(argv, env=env) for _ in range(settings.workers - 1)]


def write_worker_file(args: StudyOptions, settings: Settings, parent: str, budget: int | None, base,
                      folder: Path) -> Path:
    """The options of a spawned worker as JSON: the launcher's, resolved (seeds, base config), one
    worker each, no report, attached to the launcher's study run; the storage URL left out."""
    options = dataclasses.replace(
        args, storage="", seeds=settings.seeds, workers=1, threads=settings.threads, total_trials=budget,
        sampler_seed=settings.sampler_seed,
        parent_run_id=parent, no_report=True, resolved_config=base.to_dict(), presets=[], config_dir=None,
    )
    path = folder / "worker.json"
    path.write_text(json.dumps(dataclasses.asdict(options)))
    return path


def read_worker_file(path: str | Path) -> StudyOptions:
    """The options `write_worker_file` wrote. A file that cannot be read, is not JSON (e.g.
    truncated), or whose fields are missing, unknown or of the wrong type raises ConfigError (one
    line naming the file and what is wrong) before any run or trial exists."""
    from speccomp.core.config import ConfigError

    def refuse(what: str) -> ConfigError:
        return ConfigError(f"worker file {path}: {what}")

    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise refuse(f"cannot be read ({getattr(exc, 'strerror', None) or exc})") from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise refuse(f"not valid JSON ({exc.msg}: line {exc.lineno} column {exc.colno}; truncated?)") from None
    if not isinstance(raw, dict):
        raise refuse(f"holds a JSON {type(raw).__name__}; expected an object of StudyOptions fields")
    hints = typing.get_type_hints(StudyOptions)
    unknown = sorted(set(raw) - set(hints))
    missing = [name for name in hints if name not in raw]
    if unknown:
        raise refuse(f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(hints)}")
    if missing:
        raise refuse(f"missing field(s) {', '.join(missing)} (a worker file holds every field)")
    for name, hint in hints.items():
        if not _has_type(raw[name], hint):
            raise refuse(f"field {name}: {json.dumps(raw[name])[:60]} is not of type {_type_name(hint)}")
    if raw["resolved_config"] is not None:
        from speccomp.core.task import config_from_any_dict

        try:
            config_from_any_dict(raw["resolved_config"])
        except ConfigError as exc:
            raise refuse(f"field resolved_config: {exc}") from None
    return StudyOptions(**raw)


def _has_type(value, hint) -> bool:
    """Whether a JSON value fits a field annotation (int, str, bool, dict, list[X], X | None)."""
    if hint is type(None):
        return value is None
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return any(_has_type(value, arg) for arg in typing.get_args(hint))
    if typing.get_origin(hint) is list:
        (item,) = typing.get_args(hint)
        return isinstance(value, list) and all(_has_type(v, item) for v in value)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    origin = typing.get_origin(hint) or hint
    return isinstance(value, origin)


def _type_name(hint) -> str:
    return hint.__name__ if isinstance(hint, type) else str(hint)


