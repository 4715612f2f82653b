"""The sensitivity report of a study: which settings move the transfer of what was learned to the
novel combination, how much, how sure we are, and which trials learned nothing to transfer.

Every claim comes with its uncertainty, and the summary states only what passes a test:

    effects.csv       per target, parameter and value (or quantile bin): trials, not-learned trials,
                      the mean with a bootstrap 95 % interval (trials resampled), and the
                      across-seed spread (each trial's std over its seeds, averaged)
    significance.csv  per target and parameter: a test suited to the parameter's type (Spearman's
                      rank correlation for numbers; Mann-Whitney U for two categories,
                      Kruskal-Wallis H for more), its p-value, the Holm-adjusted p-value over the
                      parameters of that target, and whether it is significant (adjusted p < 0.05)
    importances.csv   fANOVA and PED-ANOVA importances per target (each evaluator's sum to one) with
                      bootstrap 95 % intervals (trials resampled, importances recomputed)
    effects.png       the effects on transfer (and in-distribution skill), one panel per parameter,
                      with the number of trials behind each point
    importances.png   the importances per target and evaluator, with their intervals
    pareto.csv/.png   the Pareto front (two-objective studies), front points labelled by trial number
    trials.csv        every trial: number, state, values, params, per-trial measures
    report.md         the above as markdown tables (the MLflow artifact viewer renders them), summary
                      first, also printed

Tables and figures are drawn by `study.render`.

Targets: `transfer` (combination skill ÷ in-distribution skill, mean over the tracked components;
only trials in which a seed learned every tracked component in distribution have one),
`skill/val` (in-distribution skill, every trial) and the study's objective(s) when they are
something else. A trial that learned nothing has no transfer: it is counted as not learned per
setting, never scored.

A study on the matrices domain (its trials carry the task's measures `test/error`, `val/error`,
`gap/acc` instead of the spectra ones) has the targets `test/acc` and `val/acc` (accuracy = 1 −
error) and `gap/acc` (val/acc − test/acc), with the chance accuracy (1 / n_candidates) beside them
in `effects.csv` and in a measures table (`measures.csv`); every objective of that domain is one
of these targets, and the spectra-only parts (not-learned counts, transfer, skill) are left out.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
from optuna.importance import FanovaImportanceEvaluator, PedAnovaImportanceEvaluator
from optuna.trial import TrialState
from scipy import stats

from study.render import label_counts, markdown_table, plot_importances, plot_pareto

N_BINS = 4  # numeric parameters are summarised in quantile bins
ALPHA = 0.05  # significance level, after Holm's correction over the parameters of one target
N_BOOT_MEAN = 2000  # bootstrap resamples of a group mean
N_BOOT_IMPORTANCE = 20  # bootstrap resamples of the importances (each refits fANOVA's forest)
BOOT_TREES = 16  # fANOVA's forest per bootstrap resample (64, Optuna's default, for the point estimate)
DISAGREE = 0.3  # importances of one parameter differing by more than this (or another top parameter)
MEASURE_ATTRS = {  # target -> (user attribute of the trial mean, of its across-seed std, direction)
    "transfer": ("transfer_tracked_mean", "transfer_tracked_std", "maximize"),
    "skill/val": ("skill_val_tracked_mean", "skill_val_tracked_std", "maximize"),
}
MATRICES_ATTR = "test_error_mean"  # a trial carrying this measured the matrices domain
MATRICES_TARGETS = {  # target -> (user attribute of the trial mean, of its std, direction, accuracy = 1 - attr)
    "test/acc": ("test_error_mean", "test_error_std", "maximize", True),
    "val/acc": ("val_error_mean", "val_error_std", "maximize", True),
    "gap/acc": ("gap_acc_mean", "gap_acc_std", "minimize", False),
}
MATRICES_OBJECTIVES = {  # objective -> the matrices target(s) it is (so it is not analysed twice)
    "gap": "the target gap/acc", "test": "the target test/acc (test/error = 1 - test/acc)",
    "pareto": "the targets val/acc and test/acc (val/error, test/error = 1 - accuracy)",
}
MATRICES_MEASURES = (  # the measures table: name, user attribute, accuracy = 1 - attr, what guessing scores
    ("test/acc", "test_error_mean", True, "chance"), ("val/acc", "val_error_mean", True, "chance"),
    ("gap/acc", "gap_acc_mean", False, "zero"), ("test/error", "test_error_mean", False, "chance error"),
    ("val/error", "val_error_mean", False, "chance error"),
)


@dataclass
class Report:
    folder: Path
    text: str
    importances: pd.DataFrame
    effects: pd.DataFrame
    significance: pd.DataFrame
    trials: pd.DataFrame
    files: list[Path] = field(default_factory=list)


@dataclass
class Target:
    """One quantity the report explains: its value per trial (NaN = none), its across-seed std."""

    name: str
    value: Callable[[optuna.trial.FrozenTrial], float]
    seed_std: Callable[[optuna.trial.FrozenTrial], float]
    direction: str
    chance: Callable[[optuna.trial.FrozenTrial], float] | None = None
    """Matrices: what guessing scores on this target (None: the spectra targets have no such column)."""


def _attr(name: str) -> Callable[[optuna.trial.FrozenTrial], float]:
    def get(t: optuna.trial.FrozenTrial) -> float:
        v = t.user_attrs.get(name)
        return float(v) if v is not None and math.isfinite(float(v)) else math.nan

    return get


def study_domain(study: optuna.Study) -> str:
    """The domain a study's trials were trained on: `matrices` when they carry the matrices task's
    measures (`test/error`, ...), else `spectra`."""
    found = any(MATRICES_ATTR in t.user_attrs for t in study.get_trials(deepcopy=False))
    return "matrices" if found else "spectra"


def chance_acc(t: optuna.trial.FrozenTrial) -> float:
    """The trial's chance accuracy, 1 / n_candidates (NaN when the trial did not record it)."""
    return _attr("chance_acc")(t)


