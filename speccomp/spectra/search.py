"""The spectra as the architecture search and the meta-learner see them (`speccomp.nas.domain`,
`speccomp.meta.domain`): rows are (L,) spectra, positive in expectation (so `log` makes sense); the
supernet maps (B, L) -> (B, C) abundances; the loss is the MSE over samples and components; the
`input` decision chooses among the registry's input transforms, with per-bin statistics fitted on
the training spectra exactly as `speccomp.core.models.InputTransform` does (the interface's
defaults). Derived model: `seq`; reference model beside the default: the `loglinear` preset.

Meta-learner: a task is a pair of components (`speccomp.spectra.meta_tasks`); a method is scored
by the usual metrics of the pair's two components, the floor is the oracle (the known physics
fitted to every test spectrum), and the measure compared is the test MSE of the pair.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from speccomp.core.config import ConfigError
from speccomp.core.metrics import final_metrics, split_metrics
from speccomp.meta.domain import MetaDomain, MetaTestFigure
from speccomp.meta.settings import ResolvedSettings, check_task_counts
from speccomp.meta.tasks import Pair, TaskSets, pair_name
from speccomp.nas.domain import register_search_domain
from speccomp.spectra.data import SplitData
from speccomp.spectra.floor import physical_floor, with_efficiency
from speccomp.spectra.meta_tasks import TaskBank, all_pairs, build_bank, draw_pairs, pair_mse


class SpectraDomain(MetaDomain):
    name = "spectra"
    model_type = "seq"
    default_space = "configs/nas/spectra.yaml"
    reference_models = {"loglinear": ("loglinear", ())}
    unit = "pair"
    tasks_word = "pairs"
    study_objective = ("comparison/meta/median_ratio_to_oracle", "median meta test MSE / oracle MSE")
    floor_method = "oracle"

    # --- the search --------------------------------------------------------------------------------
    def features_of(self, cfg: Any) -> int:
        return cfg.physics.n_bins

    def owns_split(self, split: Any) -> bool:
        return isinstance(split, SplitData) or (isinstance(split, tuple) and split[0].dim() == 2)

    def reading_columns(self, cfg: Any) -> list[str]:
        """The validation MSE, then per tracked label the test MSE, in-distribution skill,
        combination skill and transfer."""
        kinds = ("test/mse", "skill/val", "skill/test", "transfer")
        return ["val/mse", *[f"{k}/{label}" for label in cfg.tracked_labels for k in kinds]]

    def floor_columns(self, cfg: Any) -> list[str]:
        """The per-seed measures against the physical floor (oracle MSE ÷ test MSE per label)."""
        return [f"oracle/efficiency/{label}" for label in cfg.tracked_labels]

    def not_learned_note(self, cfg: Any) -> str:
        return (f"not learned: runs whose in-distribution skill is below analysis.learned_skill "
                f"({cfg.analysis.learned_skill:g}); transfer is left out for them")

    def not_learned(self, rows: Any, cfg: Any) -> dict[str, int]:
        """{label: seeds (rows of a per-seed frame) whose in-distribution skill is below
        `analysis.learned_skill`}: for those, no transfer value exists and the gap says nothing."""
        out = {}
        for label in cfg.tracked_labels:
            column = f"skill/val/{label}"
            if column in rows:
                out[label] = int((rows[column].astype(float) < cfg.analysis.learned_skill).sum())
        return out

    # --- the meta-learner's tasks ------------------------------------------------------------------
    def all_tasks(self, cfg: Any) -> list[Pair]:
        return all_pairs(cfg.physics.labels)

    def check_plan(self, cfg: Any, meta: Any, settings: ResolvedSettings, where: Any) -> None:
        """Held-out components: 0, or 2..C−2 (so that both sides have a pair); task counts."""
        labels, held = cfg.physics.labels, meta.tasks.held_out_components
        if held and not 2 <= held <= len(labels) - 2:
            raise ConfigError(f"{where}: tasks.held_out_components: {held}; allowed: 0, or 2..{len(labels) - 2}")
        check_task_counts(settings, len(all_pairs(labels)), len(labels), held)

    def draw_tasks(self, cfg: Any, meta: Any, settings: ResolvedSettings) -> TaskSets:
        s = settings.values
        return draw_pairs(cfg.physics.labels, s.num_meta_training_tasks, s.num_meta_testing_tasks,
                          s.task_generator_seed, meta.tasks.held_out_components)

    def build_bank(self, cfg: Any, meta: Any, tasks: TaskSets) -> TaskBank:
        t = meta.tasks
        return build_bank(cfg, tasks, meta.experiment.data_seed, t.n_single, t.n_empty, t.n_val_single, t.n_query,
                          t.n_test)

    # --- scores and the floor ----------------------------------------------------------------------
    def score(self, val_pred: torch.Tensor, test_pred: torch.Tensor, data: dict[str, SplitData],
              task: Pair) -> dict[str, float]:
        """The usual metric names for predictions (N, C) of the val and test splits:
        `test/mse/<label>`, `val/mse/<label>`, `gap/<label>`, `test/r2/<label>`, ... and
        `test/mse/pair` (mean over the pair's two components)."""
        tracked = list(task)
        out = split_metrics("test", test_pred.unsqueeze(0), data["test"], tracked)[0]
        out.update(split_metrics("val", val_pred.unsqueeze(0), data["val"], tracked)[0])
        out.update(final_metrics(val_pred.unsqueeze(0), test_pred.unsqueeze(0), data["val"], data["test"],
                                 data["train"], tracked)[0])
        out["test/mse/pair"] = sum(out[f"test/mse/{c}"] for c in task) / 2
        return out

    def selection_loss(self, pred: torch.Tensor, data: dict[str, SplitData], task: Pair) -> float:
        """The in-distribution validation MSE of the pair's two components."""
        cols = torch.tensor([data["train"].labels.index(c) for c in task])
        return float(pair_mse(pred, data["val"].abundances, cols))

    def floor(self, task_cfg: Any, data: dict[str, SplitData], task: Pair) -> dict[str, float]:
        """`oracle/mse/<label>` (and `oracle/crb/<label>`) of the pair's test split, plus
        `oracle/mse/pair` (mean over the two components)."""
        floor = physical_floor(task_cfg, data["test"])
        floor["oracle/mse/pair"] = sum(floor[f"oracle/mse/{c}"] for c in task) / 2
        return floor

    def with_floor(self, metrics: dict[str, float], floor: dict[str, float], task: Pair) -> dict[str, float]:
        """Add `oracle/mse/<label>`, `oracle/efficiency/<label>` (oracle ÷ test MSE) and
        `oracle/ratio` (test MSE ÷ oracle MSE of the pair, the quantity of `plots/meta_test.png`)."""
        out = {**metrics, **with_efficiency(metrics, floor, list(task))}
        out["oracle/ratio"] = metrics["test/mse/pair"] / floor["oracle/mse/pair"]
        return out

    def floor_methods(self, floor: dict[str, float], task: Pair) -> dict[str, dict[str, float]]:
        """The oracle as a method: its MSE per component and of the pair."""
        oracle = {f"test/mse/{c}": floor[f"oracle/mse/{c}"] for c in task}
        oracle["test/mse/pair"] = floor["oracle/mse/pair"]
        return {self.floor_method: self.with_floor(oracle, floor, task)}

    def row(self, task: Pair, method: str, metrics: dict[str, float]) -> dict[str, Any]:
        gaps = [metrics.get(f"gap/{c}", math.nan) for c in task]
        return {"pair": pair_name(task), "method": method, "test_mse": metrics["test/mse/pair"],
                "oracle_mse": metrics["oracle/mse/pair"], "gap": sum(gaps) / 2, **metrics}

    def headline(self, meta_row: Any, cfg: Any) -> dict[str, float]:
        """The median test MSE of the pairs and its ratio to the oracle's."""
        return {"headline/median_test_mse": float(meta_row["median_test_mse"]),
                "headline/ratio_to_oracle": float(meta_row["median_ratio_to_oracle"])}

    def meta_test_figure(self) -> MetaTestFigure:
        """Test MSE ÷ oracle MSE per pair (log scale; 1 = the physical floor)."""
        return MetaTestFigure(value=lambda rows: (rows["test_mse"] / rows["oracle_mse"]).to_numpy(),
                              line=lambda _table: (1.0, "physical floor (oracle)"),
                              ylabel="test MSE ÷ oracle MSE (pair's combination)",
                              title="Meta-test pairs (n = {n}): novel combinations, never trained on",
                              left_out=self.floor_method, log=True)

    def header(self, cfg: Any) -> str:
        return ("test MSE on each meta-test pair's combination (mean of its two components); ratios are per pair, "
                "medians over pairs; p: two-sided Wilcoxon signed-rank, meta vs method")


SPECTRA = register_search_domain(SpectraDomain())
