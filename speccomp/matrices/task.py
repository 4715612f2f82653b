"""Matrices as a task: choose the answer among the candidates (cross-entropy over the candidates'
scores), accuracy metrics, the gap as in-distribution minus held-out accuracy, chance
(1 / n_candidates) as the floor.

Metric names: `<split>/acc` and `<split>/loss` at every checkpoint (`val` in distribution, `test`
held out); at the end `test/acc/<rule>/<attribute>` and `val/acc/<rule>/<attribute>` (accuracy on
the matrices whose attribute follows that rule), `gap/acc` = val/acc − test/acc, and `chance/acc`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from speccomp.core.models import ModelSpec
from speccomp.core.task import FloorResult, Task, register_task
from speccomp.matrices import config as mconfig
from speccomp.matrices.config import MatricesExperimentConfig
from speccomp.matrices.data import MatrixSplit
from speccomp.matrices.generator import ATTRIBUTES, N_CONTEXT, PANEL_DIM


def accuracy(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(S, N, C) scores and (N,) answers -> (S,) fraction of matrices whose top score is the answer."""
    return (pred.argmax(-1) == target).to(torch.float64).mean(-1)


def cross_entropy(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(S, B, C) candidate scores and (S, B) answers -> (S,) mean cross-entropy of each member."""
    n_members = pred.shape[0]
    per = F.cross_entropy(pred.reshape(-1, pred.shape[-1]), target.reshape(-1), reduction="none")
    return per.view(n_members, -1).mean(1)


def pair_accuracies(split_name: str, pred: torch.Tensor, split: MatrixSplit, rules: list[str]) -> list[dict[str, float]]:
    """Per member, `<split>/acc/<rule>/<attribute>` for every pair that occurs in the split."""
    correct = (pred.argmax(-1) == split.target).to(torch.float64)  # (S, N)
    out: list[dict[str, float]] = [{} for _ in range(pred.shape[0])]
    for rule in rules:
        for attr in ATTRIBUTES:
            mask = torch.from_numpy(split.pair_mask(rule, attr))
            if mask.any():
                acc = correct[:, mask].mean(-1)
                for s in range(pred.shape[0]):
                    out[s][f"{split_name}/acc/{rule}/{attr}"] = float(acc[s])
    return out


class MatricesTask(Task):
    name = "matrices"
    section_files = mconfig.SECTION_FILES

    # --- configuration ---------------------------------------------------------------------
    def owns_dir(self, folder: Path) -> bool:
        return mconfig.is_matrices_dir(folder)

    def owns_raw(self, raw: dict[str, Any]) -> bool:
        return mconfig.is_matrices_raw(raw)

    def schema(self) -> type[MatricesExperimentConfig]:
        return MatricesExperimentConfig

    def check_config_dir(self, folder: Path) -> None:
        mconfig.check_config_dir(folder)

    def load_config(self, config_dir=None, overrides=(), presets=()) -> MatricesExperimentConfig:
        return mconfig.load_matrices_config(config_dir, list(overrides), list(presets))

    def config_from_dict(self, raw, overrides=(), paths=None) -> MatricesExperimentConfig:
        return mconfig.matrices_config_from_dict(raw, overrides, paths)

    # --- data -------------------------------------------------------------------------------
    def generate(self, cfg: MatricesExperimentConfig, data_seed: int) -> dict[str, MatrixSplit]:
        from speccomp.matrices.data import generate_datasets

        return generate_datasets(cfg, data_seed)

    # --- model and training -----------------------------------------------------------------
    def model_spec(self, cfg: MatricesExperimentConfig, train: MatrixSplit) -> ModelSpec:
        return ModelSpec.from_training(cfg.training, PANEL_DIM, train.panels.shape[1] - N_CONTEXT)

    def loss_fn(self, cfg: MatricesExperimentConfig):
        return cross_entropy

    def split_metrics(self, cfg, split_name, pred, split) -> list[dict[str, float]]:
        acc = accuracy(pred, split.target)
        loss = cross_entropy(pred, split.target.expand(pred.shape[0], -1))
        return [{f"{split_name}/acc": float(acc[s]), f"{split_name}/loss": float(loss[s])} for s in range(pred.shape[0])]

    def final_metrics(self, cfg, preds, datasets) -> list[dict[str, float]]:
        test = pair_accuracies("test", preds["test"], datasets["test"], cfg.matrices.rules)
        test_acc = accuracy(preds["test"], datasets["test"].target)
        val = None
        if "val" in preds and preds["val"] is not None:
            val = pair_accuracies("val", preds["val"], datasets["val"], cfg.matrices.rules)
            val_acc = accuracy(preds["val"], datasets["val"].target)
        out = []
        for s in range(preds["test"].shape[0]):
            row = {**test[s], "chance/acc": cfg.chance, "test/error": 1.0 - float(test_acc[s])}
            if val is not None:
                row.update(val[s])
                row["val/error"] = 1.0 - float(val_acc[s])
                row["gap/acc"] = float(val_acc[s] - test_acc[s])
            out.append(row)
        return out

    def trajectory_columns(self, cfg, metrics) -> dict[str, float]:
        nan = float("nan")
        return {
            "val/acc": metrics.get("val/acc", nan),
            "test/acc": metrics["test/acc"],
            "val/loss": metrics.get("val/loss", nan),
            "test/loss": metrics["test/loss"],
        }

    # --- after training ---------------------------------------------------------------------
    def floor(self, cfg, datasets, seeds, finals) -> FloorResult:
        return FloorResult({}, cfg.chance)  # chance/acc is among the final metrics already

    def figures(self, cfg, datasets, trajectory, predictions, plots_dir, floor=None) -> dict[str, Path]:
        from speccomp.matrices.figures import draw_all

        return draw_all(plots_dir, cfg, datasets, trajectory, predictions)

    def compositional_tasks(self, cfg: MatricesExperimentConfig) -> dict[str, list[str]]:
        """One task per (rule, attribute) pair, for a meta-learner: name `rule/attribute` ->
        the overrides that hold that pair out of training (every test matrix then holds it)."""
        return {f"{r}/{a}": [f"data.heldout_pairs=[{{rule: {r}, attribute: {a}}}]", "data.heldout_values={}"]
                for r in cfg.matrices.rules for a in ATTRIBUTES
                if len(cfg.matrices.rules) > 1}

    # --- reporting --------------------------------------------------------------------------
    def tags(self, cfg: MatricesExperimentConfig) -> dict[str, str]:
        held = [p.label for p in cfg.data.heldout_pairs]
        held += [f"{a}={lo}..{hi}" for a, (lo, hi) in cfg.data.heldout_values.items()]
        return {"domain": "matrices", "heldout": ",".join(held) or "none"}  # the model type is a param

    def save_datasets(self, datasets, folder: Path) -> None:
        from speccomp.matrices.data import save_datasets

        save_datasets(datasets, folder)

    def console_summary(self, cfg: MatricesExperimentConfig, summary: pd.DataFrame) -> list[str]:
        cols = [c for c in ("val/acc", "test/acc", "gap/acc") if c in summary]
        table = summary[["data_seed", "seed", *cols]].copy()
        mean = table[cols].mean()
        std = table[cols].std(ddof=1) if len(table) > 1 else table[cols].std(ddof=0)
        held = self.tags(cfg)["heldout"]
        lines = [table.to_string(index=False, float_format=lambda v: f"{v:.4f}")]
        lines.append("mean ± std: " + "   ".join(f"{c} {mean[c]:.4f} ± {std[c]:.4f}" for c in cols))
        lines.append(f"chance accuracy {cfg.chance:.3f} ({cfg.matrices.n_candidates} candidates); "
                     f"val = in distribution, test = held out ({held}); gap/acc = val/acc - test/acc")
        return lines

    study_objectives = {"test": ("test/error",), "gap": ("gap/acc",), "pareto": ("val/error", "test/error")}

    def study_trial_attrs(self, cfg) -> dict[str, Any]:
        return {"chance_acc": float(cfg.chance)}  # what guessing scores, beside the accuracies in the report

    def study_no_value(self, cfg, objective: str) -> str:
        return f"no {objective} value (NaN; gap/acc and val/error need the validation split)"

    def seed_measures(self, cfg, final: dict[str, float]) -> dict[str, float]:
        return {
            "test/error": final.get("test/error", np.nan),
            "val/error": final.get("val/error", np.nan),
            "gap/acc": final.get("gap/acc", np.nan),
        }


MATRICES = register_task(MatricesTask())
