"""Figures of the trained runs, drawn from the trajectory (one row per seed and checkpoint) and the
final test predictions: training curves (`training_curves.png`), the path of the two tracked
components' test MSE (`mse_trajectory.png`), the per-component MSE over steps
(`mse_time_series.png`) and the final error over the test split's abundances
(`test_abundance_mse.png`); seeds thin, their mean thick, the oracle floor and the
predict-the-mean baseline where given."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from speccomp.spectra.data import SplitData
from speccomp.spectra.figures._common import (
    BASELINE_COLOR,
    FLOOR_COLOR,
    TEST_COLOR,
    THICK,
    THIN,
    TRAIN_COLOR,
    VAL_COLOR,
    _color_norm,
    _figure,
    _label_panels,
    _limits,
    _log_if_positive,
    _row_major,
    _seed_colors,
)


def plot_training_curves(trajectory: pd.DataFrame) -> Figure:
    """Train and test MSE (val too when present) against step; seeds thin, mean thick, log y."""
    runs = _runs(trajectory)
    fig = _figure((10, 5.5))
    ax = fig.subplots()
    series = [
        ("train_loss", TRAIN_COLOR, "train (minibatch loss, mean since previous checkpoint)"),
        ("test_loss", TEST_COLOR, "test (novel combination)"),
    ]
    if "val_loss" in trajectory and trajectory["val_loss"].notna().any():
        series.append(("val_loss", VAL_COLOR, "val (in-distribution)"))
    handles = []
    for col, color, name in series:
        for _, _, run in runs:
            ok = run[col].notna()
            ax.plot(run.loc[ok, "step"], run.loc[ok, col], color=color, lw=THIN, alpha=0.35)
        mean = _mean_over_runs(trajectory, col)
        label = f"{name}, mean of {len(runs)} seeds" if len(runs) > 1 else name
        (h,) = ax.plot(mean["step"], mean[col], color=color, lw=THICK, label=label)
        handles.append(h)
    if len(runs) > 1:
        handles.append(Line2D([], [], color="0.4", lw=THIN, alpha=0.6, label="individual seeds (thin)"))
    _log_if_positive(ax, "y", trajectory[[c for c, _, _ in series]].to_numpy())
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("MSE over all components")
    ax.set_title("Training curves: train and test MSE (all components averaged, as in the tutorial)", fontsize=11)
    ax.grid(alpha=0.3, which="both")
    ax.legend(handles=handles, loc="upper right", fontsize=9)
    return fig


def plot_mse_trajectory(
    trajectory: pd.DataFrame,
    tracked: Sequence[str],
    floor: Mapping[str, float] | None = None,
    baseline: Mapping[str, float] | None = None,
) -> Figure:
    """Path of (test MSE of x, test MSE of y) over checkpoints, one per seed, mean dashed."""
    floor = floor or {}
    baseline = baseline or {}
    x = tracked[0]
    xcol = f"test_mse_{x}"
    if len(tracked) >= 2:
        y = tracked[1]
        ycol, ylabel = f"test_mse_{y}", f"test MSE of {y}"
    else:  # one tracked component: against the all-component test MSE
        y, ycol, ylabel = None, "test_loss", "test MSE, all components"
    runs = _runs(trajectory)
    colors = _seed_colors(len(runs))

    fig = _figure((10, 6.5))
    ax = fig.subplots()
    handles = []
    for (label, _, run), color in zip(runs, colors, strict=True):
        ok = run[xcol].notna() & run[ycol].notna()
        px, py = run.loc[ok, xcol].to_numpy(), run.loc[ok, ycol].to_numpy()
        (h,) = ax.plot(px, py, color=color, lw=1.4, marker="o", ms=3, alpha=0.85, label=label)
        handles.append(h)
        if len(px):
            ax.plot(px[0], py[0], "o", ms=11, mfc="white", mec=color, mew=2, zorder=4)
            ax.plot(px[-1], py[-1], "*", ms=17, color=color, mec="black", mew=0.8, zorder=5)
    if len(runs) > 1:
        mx, my = _mean_over_runs(trajectory, xcol), _mean_over_runs(trajectory, ycol)
        (h,) = ax.plot(mx[xcol], my[ycol], color="black", lw=2.2, ls="--", label=f"mean of {len(runs)} seeds")
        handles.append(h)
        ax.plot(mx[xcol].iloc[-1], my[ycol].iloc[-1], "*", ms=17, color="black", zorder=5)
    handles.append(Line2D([], [], ls="", marker="o", ms=9, mfc="white", mec="black", mew=1.5, label="start (step 0)"))
    handles.append(Line2D([], [], ls="", marker="*", ms=13, color="0.6", mec="black", label="end (final checkpoint)"))

    values = [trajectory[xcol].to_numpy(), trajectory[ycol].to_numpy()]
    if x in floor:
        ax.axvline(floor[x], color=FLOOR_COLOR, ls="--", lw=1.5)
        values.append(np.array([floor[x]]))
    if y is not None and y in floor:
        ax.axhline(floor[y], color=FLOOR_COLOR, ls="--", lw=1.5)
        values.append(np.array([floor[y]]))
    if (x in floor) or (y is not None and y in floor):
        handles.append(Line2D([], [], color=FLOOR_COLOR, ls="--", lw=1.5, label="oracle floor"))
    if x in baseline and y in baseline:
        ax.plot(baseline[x], baseline[y], marker="P", ms=12, color=BASELINE_COLOR, ls="", zorder=4)
        handles.append(Line2D([], [], ls="", marker="P", ms=10, color=BASELINE_COLOR, label="predict the test mean"))
        values.append(np.array([baseline[x], baseline[y]]))

    allv = np.concatenate([np.ravel(v) for v in values])
    log = _log_if_positive(ax, "both", allv)
    if y is not None:  # same scale on both axes, and the diagonal of equal error
        lo, hi = _limits(allv, log)
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.plot([lo, hi], [lo, hi], color="0.6", lw=0.8, ls=":", zorder=1)
        handles.append(Line2D([], [], color="0.6", lw=0.8, ls=":", label="equal MSE"))
        ax.set_aspect("equal", adjustable="box")
    ax.set_xlabel(f"test MSE of {x}")
    ax.set_ylabel(ylabel)
    ax.set_title(f"Test-MSE trajectory over training checkpoints: {x} vs {y or 'all components'}", fontsize=11)
    ax.grid(alpha=0.3, which="both")
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=9, frameon=False)
    return fig


def plot_mse_time_series(
    trajectory: pd.DataFrame,
    tracked: Sequence[str],
    floor: Mapping[str, float] | None = None,
    baseline: Mapping[str, float] | None = None,
) -> Figure:
    """One panel per tracked component: test MSE vs step (seeds thin, mean thick), val dotted.

    Both curves are the MSE *where the component is present* (`test_mse_present_<label>`,
    `val_mse_present_<label>`), the two quantities the gap divides: two thirds of the validation
    samples lack any one component, and over all of them the val curve would sit far below the
    test curve without any gap. Trajectories without those columns fall back to the all-sample
    MSE (and say so in the legend)."""
    floor = floor or {}
    baseline = baseline or {}
    runs = _runs(trajectory)
    colors = _seed_colors(len(runs))
    n = len(tracked)
    ncols = min(n, 3)
    nrows = int(np.ceil(n / ncols))
    fig = _figure((max(8.0, 5.0 * ncols + 1.5), 4.6 * nrows + 0.6))
    axes = fig.subplots(nrows, ncols, sharex=True, sharey=True, squeeze=False).ravel()
    values = []
    handles: dict[str, Line2D] = {}
    present_all = all(_present_columns(trajectory, label)[2] == " where present" for label in tracked)
    for ax, label in zip(axes, tracked, strict=False):
        tcol, vcol, where = _present_columns(trajectory, label)
        for (name, _, run), color in zip(runs, colors, strict=True):
            ok = run[tcol].notna()
            (h,) = ax.plot(
                run.loc[ok, "step"],
                run.loc[ok, tcol],
                color=color,
                lw=1.2,
                alpha=0.8,
                label=name if len(runs) > 1 else f"test (novel combination){where}, {name}",
            )
            handles.setdefault(h.get_label(), h)
        values.append(trajectory[tcol].to_numpy())
        if len(runs) > 1:
            mean = _mean_over_runs(trajectory, tcol)
            (h,) = ax.plot(
                mean["step"],
                mean[tcol],
                color="black",
                lw=THICK,
                label=f"test (novel combination){where}, mean of {len(runs)} seeds",
            )
            handles.setdefault(h.get_label(), h)
        if vcol in trajectory and trajectory[vcol].notna().any():
            mean = _mean_over_runs(trajectory, vcol)
            name = f"val (in-distribution){where}" + (f", mean of {len(runs)} seeds" if len(runs) > 1 else "")
            (h,) = ax.plot(mean["step"], mean[vcol], color=VAL_COLOR, lw=2.2, ls=":", label=name)
            handles.setdefault(h.get_label(), h)
            values.append(trajectory[vcol].to_numpy())
        if label in floor:
            h = ax.axhline(floor[label], color=FLOOR_COLOR, ls="--", lw=1.5, label="oracle floor")
            handles.setdefault(h.get_label(), h)
            values.append(np.array([floor[label]]))
        if label in baseline:
            h = ax.axhline(baseline[label], color=BASELINE_COLOR, ls="-.", lw=1.2, label="predict the test mean")
            handles.setdefault(h.get_label(), h)
            values.append(np.array([baseline[label]]))
        final = _mean_over_runs(trajectory, tcol)[tcol].dropna()
        final_text = f" (final {final.iloc[-1]:.3g})" if len(final) else ""
        if vcol in trajectory and len(final):
            final_val = _mean_over_runs(trajectory, vcol)[vcol].dropna()
            if len(final_val) and final_val.iloc[-1] > 0:
                final_text = f" (final {final.iloc[-1]:.3g}; ÷ val {final_val.iloc[-1]:.3g} = {final.iloc[-1] / final_val.iloc[-1]:.2g})"
        ax.set_title(f"{label}: test MSE{where}{final_text}", fontsize=10)
        ax.grid(alpha=0.3, which="both")
    _log_if_positive(axes[0], "y", np.concatenate([np.ravel(v) for v in values]))
    _label_panels(axes, n, ncols, "optimiser step", "MSE of the component")
    ordered = [h for k, h in handles.items() if not k.startswith("seed ")]
    ordered += [h for k, h in handles.items() if k.startswith("seed ")]
    ncol = min(len(ordered), 4)
    fig.legend(handles=_row_major(ordered, ncol), loc="outside lower center", ncol=ncol, fontsize=9, frameon=False)
    fig.suptitle("Per-component MSE during training" + (", where the component is present" if present_all else ""),
                 fontsize=11)
    return fig


def _present_columns(trajectory: pd.DataFrame, label: str) -> tuple[str, str, str]:
    """(test column, val column, legend note): the present-only MSE where the trajectory has it."""
    tcol, vcol = f"test_mse_present_{label}", f"val_mse_present_{label}"
    if tcol in trajectory and trajectory[tcol].notna().any():
        return tcol, vcol, " where present"
    return f"test_mse_{label}", f"val_mse_{label}", " (all samples)"


def plot_test_abundance_mse(
    test: SplitData,
    final_test_predictions: Mapping[int, np.ndarray],
    tracked: Sequence[str],
) -> Figure:
    """Test points in tracked abundance space, coloured by the seed-averaged squared error
    (final checkpoint, averaged over the tracked components)."""
    idx = [test.label_index(label) for label in tracked]
    truth = test.abundances.numpy().astype(np.float64)
    preds = np.stack([np.asarray(p, dtype=np.float64) for p in final_test_predictions.values()])  # (S, N, C)
    sq = ((preds[:, :, idx] - truth[None, :, idx]) ** 2).mean(axis=(0, 2))  # (N,)
    n_seeds = preds.shape[0]
    cbar_label = f"squared error, mean over {n_seeds} seed{'s' if n_seeds > 1 else ''} and {', '.join(tracked)}"
    norm = _color_norm(sq)
    cmap = colormaps["RdYlBu_r"]

    fig = _figure((9, 6.5))
    ax = fig.subplots()
    order = np.argsort(sq)  # worst on top
    if len(tracked) >= 2:
        x, y = tracked[0], tracked[1]
        px, py = truth[order, idx[0]], truth[order, idx[1]]
        ax.axhline(0, color=TRAIN_COLOR, lw=2, alpha=0.5, zorder=1)
        ax.axvline(0, color=TRAIN_COLOR, lw=2, alpha=0.5, zorder=1, label="where training data lie (axes)")
        sc = ax.scatter(px, py, c=sq[order], cmap=cmap, norm=norm, s=22, lw=0.2, edgecolors="0.3", zorder=3)
        ax.set_aspect("equal")
        ax.set_ylabel(f"true {y} abundance")
        ax.legend(loc="upper left", bbox_to_anchor=(0.0, -0.1), fontsize=9, frameon=False)
    else:
        x = tracked[0]
        sc = ax.scatter(
            truth[order, idx[0]], sq[order], c=sq[order], cmap=cmap, norm=norm, s=22, lw=0.2, edgecolors="0.3"
        )
        if isinstance(norm, LogNorm):
            ax.set_yscale("log")
        ax.set_ylabel("squared error")
    ax.set_xlabel(f"true {x} abundance")
    ax.grid(alpha=0.3)
    ax.set_title(f"Final-checkpoint error on the test split (mean squared error {sq.mean():.3g})", fontsize=11)
    fig.colorbar(sc, ax=ax, label=cbar_label, shrink=0.9)
    return fig


def _runs(trajectory: pd.DataFrame) -> list[tuple[str, tuple, pd.DataFrame]]:
    """(legend label, key, rows sorted by step) per training run, ordered by key."""
    keys = ["seed"]
    if "data_seed" in trajectory and trajectory["data_seed"].nunique() > 1:
        keys = ["data_seed", "seed"]
    out = []
    for key, rows in trajectory.groupby(keys, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        label = f"seed {key[-1]}" + (f", data {key[0]}" if len(keys) == 2 else "")
        out.append((label, key, rows.sort_values("step")))
    return out


def _mean_over_runs(trajectory: pd.DataFrame, col: str) -> pd.DataFrame:
    """Mean of `col` across runs per checkpoint (NaN skipped), with the mean step; sorted by step."""
    by = "checkpoint" if "checkpoint" in trajectory else "step"
    g = trajectory.groupby(by, sort=True)
    out = pd.DataFrame({"step": g["step"].mean(), col: g[col].mean()})
    return out.dropna().sort_values("step").reset_index(drop=True)
