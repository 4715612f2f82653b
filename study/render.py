"""How the sensitivity report looks: markdown tables (rendered as tables by the MLflow artifact
viewer and on GitHub), and the titled, labelled importance and Pareto figures. What the report
computes lives in `study.report`; this module only draws and formats it."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
from optuna.trial import TrialState

from tracking.ui import markdown_rows


def markdown_table(table: pd.DataFrame, digits: int = 4, index: bool = False) -> str:
    """A pandas table as a GitHub-flavoured markdown table; floats to `digits` significant digits,
    NaN as an empty cell, a column MultiIndex joined with " / "."""
    if index:
        table = table.reset_index()
    columns = [" / ".join(str(p) for p in c if str(p)) if isinstance(c, tuple) else str(c) for c in table.columns]

    def cell(v) -> str:
        if isinstance(v, float | np.floating):
            return "" if math.isnan(v) else f"{v:.{digits}g}"
        return "" if v is None else str(v)

    return markdown_rows(columns, [[cell(v) for v in row] for row in table.itertuples(index=False)])


def plot_importances(imp: pd.DataFrame, path: Path, n_trials: int | None = None) -> Path | None:
    """One panel per target: each parameter's importance by evaluator (bars), with the bootstrap
    95 % interval where the table has one (`ci_low`, `ci_high`). None when nothing was computed."""
    from matplotlib.figure import Figure

    ok = imp.dropna(subset=["param", "importance"])
    if ok.empty:
        return None
    targets = list(dict.fromkeys(ok["target"]))
    evaluators = list(dict.fromkeys(ok["evaluator"]))
    params = list(dict.fromkeys(ok.sort_values("importance", ascending=False)["param"]))
    fig = Figure(figsize=(4.6 * len(targets) + 0.6, 0.45 * len(params) + 1.9), dpi=100, layout="constrained")
    axes = fig.subplots(1, len(targets), squeeze=False, sharey=True)[0]
    height = 0.8 / len(evaluators)
    y = np.arange(len(params))
    for ax, target in zip(axes, targets, strict=True):
        for k, ev in enumerate(evaluators):
            block = ok[(ok["target"] == target) & (ok["evaluator"] == ev)].set_index("param").reindex(params)
            values = block["importance"].to_numpy(dtype=float)
            err = None
            if {"ci_low", "ci_high"} <= set(block.columns) and np.isfinite(block["ci_low"].to_numpy(dtype=float)).any():
                lo, hi = block["ci_low"].to_numpy(dtype=float), block["ci_high"].to_numpy(dtype=float)
                err = np.nan_to_num(np.vstack([values - lo, hi - values]).clip(min=0))
            ax.barh(y + (k - (len(evaluators) - 1) / 2) * height, np.nan_to_num(values), height=height, xerr=err,
                    capsize=3, color=f"C{k}", label={"fanova": "fANOVA", "ped_anova": "PED-ANOVA"}.get(ev, ev))
        ax.set_title(str(target), fontsize=10)
        ax.set_xlim(0, 1)
        ax.set_xlabel("importance (share, sums to 1)")
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(y, params, fontsize=8)
    axes[0].invert_yaxis()
    axes[0].legend(fontsize=8, loc="lower right")
    counted = f" from {n_trials} trials" if n_trials is not None else ""
    intervals = " (bars: bootstrap 95 % intervals)" if "ci_low" in ok and np.isfinite(ok["ci_low"]).any() else ""
    fig.suptitle(f"Parameter importances{counted}{intervals}", fontsize=11)
    fig.savefig(path)
    return path


def plot_pareto(study: optuna.Study, path: Path, names: tuple[str, str] | None = None) -> Path:
    """The trials of a two-objective study and their Pareto front, each front point labelled with
    its trial number; the title gives the counts."""
    from matplotlib.figure import Figure

    names = names or tuple(study.metric_names or ("objective 0", "objective 1"))
    fig = Figure(figsize=(6.4, 4.8), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                if all(math.isfinite(v) for v in t.values)]
    best = {t.number for t in study.best_trials}
    others = [t for t in complete if t.number not in best]
    ax.scatter([t.values[0] for t in others], [t.values[1] for t in others], c="lightgrey",
               label=f"other trials ({len(others)})")
    front = sorted((t for t in complete if t.number in best), key=lambda t: t.values[0])
    ax.plot([t.values[0] for t in front], [t.values[1] for t in front], "o-", color="C3",
            label=f"Pareto front ({len(front)})")
    for t in front:
        ax.annotate(f"#{t.number}", (t.values[0], t.values[1]), textcoords="offset points", xytext=(4, 4),
                    fontsize=8, color="C3")
    ax.set_xlabel(names[0])
    ax.set_ylabel(names[1])
    values = [v for t in complete for v in t.values]
    if values and min(values) > 0:
        ax.set_xscale("log")
        ax.set_yscale("log")
    ax.legend(fontsize=8)
    ax.set_title(f"Study {study.study_name}: Pareto front of {len(complete)} complete trials", fontsize=10)
    fig.savefig(path)
    return path


def label_counts(ax, x, counts, prefix: str = "n=") -> None:
    """Write each point's number of trials at the top of the axes (`n=3`)."""
    for xi, n in zip(x, counts, strict=True):
        ax.annotate(f"{prefix}{int(n)}", (xi, 1), xycoords=("data", "axes fraction"), xytext=(0, -3),
                    textcoords="offset points", ha="center", va="top", fontsize=7, color="0.35",
                    bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.85})
