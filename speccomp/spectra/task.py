"""Spectra as a task: regression of abundances from spectra, MSE loss, per-component metrics, the
gap as a ratio of MSEs, the oracle as the floor, the tutorial's nine figures. A thin wrapper over
`speccomp.core.{config,metrics}` and `speccomp.spectra.{data,floor,figures,summary}`: numbers and names
are those the project had before the task interface."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from speccomp.core import config as core_config
from speccomp.core.config import SECTION_FILES, ExperimentConfig
from speccomp.core.models import ModelSpec
from speccomp.core.task import FloorResult, Task, register_task
from speccomp.spectra.data import SplitData
from speccomp.spectra.figure_names import FLOOR_FREE_FIGURES, RUN_FIGURES


class SpectraTask(Task):
    name = "spectra"
    section_files = SECTION_FILES

    # --- configuration ---------------------------------------------------------------------
    def owns_dir(self, folder: Path) -> bool:
        return (folder / SECTION_FILES["physics"]).is_file()

    def owns_raw(self, raw: dict[str, Any]) -> bool:
        return "physics" in raw

    def schema(self) -> type[ExperimentConfig]:
        return ExperimentConfig

    def check_config_dir(self, folder: Path) -> None:
        pass  # `load_config` checks the folder and its required files (one line, key config_dir)

    def load_config(self, config_dir=None, overrides=(), presets=()) -> ExperimentConfig:
        return core_config.load_config(config_dir, list(overrides), presets=list(presets))

    def config_from_dict(self, raw, overrides=(), paths=None) -> ExperimentConfig:
        return core_config.config_from_dict(raw, overrides, paths)

    # --- data -------------------------------------------------------------------------------
    def generate(self, cfg: ExperimentConfig, data_seed: int) -> dict[str, SplitData]:
        from speccomp.spectra.data import generate_datasets

        return generate_datasets(cfg, data_seed)

    # --- model and training -----------------------------------------------------------------
    def model_spec(self, cfg: ExperimentConfig, train: SplitData) -> ModelSpec:
        return ModelSpec.from_training(cfg.training, train.spectra.shape[1], train.abundances.shape[1])

    def loss_fn(self, cfg: ExperimentConfig):
        from speccomp.core.training import LOSSES

        return LOSSES[cfg.training.loss_function]

    def split_metrics(self, cfg, split_name, pred, split) -> list[dict[str, float]]:
        from speccomp.core.metrics import split_metrics

        return split_metrics(split_name, pred, split, cfg.tracked_labels)

    def final_metrics(self, cfg, preds, datasets) -> list[dict[str, float]]:
        from speccomp.core.metrics import final_metrics

        return final_metrics(preds.get("val"), preds["test"], datasets.get("val"), datasets["test"],
                             datasets["train"], cfg.tracked_labels, learned_skill=cfg.analysis.learned_skill)

    def trajectory_columns(self, cfg, metrics) -> dict[str, float]:
        row = {"val_loss": metrics.get("val/mse", float("nan")), "test_loss": metrics["test/mse"]}
        for label in cfg.tracked_labels:
            row[f"val_mse_{label}"] = metrics.get(f"val/mse/{label}", float("nan"))
            row[f"test_mse_{label}"] = metrics[f"test/mse/{label}"]
        for label in cfg.tracked_labels:  # where the component is present: the two sides of the gap
            row[f"val_mse_present_{label}"] = metrics.get(f"val/mse_present/{label}", float("nan"))
            row[f"test_mse_present_{label}"] = metrics.get(f"test/mse_present/{label}", float("nan"))
        return row

    # --- after training ---------------------------------------------------------------------
    def floor(self, cfg, datasets, seeds, finals, of_data=None) -> FloorResult:
        from speccomp.spectra.floor import physical_floor, with_efficiency

        oracle = physical_floor(cfg, datasets["test"]) if of_data is None else of_data
        per_seed = {seed: with_efficiency(finals[seed], oracle, cfg.tracked_labels) for seed in seeds}
        figure_floor = {label: oracle[f"oracle/mse/{label}"] for label in cfg.tracked_labels} if oracle else None
        return FloorResult(per_seed, figure_floor)

    def floor_of_data(self, cfg, datasets) -> dict[str, float]:
        """The oracle's MSE and Cramér–Rao bound on the test split ({} with `analysis.oracle: off`)."""
        from speccomp.spectra.floor import physical_floor

        return physical_floor(cfg, datasets["test"])

    def figures(self, cfg, datasets, trajectory, predictions, plots_dir, floor=None) -> dict[str, Path]:
        from speccomp.spectra.figures import draw_all  # matplotlib is imported only when drawing

        return draw_all(plots_dir, cfg.physics, datasets, trajectory, predictions, cfg.tracked_labels, floor=floor)

    def data_figures(self, cfg, datasets, plots_dir) -> dict[str, Path]:
        from speccomp.spectra.figures import draw_data_figures

        return draw_data_figures(plots_dir, cfg.physics, datasets, cfg.tracked_labels)

    run_figure_names, floor_free_figures = RUN_FIGURES, FLOOR_FREE_FIGURES

    def run_figures(self, cfg, datasets, trajectory, predictions, plots_dir, floor=None, names=None) -> dict[str, Path]:
        from speccomp.spectra.figures import draw_run_figures

        return draw_run_figures(plots_dir, cfg.physics, datasets, trajectory, predictions, cfg.tracked_labels, floor,
                                names)

    def recorded_floor(self, cfg, finals: list[dict[str, float]]) -> dict[str, float] | None:
        """label -> the oracle MSE the seeds recorded (the same for each of them), None without one."""
        floor = {}
        for label in cfg.tracked_labels:
            values = [f[f"oracle/mse/{label}"] for f in finals if f"oracle/mse/{label}" in f]
            if not values:
                return None
            floor[label] = float(np.mean(values))
        return floor

    def save_datasets(self, datasets, folder: Path) -> None:
        from speccomp.spectra.data import save_datasets

        save_datasets(datasets, folder)

    # --- reporting --------------------------------------------------------------------------
    def tags(self, cfg) -> dict[str, str]:
        return {"domain": "spectra", "tracked": ",".join(cfg.tracked_labels)}  # the model type is a param

    def console_summary(self, cfg, summary) -> list[str]:
        from speccomp.spectra.summary import summary_lines

        return summary_lines(summary, cfg.tracked_labels, cfg.analysis.learned_skill)

    # --- studies ----------------------------------------------------------------------------
    study_objectives = {"test_mse": ("test/mse/tracked",), "test": ("test/mse/tracked",), "gap": ("gap/tracked",),
                        "transfer": ("transfer/tracked",),
                        "pareto": ("val/mse_present/tracked", "test/mse_present/tracked")}

    def seed_measures(self, cfg, final: dict[str, float]) -> dict[str, float]:
        from speccomp.spectra.summary import seed_measures

        return seed_measures(final, cfg.tracked_labels)

    def study_trial_attrs(self, cfg) -> dict[str, Any]:
        return {"learned_skill": cfg.analysis.learned_skill}

    def study_no_value(self, cfg, objective: str) -> str:
        return (f"no seed learned every tracked component in distribution "
                f"(in-distribution skill < {cfg.analysis.learned_skill:g}); no {objective} value")


SPECTRA = register_task(SpectraTask())