def _accuracy(name: str) -> Callable[[optuna.trial.FrozenTrial], float]:
    error = _attr(name)
    return lambda t: 1.0 - error(t)


def _matrices_targets(study: optuna.Study) -> list[Target]:
    """test/acc, val/acc, gap/acc; a measure no trial has (val and gap without a validation split)
    is left out rather than reported as empty rows."""
    trials = analysed_trials(study)
    out = []
    for name, (mean, std, direction, accuracy) in MATRICES_TARGETS.items():
        chance = chance_acc if accuracy else (lambda t: 0.0)  # guessing: chance in and out of distribution
        target = Target(name, _accuracy(mean) if accuracy else _attr(mean), _attr(std), direction, chance)
        if any(math.isfinite(target.value(t)) for t in trials):
            out.append(target)
    return out


def _targets(study: optuna.Study) -> list[Target]:
    if study_domain(study) == "matrices":
        return _matrices_targets(study)
    out = [Target(name, _attr(mean), _attr(std), direction) for name, (mean, std, direction) in MEASURE_ATTRS.items()]
    objective = study.user_attrs.get("objective") if hasattr(study, "user_attrs") else None
    if len(study.directions) == 1:
        if objective != "transfer":
            direction = "maximize" if study.directions[0] == optuna.study.StudyDirection.MAXIMIZE else "minimize"
            out.append(Target("objective", lambda t: _value(t, 0), lambda t: math.nan, direction))
    else:
        out.append(Target("objective/0 (val MSE where present)", lambda t: _value(t, 0), lambda t: math.nan, "minimize"))
        out.append(Target("objective/1 (test MSE where present)", lambda t: _value(t, 1), lambda t: math.nan, "minimize"))
    return out


def _value(t: optuna.trial.FrozenTrial, i: int) -> float:
    return float(t.values[i]) if t.values is not None and math.isfinite(t.values[i]) else math.nan


