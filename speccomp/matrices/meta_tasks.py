"""The meta-learner's tasks on the matrices domain (`configs/raven`): a task is one (rule, attribute)
pair held out of training, as the matrices issue defines it. Its training (and in-distribution
validation) matrices never hold the pair; its query / test matrices all hold it, so the query loss
measures compositional generalisation to that pair exactly as the spectra task's combination does.

    splits = task_splits(cfg, task, data_seed, {"train": 6000, "val": 500, "test": 256})
    task_cfg = task_config(cfg, task, {"train": 6000})   # the pair held out, the sizes given

The matrices' domain object (`speccomp.matrices.search`) hands these to the meta-learner's
`speccomp.meta.bank.SplitBank`, which stacks the training matrices of all tasks.

Every task's matrices come from their own generators (data seed derived from the task's name), so
a task's data never depends on which other tasks were drawn.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from speccomp.core.seeding import derive_seed
from speccomp.matrices.data import MatrixSplit, generate_datasets
from speccomp.matrices.task import MATRICES as MATRICES_TASK


class RuleAttribute(tuple):
    """A matrices task: (rule, attribute), named `rule/attribute` (the metric names' spelling)."""

    def __new__(cls, rule: str, attribute: str) -> RuleAttribute:
        return super().__new__(cls, (rule, attribute))

    @property
    def name(self) -> str:
        return f"{self[0]}/{self[1]}"


def all_tasks(cfg: Any) -> list[RuleAttribute]:
    """Every (rule, attribute) pair of the config's rules, rules outer (R · 4 tasks): the domain's
    `MatricesTask.compositional_tasks`."""
    return [RuleAttribute(*name.split("/")) for name in MATRICES_TASK.compositional_tasks(cfg)]


def task_overrides(cfg: Any, task: RuleAttribute, sizes: dict[str, int]) -> list[str]:
    """The overrides that make the base config this task: the pair held out and nothing else
    (`MatricesTask.compositional_tasks`), and the split sizes (`train`, `val`, `test`)."""
    out = list(MATRICES_TASK.compositional_tasks(cfg)[task.name])
    for split, n in sizes.items():
        key = "data.validation.n_samples" if split == "val" else f"data.splits.{split}.n_samples"
        out.append(f"{key}={n}")
    return out


def view(split: MatrixSplit, name: str, n: int | None = None) -> MatrixSplit:
    """A renamed view of a split (its first `n` rows when given)."""
    if n is None or n >= len(split):
        return MatrixSplit(name, split.panels, split.target, split.batch, split.data_seed, list(split.heldout_pairs))
    batch = type(split.batch)(**{k: v[:n] for k, v in vars(split.batch).items()})
    return MatrixSplit(name, split.panels[:n], split.target[:n], batch, split.data_seed, list(split.heldout_pairs))


def task_splits(cfg: Any, task: RuleAttribute, data_seed: int, sizes: dict[str, int]) -> dict[str, MatrixSplit]:
    """A task's splits (train and val without the pair, `test` all holding it) of the given sizes,
    from the task's own data seed (derived from `data_seed` and its name)."""
    from speccomp.matrices.config import matrices_config_from_dict

    task_cfg = matrices_config_from_dict(cfg.to_dict(), task_overrides(cfg, task, sizes))
    return generate_datasets(task_cfg, derive_seed(data_seed, "meta", "matrices", task.name) % 2**31)


def task_config(cfg: Any, task: RuleAttribute, sizes: dict[str, int]) -> Any:
    """The matrices experiment config of a task (the pair held out, the split sizes given)."""
    from speccomp.matrices.config import matrices_config_from_dict

    overrides = task_overrides(cfg, task, sizes)
    n_train = sizes.get("train")
    if n_train is not None and n_train < cfg.training.batch_size:  # a batch cannot exceed the data
        overrides.append(f"training.batch_size={n_train}")
    return matrices_config_from_dict(cfg.to_dict(), overrides)


# ------------------------------------------------------------------------------------------------
# scores
# ------------------------------------------------------------------------------------------------
def matrices_score(val_pred: torch.Tensor, test_pred: torch.Tensor, data: dict[str, MatrixSplit]) -> dict[str, float]:
    """(N, C) candidate scores of the val and test splits -> `val/acc`, `test/acc` (held out: every
    test matrix holds the task's pair), `gap/acc` = val − test, `test/error` = 1 − test/acc (the
    measure compared across methods, lower is better) and the cross-entropies."""
    val_acc = float((val_pred.argmax(-1) == data["val"].target).double().mean())
    test_acc = float((test_pred.argmax(-1) == data["test"].target).double().mean())
    return {
        "val/acc": val_acc, "test/acc": test_acc, "gap/acc": val_acc - test_acc, "test/error": 1.0 - test_acc,
        "val/loss": float(F.cross_entropy(val_pred, data["val"].target)),
        "test/loss": float(F.cross_entropy(test_pred, data["test"].target)),
    }
