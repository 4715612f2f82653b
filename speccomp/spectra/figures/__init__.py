"""The tutorial's nine figures (`reference/tutorial/plots.md`), drawn without pyplot.

Every `plot_*` function returns a `matplotlib.figure.Figure` built directly on the Agg canvas
(no pyplot state, so figures can be drawn from any thread and never pop up a window);
`draw_all` draws the nine, saves them under the tutorial's file names and closes them.

Figures are sized for the MLflow artifact viewer (about 1000 × 550 px at 100 dpi). Example
spectra are picked with a `numpy.random.Generator` derived from `sample_seed` and the figure's
name; the global NumPy random state is never touched.

Colours: train / in-distribution is blue, test (the novel combination) red, as in the tutorial;
training seeds get one colour each, the same in every figure.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from matplotlib import colormaps
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from speccomp.core.config import PhysicsConfig
from speccomp.core.seeding import numpy_generator
from speccomp.spectra.data import SplitData
from speccomp.spectra.physics import ForwardModel

FIGURE_NAMES: tuple[str, ...] = (
    "spectral_lines.png",
    "diverse_samples.png",
    "train_samples.png",
    "test_samples.png",
    "abundance_scatter.png",
    "training_curves.png",
    "mse_trajectory.png",
    "mse_time_series.png",
    "test_abundance_mse.png",
)
DATA_FIGURES, RUN_FIGURES = FIGURE_NAMES[:5], FIGURE_NAMES[5:]
"""The figures of the data alone (drawable as soon as the data exist), and those of the trained runs."""

DPI = 100
TRAIN_COLOR = "tab:blue"
TEST_COLOR = "tab:red"
VAL_COLOR = "tab:cyan"
FLOOR_COLOR = "darkgreen"
BASELINE_COLOR = "0.45"
TRACKED_COLORS = ("tab:purple", "tab:orange", "tab:olive", "tab:brown", "tab:pink", "teal")
# Seeds avoid the colours that carry meaning elsewhere (train blue, test red, val cyan, floor green).
SEED_COLORS = (
    "tab:orange",
    "tab:purple",
    "tab:brown",
    "tab:pink",
    "tab:olive",
    "goldenrod",
    "navy",
    "magenta",
    "teal",
    "tab:gray",
)
THIN, THICK = 1.0, 2.6


# --------------------------------------------------------------------------------------------
# entry point
# --------------------------------------------------------------------------------------------
def draw_all(
    out_dir: Path,
    physics: PhysicsConfig,
    datasets: Mapping[str, SplitData],
    trajectory: pd.DataFrame,
    final_test_predictions: Mapping[int, np.ndarray],
    tracked: Sequence[str],
    floor: Mapping[str, float] | None = None,
    sample_seed: int = 0,
) -> dict[str, Path]:
    """Draw the nine figures into `out_dir` with the tutorial's file names; returns name -> path.

    trajectory: one row per (seed, checkpoint); columns `seed, step, train_loss, test_loss` and
        `test_mse_<label>` for every tracked label (`data_seed`, `checkpoint`, `val_loss`,
        `val_mse_<label>` are used when present).
    final_test_predictions: training seed -> (N_test, C) predicted abundances on `datasets['test']`.
    tracked: component labels; x = tracked[0], y = tracked[1] in the pair plots.
    floor: optional per-label oracle MSE, drawn as "oracle floor" lines.
    sample_seed: seeds the choice of example spectra (one derived generator per figure).

    All inputs are checked before anything is drawn; a problem raises ValueError. The same files
    as `draw_data_figures` (before training) followed by `draw_run_figures` (after it)."""
    tracked = _check_inputs(physics, datasets, trajectory, final_test_predictions, tracked)
    written = draw_data_figures(out_dir, physics, datasets, tracked, sample_seed)
    written.update(draw_run_figures(out_dir, physics, datasets, trajectory, final_test_predictions, tracked, floor))
    return {name: written[name] for name in FIGURE_NAMES}


def draw_data_figures(
    out_dir: Path,
    physics: PhysicsConfig,
    datasets: Mapping[str, SplitData],
    tracked: Sequence[str],
    sample_seed: int = 0,
) -> dict[str, Path]:
    """The five figures that show the data alone (DATA_FIGURES), drawable before any training:
    the lines, example spectra of each split, the abundance scatter. Returns name -> path."""
    tracked = _check_data_inputs(physics, datasets, tracked)

    def rng(name: str) -> np.random.Generator:
        return numpy_generator(sample_seed, "figure", name)

    forward = ForwardModel.from_config(physics)
    builders = {
        "spectral_lines.png": lambda: plot_spectral_lines(physics, tracked),
        "diverse_samples.png": lambda: plot_diverse_samples(physics, datasets, rng("diverse_samples"), forward=forward),
        "train_samples.png": lambda: plot_train_samples(
            physics, datasets["train"], tracked, rng("train_samples"), forward=forward
        ),
        "test_samples.png": lambda: plot_test_samples(
            physics, datasets["test"], tracked, rng("test_samples"), forward=forward
        ),
        "abundance_scatter.png": lambda: plot_abundance_scatter(datasets, tracked),
    }
    assert tuple(builders) == DATA_FIGURES
    return _save_all(out_dir, builders)


def draw_run_figures(
    out_dir: Path,
    physics: PhysicsConfig,
    datasets: Mapping[str, SplitData],
    trajectory: pd.DataFrame,
    final_test_predictions: Mapping[int, np.ndarray],
    tracked: Sequence[str],
    floor: Mapping[str, float] | None = None,
) -> dict[str, Path]:
    """The four figures of the trained runs (RUN_FIGURES): curves over steps and the final test
    errors by abundance. Returns name -> path."""
    tracked = _check_inputs(physics, datasets, trajectory, final_test_predictions, tracked)
    baseline = predict_mean_mse(datasets["test"], tracked)
    builders = {
        "training_curves.png": lambda: plot_training_curves(trajectory),
        "mse_trajectory.png": lambda: plot_mse_trajectory(trajectory, tracked, floor, baseline),
        "mse_time_series.png": lambda: plot_mse_time_series(trajectory, tracked, floor, baseline),
        "test_abundance_mse.png": lambda: plot_test_abundance_mse(datasets["test"], final_test_predictions, tracked),
    }
    assert tuple(builders) == RUN_FIGURES
    return _save_all(out_dir, builders)


def _save_all(out_dir: Path, builders: Mapping[str, Callable[[], Figure]]) -> dict[str, Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for name, build in builders.items():
        written[name] = save_figure(build(), out_dir / name)
    return written


def save_figure(fig: Figure, path: Path) -> Path:
    """Write `fig` as PNG at the module's dpi and release its memory."""
    fig.savefig(path, dpi=DPI, facecolor="white")
    fig.clear()
    return path