def analysed_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Trials that ran to the end: complete ones, and those failed only because nothing was
    learned (their measures are recorded; a crashed trial has none)."""
    return [t for t in study.get_trials(deepcopy=False)
            if t.state == TrialState.COMPLETE
            or (t.state == TrialState.FAIL and ("skill_val_tracked_mean" in t.user_attrs
                                                or MATRICES_ATTR in t.user_attrs))]


def not_learned(t: optuna.trial.FrozenTrial) -> bool:
    """No seed of the trial learned every tracked component in distribution."""
    return not math.isfinite(_attr("transfer_tracked_mean")(t)) and "skill_val_tracked_mean" in t.user_attrs


# ------------------------------------------------------------------------------------------------
# tables
# ------------------------------------------------------------------------------------------------
def trials_table(study: optuna.Study) -> pd.DataFrame:
    rows = []
    for t in study.get_trials(deepcopy=False):
        row = {"number": t.number, "state": t.state.name,
               "duration_s": t.duration.total_seconds() if t.duration else math.nan}
        if t.values is not None:
            for i, v in enumerate(t.values):
                row["value" if len(t.values) == 1 else f"value_{i}"] = v
        row.update({f"param.{k}": v for k, v in t.params.items()})
        if "skill_val_tracked_mean" in t.user_attrs:
            row["not_learned"] = not_learned(t)
        for key, value in sorted(t.user_attrs.items()):
            if key.endswith(("_mean", "_std")) or key == "mlflow_run_id":
                row[key] = value
        if MATRICES_ATTR in t.user_attrs:  # accuracy = 1 - error, and what guessing scores
            for name, attr, _, _ in (m for m in MATRICES_MEASURES if m[2]):
                row[name.replace("/", "_") + "_mean"] = 1.0 - _attr(attr)(t)
            row["chance_acc"] = chance_acc(t)
        rows.append(row)
    return pd.DataFrame(rows)


def effects_table(trials: list[optuna.trial.FrozenTrial], targets: list[Target], seed: int = 0) -> pd.DataFrame:
    """Per target, parameter and value (or quantile bin): trials, not-learned trials, mean with a
    bootstrap 95 % interval over the trials, and the mean across-seed std of those trials."""
    rng = np.random.default_rng(seed)
    with_chance = any(t.chance is not None for t in targets)  # matrices: chance instead of not-learned counts
    rows = []
    for target in targets:
        for param in sorted({p for t in trials for p in t.params}):
            having = [t for t in trials if param in t.params]
            for label, members in _groups([t.params[param] for t in having]):
                chosen = [having[i] for i in members]
                values = np.array([target.value(t) for t in chosen])
                values = values[np.isfinite(values)]
                spreads = np.array([target.seed_std(t) for t in chosen])
                spreads = spreads[np.isfinite(spreads)]
                lo, hi = bootstrap_mean_ci(values, rng)
                rows.append({
                    "target": target.name, "param": param, "value": label, "n_trials": len(chosen),
                    "n_not_learned": sum(not_learned(t) for t in chosen), "n_with_value": len(values),
                    "mean": float(values.mean()) if len(values) else math.nan, "ci_low": lo, "ci_high": hi,
                    "seed_std": float(spreads.mean()) if len(spreads) else math.nan,
                    "chance": _mean_finite([target.chance(t) for t in chosen]) if target.chance else math.nan,
                })
    if with_chance:
        columns = ["target", "param", "value", "n_trials", "n_with_value", "mean", "ci_low", "ci_high", "seed_std",
                   "chance"]
    else:
        columns = ["target", "param", "value", "n_trials", "n_not_learned", "n_with_value", "mean", "ci_low",
                   "ci_high", "seed_std"]
    return pd.DataFrame(rows, columns=columns)


def _mean_finite(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


def measures_table(trials: list[optuna.trial.FrozenTrial]) -> pd.DataFrame:
    """Matrices: each measure over the trials (trial value = across-seed mean): trials with a value,
    mean, min, max, the best trial, and what guessing scores (`chance`: 1 / n_candidates for an
    accuracy, 1 - that for an error, 0 for gap/acc)."""
    rows = []
    for name, attr, accuracy, guess in MATRICES_MEASURES:
        get = _accuracy(attr) if accuracy else _attr(attr)
        pairs = [(t.number, get(t)) for t in trials]
        pairs = [(n, v) for n, v in pairs if math.isfinite(v)]
        if not pairs:  # e.g. val and gap without a validation split: no empty row
            continue
        values = np.array([v for _, v in pairs])
        chance = _mean_finite([chance_acc(t) for t in trials])
        rows.append({
            "measure": name, "n_trials": len(values), "mean": float(values.mean()), "min": float(values.min()),
            "max": float(values.max()), "best_trial": (max if accuracy else min)(pairs, key=lambda p: p[1])[0],
            "chance": {"chance": chance, "chance error": 1.0 - chance, "zero": 0.0}[guess],
        })
    return pd.DataFrame(rows, columns=["measure", "n_trials", "mean", "min", "max", "best_trial", "chance"])


def bootstrap_mean_ci(values: np.ndarray, rng: np.random.Generator, n_boot: int = N_BOOT_MEAN) -> tuple[float, float]:
    """Percentile 95 % interval of the mean of `values` (NaN with fewer than two values)."""
    if len(values) < 2:
        return math.nan, math.nan
    means = rng.choice(values, size=(n_boot, len(values)), replace=True).mean(axis=1)
    return float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def significance_table(trials: list[optuna.trial.FrozenTrial], targets: list[Target]) -> pd.DataFrame:
    """Per target and parameter, a rank test of "the target does not depend on this parameter":
    Spearman's rank correlation for numeric parameters, Mann-Whitney U (two categories) or
    Kruskal-Wallis H (more) for categorical ones; Holm-adjusted over the parameters of a target."""
    rows = []
    for target in targets:
        block = []
        for param in sorted({p for t in trials for p in t.params}):
            pairs = [(t.params[param], target.value(t)) for t in trials if param in t.params]
            pairs = [(x, y) for x, y in pairs if math.isfinite(y)]
            block.append({"target": target.name, "param": param, "n": len(pairs), **_rank_test(pairs)})
        for row, adjusted in zip(block, holm([r["p"] for r in block]), strict=True):
            row["p_holm"] = adjusted
            row["significant"] = bool(math.isfinite(adjusted) and adjusted < ALPHA)
        rows += block
    columns = ["target", "param", "n", "kind", "test", "statistic", "effect", "p", "p_holm", "significant"]
    return pd.DataFrame(rows, columns=columns)


def _rank_test(pairs: list[tuple]) -> dict:
    xs = [x for x, _ in pairs]
    ys = np.array([y for _, y in pairs], dtype=float)
    nan = {"statistic": math.nan, "p": math.nan, "effect": ""}
    if _is_numeric(xs):
        out = {"kind": "numeric", "test": "spearman", **nan}
        if len(set(xs)) > 2 and len(pairs) >= 4 and np.ptp(ys) > 0:
            res = stats.spearmanr(np.array(xs, dtype=float), ys)
            out.update(statistic=float(res.statistic), p=float(res.pvalue), effect=f"rho {res.statistic:+.2f}")
        return out
    groups = {}
    for x, y in pairs:
        groups.setdefault(str(x), []).append(y)
    groups = {k: v for k, v in groups.items() if v}
    kind = {"kind": "categorical", "test": "mann-whitney" if len(groups) == 2 else "kruskal-wallis", **nan}
    if len(groups) < 2 or len(pairs) < 4 or np.ptp(ys) == 0:
        return kind
    means = {k: float(np.mean(v)) for k, v in groups.items()}
    lo, hi = min(means, key=means.get), max(means, key=means.get)
    kind["effect"] = f"{hi} {means[hi]:.3g} vs {lo} {means[lo]:.3g}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if len(groups) == 2:
            a, b = groups.values()
            res = stats.mannwhitneyu(a, b, alternative="two-sided")
        else:
            res = stats.kruskal(*groups.values())
    kind.update(statistic=float(res.statistic), p=float(res.pvalue))
    return kind


def holm(pvalues: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (NaN stays NaN and does not count as a test)."""
    finite = [(p, i) for i, p in enumerate(pvalues) if math.isfinite(p)]
    out = [math.nan] * len(pvalues)
    running = 0.0
    for rank, (p, i) in enumerate(sorted(finite)):
        running = max(running, min(1.0, (len(finite) - rank) * p))
        out[i] = running
    return out


