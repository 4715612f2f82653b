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

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from speccomp.core.config import ExperimentConfig
from speccomp.core.figure_worker import FigureWorker
from speccomp.core.splits import Split
from speccomp.core.task import config_from_any_dict, task_for
from speccomp.core.training import SeedResult, TrainingLogger, TrainResult, train

CONFIG_FILE = "config.yaml"
TRAJECTORY_FILE = "trajectory_data.csv"
SUMMARY_FILE = "summary.csv"
PREDICTIONS_DIR = "predictions"
PLOTS_DIR = "plots"
MAX_ENSEMBLE = 16
"""Seeds trained together at most. A long seed list is trained as several ensembles, one after
the other, so that a tracked run opens and closes its seeds' runs ensemble by ensemble (stopped,
it leaves at most this many seeds' runs to end, never hundreds). Measured on the default config,
32 seeds as two ensembles of 16 take 6 % longer than as one; as four of 8, 10 %."""


@dataclass
class ExperimentResult:
    data_seed: int
    datasets: dict[str, Split]
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


def ensembles(seeds: list[int], max_size: int = MAX_ENSEMBLE) -> list[list[int]]:
    """`seeds` in order, cut into the fewest ensembles of at most `max_size` (>= 3), of sizes that
    differ by at most one. No ensemble of one is made from two or more seeds: a member's
    arithmetic is bit-identical in any ensemble of two or more, while a lone seed is computed by
    other kernels (equal only up to float32 rounding)."""
    if max_size < 3:
        raise ValueError(f"max_size: {max_size}; allowed: an integer >= 3")
    n = len(seeds)
    count = max(1, math.ceil(n / max_size))
    bounds = [round(i * n / count) for i in range(count + 1)]
    return [seeds[a:b] for a, b in zip(bounds, bounds[1:], strict=False) if b > a]


def run_experiment(
    cfg: ExperimentConfig,
    data_seed: int,
    seeds: list[int],
    out_dir: str | Path | None = None,
    logger: TrainingLogger | None = None,
    progress: bool | Callable[[int, int], Any] = False,
    figures: bool = True,
    floor: dict[str, float] | None = None,
    datasets: dict[str, Split] | None = None,
    max_ensemble: int = MAX_ENSEMBLE,
    on_start: Callable[[list[int]], None] | None = None,
    on_done: Callable[[TrainResult], None] | None = None,
    background_figures: bool = False,
    figure_worker: FigureWorker | None = None,
) -> ExperimentResult:
    """Generate the data for `data_seed` (unless `datasets`, generated from the same config and
    data seed, are given), train every seed (in `ensembles` of at most `max_ensemble`), measure
    the domain's floor (spectra: the oracle, unless `analysis.oracle` is off; matrices: chance),
    write tables and figures to `out_dir`. `floor` (spectra: label -> MSE) replaces the floor's
    line in the figures. `on_start(seeds)` is called before each ensemble trains, `on_done(result)`
    after it, with its seeds' final metrics complete (the floor's included).

    With `background_figures`, the figures are drawn by a second process (`figure_worker`, or one
    started here): those of the data alone (`Task.data_figures`) while the seeds train, those
    without a floor line (`Task.floor_free_figures`) while the floor is measured, the rest while
    the last ensemble's `on_done` and the tables run; the files are the same. A worker prepared
    for these data (`FigureWorker.prepare`) also computes the floor's data part
    (`Task.floor_of_data`: the spectra's oracle), which is then not computed here.
    `timings['figures']` is then the time spent waiting for them."""
    draw = figures and out_dir is not None
    worker = (figure_worker or FigureWorker.start()) if draw and background_figures else None
    if figure_worker is not None and worker is None:
        figure_worker.close()
    try:
        return _run_experiment(cfg, data_seed, seeds, out_dir, logger, progress, figures, floor, datasets,
                               max_ensemble, on_start, on_done, worker)
    finally:
        if worker is not None:
            worker.close()


