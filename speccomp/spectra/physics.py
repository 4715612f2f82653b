"""The tutorial's forward model (`physics.md`), vectorised over whole batches.

    B(λ, T)   = 2hc² / (λ⁵ (exp(hc / (λ k T)) − 1)),  divided by its maximum over the grid
    g_i(λ)    = exp(−½ ((λ − c_i) / w_i)²)
    clean(λ)  = B(λ, T) · Π_i (1 + s_i a_i g_i(λ))
    x(λ)      = clean(λ) · (1 + σ ε(λ)) + σ_add ε'(λ),      ε, ε' ~ N(0, 1)

`ForwardModel` computes in float64 and is differentiable in T and a (the oracle fits it and the
tests check it by hand); the data generator uses `fast_clean`, the same equations in float32 with
fewer passes over the (N, L) arrays, a block of rows at a time (`noisy_spectra`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from speccomp.core.config import PhysicsConfig

PLANCK_H = 6.626e-34  # J s  (the tutorial's constants, so that spectra match its code)
SPEED_OF_LIGHT = 3e8  # m / s
BOLTZMANN_K = 1.381e-23  # J / K


@dataclass(frozen=True)
class ForwardModel:
    """The fixed parts of the physics: the grid and the lines, as float64 tensors."""

    wavelength_nm: torch.Tensor  # (L,)
    centers_nm: torch.Tensor  # (C,)
    widths_nm: torch.Tensor  # (C,)
    strengths: torch.Tensor  # (C,)
    profiles: torch.Tensor  # (C, L): g_i(λ)

    @classmethod
    def from_config(cls, physics: PhysicsConfig) -> ForwardModel:
        grid = torch.linspace(physics.wavelength_min, physics.wavelength_max, physics.n_bins, dtype=torch.float64)
        centers = torch.tensor([ln.center for ln in physics.lines], dtype=torch.float64)
        widths = torch.tensor([ln.width for ln in physics.lines], dtype=torch.float64)
        strengths = torch.tensor([ln.strength for ln in physics.lines], dtype=torch.float64)
        profiles = torch.exp(-0.5 * ((grid[None, :] - centers[:, None]) / widths[:, None]) ** 2)
        return cls(grid, centers, widths, strengths, profiles)

    @property
    def n_bins(self) -> int:
        return self.wavelength_nm.shape[0]

    @property
    def n_components(self) -> int:
        return self.centers_nm.shape[0]

    def log_continuum(self, temperature_k: torch.Tensor) -> torch.Tensor:
        """log of the peak-normalised blackbody, shape (N, L) for temperatures (N,) in kelvin."""
        lam_m = self.wavelength_nm * 1e-9
        x = (PLANCK_H * SPEED_OF_LIGHT) / (lam_m[None, :] * BOLTZMANN_K * temperature_k[:, None])
        # log B = log(2hc²) − 5 log λ − log(expm1(x)); the constant cancels in the normalisation.
        log_b = -5.0 * torch.log(lam_m)[None, :] - _log_expm1(x)
        return log_b - log_b.max(dim=1, keepdim=True).values

    def continuum(self, temperature_k: torch.Tensor) -> torch.Tensor:
        """Peak-normalised blackbody B(λ, T), shape (N, L); every row peaks at exactly 1 on the grid."""
        return torch.exp(self.log_continuum(temperature_k))

    def log_modulation(self, abundances: torch.Tensor) -> torch.Tensor:
        """Σ_i log(1 + s_i a_i g_i(λ)), shape (N, L) for abundances (N, C)."""
        out = torch.zeros(abundances.shape[0], self.n_bins, dtype=torch.float64)
        scaled = abundances.to(torch.float64) * self.strengths  # (N, C)
        for i in self._active(abundances):
            out = out + torch.log1p(scaled[:, i : i + 1] * self.profiles[i])
        return out

    def modulation(self, abundances: torch.Tensor) -> torch.Tensor:
        """Π_i (1 + s_i a_i g_i(λ)), shape (N, L)."""
        out = torch.ones(abundances.shape[0], self.n_bins, dtype=torch.float64)
        scaled = abundances.to(torch.float64) * self.strengths
        for i in self._active(abundances):
            out = out * (1.0 + scaled[:, i : i + 1] * self.profiles[i])
        return out

    def clean(self, temperature_k: torch.Tensor, abundances: torch.Tensor) -> torch.Tensor:
        """Noise-free spectra, shape (N, L)."""
        return self.continuum(temperature_k.to(torch.float64)) * self.modulation(abundances)

    def log_clean(self, temperature_k: torch.Tensor, abundances: torch.Tensor) -> torch.Tensor:
        """log of the noise-free spectra, shape (N, L); components add here."""
        return self.log_continuum(temperature_k.to(torch.float64)) + self.log_modulation(abundances)

    def _active(self, abundances: torch.Tensor) -> list[int]:
        # Lines with no abundance anywhere in the batch contribute exactly 1; skip them.
        if abundances.requires_grad:
            return list(range(self.n_components))
        return torch.nonzero((abundances != 0).any(dim=0)).flatten().tolist()


def _log_expm1(x: torch.Tensor) -> torch.Tensor:
    """log(exp(x) − 1) = x + log(1 − exp(−x)), without overflow for any x > 0."""
    return x + torch.log(-torch.expm1(-x))


# Past this x = hc/(λkT), expm1(x) overflows float32 (e^88.7); the direct continuum then takes logs.
_DIRECT_X_MAX = 80.0


def _hc_over_lambda_kt(lam: torch.Tensor, temperature_k: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """x = hc/(λkT), shape (N, L), for the grid `lam` (nm, in `dtype`) and temperatures (N,) in K."""
    return (PLANCK_H * SPEED_OF_LIGHT / BOLTZMANN_K * 1e9) / (lam[None, :] * temperature_k.to(dtype)[:, None])


def fast_clean(forward: ForwardModel, temperature_k: torch.Tensor, abundances: torch.Tensor,
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """`forward.clean` in `dtype` with few passes over the (N, L) array: the data generator's path.

    B = (λ/λ_max)⁻⁵ / expm1(x), divided by its row maximum (the same continuum as
    `continuum`, without the round trip through logarithms), then the active lines in place.
    Agrees with the float64 `clean` to float32 rounding (tested)."""
    lam = forward.wavelength_nm.to(dtype)
    x = _hc_over_lambda_kt(lam, temperature_k, dtype)
    if float(x.max()) > _DIRECT_X_MAX:  # very cold: only the log form stays finite
        out = forward.clean(temperature_k.to(torch.float64), abundances.to(torch.float64))
        return out.to(dtype)
    out = torch.expm1_(x).reciprocal_().mul_((lam / lam.max()).pow_(-5)[None, :])
    out.div_(out.amax(dim=1, keepdim=True))
    scaled = abundances.to(dtype) * forward.strengths.to(dtype)
    profiles = forward.profiles.to(dtype)
    for i in torch.nonzero((abundances != 0).any(dim=0)).flatten().tolist():
        out.mul_(torch.addcmul(torch.ones((), dtype=dtype), scaled[:, i : i + 1], profiles[i]))
    return out


# Rows per block in `noisy_spectra`: a multiple of 64, so that every block starts on the same
# SIMD lane as in one pass over the whole array (the same float32 results, tested); 256 rows of
# 1,024 bins are 1 MB a temporary.
BLOCK_ROWS = 256


def noisy_spectra(
    forward: ForwardModel,
    temperature_k: torch.Tensor,
    abundances: torch.Tensor,
    sigma: torch.Tensor,
    eps: torch.Tensor,
    additive_sigma: float = 0.0,
    eps_additive: torch.Tensor | None = None,
    block_rows: int = BLOCK_ROWS,
) -> torch.Tensor:
    """`add_noise_(fast_clean(...), ...)` in float32, computed in `eps` (returned) block by block
    of rows: the clean spectra of one block at a time instead of the whole (N, L) array and its
    temporaries, so a 4,096-spectrum split peaks at its own size plus a few MB instead of three
    times its size. Element-wise, so the result is the one-pass result. Where any spectrum is too
    cold for the direct continuum (`_DIRECT_X_MAX`), the whole split takes `fast_clean`'s
    one-pass float64 route, as before. `block_rows` must be a positive multiple of 64."""
    if block_rows <= 0 or block_rows % 64:
        raise ValueError(f"block_rows: {block_rows}; must be a positive multiple of 64")
    dtype = eps.dtype
    # x = hc/(λkT) is largest at the coldest spectrum (rounding is monotone), so this is the
    # one-pass `x.max()` of `fast_clean`, from one row.
    if not len(eps) or float(_hc_over_lambda_kt(forward.wavelength_nm.to(dtype), temperature_k.min().reshape(1),
                                                dtype).max()) > _DIRECT_X_MAX:
        return add_noise_(fast_clean(forward, temperature_k, abundances, dtype), sigma, eps, additive_sigma, eps_additive)
    for start in range(0, len(eps), block_rows):
        rows = slice(start, start + block_rows)
        clean = fast_clean(forward, temperature_k[rows], abundances[rows], dtype)
        add_noise_(clean, sigma[rows], eps[rows], additive_sigma, None if eps_additive is None else eps_additive[rows])
    return eps


def add_noise_(
    clean: torch.Tensor,
    sigma: torch.Tensor,
    eps: torch.Tensor,
    additive_sigma: float = 0.0,
    eps_additive: torch.Tensor | None = None,
) -> torch.Tensor:
    """x = clean · (1 + σ ε) + σ_add ε', computed in place in `eps` (which is returned);
    `sigma` has shape (N,), `clean`, `eps` and `eps_additive` (N, L)."""
    noisy = eps.mul_(sigma[:, None].to(eps.dtype)).add_(1.0).mul_(clean)
    if additive_sigma > 0:
        assert eps_additive is not None
        noisy.add_(eps_additive, alpha=additive_sigma)
    return noisy