def importances(study: optuna.Study, seed: int = 0, n_boot: int = N_BOOT_IMPORTANCE) -> pd.DataFrame:
    """One row per (target, evaluator, parameter): the importance (each (target, evaluator) sums
    to 1) and its bootstrap 95 % interval (trials resampled with replacement, importances
    recomputed and normalised)."""
    trials = analysed_trials(study)
    rng = np.random.default_rng(seed)
    rows = []
    for target in _targets(study):
        usable = [t for t in trials if math.isfinite(target.value(t))]
        boot_sets = [[usable[i] for i in rng.integers(0, len(usable), len(usable))] for _ in range(n_boot)] \
            if len(usable) >= 4 else []
        for ev_name in ("fanova", "ped_anova"):
            try:
                point = _importance(usable, target, ev_name, seed)
            except (RuntimeError, ValueError, ZeroDivisionError, IndexError) as exc:
                rows.append({"target": target.name, "evaluator": ev_name, "param": None, "importance": math.nan,
                             "ci_low": math.nan, "ci_high": math.nan, "note": f"not computed: {exc}"})
                continue
            draws = {p: [] for p in point}
            for k, sample in enumerate(boot_sets):
                try:
                    imp = _importance(sample, target, ev_name, seed + 1 + k, n_trees=BOOT_TREES)
                except (RuntimeError, ValueError, ZeroDivisionError, IndexError):
                    continue
                for p in draws:
                    draws[p].append(imp.get(p, 0.0))
            for param, share in point.items():
                d = np.array(draws[param])
                rows.append({"target": target.name, "evaluator": ev_name, "param": param, "importance": share,
                             "ci_low": float(np.quantile(d, 0.025)) if len(d) > 1 else math.nan,
                             "ci_high": float(np.quantile(d, 0.975)) if len(d) > 1 else math.nan,
                             "note": "" if sum(point.values()) > 0 else "no effect found"})
    return pd.DataFrame(rows, columns=["target", "evaluator", "param", "importance", "ci_low", "ci_high", "note"])


