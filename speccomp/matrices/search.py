"""The matrices as the architecture search and the meta-learner see them (`speccomp.nas.domain`,
`speccomp.meta.domain`): rows are matrices (8 + C, D) of encoded panels; the supernet scores each
candidate after the eight context panels, (B·C, 9·D) -> (B·C, 1) (the view of
`speccomp.matrices.models.context_candidate_pairs`), read back as (B, C) scores; the loss is the
cross-entropy over the candidates. Panels are encoded already, so the `input` decision may only hold
`none` (the matrices configs refuse other transforms). Derived model: `raven_seq`; reference model
beside the default (`raven_mlp`): `wren` (`raven_wren`, relational).

Meta-learner: a task is one (rule, attribute) pair held out of training
(`speccomp.matrices.meta_tasks`); a method is scored by its in-distribution and held-out accuracy,
the floor is chance (1 / C), and the measure compared is the held-out error 1 − accuracy.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from speccomp.matrices.config import WREN_OVERRIDES
from speccomp.matrices.data import MatrixSplit
from speccomp.matrices.generator import PANEL_DIM
from speccomp.matrices.meta_tasks import RuleAttribute, all_tasks, matrices_score, task_config, task_splits, view
from speccomp.matrices.models import N_CONTEXT, context_candidate_pairs, scores_from
from speccomp.meta.domain import MetaDomain, MetaTestFigure
from speccomp.meta.tasks import pair_name
from speccomp.nas.domain import register_search_domain


class MatricesDomain(MetaDomain):
    """Candidate scoring: each candidate after the eight context panels (see module doc)."""

    name = "matrices"
    model_type = "raven_seq"
    transforms = ("none",)
    selection_metric = "val/error"
    test_metric = "test/error"
    default_space = "configs/nas/raven.yaml"
    reference_models = {"wren": (None, tuple(WREN_OVERRIDES))}
    unit = "task"
    tasks_word = "(rule, attribute) tasks"
    task_note = " (a task is one held-out (rule, attribute) pair)"
    measure = "test_error"
    study_objective = ("comparison/meta/median_test_error", "median meta held-out error (1 - accuracy)")
    floor_method = "chance"

    # --- the search --------------------------------------------------------------------------------
    def features_of(self, cfg: Any) -> int:
        return (N_CONTEXT + 1) * PANEL_DIM

    def owns_split(self, split: Any) -> bool:
        return isinstance(split, MatrixSplit) or (isinstance(split, tuple) and split[0].dim() == 3)

    def reading_columns(self, cfg: Any) -> list[str]:
        """In-distribution and held-out accuracy, their difference, and chance beside them."""
        return ["val/acc", "test/acc", "gap/acc", "chance/acc"]

    def not_learned_note(self, cfg: Any) -> str:
        return (f"chance accuracy {cfg.chance:.3f} ({cfg.matrices.n_candidates} candidates); not learned: runs at or "
                "below chance in distribution")

    def not_learned(self, rows: Any, cfg: Any) -> dict[str, int]:
        """{"val/acc": seeds at or below chance in distribution}: nothing learned to compose."""
        if "val/acc" not in rows:
            return {}
        return {"val/acc": int((rows["val/acc"].astype(float) <= cfg.chance).sum())}

    def n_features(self, x: torch.Tensor) -> int:
        return (N_CONTEXT + 1) * x.shape[2]

    def n_outputs(self, y: torch.Tensor) -> int:
        return 1

    def fit_inputs(self, net: Any, x: torch.Tensor) -> None:
        """Nothing to fit: panels are encoded already and `none` is the only transform."""

    def prepare(self, net: Any, x: torch.Tensor) -> torch.Tensor:
        return x

    def rows(self, z: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return z[idx]

    def forward(self, net: Any, rows: torch.Tensor, weights: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, 8 + C, D) matrices -> (B, C) candidate scores."""
        pairs = context_candidate_pairs(rows.unsqueeze(0))[0]  # (B * C, 9 D)
        return scores_from(net(pairs, weights).unsqueeze(0), rows.shape[1] - N_CONTEXT)[0]

    def loss(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of the answer over the candidates' scores (the matrices training loss)."""
        return F.cross_entropy(prediction, target)

    # --- the meta-learner --------------------------------------------------------------------------
    def all_tasks(self, cfg: Any) -> list[RuleAttribute]:
        return all_tasks(cfg)

    def task_splits(self, cfg: Any, meta: Any, task: RuleAttribute, final: bool) -> dict[str, MatrixSplit]:
        """Sizes from the meta config's `matrices_tasks` (`n_query` or, when `final`, `n_test` matrices
        holding the pair)."""
        m = meta.matrices_tasks
        sizes = {"train": m.n_train, "val": m.n_val, "test": m.n_test if final else m.n_query}
        return task_splits(cfg, task, meta.experiment.data_seed, sizes)

    def take(self, split: MatrixSplit, name: str, n: int | None = None) -> MatrixSplit:
        return view(split, name, n)

    def task_config(self, cfg: Any, task: RuleAttribute, sizes: dict[str, int]) -> Any:
        return task_config(cfg, task, sizes)

    def score(self, val_pred: torch.Tensor, test_pred: torch.Tensor, data: dict[str, MatrixSplit],
              task: RuleAttribute) -> dict[str, float]:
        return matrices_score(val_pred, test_pred, data)

    def floor(self, task_cfg: Any, data: dict[str, MatrixSplit], task: RuleAttribute) -> dict[str, float]:
        """Chance: 1 / C."""
        return {"chance/acc": task_cfg.chance}

    def floor_methods(self, floor: dict[str, float], task: RuleAttribute) -> dict[str, dict[str, float]]:
        """Chance as a method: its accuracy in and out of distribution."""
        chance = floor["chance/acc"]
        return {self.floor_method: {"val/acc": chance, "test/acc": chance, "test/error": 1.0 - chance, "chance/acc": chance}}

    def row(self, task: RuleAttribute, method: str, metrics: dict[str, float]) -> dict[str, Any]:
        """The held-out error is the measure compared."""
        return {"pair": pair_name(task), "method": method, "test_error": metrics["test/error"],
                "test_acc": metrics["test/acc"], "chance_acc": metrics["chance/acc"],
                "gap": metrics.get("gap/acc", float("nan")), **metrics}

    def headline(self, meta_row: Any, cfg: Any) -> dict[str, float]:
        """The median held-out accuracy, with chance beside it."""
        return {"test/acc": float(meta_row["median_test_acc"]), "chance/acc": float(cfg.chance)}

    def meta_test_figure(self) -> MetaTestFigure:
        """The held-out accuracy per task, chance as the line."""

        def chance(table: Any) -> tuple[float, str]:
            value = float(table["chance_acc"].iloc[0])
            return value, f"chance ({value:.3f})"

        return MetaTestFigure(value=lambda rows: rows["test_acc"].to_numpy(), line=chance,
                              ylabel="held-out accuracy (matrices holding the task's pair)",
                              title="Meta-test tasks (n = {n}): (rule, attribute) pairs never trained on",
                              left_out=self.floor_method, ylim=(0, 1))

    def header(self, cfg: Any) -> str:
        return ("held-out error (1 - accuracy) on each meta-test task's matrices, all holding its (rule, attribute) "
                f"pair; chance accuracy {cfg.chance:.3f}; ratios are per task, medians over tasks; p: two-sided "
                "Wilcoxon signed-rank, meta vs method")


MATRICES = register_search_domain(MatricesDomain())
