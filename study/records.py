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

from tracking.describe import link, run_url, sig
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
# the console: one line per finished trial
# ------------------------------------------------------------------------------------------------
def short_params(params: Mapping[str, object], width: int = 120) -> str:
    """A trial's settings in short: the last part of each dotted name, values to 3 significant
    digits (`model_type linear, learning_rate 0.00198, pair comp10+comp8`), cut to `width`."""
    text = ", ".join(f"{k.rsplit('.', 1)[-1]} {_short(v)}" for k, v in params.items())
    return text if len(text) <= width else text[:width - 1] + "…"


def trial_line(study: optuna.Study, trial: FrozenTrial, done: int, planned: int | None, elapsed_s: float,
               eta_s: float | None) -> str:
    """`trial 3 COMPLETE · model_type linear, ... · value 0.0579 · best 0.0412 (#1) · 4/10 · 1 min 2 s
    elapsed · ETA 2 min 30 s`: what the console says when a trial ends."""
    from tracking.progress import duration

    parts = [f"trial {trial.number} {trial.state.name}", short_params(trial.params)]
    if trial.values is not None:
        parts.append("value " + ", ".join(sig(v) for v in trial.values))
    elif trial.state == TrialState.PRUNED:
        parts.append(f"pruned at step {trial.last_step}" if trial.last_step is not None else "pruned")
    else:
        parts.append("no value")
    best = _best_trial(study)
    if best is not None:
        parts.append(f"best {sig(best.value)} (#{best.number})")
    elif len(study.directions) > 1 and any(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False)):
        parts.append(f"Pareto front {len(study.best_trials)}")
    parts.append(f"{done}/{planned}" if planned else f"{done} done")
    parts.append(f"{duration(elapsed_s)} elapsed")
    if eta_s is not None and math.isfinite(eta_s) and eta_s > 0:
        parts.append(f"ETA {duration(eta_s)}")
    return " · ".join(parts)


class TrialLines:
    """Optuna callback: the console line of every trial this worker finishes (`trial_line`, on
    stderr, as the trial ends). `planned`: the trials this worker means to run; `budget`: the
    study-wide budget it shares with `workers - 1` others (None: none). The ETA is the mean wall
    time of this worker's trials times what is left of its share."""

    def __init__(self, planned: int, budget: int | None = None, workers: int = 1, clock=None):
        import time

        self.planned = planned
        self.budget = budget
        self.workers = max(workers, 1)
        self.clock = clock or time.monotonic
        self.started = self.clock()
        self.done = 0

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        from tracking.progress import say

        self.done += 1
        elapsed = self.clock() - self.started
        left = self.planned - self.done
        if self.budget is not None:
            finished = sum(t.state.is_finished() for t in study.get_trials(deepcopy=False))
            left = min(left, math.ceil(max(self.budget - finished, 0) / self.workers))
        say(trial_line(study, trial, self.done, self.planned, elapsed, elapsed / self.done * max(left, 0)))


# ------------------------------------------------------------------------------------------------
# optuna-dashboard notes
# ------------------------------------------------------------------------------------------------
def save_note(study_or_trial, body: str) -> bool:
    """`optuna_dashboard.save_note` (markdown shown on the study's or trial's page in
    optuna-dashboard), where optuna-dashboard is installed; returns whether the note was saved.
    (Its note module alone, `speccomp_compat.dashboard_notes`: the package would import its web app
    and scikit-learn.)"""
    from speccomp_compat import dashboard_notes

    notes = dashboard_notes()
    if notes is None:  # the dashboard is a user tool; a study runs without it
        return False
    notes.save_note(study_or_trial, body)
    return True


def trial_note(number: int, uri: str, experiment_id: str, run_id: str, seed_runs: Mapping[int, str],
               state: str, value_text: str = "") -> str:
    """A trial's optuna-dashboard note: links to its MLflow run and to each seed's run."""
    seeds = ", ".join(link(f"seed {seed}", run_url(uri, experiment_id, rid)) for seed, rid in seed_runs.items())
    lines = [f"**trial {number}** {state}" + (f": {value_text}" if value_text else ""), "",
             f"MLflow: {link(f'trial-{number}', run_url(uri, experiment_id, run_id))} (description, curves, "
             "summary.csv)" + (f"; seed runs {seeds}" if seeds else "")]
    return "\n".join(lines)


def study_note(study: optuna.Study, uri: str, experiment_id: str, run_id: str, verdict_line: str | None = None) -> str:
    """The study's optuna-dashboard note: what it found (when known), links to the study's MLflow
    run (its description and report), the experiment's headline view and the best trial's run."""
    from tracking.describe import experiment_url

    lines = [f"**{verdict_line}**" if verdict_line else f"**study {study.study_name}**: running", "",
             f"- MLflow study run: {link(study.study_name, run_url(uri, experiment_id, run_id))} (description, "
             "report/report.md with the figures, per-trial curves)",
             f"- all runs: {link('headline view', experiment_url(uri, experiment_id))}"]
    best = _best_trial(study)
    if best is not None and best.user_attrs.get("mlflow_run_id"):
        lines.append(f"- best trial #{best.number}: "
                     f"{link(f'trial-{best.number}', run_url(uri, experiment_id, best.user_attrs['mlflow_run_id']))}")
    lines += ["", "Importances: the report leads with fANOVA (share of the variance a setting explains over the "
              "whole space); this dashboard's panel computes PED-ANOVA (how differently a setting is distributed "
              "among the best trials). Where they disagree, the report's rank tests decide."]
    return "\n".join(lines)


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
                 domain: str = "spectra", uri: str | None = None) -> dict[str, float]:
    """The study run's final metrics, `best_trial` tags, its description, and the study's
    optuna-dashboard note (both open with the same verdict)."""
    from tracking.store import tracking_uri

    uri = uri or tracking_uri()
    summary = study_summary(study)
    last = max((t.number for t in study.get_trials(deepcopy=False)), default=0)
    log_metric_dict(client, run_id, summary, step=last)
    best = _best_trial(study)
    if best is not None:
        set_tags(client, run_id, {"best_trial": str(best.number),
                                  "best_trial_run_id": best.user_attrs.get("mlflow_run_id", "")})
    experiment_id = client.get_run(run_id).info.experiment_id
    set_description(client, run_id, study_description(study, measure, summary, best, report, domain,
                                                      uri=uri, experiment_id=experiment_id))
    save_note(study, study_note(study, uri, experiment_id, run_id,
                                study_verdict(study, measure, summary, best, report, domain)))
    return summary


