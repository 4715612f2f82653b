"""Per-component errors, R², skill where present, transfer, the compositional gap and the no-skill baseline.

All functions take predictions and targets of shape (..., N, C): a leading member dimension (one
per training seed) is carried through, so every seed of an ensemble is scored in one call.
"""

from __future__ import annotations

import math

import torch

from speccomp.core.splits import ComponentSplit


def component_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error per component, (..., N, C) -> (..., C). With a (N, C) boolean `mask`,
    only the rows where the mask is true count for that component (NaN where none do)."""
    err = (pred - target) ** 2
    if mask is None:
        return err.mean(dim=-2)
    m = mask.to(err.dtype)
    count = m.sum(dim=0)
    total = (err * m).sum(dim=-2)
    return torch.where(count > 0, total / count.clamp_min(1), torch.full_like(total, float("nan")))


def component_r2(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Coefficient of determination per component, (..., N, C) -> (..., C); NaN for a constant target."""
    sse = ((pred - target) ** 2).sum(dim=-2)
    sst = ((target - target.mean(dim=0)) ** 2).sum(dim=0)
    return torch.where(sst > 0, 1.0 - sse / sst.clamp_min(1e-30), torch.full_like(sse, float("nan")))


def present_r2(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """R² per component over the rows where the (N, C) boolean `mask` is true, (..., N, C) -> (..., C):
    1 − Σ(pred − y)² ÷ Σ(y − ȳ)², with ȳ the mean of the present targets. 1 = exact, 0 = no better
    than predicting the present targets' mean, < 0 = worse (the training-set mean, pulled towards 0
    by the samples without the component, lands well below 0). NaN where fewer than two rows are
    present or the present targets are constant."""
    m = mask.to(target.dtype)
    count = m.sum(dim=0)
    mean = (target * m).sum(dim=0) / count.clamp_min(1)
    sst = (((target - mean) ** 2) * m).sum(dim=0)
    sse = (((pred - target) ** 2) * m).sum(dim=-2)
    ok = (count > 1) & (sst > 0)
    return torch.where(ok, 1.0 - sse / sst.clamp_min(1e-30), torch.full_like(sse, float("nan")))


def split_metrics(split_name: str, pred: torch.Tensor, split: ComponentSplit, tracked: list[str]) -> list[dict[str, float]]:
    """The per-checkpoint metrics of one split for every member: `<split>/mse` (all components, as
    in the tutorial), `<split>/mse/<label>` (all samples of the split) and
    `<split>/mse_present/<label>` (only the samples that carry the component: the two sides of
    the gap, so curves compare like with like) for each tracked label. pred: (S, N, C)."""
    per_comp = component_mse(pred, split.abundances)  # (S, C)
    present = component_mse(pred, split.abundances, split.present)  # (S, C), NaN where never present
    overall = per_comp.mean(dim=-1)
    out = []
    for s in range(pred.shape[0]):
        row = {f"{split_name}/mse": float(overall[s])}
        for label in tracked:
            i = split.label_index(label)
            row[f"{split_name}/mse/{label}"] = float(per_comp[s, i])
            row[f"{split_name}/mse_present/{label}"] = float(present[s, i])
        out.append(row)
    return out


LEARNED_SKILL = 0.5
"""Default `analysis.learned_skill`: a component whose in-distribution skill (R² where present on
the validation split) is below this is *not learned*, and gets no transfer value (see docs/metrics.md)."""


def is_learned(skill_val: float, threshold: float = LEARNED_SKILL) -> bool:
    """True when the in-distribution skill reaches the threshold (False for NaN)."""
    return bool(math.isfinite(skill_val) and skill_val >= threshold)


def transfer(skill_test: float, skill_val: float, threshold: float = LEARNED_SKILL) -> float:
    """Combination skill ÷ in-distribution skill: 1 = what was learned carries over fully to the
    novel combination, 0 = nothing carried over (the combination is read no better than its mean),
    < 0 = worse than that. NaN when the component was not learned in distribution."""
    return skill_test / skill_val if is_learned(skill_val, threshold) else math.nan


def not_learned(final: dict[str, float], tracked: list[str], threshold: float = LEARNED_SKILL) -> list[str] | None:
    """The tracked labels whose `skill/val/<label>` is below the threshold, or None when the seed
    has no in-distribution skill to judge by (no validation split)."""
    if not all(f"skill/val/{label}" in final for label in tracked):
        return None
    return [label for label in tracked if not is_learned(final[f"skill/val/{label}"], threshold)]


def final_metrics(
    val_pred: torch.Tensor | None,
    test_pred: torch.Tensor,
    val: ComponentSplit | None,
    test: ComponentSplit,
    train: ComponentSplit,
    tracked: list[str],
    learned_skill: float = LEARNED_SKILL,
) -> list[dict[str, float]]:
    """End-of-training metrics for every member (pred shapes (S, N, C)):

    - `skill/val/<label>`: in-distribution skill, R² where the label is present on the validation
      split; `skill/test/<label>`: combination skill, R² where it is present on the test split;
    - `transfer/<label>` = skill/test ÷ skill/val (1 = composes fully, 0 = nothing carried over);
      left out when skill/val < `learned_skill` (the component was not learned at all), so that
      no number can read as success;
    - `gap/<label>`: test MSE where the label is present ÷ validation (in-distribution) MSE where it
      is present (kept for continuity: it reads ≈ 1 both when the model composes perfectly and when
      it learned nothing, so read it beside `transfer`);
    - `test/r2/<label>` (and `val/r2/<label>`), over all samples of the split;
    - `baseline/<split>/mse/<label>`: the no-skill baseline, predicting the training mean.
    The two sides of the gap, `<split>/mse_present/<label>`, come with every checkpoint.
    """
    baseline = train.abundances.mean(dim=0, keepdim=True).expand_as(test.abundances)
    test_present = component_mse(test_pred, test.abundances, test.present)
    test_skill = present_r2(test_pred, test.abundances, test.present)
    test_r2 = component_r2(test_pred, test.abundances)
    base_test = component_mse(baseline, test.abundances)
    has_val = val is not None and val_pred is not None
    if has_val:
        val_present = component_mse(val_pred, val.abundances, val.present)
        val_skill = present_r2(val_pred, val.abundances, val.present)
        val_r2 = component_r2(val_pred, val.abundances)
        base_val = component_mse(train.abundances.mean(dim=0, keepdim=True).expand_as(val.abundances), val.abundances)
    out = []
    for s in range(test_pred.shape[0]):
        row: dict[str, float] = {"baseline/test/mse": float(base_test.mean())}
        for label in tracked:
            i = test.label_index(label)
            row[f"test/r2/{label}"] = float(test_r2[s, i])
            row[f"skill/test/{label}"] = float(test_skill[s, i])
            row[f"baseline/test/mse/{label}"] = float(base_test[i])
            if has_val:
                row[f"val/r2/{label}"] = float(val_r2[s, i])
                row[f"skill/val/{label}"] = float(val_skill[s, i])
                row[f"baseline/val/mse/{label}"] = float(base_val[i])
                row[f"gap/{label}"] = float(test_present[s, i] / val_present[s, i])
                value = transfer(float(test_skill[s, i]), float(val_skill[s, i]), learned_skill)
                if math.isfinite(value):  # not learned: no transfer value at all, rather than a NaN
                    row[f"transfer/{label}"] = value
        out.append(row)
    return out
