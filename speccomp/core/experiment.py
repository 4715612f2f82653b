"""One experiment for one data seed: data → training of every seed → tables → figures, written to a
folder. The untracked CLI and the tracked pipeline (`tracking/`) both run this; tracking adds
MLflow through the logger and by uploading the folder.

Folder layout (also the MLflow artifact layout of a parent run):

    config.yaml                    resolved configuration
    trajectory_data.csv            one row per (seed, checkpoint), the tutorial's table
    summary.csv                    one row per seed: final metrics
    predictions/test_seed-<s>.npy  final test predictions per seed, (N_test, C) float32
    checkpoints/seed-<s>/step-*.pt checkpoints (torch.load(..., weights_only=True))
    plots/*.png                    the domain's figures (spectra: the tutorial's nine)

The domain (spectra, matrices) comes from the config (`speccomp.core.task.task_for`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from speccomp.core.config import ExperimentConfig
from speccomp.core.data import SplitData
from speccomp.core.task import config_from_any_dict, task_for
from speccomp.core.training import TrainingLogger, TrainResult, train

CONFIG_FILE = "config.yaml"
TRAJECTORY_FILE = "trajectory_data.csv"
SUMMARY_FILE = "summary.csv"
PREDICTIONS_DIR = "predictions"
PLOTS_DIR = "plots"


@dataclass
class ExperimentResult:
    data_seed: int
    datasets: dict[str, SplitData]
    result: TrainResult
    out_dir: Path | None
    timings_s: dict[str, float] = field(default_factory=dict)

    @property
    def summary(self) -> pd.DataFrame:
        return summary_table(self.result)


def summary_table(result: TrainResult) -> pd.DataFrame:
    """One row per seed with its final metrics."""
    return pd.DataFrame([{"data_seed": r.data_seed, "seed": r.seed, **r.final} for r in result.seeds])


def write_config(cfg: ExperimentConfig, out_dir: Path) -> Path:
    path = out_dir / CONFIG_FILE
    path.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    return path


def read_config(path: Path) -> ExperimentConfig:
    """Read a resolved `config.yaml` back (as written by `write_config`), of any domain."""
    raw = yaml.safe_load(Path(path).read_text())
    return config_from_any_dict(raw, paths={s: Path(path) for s in raw})


def run_experiment(
    cfg: ExperimentConfig,
    data_seed: int,
    seeds: list[int],
    out_dir: str | Path | None = None,
    logger: TrainingLogger | None = None,
    progress: bool = False,
    figures: bool = True,
    floor: dict[str, float] | None = None,
    datasets: dict[str, SplitData] | None = None,
) -> ExperimentResult:
    """Generate the data for `data_seed` (unless `datasets`, generated from the same config and
    data seed, are given), train every seed, measure the domain's floor (spectra: the oracle,
    unless `analysis.oracle` is off; matrices: chance), write tables and figures to `out_dir`.
    `floor` (spectra: label -> MSE) replaces the floor's line in the figures."""
    task = task_for(cfg)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    if datasets is None:
        datasets = task.generate(cfg, data_seed)
    timings["generate"] = time.perf_counter() - t0
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        write_config(cfg, out)

    t0 = time.perf_counter()
    result = train(cfg, datasets, seeds, logger=logger, out_dir=out, progress=progress)
    timings["train"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    measured = task.floor(cfg, datasets, seeds, {r.seed: r.final for r in result.seeds})
    for r in result.seeds:
        extra = measured.per_seed.get(r.seed, {})
        r.final.update(extra)
        if logger is not None and extra:
            logger.log_metrics(r.seed, extra, result.total_steps)
    timings["oracle"] = time.perf_counter() - t0
    if floor is None and measured.figure_floor:
        floor = measured.figure_floor

    if out is not None:
        t0 = time.perf_counter()
        write_tables(result, out)
        timings["tables"] = time.perf_counter() - t0
        if figures:
            t0 = time.perf_counter()
            draw_figures(cfg, datasets, result.trajectory, predictions_by_seed(result), out / PLOTS_DIR, floor)
            timings["figures"] = time.perf_counter() - t0
    return ExperimentResult(data_seed, datasets, result, out, timings)


def predictions_by_seed(result: TrainResult) -> dict[int, np.ndarray]:
    return {r.seed: r.test_predictions for r in result.seeds}


def write_tables(result: TrainResult, out: Path) -> None:
    result.trajectory.to_csv(out / TRAJECTORY_FILE, index=False)
    summary_table(result).to_csv(out / SUMMARY_FILE, index=False)
    pred_dir = out / PREDICTIONS_DIR
    pred_dir.mkdir(exist_ok=True)
    for r in result.seeds:
        np.save(pred_dir / f"test_seed-{r.seed}.npy", r.test_predictions.astype(np.float32))


def draw_figures(
    cfg: ExperimentConfig,
    datasets: dict[str, SplitData],
    trajectory: pd.DataFrame,
    test_predictions: dict[int, np.ndarray],
    plots_dir: Path,
    floor: dict[str, float] | None = None,
) -> dict[str, Path]:
    return task_for(cfg).figures(cfg, datasets, trajectory, test_predictions, plots_dir, floor)


def read_predictions(folder: Path) -> dict[int, np.ndarray]:
    out = {}
    for path in sorted(Path(folder).glob("test_seed-*.npy")):
        out[int(path.stem.removeprefix("test_seed-"))] = np.load(path)
    return out


def redraw(out_dir: str | Path, floor: dict[str, float] | None = None) -> dict[str, Path]:
    """Re-draw the figures of a finished experiment folder from its saved files alone
    (the data are regenerated from the resolved config and the data seed)."""
    out = Path(out_dir)
    for name in (CONFIG_FILE, TRAJECTORY_FILE):
        if not (out / name).is_file():
            raise FileNotFoundError(f"{out}: no {name}; is this an experiment folder?")
    cfg = read_config(out / CONFIG_FILE)
    trajectory = pd.read_csv(out / TRAJECTORY_FILE)
    data_seed = int(trajectory["data_seed"].iloc[0])
    datasets = task_for(cfg).generate(cfg, data_seed)
    return draw_figures(cfg, datasets, trajectory, read_predictions(out / PREDICTIONS_DIR), out / PLOTS_DIR, floor)
