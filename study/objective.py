"""The Optuna objective: a trial trains all the study's seeds on the trial's config, tracked as an
MLflow run (nested under the study's run) whose children are the seeds' runs.

Seeds are trained in chunks (the first seed, then the rest as one ensemble) so that seed-level
results can be reported as intermediate values (step = seed index) before the rest is trained:
median, successive-halving and Wilcoxon pruners then stop hopeless trials after one seed. A
seed gives the same result alone or in an ensemble, so chunking changes no number. Without a
pruner the seeds train together and their values are reported once all are done (optuna-dashboard
draws them as the trial's intermediate values). Each trial leaves an optuna-dashboard note linking
its MLflow run and its seed runs.
"""

from __future__ import annotations

import logging
import math
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import optuna
import pandas as pd

from speccomp.core.config import ExperimentConfig
from speccomp.core.task import Task, get_task, task_for
from speccomp_compat import filter_trial_failure_logs
from study.records import compact_seeds, save_note, trial_description, trial_note
from study.space import SearchSpace
from tracking.pipeline import (
    log_metric_dict,
    log_params,
    log_parent_artifacts,
    log_parent_summary,
    run_tracked_experiment,
    set_tags,
)
from tracking.progress import set_stage
from tracking.runs import RunTracker
from tracking.ui import run_params, set_description
from tracking.writer import RecordWriterFailed, discard

MEASURES = {
    "test_mse": "mean test MSE of the tracked components (minimise)",
    "gap": "mean compositional gap of the tracked components (minimise; reads about 1 when nothing was learned)",
    "transfer": "mean transfer of the tracked components, combination skill ÷ in-distribution skill (maximise); "
                "a trial in which no seed learned every tracked component has no value (FAIL, counted in the report)",
    "pareto": "two objectives: in-distribution (val) MSE and test MSE of the tracked components, both where the "
              "component is present (Pareto front); matrices: val and test error",
    "test": "the domain's test measure (minimise): spectra the test MSE of the tracked components (as test_mse), "
            "matrices the test error 1 - test/acc",
}
STATE_TAG = "optuna.trial_state"


class SurplusTrial(Exception):
    """Another worker already filled the study's trial budget; this trial is not run."""