def _run_experiment(cfg, data_seed, seeds, out_dir, logger, progress, figures, floor, datasets, max_ensemble,
                    on_start, on_done, worker: FigureWorker | None) -> ExperimentResult:
    task = task_for(cfg)
    timings: dict[str, float] = {"train": 0.0, "oracle": 0.0}
    t0 = time.perf_counter()
    if datasets is None:
        datasets = task.generate(cfg, data_seed)
    timings["generate"] = time.perf_counter() - t0
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        write_config(cfg, out)
    if worker is not None:  # the figures of the data alone are drawn while the seeds train
        worker.submit_data(cfg, datasets, out / PLOTS_DIR)

    parts = []
    groups = ensembles(seeds, max_ensemble)
    for k, group in enumerate(groups):
        if on_start is not None:
            on_start(group)
        t0 = time.perf_counter()
        part = train(cfg, datasets, group, logger=logger, out_dir=out, progress=progress)
        timings["train"] += time.perf_counter() - t0
        last = k == len(groups) - 1
        early = worker is not None and last and bool(task.floor_free_figures)
        if early:  # the run figures without a floor line are drawn while the floor is measured
            whole = merge_results([*parts, part])
            worker.submit_trained(whole.trajectory, predictions_by_seed(whole))
        t0 = time.perf_counter()
        # A prepared worker has computed the data's part of the floor (the oracle) while the seeds trained.
        of_data = worker.floor_of_data(datasets) if worker is not None and task.has_floor_of_data else None
        measured = task.floor(cfg, datasets, group, {r.seed: r.final for r in part.seeds},  # cached per dataset
                              **({} if of_data is None else {"of_data": of_data}))
        timings["oracle"] += time.perf_counter() - t0
        for r in part.seeds:
            extra = measured.per_seed.get(r.seed, {})
            r.final.update(extra)
            if logger is not None and extra:
                logger.log_metrics(r.seed, extra, part.total_steps)
        if floor is None and measured.figure_floor:
            floor = measured.figure_floor
        if early:
            worker.submit_floor(floor)
        elif worker is not None and last:  # everything the figures show is known now
            whole = merge_results([*parts, part])
            worker.submit(cfg, datasets, whole.trajectory, predictions_by_seed(whole), out / PLOTS_DIR, floor)
        if on_done is not None:
            on_done(part)
        parts.append(part)
    result = merge_results(parts)

    if out is not None:
        t0 = time.perf_counter()
        write_tables(result, out)
        timings["tables"] = time.perf_counter() - t0
        if figures:
            t0 = time.perf_counter()
            if worker is not None:
                worker.result()
            else:
                draw_figures(cfg, datasets, result.trajectory, predictions_by_seed(result), out / PLOTS_DIR, floor)
            timings["figures"] = time.perf_counter() - t0
    return ExperimentResult(data_seed, datasets, result, out, timings)


def merge_results(parts: list[TrainResult]) -> TrainResult:
    """Ensembles trained one after the other as one result: seeds in order, the trajectory in
    checkpoint-major order (as one ensemble writes it)."""
    if len(parts) == 1:
        return parts[0]
    trajectory = pd.concat([p.trajectory for p in parts], ignore_index=True)
    trajectory = trajectory.sort_values("checkpoint", kind="stable", ignore_index=True)
    return TrainResult(spec=parts[0].spec, seeds=[r for p in parts for r in p.seeds], trajectory=trajectory,
                       total_steps=parts[0].total_steps)


def predictions_by_seed(result: TrainResult) -> dict[int, np.ndarray]:
    return {r.seed: r.test_predictions for r in result.seeds}


def write_tables(result: TrainResult, out: Path) -> None:
    result.trajectory.to_csv(out / TRAJECTORY_FILE, index=False)
    summary_table(result).to_csv(out / SUMMARY_FILE, index=False)
    for r in result.seeds:
        write_predictions(r, out)


def write_predictions(result: SeedResult, out: Path) -> Path:
    """`predictions/test_seed-<s>.npy`: the seed's final test predictions, (N_test, C) float32."""
    path = out / PREDICTIONS_DIR / f"test_seed-{result.seed}.npy"
    path.parent.mkdir(exist_ok=True)
    np.save(path, result.test_predictions.astype(np.float32))
    return path


def draw_figures(
    cfg: ExperimentConfig,
    datasets: dict[str, Split],
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
