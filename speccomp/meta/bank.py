"""A task bank for domains whose tasks have splits of their own: every task's splits generated
once (`MetaDomain.task_splits`), the training rows of all tasks stacked for meta-training.

    bank = SplitBank(cfg, train, val, query, test)     # {task: split} each (`MetaDomain.build_bank`)
    bank.train_rows(task)                              # the task's rows in `train_x` / `train_y`
    bank.query_nll(net, path, task, idx)               # the domain's loss on query rows `idx`
    bank.task_datasets(task, n_train, final=True)      # train / val / test splits of a meta-test task

What differs between domains is asked of the domain object (`search`): the rows and targets of a
split (`tensors`), the forward pass and the loss, a view of a split's first rows (`take`) and a
task's experiment config (`task_config`). The spectra share pools between tasks and have a bank of
their own (`speccomp.spectra.meta_tasks.TaskBank`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from speccomp.nas.domain import SearchDomain, domain_for_config


@dataclass
class StackedTrain:
    """The training rows of every task stacked once, `train_x` (R, ...) / `train_y` (R, ...), and
    where each task's rows start (`_offsets`); filled by the bank's `__post_init__`."""

    train_x: torch.Tensor = field(init=False)
    train_y: torch.Tensor = field(init=False)
    _offsets: dict[Any, int] = field(init=False, default_factory=dict)


@dataclass
class SplitBank(StackedTrain):
    """`train[task]`, `val[task]` (in distribution) and `query[task]` (meta-training tasks: what the
    task holds out) or `test[task]` (meta-test tasks, touched only by the final evaluation).
    `train_x` (R, ...) / `train_y` (R, ...) stack every training split once, in task order."""

    cfg: Any
    train: dict[Any, Any]
    val: dict[Any, Any]
    query: dict[Any, Any]
    test: dict[Any, Any]

    def __post_init__(self) -> None:
        offset = 0
        for task, split in self.train.items():
            self._offsets[task] = offset
            offset += len(split)
        rows = [self.search.tensors(s) for s in self.train.values()]
        self.train_x = torch.cat([x for x, _ in rows])
        self.train_y = torch.cat([y for _, y in rows])

    @property
    def search(self) -> SearchDomain:
        """The domain object of the config (`speccomp.nas.domain.domain_for_config`)."""
        return domain_for_config(self.cfg)

    def train_rows(self, task: Any, n_train: int | None = None) -> torch.Tensor:
        """Row indices into `train_x` of the task's training split (its first `n_train`; None: all)."""
        n = len(self.train[task]) if n_train is None else min(n_train, len(self.train[task]))
        return torch.arange(n) + self._offsets[task]

    def query_loss(self, net: Any, path: dict[str, torch.Tensor], task: Any, idx: torch.Tensor) -> torch.Tensor:
        """The domain's loss of the supernet path on query rows `idx` of the task."""
        x, y = self.search.tensors(self.query[task])
        return self.search.loss(self.search.forward(net, x[idx], path), y[idx])

    def query_nll(self, net: Any, path: dict[str, torch.Tensor], task: Any,
                  idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(NLL, loss): the summed loss of the task's whole query set, estimated from the batch
        `idx` (for a cross-entropy, its negative log-likelihood); and the batch's mean loss."""
        loss = self.query_loss(net, path, task, idx)
        return len(self.query[task]) * loss, loss

    def task_datasets(self, task: Any, n_train: int | None = None, final: bool = False) -> dict[str, Any]:
        """`train`, `val` and `test` of a task; `test` is the query set of a meta-training task and
        the test set of a meta-test task when `final`."""
        take = self.search.take
        test = (self.test if final else self.query)[task]
        return {"train": take(self.train[task], "train", n_train), "val": take(self.val[task], "val"),
                "test": take(test, "test")}

    def task_config(self, task: Any, sizes: dict[str, int] | None = None) -> Any:
        """The experiment config of a task (`MetaDomain.task_config`)."""
        return self.search.task_config(self.cfg, task, sizes or {})