class _TrialErrorInOneLine(logging.Filter):
    """Optuna logs a trial's exception with its traceback; a surplus trial (a race at the end of a
    shared budget, not an error) is its one line, and so are a Ctrl-C or SIGTERM (the user's
    doing, said in one line when the study stops) and a record writer's failure (a fault the study
    then reports in one line, `study.main`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], SurplusTrial | RecordWriterFailed | KeyboardInterrupt):
            record.exc_info, record.exc_text = None, None
        return True


filter_trial_failure_logs(_TrialErrorInOneLine())


def objective_values(measures: dict[str, float], measure: str, task: Task) -> tuple[float, ...]:
    """The values a trial (or one seed) reports for objective `measure`: the domain's measures behind
    it (`Task.study_objectives`), one per objective."""
    return tuple(measures[key] for key in task.study_objectives[measure])


def check_measure(measure: str, domain: str) -> None:
    """Refuse an objective the domain does not define (one line naming `objective`, exit 2)."""
    task = get_task(domain)
    if measure not in task.study_objectives:
        from speccomp.core.config import ConfigError
        from speccomp.core.task import TASKS

        owners = " or ".join(sorted(t.name for t in TASKS.values() if t is not task and measure in t.study_objectives))
        allowed = [m for m in MEASURES if m in task.study_objectives]
        raise ConfigError(f"objective: {measure} is {f'a {owners} measure' if owners else 'not a measure of any domain'}; "
                          f"allowed for the {domain} domain: {', '.join(allowed)}")


def directions(measure: str) -> list[str]:
    if measure == "pareto":
        return ["minimize", "minimize"]
    return ["maximize"] if measure == "transfer" else ["minimize"]


@dataclass
class Objective:
    base: ExperimentConfig
    space: SearchSpace
    seeds: list[int]
    data_seed: int
    measure: str
    tracker: RunTracker
    study_run_id: str
    work_root: Path
    total_trials: int | None = None
    pruning: bool = False
    log_models: bool = False
    uri: str | None = None
    """The tracking URI, for the links of the trial's optuna-dashboard note (None: the current one)."""

    def seed_chunks(self) -> list[list[int]]:
        if self.pruning and len(self.seeds) > 1:
            return [self.seeds[:1], self.seeds[1:]]
        return [self.seeds]

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, ...]:
        self._check_budget(trial)
        values, overrides = self.space.suggest(trial)
        cfg = task_for(self.base).config_from_dict(self.base.to_dict(), overrides)
        client = self.tracker.client
        run_id = self.tracker.start(
            f"trial-{trial.number}",
            parent_id=self.study_run_id,
            tags={
                "optuna.study_name": trial.study.study_name,
                "optuna.trial_number": str(trial.number),
                STATE_TAG: "RUNNING",
                "speccomp.role": "trial",
            },
        )
        trial.set_user_attr("mlflow_run_id", run_id)
        params = run_params(cfg)
        log_params(client, run_id, {**params, **{f"trial.{k}": str(v) for k, v in values.items()}})
        work = self.work_root / f"trial-{trial.number}"
        set_stage(f"trial {trial.number}")
        self._seed_runs: dict[int, str] = {}
        try:
            value, last_step = self._train(trial, cfg, run_id, params, work)
            values = value if isinstance(value, tuple) else (value,)
            finite = all(math.isfinite(v) for v in values)
            objective = {f"objective/{i}" if len(values) > 1 else "objective": v for i, v in enumerate(values)}
            log_metric_dict(client, run_id, objective, step=last_step,  # with the state: one store call
                            tags={STATE_TAG: "COMPLETE" if finite else "FAIL"})
        except optuna.TrialPruned:
            set_tags(client, run_id, {STATE_TAG: "PRUNED"})
            self.tracker.finish(run_id)
            self._note(trial, run_id, "PRUNED")
            raise
        except BaseException as exc:
            set_tags(client, run_id, {STATE_TAG: "FAIL"})
            status = "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"
            self.tracker.close_all(status, error=f"{type(exc).__name__}: {exc}", under=run_id)
            raise
        finally:
            discard(client, work)  # with a record writer: once the artifacts queued from it are written
        if not finite:
            # Optuna fails a trial whose value is NaN; here that means "not learned", which the
            # report counts per setting (the trial's measures are in its user attributes).
            print(f"trial {trial.number}: {task_for(cfg).study_no_value(cfg, self.measure)}", file=sys.stderr)
        self.tracker.finish(run_id)
        self._note(trial, run_id, "COMPLETE" if finite else "FAIL",
                   ", ".join(f"{v:.3g}" for v in values) if finite else "no value (not learned)")
        return value

    def _note(self, trial: optuna.Trial, run_id: str, state: str, value_text: str = "") -> None:
        """The trial's optuna-dashboard note: links to its MLflow run and its seed runs."""
        from tracking.store import tracking_uri

        save_note(trial, trial_note(trial.number, self.uri or tracking_uri(), self.tracker.experiment_id, run_id,
                                    self._seed_runs, state, value_text))

    def _check_budget(self, trial: optuna.Trial) -> None:
        if self.total_trials is None:
            return
        alive = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED,
                 optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING)
        earlier = [t for t in trial.study.get_trials(deepcopy=False, states=alive) if t.number < trial.number]
        if len(earlier) >= self.total_trials:
            trial.set_user_attr("surplus", True)
            raise SurplusTrial(f"the study already holds {len(earlier)} of {self.total_trials} trials")

    def _train(self, trial: optuna.Trial, cfg: ExperimentConfig, run_id: str, params: dict[str, str], work: Path):
        """The trial's value (a tuple for several objectives) and its last step."""
        task = task_for(cfg)
        summaries, trajectories, per_seed = [], [], {}
        datasets = task.generate(cfg, self.data_seed)  # once, whatever the number of chunks
        train_s = 0.0
        for i, chunk in enumerate(self.seed_chunks()):
            te = run_tracked_experiment(
                self.tracker, run_id, cfg, self.data_seed, chunk, work / f"chunk-{i}", params,
                tags={"optuna.study_name": trial.study.study_name, "optuna.trial_number": str(trial.number)},
                log_models=self.log_models, figures=False, datasets=datasets,
            )
            self._seed_runs.update(te.child_run_ids)
            train_s += te.experiment.timings_s["train"]
            summaries.append(te.experiment.summary)
            trajectories.append(te.experiment.result.trajectory)
            for r in te.experiment.result.seeds:
                per_seed[r.seed] = task.seed_measures(cfg, r.final)
            if self.pruning:
                for seed in chunk:
                    trial.report(objective_values(per_seed[seed], self.measure, task)[0],
                                 step=self.seeds.index(seed))
                if i < len(self.seed_chunks()) - 1 and trial.should_prune():
                    self._record(trial, cfg, run_id, summaries, trajectories, per_seed, work, train_s)
                    raise optuna.TrialPruned(f"pruned after seeds {list(per_seed)}")
        self._record(trial, cfg, run_id, summaries, trajectories, per_seed, work, train_s)
        if not self.pruning and len(trial.study.directions) == 1:  # seed-level values, for the dashboard's chart
            for index, seed in enumerate(self.seeds):
                seed_value = objective_values(per_seed[seed], self.measure, task)[0]
                if math.isfinite(seed_value):
                    trial.report(seed_value, step=index)
        mean = {k: float(pd.Series([m[k] for m in per_seed.values()]).mean()) for k in next(iter(per_seed.values()))}
        values = objective_values(mean, self.measure, task)
        last_step = int(pd.concat(trajectories)["step"].max())
        return (values[0] if len(values) == 1 else values), last_step

    def _record(self, trial, cfg: ExperimentConfig, run_id, summaries, trajectories, per_seed, folder: Path,
                train_s: float) -> None:
        """Trial-level metrics (across-seed mean, std) and per-seed measures as user attributes;
        `train_seconds`, the trial's own training time (optimiser steps and evaluations), beside its
        duration: what a trial costs beyond it is tracking and set-up (`benchmarks/bench_study.py`)."""
        client = self.tracker.client
        summary = pd.concat(summaries, ignore_index=True)
        trajectory = pd.concat(trajectories, ignore_index=True)
        summary.to_csv(folder / "summary.csv", index=False)
        trajectory.to_csv(folder / "trajectory_data.csv", index=False)
        shutil.copy(folder / "chunk-0" / "config.yaml", folder / "config.yaml")
        measures = pd.DataFrame.from_dict(per_seed, orient="index")
        extra = measures.drop(columns=[c for c in measures.columns if c in summary.columns])  # matrices: already finals
        log_parent_summary(client, run_id, summary, trajectory, extra=extra)
        tracked = [c.removeprefix("test/mse/") for c in summary.columns if c.startswith("test/mse/")]
        set_description(client, run_id, trial_description(trial, trial.study.study_name, summary, tracked))
        trial.set_user_attr("seeds", compact_seeds(per_seed))
        trial.set_user_attr("train_seconds", round(train_s, 4))
        for key, value in task_for(cfg).study_trial_attrs(cfg).items():  # what the report reads beside the measures
            trial.set_user_attr(key, value)
        for key in measures.columns:  # every per-seed measure of the domain (`Task.seed_measures`)
            values = measures[key].dropna()
            trial.set_user_attr(key.replace("/", "_") + "_mean", float(values.mean()) if len(values) else None)
            trial.set_user_attr(key.replace("/", "_") + "_std", float(values.std(ddof=1)) if len(values) > 1 else 0.0)
        trial.set_user_attr("tracked", list(summary.filter(like="test/mse/").columns.str.removeprefix("test/mse/")))
        log_parent_artifacts(client, run_id, folder)