def predict_mean_mse(test: SplitData, tracked: Sequence[str]) -> dict[str, float]:
    """MSE of always predicting the test split's mean abundance (its variance), per label."""
    a = test.abundances.numpy().astype(np.float64)
    return {label: float(a[:, test.label_index(label)].var()) for label in tracked}


# --------------------------------------------------------------------------------------------
# physics and data
# --------------------------------------------------------------------------------------------
def plot_spectral_lines(physics: PhysicsConfig, tracked: Sequence[str] = ()) -> Figure:
    """Top: every line's signed profile s·g(λ) over the grid; bottom: centre vs strength."""
    forward = ForwardModel.from_config(physics)
    wl = forward.wavelength_nm.numpy()
    signed = (forward.strengths[:, None] * forward.profiles).numpy()
    tracked = list(tracked)
    colors = _component_colors(len(physics.lines))
    for i, line in enumerate(physics.lines):
        if line.label in tracked:
            colors[i] = TRACKED_COLORS[tracked.index(line.label) % len(TRACKED_COLORS)]

    fig = _figure((11, 7.5))
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[1.15, 1])
    for i, line in enumerate(physics.lines):
        is_tracked = line.label in tracked
        top.plot(
            wl,
            signed[i],
            color=colors[i],
            lw=2.6 if is_tracked else 1.0,
            alpha=1.0 if is_tracked else 0.75,
            zorder=3 if is_tracked else 2,
        )
        if is_tracked:
            right = tracked.index(line.label) % 2 == 0
            top.annotate(
                f"{line.label} (tracked)",
                (line.center, line.strength),
                xytext=(8 if right else -8, 6 if line.strength > 0 else -12),
                textcoords="offset points",
                ha="left" if right else "right",
                fontsize=9.5,
                fontweight="bold",
                color=colors[i],
            )
    top.axhline(0, color="0.3", lw=0.8)
    top.set_ylabel("strength × profile  s·g(λ)")
    top.set_ylim(-1.15, 1.15)
    top.set_title(
        f"{len(physics.lines)} spectral components: signed Gaussian line profiles "
        f"(> 0 emission, < 0 absorption; spectrum = continuum · Π(1 + a·s·g))",
        fontsize=10,
    )
    top.grid(alpha=0.3)

    for i, line in enumerate(physics.lines):
        is_tracked = line.label in tracked
        bottom.errorbar(
            line.center,
            line.strength,
            xerr=line.width,
            fmt="o",
            color=colors[i],
            ms=8 if is_tracked else 6,
            elinewidth=1.2,
            capsize=3,
            alpha=0.9,
            mec="black" if is_tracked else colors[i],
        )
        bottom.annotate(
            line.label,
            (line.center, line.strength),
            xytext=(4, 5),
            textcoords="offset points",
            fontsize=8.5,
            fontweight="bold" if is_tracked else "normal",
        )
    bottom.axhline(0, color="0.3", lw=0.8)
    bottom.set_ylim(-1.15, 1.15)
    bottom.set_xlim(physics.wavelength_min, physics.wavelength_max)
    bottom.set_xlabel("wavelength (nm)")
    bottom.set_ylabel("line strength s")
    bottom.set_title("Line centre vs strength (bars: ± one width σ)", fontsize=10)
    bottom.grid(alpha=0.3)
    return fig


