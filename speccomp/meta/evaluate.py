"""The powered evaluation of the meta-learner: repetitions of meta-training and meta-testing over
several task draws and meta seeds, read as paired comparisons with intervals.

    reps = repetitions(base_task_seed, base_meta_seed, n)          # [(task seed, meta seed), ...]
    table = evaluation_table(per_unit, "test_mse")                  # one row per method
    shares = ingredient_shares(per_unit, "test_mse")                # the two ablations, read as shares
    print(verdicts(table, shares))

A unit is one (repetition, meta-test task). Per method and unit the ratio method ÷ meta of the
compared error (`test_mse` on spectra, `test_error` on matrices; lower is better, so > 1 means
the meta-learner is better); per method the median ratio over units with a percentile-bootstrap
95 % interval (units resampled), the units meta wins, and the two-sided Wilcoxon signed-rank p of
the paired errors, Holm-corrected over the methods compared.
"""

from __future__ import annotations

import math
from collections.abc import Collection

import numpy as np
import pandas as pd

from speccomp.meta.compare import method_order, paired_p

REFERENCE = "meta"
BOOTSTRAP = 2000
SHARES = {
    "the meta-learned weights' share": ("meta-weights", "prior"),
    "the posterior's share": ("meta-arch", "prior"),
    "what the posterior adds to the weights": ("meta", "meta-weights"),
    "what the weights add to the posterior": ("meta", "meta-arch"),
}
"""Ablation readings: name -> (with the ingredient, without it); a ratio < 1 means it helps."""


def repetitions(task_seed: int, meta_seed: int, n: int) -> list[tuple[int, int]]:
    """n (TASK_GENERATOR_SEED, meta seed) pairs: both counted up from the resolved settings."""
    if n < 1:
        raise ValueError(f"repetitions: {n}; allowed: an integer >= 1")
    return [(task_seed + r, meta_seed + r) for r in range(n)]


def bootstrap_median_ci(values: np.ndarray, level: float = 0.95, n_boot: int = BOOTSTRAP,
                        seed: int = 0) -> tuple[float, float]:
    """Percentile-bootstrap interval of the median of `values` (resampled with replacement)."""
    values = np.asarray(values, float)
    values = values[np.isfinite(values)]
    if len(values) < 2:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    medians = np.median(rng.choice(values, size=(n_boot, len(values)), replace=True), axis=1)
    tail = (1 - level) / 2
    return float(np.quantile(medians, tail)), float(np.quantile(medians, 1 - tail))


def holm(pvalues: dict[str, float]) -> dict[str, float]:
    """Holm's step-down adjustment of a family of p-values (NaN ones are left out and stay NaN)."""
    finite = sorted((p, k) for k, p in pvalues.items() if math.isfinite(p))
    m, out, running = len(finite), {k: math.nan for k in pvalues}, 0.0
    for i, (p, k) in enumerate(finite):
        running = max(running, min(1.0, (m - i) * p))
        out[k] = running
    return out


def _wide(per_unit: pd.DataFrame, measure: str) -> pd.DataFrame:
    return per_unit.pivot_table(index=["repetition", "pair"], columns="method", values=measure, aggfunc="first")


def _paired(wide: pd.DataFrame, a: str, b: str) -> dict[str, float]:
    """a ÷ b per unit: median, bootstrap interval, units where a is lower, Wilcoxon p."""
    ok = wide[a].notna() & wide[b].notna()
    x, y = wide.loc[ok, a].to_numpy(float), wide.loc[ok, b].to_numpy(float)
    ratio = x / y
    lo, hi = bootstrap_median_ci(ratio)
    return {"units": int(ok.sum()), "median_ratio": float(np.median(ratio)) if len(ratio) else math.nan,
            "ci_low": lo, "ci_high": hi, "lower": int((x < y).sum()), "p": paired_p(x, y)}


def evaluation_table(per_unit: pd.DataFrame, measure: str, reference: str = REFERENCE,
                     floors: Collection[str] = ()) -> pd.DataFrame:
    """One row per method compared with `reference`: median ratio method ÷ reference over units,
    its 95 % interval, the units the reference wins, Wilcoxon p and Holm-corrected p. `floors`:
    rows that are no method (the domain's `floor_method`, e.g. the oracle), left out."""
    wide = _wide(per_unit, measure)
    rows = []
    for method in method_order(wide.columns):
        if method == reference or method in floors:
            continue
        t = _paired(wide, method, reference)
        rows.append({"method": method, "units": t["units"], f"median_{measure}": float(wide[method].median()),
                     "median_ratio_to_meta": t["median_ratio"], "ci_low": t["ci_low"], "ci_high": t["ci_high"],
                     "meta_wins": t["units"] - t["lower"], "wilcoxon_p": t["p"]})
    table = pd.DataFrame(rows)
    if len(table):
        adjusted = holm(dict(zip(table["method"], table["wilcoxon_p"], strict=True)))
        table["holm_p"] = table["method"].map(adjusted)
    return table