TRIAL_LOG_EVERY_N_STEP = 4
"""Where the config logs `train/loss` at every step (the spectra default), a trial's seed runs log
it at every 4th step and the last: 128 points a seed in the quick space, plenty for the UI's
chart; writing every step was a third of what a trial cost beyond its training
(`benchmarks/bench_study.py`). The trial's `trajectory_data.csv` keeps the loop's own
per-checkpoint loss; `--set training.log_every_n_step=1` logs every step."""


def configure_trial_size(overrides: list[str], log_every_n_step: int | None = None) -> list[str]:
    """Defaults every trial gets unless the space or the user says otherwise: no checkpoint files
    (a trial logs no weights unless asked: `--log-models` logs each seed's final model, `--set
    training.checkpoint_retention=last` keeps the last checkpoint), so that a study of hundreds of
    trials neither fills the disk nor spends its time copying weights; and, given the config's
    `log_every_n_step` (None: not known yet), the training loss at every
    `TRIAL_LOG_EVERY_N_STEP`-th step where the config would log every step."""
    defaults = ["training.checkpoint_retention=none"]
    named = any(o.split("=", 1)[0].strip() == "training.log_every_n_step" for o in overrides)
    if log_every_n_step == 1 and not named:
        defaults.append(f"training.log_every_n_step={TRIAL_LOG_EVERY_N_STEP}")
    return [*defaults, *overrides]
