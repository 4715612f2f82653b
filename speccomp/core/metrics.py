"""Per-component errors, R², the compositional gap and the no-skill baseline.

All functions take predictions and targets of shape (..., N, C): a leading member dimension (one
per training seed) is carried through, so every seed of an ensemble is scored in one call.
"""

from __future__ import annotations

import torch

from speccomp.core.data import SplitData


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


def split_metrics(split_name: str, pred: torch.Tensor, split: SplitData, tracked: list[str]) -> list[dict[str, float]]:
    """The per-checkpoint metrics of one split for every member: `<split>/mse` (all components, as
    in the tutorial) and `<split>/mse/<label>` for each tracked label. pred: (S, N, C)."""
    per_comp = component_mse(pred, split.abundances)  # (S, C)
    overall = per_comp.mean(dim=-1)
    out = []
    for s in range(pred.shape[0]):
        row = {f"{split_name}/mse": float(overall[s])}
        for label in tracked:
            row[f"{split_name}/mse/{label}"] = float(per_comp[s, split.label_index(label)])
        out.append(row)
    return out


def final_metrics(
    val_pred: torch.Tensor | None,
    test_pred: torch.Tensor,
    val: SplitData | None,
    test: SplitData,
    train: SplitData,
    tracked: list[str],
) -> list[dict[str, float]]:
    """End-of-training metrics for every member (pred shapes (S, N, C)):

    - `gap/<label>`: test MSE where the label is present ÷ validation (in-distribution) MSE where it
      is present; > 1 means the component is read worse in the novel combination;
    - `test/r2/<label>` (and `val/r2/<label>`);
    - `test/mse_present/<label>`, `val/mse_present/<label>`: the two sides of the gap;
    - `baseline/<split>/mse/<label>`: the no-skill baseline, predicting the training mean.
    """
    baseline = train.abundances.mean(dim=0, keepdim=True).expand_as(test.abundances)
    test_present = component_mse(test_pred, test.abundances, test.present)
    test_r2 = component_r2(test_pred, test.abundances)
    base_test = component_mse(baseline, test.abundances)
    if val is not None and val_pred is not None:
        val_present = component_mse(val_pred, val.abundances, val.present)
        val_r2 = component_r2(val_pred, val.abundances)
        base_val = component_mse(train.abundances.mean(dim=0, keepdim=True).expand_as(val.abundances), val.abundances)
    out = []
    for s in range(test_pred.shape[0]):
        row: dict[str, float] = {"baseline/test/mse": float(base_test.mean())}
        for label in tracked:
            i = test.label_index(label)
            row[f"test/mse_present/{label}"] = float(test_present[s, i])
            row[f"test/r2/{label}"] = float(test_r2[s, i])
            row[f"baseline/test/mse/{label}"] = float(base_test[i])
            if val is not None and val_pred is not None:
                row[f"val/mse_present/{label}"] = float(val_present[s, i])
                row[f"val/r2/{label}"] = float(val_r2[s, i])
                row[f"baseline/val/mse/{label}"] = float(base_val[i])
                row[f"gap/{label}"] = float(test_present[s, i] / val_present[s, i])
        out.append(row)
    return out