def plot_diverse_samples(
    physics: PhysicsConfig,
    datasets: Mapping[str, SplitData],
    rng: np.random.Generator,
    n: int = 10,
    forward: ForwardModel | None = None,
) -> Figure:
    """About `n` spectra across all splits and compositions, each with its blackbody continuum dashed."""
    forward = forward or ForwardModel.from_config(physics)
    wl = forward.wavelength_nm.numpy()
    picks: list[tuple[str, int]] = []
    for name, split in datasets.items():
        for idx in _pick_by_group(split, [], rng, max(1, n // max(1, len(datasets)) + 1)):
            picks.append((name, idx))
    if len(picks) > n:
        keep = np.sort(rng.choice(len(picks), size=n, replace=False))
        picks = [picks[k] for k in keep]
    picks.sort(key=lambda p: float(datasets[p[0]].temperature_k[p[1]]))

    ncols = min(5, len(picks))
    nrows = int(np.ceil(len(picks) / ncols))
    fig, axes = _panel_grid((12, 2.75 * nrows + 1.2), nrows, ncols)
    for ax, (name, idx) in zip(axes, picks, strict=False):
        split = datasets[name]
        temp = split.temperature_k[idx : idx + 1].to(torch.float64)
        cont = forward.continuum(temp)[0].numpy()
        color = _split_color(name)
        ax.plot(wl, split.spectra[idx].numpy(), color=color, lw=0.7, alpha=0.85)
        ax.plot(wl, cont, color="black", lw=1.3, ls="--")
        comps = _present_labels(split, idx)
        ax.set_title(
            f"{name}: {_short_list(comps)}\nT = {float(temp):.0f} K, σ = {float(split.noise_sigma[idx]):.3f}",
            fontsize=8.5,
        )
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(4))
    for ax in axes[len(picks) :]:
        ax.set_visible(False)
    for ax in axes.reshape(nrows, ncols)[-1]:
        ax.set_xlabel("wavelength (nm)")
    for ax in axes.reshape(nrows, ncols)[:, 0]:
        ax.set_ylabel("flux (continuum peak = 1)")
    handles = [Line2D([], [], color=_split_color(s), lw=1.2, label=f"{s} spectrum") for s in datasets]
    handles.append(Line2D([], [], color="black", lw=1.3, ls="--", label="blackbody continuum"))
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=9, frameon=False)
    fig.suptitle(
        f"{len(picks)} random spectra over the full grid (ordered by temperature)", fontsize=11, y=0.995, va="top"
    )
    return fig