def _importance(trials: list, target: Target, evaluator: str, seed: int, n_trees: int = 64) -> dict[str, float]:
    """Normalised importances of `target` over `trials` (an in-memory study holding them)."""
    if len(trials) < 2:
        raise ValueError(f"{len(trials)} trial(s) with a value")
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created" line per resample
    try:
        study = optuna.create_study(direction=target.direction)
    finally:
        optuna.logging.set_verbosity(verbosity)
    for t in trials:
        study.add_trial(optuna.trial.create_trial(params=t.params, distributions=t.distributions,
                                                  value=target.value(t)))
    ev = FanovaImportanceEvaluator(seed=seed, n_trees=n_trees) if evaluator == "fanova" else PedAnovaImportanceEvaluator()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        imp = optuna.importance.get_param_importances(study, evaluator=ev, normalize=True)
    total = sum(imp.values())
    # PED-ANOVA may return all zeros (the best trials look like all trials): spread evenly
    return {p: (v / total if total > 0 else 1.0 / len(imp)) for p, v in imp.items()}


def disagreements(imp: pd.DataFrame) -> list[str]:
    """A sentence per target where fANOVA and PED-ANOVA tell different stories: another parameter
    first, or one parameter's importances more than `DISAGREE` apart."""
    out = []
    ok = imp.dropna(subset=["param"])
    for target, block in ok.groupby("target", sort=False):
        by = {ev: b.set_index("param") for ev, b in block.groupby("evaluator")}
        if set(by) != {"fanova", "ped_anova"}:
            continue
        f, p = by["fanova"], by["ped_anova"]
        common = f.index.intersection(p.index)
        if common.empty:
            continue
        diff = (f.loc[common, "importance"] - p.loc[common, "importance"]).abs()
        top_f, top_p = f["importance"].idxmax(), p["importance"].idxmax()
        if top_f == top_p and diff.max() <= DISAGREE:
            continue
        worst = diff.idxmax()
        if top_f == top_p:
            head = (f"fANOVA and PED-ANOVA disagree on {target}: both rank {top_f} first, but for {worst} they give "
                    f"{_imp_text(f.loc[worst])} vs {_imp_text(p.loc[worst])}.")
        else:
            head = (f"fANOVA and PED-ANOVA disagree on {target}: fANOVA ranks {top_f} first "
                    f"({_imp_text(f.loc[top_f])}), PED-ANOVA ranks {top_p} first ({_imp_text(p.loc[top_p])}); "
                    f"for {worst} they give {_imp_text(f.loc[worst])} vs {_imp_text(p.loc[worst])}.")
        out.append(head + " fANOVA measures the share of the variance over the whole space that a parameter "
                   "explains, PED-ANOVA how differently it is distributed among the best trials; where they "
                   "disagree, read the rank tests above, not either ranking.")
    return out


def _imp_text(row: pd.Series) -> str:
    if math.isfinite(row.get("ci_low", math.nan)):
        return f"{row['importance']:.2f} [{row['ci_low']:.2f}, {row['ci_high']:.2f}]"
    return f"{row['importance']:.2f}"


def _groups(values: list) -> list[tuple[str, list[int]]]:
    distinct = sorted(set(values), key=str)
    if not _is_numeric(values) or len(distinct) <= N_BINS:
        return [(_label(v), [i for i, x in enumerate(values) if x == v]) for v in distinct]
    edges = np.unique(np.quantile(values, np.linspace(0, 1, N_BINS + 1)))
    out = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        last = hi == edges[-1]
        members = [i for i, v in enumerate(values) if lo <= v < hi or (last and v == hi)]
        if members:
            out.append((f"[{lo:.3g}, {hi:.3g}{']' if last else ')'}", members))
    return out


