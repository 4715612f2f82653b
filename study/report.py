"""The sensitivity report of a study: which settings move the compositional gap, and how.

Written to a folder (and logged to the study's MLflow run by `study.main`):

    importances.csv   parameter importances (fANOVA and PED-ANOVA) for the objective(s) and the gap;
                      each evaluator's importances are normalised to sum to one
    marginal.csv      per parameter and value (or value bin): trials, mean gap, its across-seed
                      spread, mean objective, mean efficiency against the physical floor
                      (oracle MSE ÷ test MSE: 1 = as good as the physics allows)
    marginal.png      the same, one panel per parameter, error bars = across-seed spread
    pareto.csv/.png   the Pareto front (two-objective studies)
    trials.csv        every trial: number, state, values, params, per-trial measures
    report.md         the above as text, also printed
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
from optuna.importance import FanovaImportanceEvaluator, PedAnovaImportanceEvaluator
from optuna.trial import TrialState

N_BINS = 4  # numeric parameters are summarised in quantile bins


@dataclass
class Report:
    folder: Path
    text: str
    importances: pd.DataFrame
    marginal: pd.DataFrame
    trials: pd.DataFrame
    files: list[Path] = field(default_factory=list)


def _targets(study: optuna.Study) -> dict[str, callable]:
    targets: dict[str, callable] = {}
    if len(study.directions) == 1:
        targets["objective"] = None
    else:
        targets["objective/0 (val MSE)"] = lambda t: t.values[0]
        targets["objective/1 (test MSE)"] = lambda t: t.values[1]
    targets["gap"] = _gap_mean
    return targets


def _gap_mean(t) -> float:
    """A trial's across-seed mean gap: spectra `gap/tracked`, matrices `gap/acc`."""
    return t.user_attrs.get("gap_tracked_mean", t.user_attrs.get("gap_acc_mean", math.nan))


def importances(study: optuna.Study, seed: int = 0) -> pd.DataFrame:
    """One row per (target, evaluator, parameter); importances of each (target, evaluator) sum to 1."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    rows = []
    evaluators = {"fanova": FanovaImportanceEvaluator(seed=seed), "ped_anova": PedAnovaImportanceEvaluator()}
    for target_name, target in _targets(study).items():
        if target is not None and any(not math.isfinite(target(t)) for t in complete):
            continue  # e.g. the gap without a validation split
        for ev_name, evaluator in evaluators.items():
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    imp = optuna.importance.get_param_importances(
                        study, evaluator=evaluator, target=target, normalize=True
                    )
            except (RuntimeError, ValueError, ZeroDivisionError) as exc:
                rows.append({"target": target_name, "evaluator": ev_name, "param": None,
                             "importance": math.nan, "note": f"not computed: {exc}"})
                continue
            total = sum(imp.values())
            for param, value in imp.items():
                # PED-ANOVA may return all zeros (no difference between top and all trials)
                share = value / total if total > 0 else 1.0 / len(imp)
                rows.append({"target": target_name, "evaluator": ev_name, "param": param,
                             "importance": share, "note": "" if total > 0 else "no effect found: spread evenly"})
    return pd.DataFrame(rows, columns=["target", "evaluator", "param", "importance", "note"])


def trials_table(study: optuna.Study) -> pd.DataFrame:
    rows = []
    for t in study.get_trials(deepcopy=False):
        row = {"number": t.number, "state": t.state.name,
               "duration_s": t.duration.total_seconds() if t.duration else math.nan}
        if t.values is not None:
            for i, v in enumerate(t.values):
                row["value" if len(t.values) == 1 else f"value_{i}"] = v
        row.update({f"param.{k}": v for k, v in t.params.items()})
        for key in ("test_mse_tracked_mean", "test_mse_tracked_std", "val_mse_tracked_mean",
                    "gap_tracked_mean", "gap_tracked_std", "oracle_mse_tracked_mean",
                    "oracle_efficiency_tracked_mean", "test_error_mean", "test_error_std", "val_error_mean",
                    "gap_acc_mean", "gap_acc_std", "mlflow_run_id"):
            if key in t.user_attrs:
                row[key] = t.user_attrs[key]
        rows.append(row)
    return pd.DataFrame(rows)


def marginal_effects(study: optuna.Study) -> pd.DataFrame:
    """Per parameter and value (or quantile bin), the mean gap of the trials there and the
    across-seed spread (each trial's standard deviation of its seeds' gaps, averaged), which is
    the noise against which the differences between values should be read."""
    trials = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    rows = []
    params = sorted({p for t in trials for p in t.params})
    for param in params:
        having = [t for t in trials if param in t.params]
        values = [t.params[param] for t in having]
        groups = _groups(values)
        for label, members in groups:
            chosen = [having[i] for i in members]
            gaps = [_gap_mean(t) for t in chosen]
            seed_stds = [t.user_attrs.get("gap_tracked_std", t.user_attrs.get("gap_acc_std")) for t in chosen]
            seed_stds = [v for v in seed_stds if v is not None and math.isfinite(v)]
            objective = [t.values[0] for t in chosen if t.values]
            efficiency = [t.user_attrs.get("oracle_efficiency_tracked_mean") for t in chosen]
            efficiency = [e for e in efficiency if e is not None and math.isfinite(e)]
            rows.append({
                "param": param, "value": label, "n_trials": len(chosen),
                "gap_mean": float(np.nanmean(gaps)) if chosen else math.nan,
                "gap_seed_std": float(np.mean(seed_stds)) if seed_stds else math.nan,  # within-trial spread
                "objective_mean": float(np.mean(objective)) if objective else math.nan,
                "oracle_efficiency_mean": float(np.mean(efficiency)) if efficiency else math.nan,
            })
    columns = ["param", "value", "n_trials", "gap_mean", "gap_seed_std", "objective_mean", "oracle_efficiency_mean"]
    return pd.DataFrame(rows, columns=columns)


def _groups(values: list) -> list[tuple[str, list[int]]]:
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    distinct = sorted(set(values), key=str)
    if not numeric or len(distinct) <= N_BINS:
        return [(_label(v), [i for i, x in enumerate(values) if x == v]) for v in distinct]
    edges = np.unique(np.quantile(values, np.linspace(0, 1, N_BINS + 1)))
    out = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        last = hi == edges[-1]
        members = [i for i, v in enumerate(values) if lo <= v < hi or (last and v == hi)]
        if members:
            out.append((f"[{lo:.3g}, {hi:.3g}{']' if last else ')'}", members))
    return out


def _label(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def build_report(study: optuna.Study, folder: str | Path) -> Report:
    """Compute every table and figure of the report into `folder`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    trials = trials_table(study)
    imp = importances(study)
    marginal = marginal_effects(study)
    files = []
    for name, table in (("trials.csv", trials), ("importances.csv", imp), ("marginal.csv", marginal)):
        table.to_csv(folder / name, index=False)
        files.append(folder / name)
    if not marginal.empty:
        files.append(_plot_marginal(marginal, folder / "marginal.png"))
    pareto = None
    if len(study.directions) > 1:
        pareto = pd.DataFrame([{"number": t.number, "val_mse": t.values[0], "test_mse": t.values[1], **t.params}
                               for t in study.best_trials])
        pareto.to_csv(folder / "pareto.csv", index=False)
        files += [folder / "pareto.csv", _plot_pareto(study, folder / "pareto.png")]
    text = _text(study, trials, imp, marginal, pareto)
    (folder / "report.md").write_text(text)
    files.append(folder / "report.md")
    return Report(folder, text, imp, marginal, trials, files)


