"""Reading a search against its nulls: comparison table, ranks among random draws, paired test.

All functions take the per-seed frame of the retrained models: one row per (model, seed) run with
columns `model` (nas, random, default, ...), `seed`, `search_seed` (nas rows), `draw` (random
rows), `best` (True on the rows of the best random draw) and the final metrics of the domain
(`SearchDomain.reading_columns`, `selection_metric`, `test_metric`).
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from speccomp.nas.random_search import rank_among


def compared_rows(per_seed: pd.DataFrame) -> pd.DataFrame:
    """The rows a comparison averages: every model's, of random search only the best draw's."""
    is_random = per_seed["model"] == "random"
    return per_seed[~is_random | per_seed["best"].fillna(False).astype(bool)]


def comparison_table(per_seed: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """One row per model (in order of appearance): across-run mean and std of each column, the
    number of runs `n`, and for `nas` the spread of the per-search-seed means
    (`search_std/<column>`): what another search seed would change."""
    out = {}
    for model, group in compared_rows(per_seed).groupby("model", sort=False):
        row: dict[str, float] = {"n": float(len(group))}
        for name in columns:
            if name not in group:
                continue
            values = pd.to_numeric(group[name], errors="coerce").dropna()
            row[name] = float(values.mean()) if len(values) else math.nan
            row[f"std/{name}"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
            if model == "nas" and "search_seed" in group and group["search_seed"].nunique() > 1:
                means = group.groupby("search_seed")[name].mean()
                row[f"search_std/{name}"] = float(means.std(ddof=1))
        out[model] = row
    return pd.DataFrame.from_dict(out, orient="index")


def ranks(per_seed: pd.DataFrame, first_seed: int, metrics: list[str]) -> pd.DataFrame:
    """Per search seed, the derived architecture's rank among the random draws, all at the first
    retraining seed (the draws are trained on it alone): for each metric `rank/<m>` (1 = best),
    `better/<m>` (fraction of draws strictly better) and `n_draws`."""
    draws = per_seed[(per_seed["model"] == "random") & (per_seed["seed"] == first_seed)]
    rows = []
    nas = per_seed[(per_seed["model"] == "nas") & (per_seed["seed"] == first_seed)]
    for _, derived in nas.iterrows():
        row: dict[str, Any] = {"search_seed": int(derived["search_seed"]), "n_draws": len(draws)}
        for m in metrics:
            rank, better = rank_among(float(derived[m]), [float(v) for v in draws[m]])
            row[f"rank/{m}"], row[f"better/{m}"] = rank, better
        rows.append(row)
    return pd.DataFrame(rows)


def paired_test(per_seed: pd.DataFrame, metric: str) -> dict[str, float]:
    """Derived (each search seed) against the best random draw at the same retraining seed, over
    every (search seed, retraining seed) pair: the median difference derived − random (< 0: the
    search is better), the pairs the search wins, and the two-sided Wilcoxon signed-rank p
    (exact for these sizes; NaN with fewer than two pairs or no difference at all)."""
    from scipy.stats import wilcoxon

    best = compared_rows(per_seed)
    random = best[best["model"] == "random"].set_index("seed")[metric].astype(float)
    nas = per_seed[per_seed["model"] == "nas"]
    diffs = [float(r[metric]) - float(random[r["seed"]]) for _, r in nas.iterrows() if r["seed"] in random.index]
    out = {"pairs": float(len(diffs)), "wins": float(sum(d < 0 for d in diffs)),
           "median_difference": float(pd.Series(diffs).median()) if diffs else math.nan, "p": math.nan}
    if len(diffs) >= 2 and any(d != 0 for d in diffs):
        out["p"] = float(wilcoxon(diffs, alternative="two-sided").pvalue)
    return out


def agreement(choices: list[dict[str, str]]) -> dict[str, tuple[str, int]]:
    """{decision: (the option most search seeds chose, how many chose it)} over the search seeds."""
    out = {}
    for name in choices[0]:
        picks = pd.Series([c[name] for c in choices])
        counts = picks.value_counts(sort=True)
        out[name] = (str(counts.index[0]), int(counts.iloc[0]))
    return out


def supernet_losses(result: Any, val: Any, architectures: list[dict[str, str]]) -> list[float]:
    """The search's own estimate of each architecture: the validation loss of its one-hot path
    through the final supernet weights (shared weights, no retraining), in the domain's loss."""
    import torch

    from speccomp.nas.derive import one_hot_weights

    domain, net = result.domain, result.supernet
    x, y = domain.tensors(val)
    net.eval()
    out = []
    with torch.no_grad():
        z = domain.prepare(net, x)
        idx = torch.arange(y.shape[0])
        for choices in architectures:
            pred = domain.forward(net, domain.rows(z, idx), one_hot_weights(result.space, choices))
            out.append(float(domain.loss(pred, y)))
    net.train()
    return out


def kendall_tau(a: list[float], b: list[float]) -> float:
    """Kendall's τ between two scorings of the same architectures (1: the same order; 0: unrelated).
    Here: the supernet's validation loss against the retrained models' validation error — whether
    weight sharing can rank architectures at all (Yu et al. 2020 measured τ ≈ 0 on NAS benchmarks)."""
    from scipy.stats import kendalltau

    if len(a) < 3:
        return math.nan
    return float(kendalltau(a, b).statistic)
