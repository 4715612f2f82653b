"""The meta-learner's tasks, whatever the domain: names, the disjoint meta-training / meta-test
draw, and the random streams of meta-training.

A task is whatever a domain holds out (`speccomp.meta.domain.MetaDomain.all_tasks`): a pair of
spectral components (`speccomp.spectra.meta_tasks`), a (rule, attribute) pair of the matrices
(`speccomp.matrices.meta_tasks`). The draw is one idea for every domain (`draw_tasks`): a
permutation of the tasks, its first ones for meta-training, the meta-test ones from the rest (or
from a pool of their own), returned in the tasks' own order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import torch

from speccomp.core.seeding import torch_generator

Pair = tuple[str, str]
T = TypeVar("T")


def pair_name(pair: Any) -> str:
    """A task's name: its `name` (e.g. `rule/attribute`), or `a+b` for a pair of components."""
    return getattr(pair, "name", None) or f"{pair[0]}+{pair[1]}"


@dataclass(frozen=True)
class TaskSets:
    """Which tasks are meta-training and which meta-test tasks (disjoint)."""

    meta_train: list[Any]
    meta_test: list[Any]
    held_out: list[str] = field(default_factory=list)
    """Components that occur in no meta-training task (spectra; empty unless asked for)."""


def draw_tasks(pool: Sequence[T], n_train: int, n_test: int, rng: np.random.Generator,
               test_pool: Sequence[T] | None = None, reshuffle: bool = True,
               unit: str = "tasks") -> tuple[list[T], list[T]]:
    """`n_train` meta-training tasks (the first of a permutation of `pool`) and `n_test` meta-test
    tasks without overlap, drawn from `test_pool` or else from the rest of the permutation: by a
    second permutation when `reshuffle`, else its first `n_test`. Meta-test tasks come in the order
    of their pool. Raises ValueError when there are not enough tasks.

    (The two kinds of meta-test draw are kept so that each domain's recorded draws stay as they
    were: the spectra permute the rest again, the matrices take its head.)"""
    if n_train > len(pool):
        raise ValueError(f"{n_train} meta-training tasks but only {len(pool)} {unit} available")
    order = rng.permutation(len(pool))
    meta_train = [pool[i] for i in order[:n_train]]
    rest = list(test_pool) if test_pool is not None else [pool[i] for i in order[n_train:]]
    if n_test > len(rest):
        raise ValueError(f"{n_test} meta-test tasks but only {len(rest)} {unit} left")
    picked = [rest[i] for i in rng.permutation(len(rest))[:n_test]] if reshuffle else rest[:n_test]
    position = {task: i for i, task in enumerate(test_pool if test_pool is not None else pool)}
    return meta_train, sorted(picked, key=position.__getitem__)


def batch_rows(rows: torch.Tensor, batch_size: int, generator: torch.Generator) -> torch.Tensor:
    """`batch_size` rows drawn uniformly with replacement from `rows`."""
    return rows[torch.randint(len(rows), (batch_size,), generator=generator)]


def task_generator(seed: int, *names: str | int) -> torch.Generator:
    """The torch stream of one purpose of the meta-learner (seed, "meta", names...)."""
    return torch_generator(seed, "meta", *names)
