"""What a study shows in the MLflow UI and in optuna-dashboard: the study run's own metrics and
description, the trials' descriptions, objective names, links between the two tools, compact
user attributes.

Study-run metrics (step = trial number for the per-trial ones, so they draw as curves over the
study): `study/value` (each finished trial's objective value; `study/value/0`, `/1` for two
objectives), `study/best_value` (best so far), `study/trial_wall_s` (the trial's wall time); at the
end, over the whole study (every worker's trials): `study/n_trials`, `study/n_complete`,
`study/n_pruned`, `study/n_failed`, `study/wall_s_per_trial` (mean over finished trials), and
`study/best_value` with the tag `best_trial` (single objective) or `study/n_pareto` (two).
"""

from __future__ import annotations

import math
import threading
import warnings
from collections.abc import Mapping, Sequence

import optuna
import pandas as pd
from optuna.trial import FrozenTrial, TrialState

from tracking.pipeline import log_metric_dict, set_tags
from tracking.ui import markdown_rows, set_description, summary_description

OBJECTIVE_NAMES = {
    "test_mse": ["test MSE (tracked, mean)"],
    "gap": ["gap (tracked, mean)"],
    "transfer": ["transfer (tracked, mean)"],
    "pareto": ["in-distribution (val) MSE, tracked", "test MSE, tracked"],
}
"""Objective names shown by optuna-dashboard (instead of "Objective 0")."""
MATRICES_OBJECTIVE_NAMES = {
    "test": ["test error (1 - test/acc, mean)"],
    "gap": ["gap/acc (val/acc - test/acc, mean)"],
    "pareto": ["in-distribution (val) error", "test error"],
}
"""The same for the matrices domain."""


def objective_names(measure: str, n_objectives: int, domain: str = "spectra") -> list[str]:
    names = (MATRICES_OBJECTIVE_NAMES if domain == "matrices" else OBJECTIVE_NAMES).get(measure, [])
    return names if len(names) == n_objectives else [f"{measure} {i}" for i in range(n_objectives)]


def link_study(study: optuna.Study, measure: str, experiment_id: str, experiment_name: str, run_id: str,
               ui_hint: str, domain: str = "spectra") -> None:
    """Objective names and the way back to MLflow, as study user attributes (optuna-dashboard
    shows them on the study page)."""
    names = objective_names(measure, len(study.directions), domain)
    if study.metric_names != names:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(names)
    attrs = {"mlflow_experiment": f"{experiment_name} (id {experiment_id})", "mlflow_study_run_id": run_id,
             "mlflow_ui": ui_hint}
    for key, value in attrs.items():
        if study.user_attrs.get(key) != value:
            study.set_user_attr(key, value)


def compact_seeds(per_seed: Mapping[int, Mapping[str, float]]) -> str:
    """The per-seed measures a reader compares, as one short line for optuna-dashboard:
    "123: test_mse 0.0118, gap 1.2; 124: ..." (matrices: "123: test_error 0.79, gap_acc -0.07; ...";
    ASCII: the dashboard shows other characters as JSON escapes)."""
    shown = (("test_mse", "test/mse/tracked"), ("transfer", "transfer/tracked"), ("gap", "gap/tracked"),
             ("test_error", "test/error"), ("gap_acc", "gap/acc"))
    parts = []
    for seed, measures in per_seed.items():
        values = [f"{name} {measures[key]:.3g}" for name, key in shown
                  if key in measures and measures[key] is not None and math.isfinite(measures[key])]
        parts.append(f"{seed}: {', '.join(values)}")
    return "; ".join(parts)


# ------------------------------------------------------------------------------------------------
# the study run's metrics
# ------------------------------------------------------------------------------------------------
class StudyProgress:
    """Optuna callback: after every trial this worker finishes, its value, the best value so far
    and its wall time go to the study run at step = trial number."""

    def __init__(self, client, run_id: str):
        self.client = client
        self.run_id = run_id
        self._lock = threading.Lock()

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        metrics = {}
        if trial.values is not None and trial.state == TrialState.COMPLETE:
            values = trial.values
            metrics.update({"study/value": values[0]} if len(values) == 1 else
                           {f"study/value/{i}": v for i, v in enumerate(values)})
        best = best_value(study)
        if best is not None:
            metrics["study/best_value"] = best
        if trial.duration is not None:
            metrics["study/trial_wall_s"] = trial.duration.total_seconds()
        with self._lock:
            log_metric_dict(self.client, self.run_id, metrics, step=trial.number)