def _text(study, trials: pd.DataFrame, imp: pd.DataFrame, marginal: pd.DataFrame, pareto) -> str:
    counts = trials["state"].value_counts().to_dict() if not trials.empty else {}
    lines = [f"# Sensitivity report: study {study.study_name}", "",
             "trials: " + ", ".join(f"{k.lower()} {v}" for k, v in sorted(counts.items())), ""]
    if counts.get("PRUNED"):
        lines += [f"Note: importances and marginal effects use the {counts.get('COMPLETE', 0)} complete trials; "
                  f"the {counts['PRUNED']} pruned ones (the poorer settings) are left out, so they describe "
                  "the better part of the space. Run without a pruner for an unbiased sensitivity estimate.", ""]
    ok = imp.dropna(subset=["param"])
    if not ok.empty:
        lines += ["## Parameter importances (each column sums to 1)", ""]
        table = ok.pivot_table(index="param", columns=["target", "evaluator"], values="importance")
        lines += [table.sort_values(table.columns[0], ascending=False).to_string(float_format=lambda v: f"{v:.3f}"), ""]
    notes = imp[imp["param"].isna()]
    for _, row in notes.iterrows():
        lines.append(f"- {row['target']} / {row['evaluator']}: {row['note']}")
    if not marginal.empty:
        lines += ["", "## Marginal effect on the gap (mean over trials; spread = across-seed std;",
                  "## efficiency = oracle MSE ÷ test MSE, the fraction of the physical limit reached)", ""]
        lines += [marginal.to_string(index=False, float_format=lambda v: f"{v:.4g}"), ""]
    if pareto is not None:
        lines += ["## Pareto front (val MSE vs test MSE)", "", pareto.to_string(index=False, float_format=lambda v: f"{v:.4g}"), ""]
    elif study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        best = study.best_trial
        lines += [f"best trial: #{best.number} value {best.value:.4g} params {best.params}", ""]
    return "\n".join(lines)


def _plot_marginal(marginal: pd.DataFrame, path: Path) -> Path:
    from matplotlib.figure import Figure

    params = list(dict.fromkeys(marginal["param"]))
    cols = min(3, len(params))
    rows = math.ceil(len(params) / cols)
    fig = Figure(figsize=(4.2 * cols, 3.2 * rows), dpi=100, layout="constrained")
    for k, param in enumerate(params):
        ax = fig.add_subplot(rows, cols, k + 1)
        sub = marginal[marginal["param"] == param]
        x = np.arange(len(sub))
        ax.errorbar(x, sub["gap_mean"], yerr=sub["gap_seed_std"].fillna(0), fmt="o", capsize=4)
        ax.set_xticks(x, sub["value"], rotation=30, ha="right", fontsize=8)
        ax.axhline(1.0, color="grey", lw=0.8, ls="--")
        ax.set_title(param, fontsize=10)
        ax.set_ylabel("gap (test ÷ in-dist MSE)")
    fig.suptitle("Marginal effect of each setting on the compositional gap (error bars: across-seed std)")
    fig.savefig(path)
    return path


def _plot_pareto(study: optuna.Study, path: Path) -> Path:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4.5), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    best = {t.number for t in study.best_trials}
    ax.scatter([t.values[0] for t in complete], [t.values[1] for t in complete], c="lightgrey", label="trials")
    front = sorted((t.values for t in complete if t.number in best), key=lambda v: v[0])
    ax.plot([v[0] for v in front], [v[1] for v in front], "o-", color="C3", label="Pareto front")
    ax.set_xlabel("in-distribution (val) MSE, tracked components")
    ax.set_ylabel("test MSE (novel combination)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.legend()
    fig.savefig(path)
    return path