def _is_numeric(values: list) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def _label(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


# ------------------------------------------------------------------------------------------------
# the report
# ------------------------------------------------------------------------------------------------
def build_report(study: optuna.Study, folder: str | Path, n_boot_importance: int = N_BOOT_IMPORTANCE) -> Report:
    """Compute every table and figure of the report into `folder`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    domain = study_domain(study)
    trials = trials_table(study)
    analysed = analysed_trials(study)
    targets = _targets(study)
    effects = effects_table(analysed, targets)
    significance = significance_table(analysed, targets)
    imp = importances(study, n_boot=n_boot_importance)
    measures = measures_table(analysed) if domain == "matrices" else None
    files = []
    tables = [("trials.csv", trials), ("effects.csv", effects), ("significance.csv", significance),
              ("importances.csv", imp)]
    if measures is not None:
        tables.append(("measures.csv", measures))
    for name, table in tables:
        table.to_csv(folder / name, index=False)
        files.append(folder / name)
    effects_figure = _plot_effects(effects, significance, folder / "effects.png") if not effects.empty else None
    if effects_figure is not None:
        files.append(effects_figure)
    importance_figure = plot_importances(imp, folder / "importances.png", n_trials=len(analysed))
    if importance_figure is not None:
        files.append(importance_figure)
    pareto = None
    if len(study.directions) > 1 and study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        axes = ("val_error", "test_error") if domain == "matrices" else ("val_mse_present", "test_mse_present")
        pareto = pd.DataFrame([{"number": t.number, axes[0]: t.values[0], axes[1]: t.values[1],
                                **t.params} for t in study.best_trials])
        pareto.to_csv(folder / "pareto.csv", index=False)
        files += [folder / "pareto.csv", plot_pareto(study, folder / "pareto.png")]
    text = _text(study, trials, analysed, imp, effects, significance, pareto, measures)
    (folder / "report.md").write_text(text)
    files.append(folder / "report.md")
    return Report(folder, text, imp, effects, significance, trials, files)


def summary_lines(analysed: list, effects: pd.DataFrame, significance: pd.DataFrame,
                  lead: list[str] | None = None) -> list[str]:
    """What the study shows, and only that: the significant effects with their intervals, and
    for every target without one, that none was found. `lead`: the domain's first lines (None:
    the spectra count of trials that learned every tracked component)."""
    lines = list(lead or [])
    n_nl = sum(not_learned(t) for t in analysed)
    if analysed and lead is None:
        threshold = analysed[0].user_attrs.get("learned_skill", 0.5)
        rest = ("every trial has a transfer value" if n_nl == 0 else
                f"the other {'one has' if n_nl == 1 else f'{n_nl} have'} no transfer value and "
                f"{'is' if n_nl == 1 else 'are'} counted as not learned per setting below")
        lines.append(f"- {len(analysed) - n_nl} of {len(analysed)} trials learned every tracked component in "
                     f"distribution (in-distribution skill >= {threshold:g} in at least one seed); {rest}.")
    for target, block in significance.groupby("target", sort=False):
        sig = block[block["significant"]]
        if sig.empty:
            tested = block.dropna(subset=["p_holm"])
            if tested.empty:
                lines.append(f"- {target}: not enough trials with a value to test any setting.")
            else:
                best = tested.loc[tested["p_holm"].idxmin()]
                lines.append(f"- {target}: no setting has a significant effect (smallest Holm-adjusted p = "
                             f"{best['p_holm']:.2g}, for {best['param']}; n = {int(best['n'])} trials).")
            continue
        for _, row in sig.sort_values("p_holm").iterrows():
            groups = effects[(effects["target"] == target) & (effects["param"] == row["param"])]
            detail = "; ".join(f"{g['value']}: {_ci_text(g)}" for _, g in groups.iterrows())
            lines.append(f"- {target} depends on {row['param']} ({row['test']}, {row['effect']}, "
                         f"Holm-adjusted p = {row['p_holm']:.2g}, n = {int(row['n'])}): {detail}.")
    return lines


def _ci_text(g: pd.Series) -> str:
    if not math.isfinite(g["mean"]):
        return f"no value ({int(g['n_not_learned'])} of {int(g['n_trials'])} not learned)"
    ci = f" [{g['ci_low']:.3g}, {g['ci_high']:.3g}]" if math.isfinite(g["ci_low"]) else ""
    nl = f", {int(g['n_not_learned'])} of {int(g['n_trials'])} not learned" if g.get("n_not_learned", 0) else ""
    return f"{g['mean']:.3g}{ci}{nl}"


def _matrices_lead(study, analysed: list) -> list[str]:
    """The first summary lines of a matrices study: what the targets are, chance, the objective."""
    chance = _mean_finite([chance_acc(t) for t in analysed])
    guess = (f"chance accuracy {chance:.3g} (1 / {round(1 / chance)} candidates)" if math.isfinite(chance)
             else "chance accuracy not recorded by these trials")
    objective = study.user_attrs.get("objective") if hasattr(study, "user_attrs") else None
    line = (f"- Matrices: accuracy = 1 - error on the in-distribution (val/acc) and held-out (test/acc) "
            f"splits, gap/acc = val/acc - test/acc; {guess}.")
    if objective in MATRICES_OBJECTIVES:
        line += f" The objective ({objective}) is analysed as {MATRICES_OBJECTIVES[objective]}."
    return [line]


def _text(study, trials, analysed, imp, effects, significance, pareto, measures=None) -> str:
    counts = trials["state"].value_counts().to_dict() if not trials.empty else {}
    states = ", ".join(f"{v} {k.lower()}" for k, v in sorted(counts.items()))
    # the not-learned count is the summary's first line (a trial that learned nothing may be complete)
    lines = [f"# Sensitivity report: study {study.study_name}", "", f"trials: {states}.", ""]
    if pareto is None and len(study.directions) == 1 and study.get_trials(
            deepcopy=False, states=(TrialState.COMPLETE,)):
        best = study.best_trial
        params = ", ".join(f"{k} = {v:.3g}" if isinstance(v, float) else f"{k} = {v}" for k, v in best.params.items())
        if measures is not None:  # matrices: the accuracies beside the objective's value
            params = f"{_accuracies_text(best)}; {params}"
        lines += [f"**Best trial:** #{best.number}, value {best.value:.4g} ({params})", ""]
    lines += ["## Summary (only effects significant at Holm-adjusted p < 0.05)", ""]
    lines += summary_lines(analysed, effects, significance,
                           lead=_matrices_lead(study, analysed) if measures is not None else None)
    lines.append("")
    if measures is not None and not measures.empty:
        lines += ["## Measures", "", "Over the trials (a trial's value: the mean over its seeds); chance = what "
                  "guessing scores (1 / n_candidates; its error 1 - that; gap 0). Per trial: `trials.csv`.", "",
                  markdown_table(measures), ""]
    if counts.get("PRUNED"):
        lines += [f"Note: the {counts['PRUNED']} pruned trials (the poorer settings) are left out, so the tables "
                  "describe the better part of the space. Run without a pruner for an unbiased estimate.", ""]
    if not significance.empty:
        lines += ["## Significance", "", "Rank tests; p_holm adjusted over the parameters of each target "
                  "(all columns, the raw p among them: `significance.csv`).", "", markdown_table(_significance_shown(significance), digits=3),
                  ""]
    if not effects.empty:
        counted = ("chance = what guessing scores (1 / n_candidates for an accuracy, 0 for gap/acc)"
                   if "chance" in effects else
                   "n_not_learned = trials in which no seed learned every tracked component")
        lines += ["## Effects", ""]
        if effects["mean"].notna().any():  # the figure exists
            lines += ["![effects.png: the effect of each setting on each target, with 95 % intervals](effects.png)", ""]
        lines += ["Mean over trials with a bootstrap 95 % interval; seed_std = across-seed std; "
                  f"{counted} (all columns: `effects.csv`).", "", markdown_table(_effects_shown(effects), digits=3), ""]
    ok = imp.dropna(subset=["param"])
    if not ok.empty:
        lines += ["## Parameter importances", "", "![importances.png: parameter importances by target and evaluator](importances.png)",
                  "", "Each evaluator's importances sum to 1; bootstrap 95 % intervals in brackets.", ""]
        shown = ok.assign(importance=[_imp_text(r) for _, r in ok.iterrows()])
        table = shown.pivot_table(index="param", columns=["target", "evaluator"], values="importance", aggfunc="first")
        lines += [markdown_table(table, index=True), ""]
    for sentence in disagreements(imp):
        lines += [sentence, ""]
    for _, row in imp[imp["param"].isna()].iterrows():
        lines.append(f"- importances of {row['target']} / {row['evaluator']}: {row['note']}")
    if pareto is not None:
        axes = "val vs test error" if measures is not None else "val vs test MSE, where the component is present"
        lines += ["", f"## Pareto front ({axes})", "", "![pareto.png: the Pareto front](pareto.png)", "",
                  markdown_table(pareto, digits=3), ""]
    return "\n".join(lines)


def _significance_shown(significance: pd.DataFrame) -> pd.DataFrame:
    """The significance table as the report shows it: without the parameter kind and the raw
    statistic (in `significance.csv`), `significant` as yes / no."""
    shown = significance.drop(columns=["kind", "statistic", "p"], errors="ignore")
    return _short_names(shown.assign(significant=shown["significant"].map({True: "yes", False: "no"})))


def _short_names(table: pd.DataFrame) -> pd.DataFrame:
    """`param` as the last part of each dotted name (`learning_rate`) where that stays unambiguous,
    so that the column fits the artifact viewer's cell width."""
    if "param" not in table:
        return table
    names = {p: str(p).rsplit(".", 1)[-1] for p in table["param"].dropna().unique()}
    if len(set(names.values())) < len(names):
        return table
    return table.assign(param=table["param"].map(lambda p: names.get(p, p)))


