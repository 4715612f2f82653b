"""The paired comparison over meta-test pairs and the two figures of a meta run.

Per pair and method the scalar compared is the test MSE on the pair's combination, averaged over
the pair's two components (and over seeds): `test_mse`; on the matrices domain the held-out error
`test_error` = 1 − accuracy on matrices holding the task's (rule, attribute) pair (`measure_of`). Against each baseline, over the pairs:
the median of the per-pair ratios meta ÷ baseline (< 1: the meta-learner is better), how many pairs
the meta-learner wins, and the two-sided Wilcoxon signed-rank p-value of the paired differences.
"""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy.stats import wilcoxon  # noqa: E402

from speccomp.meta.domain import MetaTestFigure  # noqa: E402

REFERENCE = "meta"
ORDER = ("meta", "meta-weights", "meta-arch", "prior", "nas", "default", "loglinear", "wren", "oracle", "chance")


def measure_of(per_pair: pd.DataFrame) -> str:
    """The column compared when no domain says (`MetaDomain.measure`): `test_error` if the table has
    it (matrices), else `test_mse`; lower is better."""
    return "test_error" if "test_error" in per_pair else "test_mse"


def method_order(methods) -> list[str]:
    known = [m for m in ORDER if m in set(methods)]
    return known + sorted(set(methods) - set(known))


def comparison_table(per_pair: pd.DataFrame, reference: str = REFERENCE, measure: str | None = None) -> pd.DataFrame:
    """`per_pair`: one row per (pair, method) with `test_mse`, `oracle_mse`, `gap` (mean of the two
    components' gaps). One row per method: n_pairs, median test MSE, median test MSE ÷ oracle MSE,
    median gap, and against the reference: median ratio, wins, Wilcoxon p (NaN for the reference).
    Matrices (`test_error`, `test_acc`, `gap` = gap/acc): median test error and held-out accuracy
    instead of the MSE and the oracle ratio. `measure`: the domain's (`MetaDomain.measure`), else
    `measure_of`."""
    measure = measure or measure_of(per_pair)
    wide = per_pair.pivot(index="pair", columns="method", values=measure)
    rows = []
    for method in method_order(wide.columns):
        sub = per_pair[per_pair.method == method]
        row = {"method": method, "n_pairs": int(sub[measure].notna().sum()), f"median_{measure}": float(sub[measure].median())}
        if "oracle_mse" in sub:  # the measure read against the domain's oracle (spectra)
            row["median_ratio_to_oracle"] = float((sub[measure] / sub["oracle_mse"]).median())
        if "test_acc" in sub:  # the accuracy beside the error (matrices)
            row["median_test_acc"] = float(sub["test_acc"].median())
        row["median_gap"] = float(sub["gap"].median()) if sub["gap"].notna().any() else math.nan
        if reference in wide.columns and method != reference:
            ref, other = wide[reference], wide[method]
            ok = ref.notna() & other.notna()
            row[f"median_ratio_{reference}_to_method"] = float((ref[ok] / other[ok]).median())
            row[f"{reference}_wins"] = f"{int((ref[ok] < other[ok]).sum())}/{int(ok.sum())}"
            row["wilcoxon_p"] = paired_p(ref[ok].to_numpy(), other[ok].to_numpy())
        else:
            row[f"median_ratio_{reference}_to_method"] = math.nan
            row[f"{reference}_wins"] = ""
            row["wilcoxon_p"] = math.nan
        rows.append(row)
    return pd.DataFrame(rows)


def paired_p(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value of paired samples (NaN when undefined: fewer than
    two pairs or all differences zero)."""
    d = np.asarray(a, float) - np.asarray(b, float)
    if len(d) < 2 or np.all(d == 0):
        return math.nan
    return float(wilcoxon(a, b, alternative="two-sided").pvalue)


def format_table(table: pd.DataFrame) -> str:
    """The console form of `comparison_table`."""
    shown = table.copy()
    for col in shown.columns:
        if shown[col].dtype.kind == "f":
            digits = 2 if col == "wilcoxon_p" else 3
            shown[col] = shown[col].map(lambda v, d=digits: f"{v:.{d}g}" if np.isfinite(v) else "")
    return shown.to_string(index=False)


def plot_posterior(probabilities: dict[str, np.ndarray], options: dict[str, tuple[str, ...]]) -> plt.Figure:
    """`probabilities[decision]`: (T, K) posterior-mean probabilities over meta-iterations; one panel
    per decision, one line per option."""
    names = list(probabilities)
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 2.8 * rows), squeeze=False, sharex=True)
    for ax, name in zip(axes.flat, names, strict=False):
        probs = probabilities[name]
        steps = np.arange(1, len(probs) + 1)
        chosen = int(np.argmax(probs[-1]))
        for k, option in enumerate(options[name]):
            ax.plot(steps, probs[:, k], label=option + (" (MAP)" if k == chosen else ""),
                    lw=2.4 if k == chosen else 1.0)
        ax.axhline(1 / probs.shape[1], color="0.6", lw=0.8, ls=":")
        ax.set_title(f"{name}: MAP {options[name][chosen]} {probs[-1, chosen]:.2f}", fontsize=9)
        low, high = float(probs.min()), float(probs.max())
        pad = max(0.02, 0.1 * (high - low))
        ax.set_ylim(max(0.0, low - pad), min(1.0, high + pad))  # zoomed to the data: small moves show
        ax.legend(fontsize=6, loc="upper left", ncol=2)
    for ax in axes.flat[len(names):]:
        ax.axis("off")
    for ax in axes[-1]:
        ax.set_xlabel("meta-iteration")
    for ax in axes[:, 0]:
        ax.set_ylabel("posterior-mean probability")
    fig.suptitle("Posterior-mean probabilities during meta-training (dotted: uniform; thick: the MAP option; axes zoomed to the data)", fontsize=10)
    fig.tight_layout()
    return fig


def plot_meta_test(per_pair: pd.DataFrame, figure: MetaTestFigure) -> plt.Figure:
    """Per method, the distribution over meta-test tasks of `figure.value` (e.g. test MSE ÷ oracle
    MSE on the spectra, the held-out accuracy on the matrices), each task a dot, the median a bar."""
    methods = [m for m in method_order(per_pair.method.unique()) if m != figure.left_out]
    fig, ax = plt.subplots(figsize=(1.3 * len(methods) + 2.5, 4))
    rng = np.random.default_rng(0)  # horizontal jitter of the dots only
    for i, method in enumerate(methods):
        values = figure.value(per_pair[per_pair.method == method])
        ax.scatter(i + rng.uniform(-0.15, 0.15, len(values)), values, s=14, alpha=0.7)
        ax.hlines(np.median(values), i - 0.3, i + 0.3, color="k", lw=2)
    if figure.line is not None:
        height, label = figure.line(per_pair)
        ax.axhline(height, color="0.4", ls="--", lw=1, label=label)
    if figure.log:
        ax.set_yscale("log")
    if figure.ylim is not None:
        ax.set_ylim(*figure.ylim)
    ax.set_xticks(range(len(methods)), methods)
    ax.set_ylabel(figure.ylabel)
    ax.set_title(figure.title.format(n=per_pair.pair.nunique()), fontsize=10)
    if figure.line is not None:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
