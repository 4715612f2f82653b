"""The nine tutorial figures: names, valid PNGs, options, input checks, no global RNG use."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest

from speccomp.core.config import default_config_dir, load_config
from speccomp.spectra.data import generate_datasets
from speccomp.spectra.figures import (
    FIGURE_NAMES,
    draw_all,
    plot_mse_time_series,
    plot_mse_trajectory,
    plot_train_samples,
)

SMALL = [
    "physics.n_bins=128",
    "data.splits.train.n_samples=60",
    "training.batch_size=32",
    "data.splits.test.n_samples=30",
    "data.validation.n_samples=20",
]
TUTORIAL_NAMES = {
    "spectral_lines.png",
    "diverse_samples.png",
    "train_samples.png",
    "test_samples.png",
    "abundance_scatter.png",
    "training_curves.png",
    "mse_trajectory.png",
    "mse_time_series.png",
    "test_abundance_mse.png",
}


@pytest.fixture(scope="module")
def cfg():
    return load_config(default_config_dir(), overrides=SMALL)


@pytest.fixture(scope="module")
def datasets(cfg):
    return generate_datasets(cfg, 42)


def make_trajectory(tracked: list[str], seeds=(123, 124, 125), n_ckpt: int = 6, data_seed: int = 42) -> pd.DataFrame:
    """A plausible trajectory: losses decay from ~0.3 towards a seed-specific final value."""
    rng = np.random.default_rng(7)
    rows = []
    for k, seed in enumerate(seeds):
        for c in range(n_ckpt):
            step = 5 * c
            decay = np.exp(-c / 2)
            row = dict(
                data_seed=data_seed,
                seed=seed,
                checkpoint=c,
                step=step,
                epoch=c // 2,
                train_loss=np.nan if c == 0 else 0.002 + 0.03 * decay,
                val_loss=0.002 + 0.03 * decay,
                test_loss=0.01 + 0.02 * decay,
            )
            for j, label in enumerate(tracked):
                final = 0.01 + 0.1 * ((k + j) % 3)
                row[f"test_mse_{label}"] = final + (0.33 - final) * decay + rng.uniform(0, 1e-3)
                row[f"val_mse_{label}"] = 0.003 + 0.1 * decay
            rows.append(row)
    return pd.DataFrame(rows)


def make_predictions(test, seeds=(123, 124, 125)) -> dict[int, np.ndarray]:
    rng = np.random.default_rng(3)
    truth = test.abundances.numpy()
    return {s: truth + rng.normal(0, 0.1 * (i + 1), truth.shape) for i, s in enumerate(seeds)}


def assert_nine_pngs(out: dict[str, Path], folder: Path) -> None:
    assert set(out) == TUTORIAL_NAMES
    assert {p.name for p in folder.iterdir()} == TUTORIAL_NAMES
    for name, path in out.items():
        assert path == folder / name
        img = mpimg.imread(path)
        h, w = img.shape[:2]
        assert img.ndim == 3 and img.shape[2] in (3, 4), name
        assert 400 <= w <= 1600 and 300 <= h <= 1200, f"{name}: {w}x{h} px"
        assert img[..., :3].std() > 0.05, f"{name} looks blank"


def test_figure_names_are_the_tutorials():
    assert len(FIGURE_NAMES) == 9
    assert set(FIGURE_NAMES) == TUTORIAL_NAMES


@pytest.mark.slow
def test_draw_all_writes_the_nine_figures(tmp_path, cfg, datasets):
    tracked = cfg.tracked_labels
    out = draw_all(
        tmp_path / "plots", cfg.physics, datasets, make_trajectory(tracked), make_predictions(datasets["test"]), tracked
    )
    assert_nine_pngs(out, tmp_path / "plots")


def test_a_single_seed_draws_one_curve_per_component_and_no_spread(cfg):
    """With one seed there is nothing to spread: each panel of the time series holds that seed's
    test and val curves (and the floor), no band of seeds."""
    tracked = cfg.tracked_labels
    traj = make_trajectory(tracked, seeds=(123,))
    fig = plot_mse_time_series(traj, tracked, floor={tracked[0]: 0.002, tracked[1]: 0.006})
    panels = [ax for ax in fig.axes if ax.get_lines()]
    assert len(panels) == len(tracked)
    for ax, label in zip(panels, tracked, strict=True):
        assert len(ax.collections) == 0  # no fill_between band
        steps = traj["step"].to_numpy(dtype=float)
        curves = [line for line in ax.get_lines() if len(line.get_xdata()) == len(steps)]
        shown = {tuple(np.round(line.get_ydata(), 9)) for line in curves}
        assert tuple(np.round(traj[f"test_mse_{label}"].to_numpy(), 9)) in shown


def _legend_texts(fig) -> list[str]:
    legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    return [t.get_text() for leg in legends for t in leg.get_texts()]


def test_floor_lines_are_drawn_and_labelled(cfg):
    tracked = cfg.tracked_labels
    traj = make_trajectory(tracked)
    floor = {tracked[0]: 1e-3, tracked[1]: 2e-3}
    for plot in (plot_mse_trajectory, plot_mse_time_series):
        assert "oracle floor" not in _legend_texts(plot(traj, tracked))
        fig = plot(traj, tracked, floor=floor)
        assert "oracle floor" in _legend_texts(fig), plot.__name__
        ys = {round(y, 6) for ax in fig.axes for line in ax.get_lines() for y in np.atleast_1d(line.get_ydata())}
        assert 2e-3 in ys, plot.__name__
    xs = {
        round(x, 6)
        for ax in plot_mse_trajectory(traj, tracked, floor=floor).axes
        for line in ax.get_lines()
        for x in np.atleast_1d(line.get_xdata())
    }
    assert 1e-3 in xs, "the x component's floor is a vertical line"


@pytest.mark.slow
def test_one_tracked_component_and_without_val_columns(tmp_path, cfg, datasets):
    tracked = [cfg.tracked_labels[0]]
    traj = make_trajectory(tracked).drop(columns=["val_loss", f"val_mse_{tracked[0]}"])
    out = draw_all(tmp_path, cfg.physics, datasets, traj, make_predictions(datasets["test"]), tracked)
    assert_nine_pngs(out, tmp_path)


def test_unknown_tracked_label_is_a_clear_error(tmp_path, cfg, datasets):
    tracked = [cfg.tracked_labels[0], "comp99"]
    with pytest.raises(ValueError, match="comp99"):
        draw_all(tmp_path, cfg.physics, datasets, make_trajectory(tracked), make_predictions(datasets["test"]), tracked)
    assert not any(tmp_path.iterdir()), "nothing is drawn when the inputs are wrong"


def test_tracked_label_missing_from_trajectory_is_a_clear_error(tmp_path, cfg, datasets):
    tracked = cfg.tracked_labels
    traj = make_trajectory(tracked).drop(columns=[f"test_mse_{tracked[1]}"])
    with pytest.raises(ValueError, match=f"test_mse_{tracked[1]}"):
        draw_all(tmp_path, cfg.physics, datasets, traj, make_predictions(datasets["test"]), tracked)


def test_prediction_shape_is_checked(tmp_path, cfg, datasets):
    tracked = cfg.tracked_labels
    preds = {123: np.zeros((3, 20))}
    with pytest.raises(ValueError, match="shape"):
        draw_all(tmp_path, cfg.physics, datasets, make_trajectory(tracked), preds, tracked)


@pytest.mark.slow
def test_global_numpy_rng_is_untouched(tmp_path, cfg, datasets):
    tracked = cfg.tracked_labels
    np.random.seed(1234)
    before = np.random.get_state()
    draw_all(
        tmp_path,
        cfg.physics,
        datasets,
        make_trajectory(tracked),
        make_predictions(datasets["test"]),
        tracked,
        sample_seed=5,
    )
    after = np.random.get_state()
    assert before[0] == after[0] and np.array_equal(before[1], after[1]) and before[2:] == after[2:]


def test_example_spectra_follow_the_generator(cfg, datasets):
    tracked = cfg.tracked_labels

    def shown(seed: int) -> list[bytes]:
        fig = plot_train_samples(cfg.physics, datasets["train"], tracked, np.random.default_rng(seed))
        return [ax.get_lines()[-3].get_ydata().tobytes() for ax in fig.axes if ax.get_lines()]

    assert shown(5) == shown(5)
    assert shown(5) != shown(6)


@pytest.mark.slow
def test_figures_module_draws_without_pyplot_or_tracking():
    code = (
        "import sys, speccomp.spectra.figures; "
        "bad = [m for m in ('matplotlib.pyplot', 'mlflow', 'optuna') if m in sys.modules]; "
        "sys.exit(str(bad) if bad else 0)"
    )
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr or result.stdout


def test_mse_time_series_compares_present_only_mse_when_the_trajectory_has_it(cfg):
    tracked = cfg.tracked_labels
    traj = make_trajectory(tracked)
    for label in tracked:  # the diluted all-sample val MSE is 3x smaller than where present
        traj[f"val_mse_present_{label}"] = 3.0 * traj[f"val_mse_{label}"]
        traj[f"test_mse_present_{label}"] = traj[f"test_mse_{label}"]
    fig = plot_mse_time_series(traj, tracked)
    texts = _legend_texts(fig)
    assert any(t.startswith("val (in-distribution) where present") for t in texts), texts
    ys = {round(float(y), 9) for ax in fig.axes for line in ax.get_lines() for y in np.atleast_1d(line.get_ydata())}
    present_val = traj.groupby("step")[f"val_mse_present_{tracked[0]}"].mean()
    diluted_val = traj.groupby("step")[f"val_mse_{tracked[0]}"].mean()
    assert round(float(present_val.iloc[-1]), 9) in ys and round(float(diluted_val.iloc[-1]), 9) not in ys
    assert "where present" in fig.axes[0].get_title()
    # an old trajectory without the present-only columns says what it shows
    old = plot_mse_time_series(make_trajectory(tracked), tracked)
    assert any("(all samples)" in t for t in _legend_texts(old))