def _effects_shown(effects: pd.DataFrame) -> pd.DataFrame:
    """The effects table as the report shows it: the interval in one column, `[low, high]`."""
    ci = [f"[{lo:.3g}, {hi:.3g}]" if math.isfinite(lo) else "" for lo, hi in zip(effects["ci_low"], effects["ci_high"],
                                                                                 strict=True)]
    shown = effects.drop(columns=["ci_low", "ci_high", "n_with_value"], errors="ignore")
    return _short_names(shown.assign(**{"95 % CI": ci}))[[c for c in (*shown.columns[:shown.columns.get_loc("mean") + 1], "95 % CI",
                                                       *shown.columns[shown.columns.get_loc("mean") + 1:])]]


def _accuracies_text(t: optuna.trial.FrozenTrial) -> str:
    shown = [(name, (_accuracy(attr) if accuracy else _attr(attr))(t))
             for name, attr, accuracy, _ in MATRICES_MEASURES[:3]]
    shown.append(("chance", chance_acc(t)))
    return ", ".join(f"{name} {v:.3g}" for name, v in shown if math.isfinite(v))


def _plot_effects(effects: pd.DataFrame, significance: pd.DataFrame, path: Path) -> Path | None:
    fig = effects_figure(effects, significance)
    if fig is None:
        return None
    fig.savefig(path)
    return path