def _best_trial(study: optuna.Study) -> FrozenTrial | None:
    if len(study.directions) != 1:
        return None
    try:
        return study.best_trial
    except ValueError:
        return None


def study_verdict(study: optuna.Study, measure: str, summary: Mapping[str, float], best: FrozenTrial | None,
                  report=None, domain: str = "spectra") -> str:
    """One line: the best trial (or the Pareto front) and the report's first significant effect,
    or that none was found."""
    names = objective_names(measure, len(study.directions), domain)
    complete = int(summary.get("study/n_complete", 0))
    if best is not None:
        head = (f"best of {complete} complete trials: #{best.number}, {names[0]} {sig(best.value)} "
                f"({short_params(best.params, 100)})")
    elif "study/n_pareto" in summary:
        head = f"Pareto front of {int(summary['study/n_pareto'])} among {complete} complete trials"
    else:
        head = f"no complete trial among {int(summary.get('study/n_trials', 0))}"
    significance = getattr(report, "significance", None)
    if significance is None or significance.empty:
        return head
    found = significance[significance["significant"]].sort_values("p_holm")
    if found.empty and significance["p_holm"].notna().any():
        return head + "; no setting has a significant effect (Holm-adjusted p < 0.05)"
    if found.empty:
        return head + "; too few trials with a value to test any setting"
    row = found.iloc[0]
    more = f", {len(found) - 1} more effect{'s' if len(found) > 2 else ''} in the report" if len(found) > 1 else ""
    return head + f"; {row['target']} depends on {row['param']} (Holm-adjusted p = {sig(row['p_holm'], 2)}){more}"


TOP_TRIALS = 5
"""Trials listed in the study run's description (the best first)."""


def study_description(study: optuna.Study, measure: str, summary: Mapping[str, float], best: FrozenTrial | None,
                      report=None, domain: str = "spectra", uri: str | None = None,
                      experiment_id: str | None = None) -> str:
    """The verdict, the best trials as a table (each linked to its MLflow run when `uri` and
    `experiment_id` are given), what the study was, the top importances, where the report is."""
    names = objective_names(measure, len(study.directions), domain)
    lines = [f"**{study_verdict(study, measure, summary, best, report, domain)}**", ""]
    ranked = _ranked(study)
    if ranked:
        header = ["trial", *(names if len(names) > 1 else ["value"]), "settings"]
        rows = []
        for t in ranked[:TOP_TRIALS]:
            name = f"#{t.number}"
            if uri and experiment_id and t.user_attrs.get("mlflow_run_id"):
                name = link(name, run_url(uri, experiment_id, t.user_attrs["mlflow_run_id"]))
            rows.append([name, *(sig(v) for v in t.values), short_params(t.params, 140)])
        lines += [markdown_rows(header, rows), ""]
    lines += [f"study {study.study_name} · objective: {', '.join(names)} · "
              f"{int(summary['study/n_trials'])} trials: {int(summary['study/n_complete'])} complete, "
              f"{int(summary['study/n_pruned'])} pruned, {int(summary['study/n_failed'])} failed"
              + (f" · {summary['study/wall_s_per_trial']:.1f} s per trial" if "study/wall_s_per_trial" in summary
                 else ""), ""]
    if best is None and "study/n_pareto" in summary:
        lines += [f"Pareto front: {int(summary['study/n_pareto'])} trials (`report/pareto.png`).", ""]
    top = _top_importances(report)
    if top:
        lines += ["Most important settings (fANOVA; full table, intervals and tests in `report/report.md`):", "",
                  markdown_rows(["target", "setting", "importance"], top), ""]
    lines.append("Report: `report/report.md` (summary, tables and figures), `report/trials.csv`; curves here are "
                 "per trial number.")
    return "\n".join(lines)


def _ranked(study: optuna.Study) -> list[FrozenTrial]:
    """Complete trials with finite values, the best first (single objective: by value, in the
    study's direction; two: the Pareto front first, then by the first value)."""
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if t.values is not None and all(math.isfinite(v) for v in t.values)]
    if len(study.directions) == 1:
        flip = -1 if study.directions[0] == optuna.study.StudyDirection.MAXIMIZE else 1
        return sorted(done, key=lambda t: flip * t.values[0])
    front = {t.number for t in study.best_trials}
    return sorted(done, key=lambda t: (t.number not in front, t.values[0]))


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
