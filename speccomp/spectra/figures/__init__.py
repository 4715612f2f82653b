"""The tutorial's nine figures (`reference/tutorial/plots.md`), drawn without pyplot.

Every `plot_*` function returns a `matplotlib.figure.Figure` built directly on the Agg canvas
(no pyplot state, so figures can be drawn from any thread and never pop up a window);
`draw_all` draws the nine, saves them under the tutorial's file names and closes them.

Figures are sized for the MLflow artifact viewer (about 1000 × 550 px at 100 dpi). Example
spectra are picked with a `numpy.random.Generator` derived from `sample_seed` and the figure's
name; the global NumPy random state is never touched.

Colours: train / in-distribution is blue, test (the novel combination) red, as in the tutorial;
training seeds get one colour each, the same in every figure.

This module holds the entry points (which figure is drawn when, input checks, saving); the figures
themselves are in `data` (spectral lines, abundance scatter), `samples` (example spectra) and
`runs` (curves and errors of the trained runs), what they share in `_common` (dpi, colours,
layouts, axis helpers). Every `plot_*` function is importable from here.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from speccomp.core.config import PhysicsConfig
from speccomp.core.seeding import numpy_generator
from speccomp.spectra.data import SplitData
from speccomp.spectra.figure_names import DATA_FIGURES, FIGURE_NAMES, FLOOR_FREE_FIGURES, RUN_FIGURES
from speccomp.spectra.figures._common import DPI
from speccomp.spectra.figures.data import plot_abundance_scatter, plot_spectral_lines
from speccomp.spectra.figures.runs import (
    plot_mse_time_series,
    plot_mse_trajectory,
    plot_test_abundance_mse,
    plot_training_curves,
)
from speccomp.spectra.figures.samples import (
    plot_diverse_samples,
    plot_split_samples,
    plot_test_samples,
    plot_train_samples,
)
from speccomp.spectra.physics import ForwardModel

__all__ = [
    "DATA_FIGURES", "DPI", "FIGURE_NAMES", "FLOOR_FREE_FIGURES", "RUN_FIGURES", "draw_all", "draw_data_figures", "draw_run_figures",
    "plot_abundance_scatter", "plot_diverse_samples", "plot_mse_time_series", "plot_mse_trajectory",
    "plot_spectral_lines", "plot_split_samples", "plot_test_abundance_mse", "plot_test_samples",
    "plot_train_samples", "plot_training_curves", "predict_mean_mse", "save_figure",
]


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
    names: Collection[str] | None = None,
) -> dict[str, Path]:
    """The four figures of the trained runs (RUN_FIGURES): curves over steps and the final test
    errors by abundance, or those of them in `names` (e.g. FLOOR_FREE_FIGURES before the floor is
    known, the others after). Returns name -> path."""
    tracked = _check_inputs(physics, datasets, trajectory, final_test_predictions, tracked)
    if names is not None and not set(names) <= set(RUN_FIGURES):
        raise ValueError(f"names: {sorted(set(names) - set(RUN_FIGURES))} are not run figures; allowed: {RUN_FIGURES}")
    baseline = predict_mean_mse(datasets["test"], tracked)
    builders = {
        "training_curves.png": lambda: plot_training_curves(trajectory),
        "mse_trajectory.png": lambda: plot_mse_trajectory(trajectory, tracked, floor, baseline),
        "mse_time_series.png": lambda: plot_mse_time_series(trajectory, tracked, floor, baseline),
        "test_abundance_mse.png": lambda: plot_test_abundance_mse(datasets["test"], final_test_predictions, tracked),
    }
    assert tuple(builders) == RUN_FIGURES
    return _save_all(out_dir, {name: build for name, build in builders.items() if names is None or name in names})


def _save_all(out_dir: Path, builders: Mapping[str, Callable[[], Figure]]) -> dict[str, Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for name, build in builders.items():
        written[name] = save_figure(build(), out_dir / name)
    return written


def save_figure(fig: Figure, path: Path) -> Path:
    """Write `fig` as PNG at `DPI` and release its memory."""
    fig.savefig(path, dpi=DPI, facecolor="white")
    fig.clear()
    return path


def predict_mean_mse(test: SplitData, tracked: Sequence[str]) -> dict[str, float]:
    """MSE of always predicting the test split's mean abundance (its variance), per label."""
    a = test.abundances.numpy().astype(np.float64)
    return {label: float(a[:, test.label_index(label)].var()) for label in tracked}


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