def effects_figure(effects: pd.DataFrame, significance: pd.DataFrame):
    """One row of panels per target that some trial has a value of, one column per parameter,
    each titled with its Holm-adjusted p-value (or "too few trials to test"); None when no target
    has a value (nothing to draw)."""
    from matplotlib.figure import Figure

    with_value = set(effects.loc[effects["mean"].notna(), "target"])  # a target no trial has: no empty row
    shown = [t for t in ("transfer", "skill/val", *MATRICES_TARGETS) if t in with_value]
    if not shown:
        return None
    with_chance = "chance" in effects
    params = list(dict.fromkeys(effects["param"]))
    fig = Figure(figsize=(3.6 * len(params) + 0.5, 3.2 * len(shown) + 0.8), dpi=100, layout="constrained")
    axes = fig.subplots(len(shown), len(params), squeeze=False)
    for r, target in enumerate(shown):
        for c, param in enumerate(params):
            ax = axes[r, c]
            sub = effects[(effects["target"] == target) & (effects["param"] == param)]
            x = np.arange(len(sub))
            mean = sub["mean"].to_numpy(dtype=float)
            err = np.vstack([mean - sub["ci_low"].to_numpy(dtype=float), sub["ci_high"].to_numpy(dtype=float) - mean])
            ax.errorbar(x, mean, yerr=np.nan_to_num(err), fmt="o", capsize=4, label="mean, bootstrap 95 %")
            ax.errorbar(x + 0.15, mean, yerr=sub["seed_std"].fillna(0).to_numpy(), fmt="none", ecolor="grey",
                        capsize=2, label="across-seed std")
            for xi, (_, g) in zip(x, sub.iterrows(), strict=True):
                if g.get("n_not_learned", 0):
                    ax.annotate(f"{int(g['n_not_learned'])}/{int(g['n_trials'])} n.l.", (xi, 0), xycoords=("data", "axes fraction"),
                                ha="center", va="bottom", fontsize=7, color="C3")
            label_counts(ax, x, sub["n_trials"])
            ax.set_xlim(-0.5, len(sub) - 0.5)
            ax.set_xticks(x, sub["value"], rotation=30, ha="right", fontsize=8)
            row = significance[(significance["target"] == target) & (significance["param"] == param)]
            p = row["p_holm"].iloc[0] if not row.empty else math.nan
            tested = (f"Holm-adjusted p = {p:.2g}{', significant' if p < ALPHA else ''}" if math.isfinite(p) else
                      "too few trials to test")
            ax.set_title(f"{param}\n({tested})", fontsize=9)
            if target == "transfer":
                ax.axhline(1.0, color="grey", lw=0.8, ls="--")
            elif with_chance and np.isfinite(sub["chance"].to_numpy(dtype=float)).any():  # matrices: guessing
                ax.axhline(float(np.nanmean(sub["chance"].to_numpy(dtype=float))), color="C3", lw=0.8, ls="--",
                           label="chance")
            if c == 0:
                ax.set_ylabel(target)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=len(handles), fontsize=8, frameon=False)
    meaning = ("dashed: chance (gap 0)" if with_chance else
               "n.l. = trials that learned nothing in distribution")
    fig.suptitle(f"Effect of each setting, {int(effects.groupby(['target', 'param'])['n_trials'].sum().max())} "
                 f"trials (n = trials per point; {meaning})", fontsize=10)
    return fig
