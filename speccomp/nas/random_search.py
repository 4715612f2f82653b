"""Random search, the null a weight-sharing search must beat (Li & Talwalkar 2019; Yu et al. 2020).

    draws = random_architectures(space, n, seed)    # [{decision: option}, ...], uniform per decision
    n = equal_budget_draws(search_steps, steps_per_draw)
    rank, better = rank_among(derived_error, draw_errors)

The draws come from the architectures a search can derive: every decision uniform over its
options, `zero` left out as `derive.choices_of` leaves it out (a `zero` position makes the chain a
constant). The budget is counted in gradient steps, forward-backward passes over one batch: a
search step counts one per weight step and one per α sample (`SearchResult.gradient_steps`), a
draw the optimiser steps of one training run of one seed (`training_steps`).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from speccomp.core.seeding import torch_generator
from speccomp.nas.space import NasSpace


def derivable_options(space: NasSpace) -> dict[str, tuple[str, ...]]:
    """{decision: the options `choices_of` can pick}: every option but `zero`, unless it is the only one."""
    return {d.name: tuple(o for o in d.options if o != "zero") or d.options for d in space.decisions}


def random_architectures(space: NasSpace, n: int, seed: int) -> list[dict[str, str]]:
    """`n` architectures, each decision drawn uniformly and independently from its derivable
    options, from the stream (seed, "nas", "random"): the same seed gives the same draws."""
    if n < 1:
        raise ValueError(f"n: {n}; allowed: an integer >= 1")
    gen = torch_generator(seed, "nas", "random")
    options = derivable_options(space)
    return [{name: opts[int(torch.randint(len(opts), (1,), generator=gen))] for name, opts in options.items()}
            for _ in range(n)]


def training_steps(cfg: Any, n_train: int) -> int:
    """Optimiser steps of one training run of `cfg` on `n_train` rows (the training loop's count)."""
    return cfg.training.epochs * math.ceil(n_train / cfg.training.batch_size)


def equal_budget_draws(search_steps: int, steps_per_draw: int) -> int:
    """Draws whose training (one seed each) costs what the search cost, in gradient steps: at least one."""
    if steps_per_draw < 1:
        raise ValueError(f"steps_per_draw: {steps_per_draw}; allowed: an integer >= 1")
    return max(1, round(search_steps / steps_per_draw))


def rank_among(value: float, others: list[float]) -> tuple[int, float]:
    """(rank, fraction): `value`'s 1-based rank among `others` (1 = lower than every one; ties
    count half) and the fraction of `others` strictly better (lower). Best quartile: fraction <= 0.25."""
    finite = [v for v in others if math.isfinite(v)]
    if not finite:
        return 1, math.nan
    better = sum(v < value for v in finite)
    ties = sum(v == value for v in finite)
    return 1 + better + ties // 2, better / len(finite)
