"""Every assumption the architecture search makes about the spectra domain, in one place, so that
another domain (the matrices, issue #11) can plug in its own version:

- inputs are (B, L) float32 spectra, positive in expectation (so `log` makes sense), targets (B, C)
  abundances, and a split is a `SplitData` (`.spectra`, `.abundances`);
- the loss is the mean squared error over samples and components;
- the `input` decision chooses among the model registry's input transforms, with per-bin
  statistics fitted on the training spectra exactly as `speccomp.core.models.InputTransform` does.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from speccomp.core.models import LOG_FLOOR


def task_tensors(split: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs (N, L), targets (N, C)) of a `SplitData` or of an (x, y) pair."""
    if isinstance(split, tuple):
        return split[0], split[1]
    return split.spectra, split.abundances


def loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error over samples and components (the training loop's loss)."""
    return ((prediction - target) ** 2).mean()


class InputStage(nn.Module):
    """The candidate input transforms of the `input` decision: (B, L) -> weighted sum of the
    active candidates, (B, L). Statistics are buffers of shape (1, L)."""

    def __init__(self, transforms: tuple[str, ...], n_bins: int):
        super().__init__()
        self.transforms = transforms
        for name in ("raw_mean", "log_mean"):
            self.register_buffer(name, torch.zeros(1, n_bins))
        for name in ("raw_std", "log_std"):
            self.register_buffer(name, torch.ones(1, n_bins))

    @torch.no_grad()
    def fit(self, train_inputs: torch.Tensor) -> None:
        """Per-bin mean and std of raw and log spectra (float64, as `InputTransform.fit`)."""
        raw = train_inputs.to(torch.float64)
        for prefix, z in (("raw", raw), ("log", torch.log(raw.clamp_min(LOG_FLOOR)))):
            getattr(self, f"{prefix}_mean").copy_(z.mean(0, keepdim=True).to(torch.float32))
            getattr(self, f"{prefix}_std").copy_(z.std(0, keepdim=True).clamp_min(1e-6).to(torch.float32))

    def candidate(self, x: torch.Tensor, name: str) -> torch.Tensor:
        z = torch.log(x.clamp_min(LOG_FLOOR)) if name.startswith("log") else x
        if name == "standardize":
            z = (z - self.raw_mean) / self.raw_std
        elif name == "log+standardize":
            z = (z - self.log_mean) / self.log_std
        return z

    @torch.no_grad()
    def candidates(self, x: torch.Tensor) -> torch.Tensor:
        """(N, L) inputs -> (K, N, L): every candidate transform, precomputable once per split."""
        return torch.stack([self.candidate(x, name) for name in self.transforms])

    def forward(self, x: torch.Tensor, weights: torch.Tensor, active: list[int]) -> torch.Tensor:
        """(B, L) inputs, or (K, B, L) precomputed `candidates`, -> (B, L) weighted transform."""
        out = None
        for k in active:
            z = x[k] if x.dim() == 3 else self.candidate(x, self.transforms[k])
            term = z if (not weights.requires_grad and weights[k] == 1) else weights[k] * z
            out = term if out is None else out + term
        return out

    def statistics_for(self, name: str) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(mean, std) an `InputTransform` of kind `name` would hold, or None."""
        if name == "standardize":
            return self.raw_mean, self.raw_std
        if name == "log+standardize":
            return self.log_mean, self.log_std
        return None
