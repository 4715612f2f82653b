"""Gumbel-softmax over the architecture logits, the temperature schedule and summaries of α.

All decisions are sampled together: the logits are packed into one (D, K) matrix (padded with
-inf where a decision has fewer than K options), one Gumbel draw and one softmax cover them all.

- soft (SNAS): w = softmax((α + g) / τ), a mixture of every path.
- hard (GDAS): w = onehot(argmax(α + g)) - stopgrad(soft) + soft: the forward pass takes one
  path (exactly one-hot values), the backward pass the soft sample's gradient (straight-through).

argmax(α + g) is a draw from softmax(α) whatever τ (the Gumbel-max trick), so a hard sample picks
option k with probability softmax(α)_k; τ only shapes the gradient.
"""

from __future__ import annotations

import math

import torch


def _pack(alpha: dict[str, torch.Tensor]) -> tuple[torch.Tensor, list[str], list[int]]:
    names = list(alpha)
    sizes = [alpha[n].shape[-1] for n in names]
    width = max(sizes)
    rows = [torch.nn.functional.pad(alpha[n], (0, width - s), value=-math.inf) for n, s in zip(names, sizes, strict=True)]
    return torch.stack(rows), names, sizes


def _unpack(matrix: torch.Tensor, names: list[str], sizes: list[int]) -> dict[str, torch.Tensor]:
    return {n: matrix[i, :s] for i, (n, s) in enumerate(zip(names, sizes, strict=True))}


def gumbel_softmax(logits: torch.Tensor, tau: float, hard: bool, generator: torch.Generator,
                   backward: str = "gumbel") -> torch.Tensor:
    """(..., K) logits -> (..., K) weights that sum to 1 along the last axis (see module doc).
    Gumbel noise g = -log(E), E ~ Exp(1), drawn from `generator`. With `hard`, `backward` says
    whose Jacobian the straight-through gradient takes: `gumbel` the soft sample's (GDAS), or
    `softmax` that of softmax(α) itself (the straight-through estimator of Bengio et al. 2013):
    the same forward, no Gumbel noise and no 1/τ in the gradient, so its variance is that of the
    batch and of the other decisions' draws alone."""
    if tau <= 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    exp = torch.empty(logits.shape, dtype=logits.dtype).exponential_(generator=generator)
    soft = torch.softmax((logits - exp.log()) / tau, dim=-1)
    if not hard:
        return soft
    one_hot = torch.zeros_like(soft).scatter_(-1, soft.argmax(dim=-1, keepdim=True), 1.0)
    surrogate = torch.softmax(logits, dim=-1) if backward == "softmax" else soft
    return one_hot - surrogate.detach() + surrogate


def sample_weights(
    alpha: dict[str, torch.Tensor], tau: float, hard: bool, generator: torch.Generator, backward: str = "gumbel"
) -> dict[str, torch.Tensor]:
    """One Gumbel-softmax sample per decision: {name: (n_options,) weights}. Differentiable in α
    (straight-through when `hard`, through `backward`'s Jacobian: see `gumbel_softmax`)."""
    matrix, names, sizes = _pack(alpha)
    return _unpack(gumbel_softmax(matrix, tau, hard, generator, backward), names, sizes)


def architecture_probabilities(alpha: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """softmax(α) per decision: the probability of each option."""
    return {name: torch.softmax(a, dim=-1) for name, a in alpha.items()}


def mean_entropy(alpha: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean over decisions of the entropy of softmax(α), in nats (log K for a uniform decision)."""
    matrix, _, _ = _pack(alpha)
    logp = torch.log_softmax(matrix, dim=-1)
    terms = torch.where(torch.isfinite(logp), -logp.exp() * logp, torch.zeros_like(logp))
    return terms.sum(-1).mean()


def argmax_choices(alpha: dict[str, torch.Tensor], options: dict[str, tuple[str, ...]]) -> dict[str, str]:
    """{decision: the option with the largest logit}."""
    return {name: options[name][int(torch.argmax(a))] for name, a in alpha.items()}


def temperature(iteration: int, total: int, tau_max: float, tau_min: float, schedule: str = "linear") -> float:
    """τ at `iteration` (0-based) of `total`: tau_max at 0, tau_min at total - 1; linear (GDAS)
    or exponential (geometric) in between."""
    frac = iteration / (total - 1) if total > 1 else 1.0
    if schedule == "linear":
        return tau_max - (tau_max - tau_min) * frac
    if schedule == "exponential":
        return tau_max * (tau_min / tau_max) ** frac
    raise ValueError(f"tau_schedule: {schedule!r}; allowed: linear, exponential")