def ingredient_shares(per_unit: pd.DataFrame, measure: str) -> pd.DataFrame:
    """The ablations read as shares (`SHARES`): ratio with ÷ without the ingredient, interval,
    Wilcoxon and Holm p over the shares present."""
    wide = _wide(per_unit, measure)
    rows = []
    for name, (a, b) in SHARES.items():
        if a in wide.columns and b in wide.columns:
            rows.append({"share": name, "with": a, "without": b, **_paired(wide, a, b)})
    table = pd.DataFrame(rows)
    if len(table):
        adjusted = holm(dict(zip(table["share"], table["p"], strict=True)))
        table["holm_p"] = table["share"].map(adjusted)
    return table


def _g(x: float) -> str:
    return "n/a" if not math.isfinite(x) else f"{x:.3g}"


def verdicts(shares: pd.DataFrame, alpha: float = 0.05) -> list[str]:
    """One sentence per share: the ratio with its interval and Holm p, and what it says."""
    out = []
    for _, r in shares.iterrows():
        if math.isfinite(r["holm_p"]) and r["holm_p"] < alpha:
            word = "helps" if r["median_ratio"] < 1 else "hurts"
        else:
            word = "not shown (no significant difference)"
        out.append(f"{r['share']} ({r['with']} / {r['without']}): median ratio {_g(r['median_ratio'])} "
                   f"[{_g(r['ci_low'])}, {_g(r['ci_high'])}], {r['with']} lower in {r['lower']}/{r['units']} units, "
                   f"Holm p = {_g(r['holm_p'])}: {word}")
    return out


def threads_agree(tables: dict[int, pd.DataFrame]) -> pd.DataFrame:
    """Per method, whether each thread count's median ratio lies inside every other's interval
    (a conclusion that moves with the float reduction order is not a result)."""
    counts = sorted(tables)
    methods = sorted(set.intersection(*(set(t["method"]) for t in tables.values())))
    rows = []
    for m in methods:
        row = {"method": m}
        inside = True
        for a in counts:
            ra = tables[a].set_index("method").loc[m]
            row[f"ratio@{a}"] = ra["median_ratio_to_meta"]
            row[f"ci@{a}"] = f"[{_g(ra['ci_low'])}, {_g(ra['ci_high'])}]"
            for b in counts:
                rb = tables[b].set_index("method").loc[m]
                inside &= bool(rb["ci_low"] <= ra["median_ratio_to_meta"] <= rb["ci_high"])
        row["agree"] = inside
        rows.append(row)
    return pd.DataFrame(rows)


def evaluate(
    flags: dict[str, str | None],
    meta_config: str | None,
    overrides: list[str],
    env_file: str | None,
    n_repetitions: int,
    threads: list[int],
    on_repetition=None,
    progress=None,
    steps=None,
) -> dict:
    """Run `n_repetitions` meta runs at each thread count: repetition r draws its tasks with
    TASK_GENERATOR_SEED = base + r and meta-trains and trains with seed = base meta seed + r (the
    base values resolved as `speccomp meta` resolves them). Returns {"per_unit": frame with
    `threads`, `repetition`, `task_seed`, `meta_seed` and the meta run's per-pair columns,
    "plans": [...], "posterior": [entropy ratios]}. Validation errors (ConfigError) come before any
    work: every repetition's plan is made first. `progress(line)` and `steps` are `run_meta`'s."""
    import torch

    from speccomp.meta.run import plan_meta, run_meta

    say = progress or (lambda _m: None)
    base = plan_meta(flags, meta_config, overrides, env_file)
    reps = repetitions(base.settings.values.task_generator_seed, base.meta.experiment.seeds[0], n_repetitions)
    plans = []
    for task_seed, meta_seed in reps:
        plan = plan_meta({**flags, "task_generator_seed": str(task_seed)}, meta_config,
                         [*overrides, f"experiment.seeds=[{meta_seed}]"], env_file)
        assert not set(plan.tasks.meta_test) & set(plan.tasks.meta_train)  # independent within a repetition
        plans.append(plan)
    frames, entropy = [], []
    previous = torch.get_num_threads()
    try:
        for t in threads:
            torch.set_num_threads(t)
            for r, ((task_seed, meta_seed), plan) in enumerate(zip(reps, plans, strict=True), start=1):
                say(f"repetition {r}/{len(reps)} at {t} thread{'s' if t > 1 else ''}: task seed {task_seed}, "
                    f"meta seed {meta_seed}")
                outcome = run_meta(plan, progress=say, steps=steps)
                frame = outcome.per_pair.copy()
                frame.insert(0, "repetition", r)
                frame.insert(0, "threads", t)
                frame["task_seed"], frame["meta_seed"] = task_seed, meta_seed
                frames.append(frame)
                entropy.append(entropy_ratio(plan.space, outcome.training.posterior))
                if on_repetition is not None:
                    on_repetition(t, r, task_seed, meta_seed, outcome, frame)
    finally:
        torch.set_num_threads(previous)
    return {"per_unit": pd.concat(frames, ignore_index=True), "plans": plans, "entropy_ratio": entropy,
            "repetitions": reps}


def entropy_ratio(space, posterior) -> float:
    """Mean entropy of softmax(μ) over the decisions ÷ the prior's (log K): 1 = q learned nothing."""
    from speccomp.meta.metatrain import posterior_probabilities

    probs = posterior_probabilities(space, posterior)
    h = sum(float(-(p * p.clamp_min(1e-30).log()).sum()) for p in probs.values())
    return h / sum(math.log(len(p)) for p in probs.values())