def plot_train_samples(
    physics: PhysicsConfig,
    train: SplitData,
    tracked: Sequence[str],
    rng: np.random.Generator,
    n: int = 6,
    forward: ForwardModel | None = None,
) -> Figure:
    """Training examples, one per panel (columns cycle through the split's compositions)."""
    return plot_split_samples(
        physics,
        train,
        tracked,
        rng,
        n,
        forward,
        title=f"Examples from the {train.name!r} split: single components and the bare continuum",
    )


def plot_test_samples(
    physics: PhysicsConfig,
    test: SplitData,
    tracked: Sequence[str],
    rng: np.random.Generator,
    n: int = 6,
    forward: ForwardModel | None = None,
) -> Figure:
    """Test examples (the tracked components together), one per panel."""
    return plot_split_samples(
        physics,
        test,
        tracked,
        rng,
        n,
        forward,
        title=f"Examples from the {test.name!r} split: the combination never seen in training",
    )


def plot_split_samples(
    physics: PhysicsConfig,
    split: SplitData,
    tracked: Sequence[str],
    rng: np.random.Generator,
    n: int = 6,
    forward: ForwardModel | None = None,
    title: str | None = None,
) -> Figure:
    """`n` examples of one split: noisy spectrum, noise-free model, continuum; tracked lines marked."""
    forward = forward or ForwardModel.from_config(physics)
    wl = forward.wavelength_nm.numpy()
    idx = _pick_by_group(split, tracked, rng, n)
    temps = split.temperature_k[idx].to(torch.float64)
    abund = split.abundances[idx].to(torch.float64)
    clean = forward.clean(temps, abund).numpy()
    cont = forward.continuum(temps).numpy()
    lines = {ln.label: ln for ln in physics.lines}
    color = _split_color(split.name)

    ncols = min(3, len(idx))
    nrows = int(np.ceil(len(idx) / ncols))
    fig, axes = _panel_grid((11.5, 2.8 * nrows + 1.2), nrows, ncols)
    for k, (ax, i) in enumerate(zip(axes, idx, strict=False)):
        for j, label in enumerate(tracked):
            ln = lines[label]
            tc = TRACKED_COLORS[j % len(TRACKED_COLORS)]
            ax.axvspan(ln.center - ln.width, ln.center + ln.width, color=tc, alpha=0.10, lw=0)
            ax.axvline(ln.center, color=tc, lw=1.2, ls=":")
        ax.plot(wl, split.spectra[i].numpy(), color=color, lw=0.7, alpha=0.7)
        ax.plot(wl, clean[k], color="black", lw=1.1)
        ax.plot(wl, cont[k], color="0.4", lw=1.1, ls="--")
        ax.set_title(_sample_title(split, i, tracked), fontsize=9)
        ax.grid(alpha=0.3)
    for ax in axes[len(idx) :]:
        ax.set_visible(False)
    grid = axes.reshape(nrows, ncols)
    for ax in grid[-1]:
        ax.set_xlabel("wavelength (nm)")
    for ax in grid[:, 0]:
        ax.set_ylabel("flux (continuum peak = 1)")
    handles = [
        Line2D([], [], color=color, lw=1.0, label="noisy spectrum (model input)"),
        Line2D([], [], color="black", lw=1.1, label="noise-free spectrum"),
        Line2D([], [], color="0.4", lw=1.1, ls="--", label="blackbody continuum"),
    ]
    for j, label in enumerate(tracked):
        ln = lines[label]
        handles.append(
            Line2D(
                [],
                [],
                color=TRACKED_COLORS[j % len(TRACKED_COLORS)],
                lw=1.5,
                ls=":",
                label=f"{label}: {ln.center:g} nm ± {ln.width:g} nm",
            )
        )
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 5), fontsize=9, frameon=False)
    fig.suptitle(title or f"Examples from the {split.name} split", fontsize=11, y=0.995, va="top")
    return fig


