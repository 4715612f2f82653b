"""Random search, the search's null: reproducible draws, the equal budget, ranks and the paired test."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from speccomp.nas import load_space
from speccomp.nas.compare import comparison_table, paired_test, ranks
from speccomp.nas.random_search import (
    derivable_options,
    equal_budget_draws,
    random_architectures,
    rank_among,
    training_steps,
)
from tests.test_nas import SPACE_FILE


@pytest.fixture(scope="module")
def space():
    return load_space(SPACE_FILE)


def test_draws_are_reproducible_from_the_seed_and_distinct_across_seeds(space):
    a, b, c = (random_architectures(space, 12, s) for s in (5, 5, 6))
    assert a == b and a != c
    assert len({tuple(sorted(d.items())) for d in a}) == 12  # 12 distinct architectures of ~10^5
    assert random_architectures(space, 3, 5) == a[:3]  # a draw does not depend on how many follow


def test_draws_cover_every_derivable_option_and_never_zero():
    from speccomp.nas import space_from_dict

    space = space_from_dict({"conv": {"positions": 0}, "dense": {"positions": 2, "ops": ["dense8", "identity", "zero"]}})
    draws = random_architectures(space, 300, 0)
    for name, options in derivable_options(space).items():
        assert {d[name] for d in draws} == set(options), name
        assert "zero" not in options
    counts = pd.Series([d["dense1"] for d in draws]).value_counts()
    assert counts.min() > 100  # two options, 300 draws: uniform, not stuck on one


@pytest.mark.parametrize("n", [0, -1])
def test_a_draw_count_below_one_is_refused(space, n):
    with pytest.raises(ValueError, match="allowed: an integer >= 1"):
        random_architectures(space, n, 0)


def test_equal_budget_buys_what_the_search_cost():
    from speccomp.core.config import load_config

    cfg = load_config()
    per_draw = training_steps(cfg, 4096)
    assert per_draw == cfg.training.epochs * math.ceil(4096 / cfg.training.batch_size) == 384
    search_steps = 3 * (1000 + 700)  # three searches: 1000 weight steps and 700 α steps each
    n = equal_budget_draws(search_steps, per_draw)
    assert n == 13 and abs(n * per_draw - search_steps) <= per_draw / 2  # the nearest whole number of draws
    assert equal_budget_draws(10, per_draw) == 1


def test_rank_counts_strictly_better_draws():
    assert rank_among(0.5, [0.1, 0.2, 0.9, 1.0]) == (3, 0.5)
    assert rank_among(0.05, [0.1, 0.2, 0.9, 1.0]) == (1, 0.0)
    assert rank_among(0.2, [0.1, 0.2, 0.2, 1.0])[0] == 3  # ties count half


def _per_seed() -> pd.DataFrame:
    rows = []
    for s, offset in ((1, -0.1), (2, -0.2)):  # the derived architectures of two search seeds
        for seed in (10, 11):
            rows.append({"model": "nas", "search_seed": s, "seed": seed, "val/mse": 1.0 + offset + seed / 100,
                         "test/mse": 2.0})
    for i, err in enumerate([0.95, 1.3, 1.5], start=1):  # three draws at the first seed; draw 1 is best
        rows.append({"model": "random", "draw": i, "seed": 10, "val/mse": err, "test/mse": 3.0, "best": i == 1})
    rows.append({"model": "random", "draw": 1, "seed": 11, "val/mse": 0.96, "test/mse": 3.0, "best": True})
    rows.append({"model": "default", "seed": 10, "val/mse": 1.2, "test/mse": 2.5})
    return pd.DataFrame(rows)


def test_table_ranks_and_paired_test_compare_like_with_like():
    per_seed = _per_seed()
    table = comparison_table(per_seed, ["val/mse", "test/mse"])
    assert list(table.index) == ["nas", "random", "default"]
    assert table.loc["random", "val/mse"] == pytest.approx((0.95 + 0.96) / 2)  # the best draw only
    assert table.loc["nas", "n"] == 4 and table.loc["random", "n"] == 2
    assert table.loc["nas", "search_std/val/mse"] == pytest.approx(pd.Series([0.905, 0.805]).std())
    r = ranks(per_seed, 10, ["val/mse"]).set_index("search_seed")
    # at seed 10, search seed 1 validates at 1.00 (draw 1, 0.95, is better), search seed 2 at 0.90
    assert r.loc[1, "rank/val/mse"] == 2 and r.loc[1, "better/val/mse"] == pytest.approx(1 / 3)
    assert r.loc[2, "rank/val/mse"] == 1 and r.loc[2, "better/val/mse"] == 0.0 and r.loc[2, "n_draws"] == 3
    t = paired_test(per_seed, "test/mse")
    assert t["pairs"] == 4 and t["wins"] == 4 and t["median_difference"] == pytest.approx(-1.0)
    assert t["p"] == pytest.approx(0.125)  # 4 pairs all one way: the smallest two-sided exact p