def best_value(study: optuna.Study) -> float | None:
    if len(study.directions) != 1:
        return None
    try:
        return float(study.best_value)
    except ValueError:  # no complete trial yet
        return None


def study_summary(study: optuna.Study) -> dict[str, float]:
    """Counts, wall time per trial and best value over the whole study."""
    trials = study.get_trials(deepcopy=False)
    count = {s: sum(t.state == s for t in trials) for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
    walls = [t.duration.total_seconds() for t in trials if t.duration is not None and t.state.is_finished()]
    out = {"study/n_trials": float(len(trials)), "study/n_complete": float(count[TrialState.COMPLETE]),
           "study/n_pruned": float(count[TrialState.PRUNED]), "study/n_failed": float(count[TrialState.FAIL])}
    if walls:
        out["study/wall_s_per_trial"] = sum(walls) / len(walls)
    best = best_value(study)
    if best is not None:
        out["study/best_value"] = best
    elif len(study.directions) > 1 and count[TrialState.COMPLETE]:
        out["study/n_pareto"] = float(len(study.best_trials))
    return out


def record_study(client, run_id: str, study: optuna.Study, measure: str, report=None,
                 domain: str = "spectra") -> dict[str, float]:
    """The study run's final metrics, `best_trial` tags and its description."""
    summary = study_summary(study)
    last = max((t.number for t in study.get_trials(deepcopy=False)), default=0)
    log_metric_dict(client, run_id, summary, step=last)
    best = _best_trial(study)
    if best is not None:
        set_tags(client, run_id, {"best_trial": str(best.number),
                                  "best_trial_run_id": best.user_attrs.get("mlflow_run_id", "")})
    set_description(client, run_id, study_description(study, measure, summary, best, report, domain))
    return summary


def _best_trial(study: optuna.Study) -> FrozenTrial | None:
    if len(study.directions) != 1:
        return None
    try:
        return study.best_trial
    except ValueError:
        return None


def study_description(study: optuna.Study, measure: str, summary: Mapping[str, float], best: FrozenTrial | None,
                      report=None, domain: str = "spectra") -> str:
    names = objective_names(measure, len(study.directions), domain)
    lines = [f"**study {study.study_name}** · objective: {', '.join(names)} · "
             f"{int(summary['study/n_trials'])} trials: {int(summary['study/n_complete'])} complete, "
             f"{int(summary['study/n_pruned'])} pruned, {int(summary['study/n_failed'])} failed"
             + (f" · {summary['study/wall_s_per_trial']:.1f} s per trial" if "study/wall_s_per_trial" in summary
                else ""), ""]
    if best is not None:
        params = ", ".join(f"{k} = {_short(v)}" for k, v in best.params.items())
        lines += [f"Best trial: **#{best.number}**, value {best.value:.4g} ({params}); its run is the child "
                  f"`trial-{best.number}`.", ""]
    elif "study/n_pareto" in summary:
        lines += [f"Pareto front: {int(summary['study/n_pareto'])} trials (`report/pareto.png`).", ""]
    top = _top_importances(report)
    if top:
        lines += ["Most important settings (fANOVA; full table, intervals and tests in `report/report.md`):", "",
                  markdown_rows(["target", "setting", "importance"], top), ""]
    lines.append("Report: `report/report.md` (tables), `report/importances.png`, the effect figures and "
                 "`report/trials.csv`; curves here are per trial number.")
    return "\n".join(lines)


def _top_importances(report) -> list[list[str]]:
    imp = getattr(report, "importances", None)
    if imp is None or imp.empty:
        return []
    ok = imp.dropna(subset=["param"])
    ok = ok[ok["evaluator"] == "fanova"]
    rows = []
    for target, block in ok.groupby("target", sort=False):
        row = block.loc[block["importance"].idxmax()]
        ci = ""
        if "ci_low" in block and math.isfinite(row.get("ci_low", math.nan)):
            ci = f" [{row['ci_low']:.2f}, {row['ci_high']:.2f}]"
        rows.append([str(target), str(row["param"]), f"{row['importance']:.2f}{ci}"])
    return rows


def _short(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def trial_description(trial, study_name: str, summary: pd.DataFrame, tracked: Sequence[str]) -> str:
    """A trial run's description: its settings and the headline table over its seeds."""
    params = ", ".join(f"{k} = {_short(v)}" for k, v in trial.params.items())
    title = f"**trial {trial.number}** of study {study_name} · {params}"
    return summary_description(title, summary, tracked)