def plot_abundance_scatter(datasets: Mapping[str, SplitData], tracked: Sequence[str]) -> Figure:
    """Abundances of the tracked pair: train (blue) on the axes, test (red) in the interior."""
    train, test = datasets["train"], datasets["test"]
    fig = _figure((8, 7))
    ax = fig.subplots()
    if len(tracked) < 2:  # one tracked component: compare the two splits' abundance histograms
        label = tracked[0]
        bins = np.linspace(0, 1, 41)
        for split, color in ((train, TRAIN_COLOR), (test, TEST_COLOR)):
            a = split.abundances[:, split.label_index(label)].numpy()
            ax.hist(a, bins=bins, color=color, alpha=0.45, label=f"{split.name} (n = {len(a)})", density=True)
        ax.set_xlabel(f"{label} abundance")
        ax.set_ylabel("density")
        ax.set_title(f"Abundance of {label}: train vs test", fontsize=11)
        ax.legend(loc="upper right", fontsize=9)
        return fig

    x, y = tracked[0], tracked[1]
    lo, hi = 0.0, 1.0
    for split, color, size, z in ((train, TRAIN_COLOR, 10, 3), (test, TEST_COLOR, 10, 2)):
        ax_ = split.abundances[:, split.label_index(x)].numpy()
        ay_ = split.abundances[:, split.label_index(y)].numpy()
        at_origin = int(np.sum((ax_ == 0) & (ay_ == 0)))
        extra = f"; {at_origin} at the origin" if at_origin else ""
        ax.scatter(
            ax_, ay_, s=size, color=color, alpha=0.5, lw=0, zorder=z, label=f"{split.name} (n = {len(ax_)}{extra})"
        )
        lo, hi = min(lo, ax_.min(), ay_.min()), max(hi, ax_.max(), ay_.max())
    pad = 0.04 * (hi - lo)
    ax.set_xlim(lo - pad, hi + pad)
    ax.set_ylim(lo - pad, hi + pad)
    ax.set_aspect("equal")
    ax.set_xlabel(f"{x} abundance")
    ax.set_ylabel(f"{y} abundance")
    ax.set_title(f"Abundance space of {x} and {y}: train on the axes, test in the interior", fontsize=11)
    ax.grid(alpha=0.3)
    fig.legend(
        *ax.get_legend_handles_labels(),
        loc="outside lower center",
        ncol=2,
        fontsize=9.5,
        markerscale=2.5,
        frameon=False,
    )
    return fig


# --------------------------------------------------------------------------------------------
# training dynamics
# --------------------------------------------------------------------------------------------
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
    for ax in axes[n:]:
        ax.set_visible(False)
    grid = axes.reshape(nrows, ncols)
    for ax in grid[-1]:
        ax.set_xlabel("optimiser step")
    for ax in grid[:, 0]:
        ax.set_ylabel("MSE of the component")
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


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def _figure(size: tuple[float, float]) -> Figure:
    return Figure(figsize=size, dpi=DPI, layout="constrained")


