"""The candidate input transforms of the `input` decision (spectra-style rows: (B, L) vectors).

    stage = InputStage(("none", "log", "standardize"), n_bins)
    stage.fit(train_inputs)                  # per-bin statistics, as `core.models.InputTransform.fit`
    z = stage.candidates(x)                  # (K, N, L): every transform, once per split
    h = stage(z[:, idx], weights, active)    # (B, L): the weighted sum of the active candidates
"""

from __future__ import annotations

import torch
from torch import nn

from speccomp.core.models import LOG_FLOOR


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
