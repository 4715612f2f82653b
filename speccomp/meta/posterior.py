"""The variational posterior over architecture logits: a mean-field Gaussian q(α) = N(μ, diag σ²),
reparameterised (α = μ + σ·ε), against the prior p(α) = N(0, s²·I).

α is one flat vector holding every position's logits; `sizes` says how many choices each
position has, so `split(α)` gives the per-position logits the supernet takes.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class GaussianPosterior(nn.Module):
    """q(α) over a flat vector of D logits; σ = softplus(ρ) keeps the scale positive."""

    def __init__(self, sizes: list[int], prior_scale: float = 1.0, init_std: float = 0.1,
                 init_mean: torch.Tensor | None = None):
        super().__init__()
        if prior_scale <= 0 or init_std <= 0:
            raise ValueError("prior_scale and init_std must be > 0")
        self.sizes = [int(s) for s in sizes]
        dim = sum(self.sizes)
        self.prior_scale = float(prior_scale)
        self.mean = nn.Parameter(torch.zeros(dim) if init_mean is None else init_mean.detach().clone().float())
        self.rho = nn.Parameter(torch.full((dim,), math.log(math.expm1(init_std))))

    @property
    def std(self) -> torch.Tensor:
        """(D,) posterior standard deviations σ."""
        return F.softplus(self.rho)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """One reparameterised draw α = μ + σ·ε, (D,), differentiable in μ and ρ."""
        eps = torch.randn(self.mean.shape, generator=generator)
        return self.mean + self.std * eps

    def kl(self) -> torch.Tensor:
        """KL(q‖p) in closed form (nats), summed over the D logits:
        Σ log(s/σ) + (σ² + μ²)/(2 s²) − 1/2."""
        s2 = self.prior_scale**2
        var = self.std**2
        return (math.log(self.prior_scale) - torch.log(self.std) + (var + self.mean**2) / (2 * s2) - 0.5).sum()

    def split(self, alpha: torch.Tensor) -> list[torch.Tensor]:
        """Flat (D,) logits -> one (K_p,) tensor per position."""
        return list(torch.split(alpha, self.sizes))

    def probabilities(self) -> list[torch.Tensor]:
        """softmax of the posterior mean per position (the logged `meta/prob/...`)."""
        return [torch.softmax(m, dim=-1) for m in self.split(self.mean.detach())]

    def map_choice(self) -> list[int]:
        """The most probable choice per position under the posterior mean (MAP architecture)."""
        return [int(m.argmax()) for m in self.split(self.mean.detach())]

    def state(self) -> dict[str, torch.Tensor | list[int] | float]:
        """Plain tensors for `torch.save` (loadable with `weights_only=True`)."""
        return {"mean": self.mean.detach().clone(), "std": self.std.detach().clone(),
                "rho": self.rho.detach().clone(), "sizes": torch.tensor(self.sizes),
                "prior_scale": torch.tensor(self.prior_scale)}

    @classmethod
    def from_state(cls, state: dict) -> GaussianPosterior:
        post = cls([int(s) for s in state["sizes"]], float(state["prior_scale"]))
        with torch.no_grad():
            post.mean.copy_(state["mean"])
            post.rho.copy_(state["rho"])
        return post


def prior_sample(sizes: list[int], prior_scale: float, generator: torch.Generator) -> torch.Tensor:
    """α ~ p(α) = N(0, s²), (D,)."""
    return torch.randn(sum(sizes), generator=generator) * prior_scale