def _panel_grid(
    size: tuple[float, float],
    nrows: int,
    ncols: int,
    left: float = 0.7,
    right: float = 0.15,
    top: float = 0.35,
    bottom: float = 0.85,
    wgap: float = 0.12,
    hgap: float = 0.45,
) -> tuple[Figure, np.ndarray]:
    """A grid of panels sharing both axes, with fixed margins in inches.

    Constrained layout would measure every tick label of every panel twice (half the drawing
    time of a 10-panel figure); with shared axes and fixed font sizes the margins are known.
    Room is left for a two-line panel title (`hgap` and `top`), the suptitle and a one- or
    two-row figure legend at the bottom.
    """
    w, h = size
    fig = Figure(figsize=size, dpi=DPI)
    cell_w = (w - left - right - wgap * (ncols - 1)) / ncols
    cell_h = (h - top - bottom - hgap * (nrows - 1) - 0.35) / nrows
    axes = fig.subplots(
        nrows,
        ncols,
        sharex=True,
        sharey=True,
        squeeze=False,
        gridspec_kw=dict(
            left=left / w,
            right=1 - right / w,
            top=1 - (top + 0.35) / h,
            bottom=bottom / h,
            wspace=wgap / cell_w,
            hspace=hgap / cell_h,
        ),
    )
    return fig, axes.ravel()


def _check_data_inputs(physics: PhysicsConfig, datasets: Mapping[str, SplitData], tracked: Sequence[str]) -> list[str]:
    if isinstance(tracked, str) or not tracked:
        raise ValueError(f"tracked must be a non-empty list of component labels, got {tracked!r}")
    tracked = list(dict.fromkeys(tracked))
    unknown = [t for t in tracked if t not in physics.labels]
    if unknown:
        raise ValueError(f"tracked component(s) {unknown} are not lines of the physics config; known: {physics.labels}")
    for name in ("train", "test"):
        if name not in datasets:
            raise ValueError(f"datasets needs a {name!r} split; got {sorted(datasets)}")
    return tracked


def _check_inputs(
    physics: PhysicsConfig,
    datasets: Mapping[str, SplitData],
    trajectory: pd.DataFrame,
    final_test_predictions: Mapping[int, np.ndarray],
    tracked: Sequence[str],
) -> list[str]:
    tracked = _check_data_inputs(physics, datasets, tracked)
    if trajectory.empty:
        raise ValueError("trajectory is empty; it needs one row per (seed, checkpoint)")
    needed = ["seed", "step", "train_loss", "test_loss"] + [f"test_mse_{t}" for t in tracked]
    missing = [c for c in needed if c not in trajectory.columns]
    if missing:
        raise ValueError(f"trajectory lacks column(s) {missing}; it has {list(trajectory.columns)}")
    if not final_test_predictions:
        raise ValueError("final_test_predictions is empty; it needs seed -> (N_test, C) predictions")
    expected = tuple(datasets["test"].abundances.shape)
    for seed, pred in final_test_predictions.items():
        if np.shape(pred) != expected:
            raise ValueError(
                f"final_test_predictions[{seed}] has shape {np.shape(pred)}, expected {expected} (the test split)"
            )
    return tracked


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


def _seed_colors(n: int) -> list:
    return [SEED_COLORS[i % len(SEED_COLORS)] for i in range(n)]


def _row_major(handles: list, ncol: int) -> list:
    """Reorder legend entries so that a legend with `ncol` columns reads row by row."""
    nrows = int(np.ceil(len(handles) / ncol))
    grid = [handles[r * ncol : (r + 1) * ncol] for r in range(nrows)]
    return [row[c] for c in range(ncol) for row in grid if c < len(row)]


