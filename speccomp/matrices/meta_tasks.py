"""The meta-learner's tasks on the matrices domain (`configs/raven`): a task is one (rule, attribute)
pair held out of training, as the matrices issue defines it. Its training (and in-distribution
validation) matrices never hold the pair; its query / test matrices all hold it, so the query loss
measures compositional generalisation to that pair exactly as the spectra task's combination does.

    bank = build_matrices_bank(cfg, tasks, data_seed, sizes)
    bank.train_rows(task)                 # rows of the stacked training matrices of a task
    bank.query_loss(net, path, task, idx) # cross-entropy of the supernet path on query matrices
    bank.task_datasets(task, n_train, final=True)  # train / val / test MatrixSplit of a meta-test task

Every task's matrices come from their own generators (data seed derived from the task's name), so
a task's data never depends on which other tasks were drawn.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from speccomp.core.seeding import derive_seed
from speccomp.matrices.data import MatrixSplit, generate_datasets
from speccomp.matrices.task import MATRICES as MATRICES_TASK
from speccomp.nas.domain import SearchDomain, domain_for_config


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


def _split(split: MatrixSplit, name: str, n: int | None = None) -> MatrixSplit:
    """A renamed view of a split (its first `n` rows when given)."""
    if n is None or n >= len(split):
        return MatrixSplit(name, split.panels, split.target, split.batch, split.data_seed, list(split.heldout_pairs))
    batch = type(split.batch)(**{k: v[:n] for k, v in vars(split.batch).items()})
    return MatrixSplit(name, split.panels[:n], split.target[:n], batch, split.data_seed, list(split.heldout_pairs))


@dataclass
class MatricesBank:
    """Every matrix the meta-learner and its baselines see, generated once per task.

    `train[task]`, `val[task]` (in distribution, without the pair) and `query[task]` (meta-training
    tasks: matrices holding the pair) or `test[task]` (meta-test tasks, touched only by the final
    evaluation). `train_x` (R, 8 + C, D) / `train_y` (R,) stack every training matrix once."""

    cfg: Any
    configs: dict[RuleAttribute, Any]
    train: dict[RuleAttribute, MatrixSplit]
    val: dict[RuleAttribute, MatrixSplit]
    query: dict[RuleAttribute, MatrixSplit]
    test: dict[RuleAttribute, MatrixSplit]
    train_x: torch.Tensor = field(init=False)
    train_y: torch.Tensor = field(init=False)
    _offsets: dict[RuleAttribute, int] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        offset = 0
        for task, split in self.train.items():
            self._offsets[task] = offset
            offset += len(split)
        self.train_x = torch.cat([s.panels for s in self.train.values()])
        self.train_y = torch.cat([s.target for s in self.train.values()])

    @property
    def search(self) -> SearchDomain:
        """The domain object of the supernet's rows (`speccomp.matrices.search`)."""
        return domain_for_config(self.cfg)

    def train_rows(self, task: RuleAttribute, n_train: int | None = None) -> torch.Tensor:
        n = len(self.train[task]) if n_train is None else min(n_train, len(self.train[task]))
        return torch.arange(n) + self._offsets[task]

    def query_loss(self, net: Any, path: dict[str, torch.Tensor], task: RuleAttribute, idx: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of the answer among the candidates, on query matrices `idx` of the task."""
        q = self.query[task]
        return F.cross_entropy(self.search.forward(net, q.panels[idx], path), q.target[idx])

    def query_nll(self, net: Any, path: dict[str, torch.Tensor], task: RuleAttribute,
                  idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(NLL, CE): the summed cross-entropy of the task's whole query set, estimated from the
        batch `idx`; and the batch's mean cross-entropy."""
        ce = self.query_loss(net, path, task, idx)
        return len(self.query[task]) * ce, ce

    def task_datasets(self, task: RuleAttribute, n_train: int | None = None, final: bool = False) -> dict[str, MatrixSplit]:
        """`train`, `val` and `test` of a task; `test` is the query set of a meta-training task and
        the test set of a meta-test task when `final`."""
        test = (self.test if final else self.query)[task]
        return {"train": _split(self.train[task], "train", n_train), "val": _split(self.val[task], "val"),
                "test": _split(test, "test")}

    def task_config(self, task: RuleAttribute, sizes: dict[str, int] | None = None) -> Any:
        """The matrices experiment config of a task (the pair held out, the split sizes given)."""
        from speccomp.matrices.config import matrices_config_from_dict

        overrides = task_overrides(self.cfg, task, sizes or {})
        n_train = (sizes or {}).get("train")
        if n_train is not None and n_train < self.cfg.training.batch_size:
            overrides.append(f"training.batch_size={n_train}")
        return matrices_config_from_dict(self.cfg.to_dict(), overrides)


def build_matrices_bank(cfg: Any, meta_train: list[RuleAttribute], meta_test: list[RuleAttribute], data_seed: int,
                        n_train: int, n_val: int, n_query: int, n_test: int) -> MatricesBank:
    """Generate each task's splits (train and val without the pair, query / test all holding it)."""
    from speccomp.matrices.config import matrices_config_from_dict

    configs, train, val, query, test = {}, {}, {}, {}, {}
    for task in [*meta_train, *meta_test]:
        final = task in meta_test
        sizes = {"train": n_train, "val": n_val, "test": n_test if final else n_query}
        task_cfg = matrices_config_from_dict(cfg.to_dict(), task_overrides(cfg, task, sizes))
        splits = generate_datasets(task_cfg, derive_seed(data_seed, "meta", "matrices", task.name) % 2**31)
        configs[task], train[task], val[task] = task_cfg, splits["train"], splits["val"]
        (test if final else query)[task] = splits["test"]
    return MatricesBank(cfg, configs, train, val, query, test)


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