def _component_colors(n: int) -> list:
    cmap = colormaps["tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def _split_color(name: str) -> str:
    if name == "test":
        return TEST_COLOR
    if name == "train":
        return TRAIN_COLOR
    if name == "val":
        return VAL_COLOR
    return "tab:gray"


def _log_if_positive(ax, axis: str, values: np.ndarray) -> bool:
    """Log scale when every finite value is > 0 and they span more than a factor of 10."""
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if len(v) == 0 or v.min() <= 0 or v.max() / v.min() < 10:
        return False
    if axis in ("x", "both"):
        ax.set_xscale("log")
    if axis in ("y", "both"):
        ax.set_yscale("log")
    return True


def _limits(values: np.ndarray, log: bool) -> tuple[float, float]:
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return 0.0, 1.0
    lo, hi = float(v.min()), float(v.max())
    if log:
        return lo / 1.4, hi * 1.4
    pad = 0.06 * (hi - lo) if hi > lo else 0.05 * max(abs(hi), 1e-3)
    return lo - pad, hi + pad


def _color_norm(values: np.ndarray):
    v = values[np.isfinite(values)]
    positive = v[v > 0]
    if len(positive) and positive.max() / positive.min() > 30:
        vmin = max(float(positive.min()), float(positive.max()) * 1e-4)
        return LogNorm(vmin=vmin, vmax=float(positive.max()), clip=True)
    return Normalize(vmin=float(v.min()) if len(v) else 0.0, vmax=float(v.max()) if len(v) else 1.0)


def _group_keys(split: SplitData) -> np.ndarray:
    """An integer id per sample for its set of present components."""
    present = split.present.numpy()
    _, inverse = np.unique(present, axis=0, return_inverse=True)
    return inverse.ravel()


def _pick_by_group(split: SplitData, tracked: Sequence[str], rng: np.random.Generator, n: int) -> list[int]:
    """Up to `n` sample indices, cycling through the split's component sets so that each shows up:
    sets are ordered by size, then by how many tracked components they hold."""
    present = split.present.numpy()
    groups = _group_keys(split)
    tracked_idx = [split.label_index(t) for t in tracked]
    order = []
    for g in np.unique(groups):
        members = np.flatnonzero(groups == g)
        row = present[members[0]]
        tracked_pos = [tracked_idx.index(i) for i in np.flatnonzero(row) if i in tracked_idx]
        untracked = int(row.sum()) - len(tracked_pos)
        order.append(((int(row.sum()), untracked, tracked_pos), rng.permutation(members)))
    order.sort(key=lambda t: t[0])
    if len(order) == 1 and tracked_idx:  # one composition (test): spread over the first tracked abundance
        a = split.abundances.numpy()[:, tracked_idx[0]]
        members = np.sort(order[0][1])
        chunks = np.array_split(members[np.argsort(a[members], kind="stable")], min(n, len(members)))
        return [int(rng.choice(c)) for c in chunks]
    picked: list[int] = []
    depth = 0
    while len(picked) < n and any(depth < len(m) for _, m in order):
        for _, members in order:
            if depth < len(members) and len(picked) < n:
                picked.append(int(members[depth]))
        depth += 1
    return picked


def _present_labels(split: SplitData, idx: int) -> list[str]:
    row = split.present[idx].numpy()
    return [split.labels[i] for i in np.flatnonzero(row)]


def _short_list(labels: list[str], n: int = 3) -> str:
    if not labels:
        return "continuum only"
    return ", ".join(labels[:n]) + (f" +{len(labels) - n}" if len(labels) > n else "")


def _sample_title(split: SplitData, idx: int, tracked: Sequence[str]) -> str:
    a = split.abundances[idx].numpy()
    parts = [f"{t} = {a[split.label_index(t)]:.2f}" for t in tracked]
    others = [lab for lab in _present_labels(split, idx) if lab not in tracked]
    if others:
        parts.append("+ " + _short_list(others, 2))
    if not _present_labels(split, idx):
        parts = ["continuum only"]
    return ", ".join(parts) + f"\nT = {float(split.temperature_k[idx]):.0f} K, σ = {float(split.noise_sigma[idx]):.3f}"
