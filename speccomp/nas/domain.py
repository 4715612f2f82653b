"""What the architecture search assumes about a domain, in one place. A `SearchDomain` says what
the supernet reads, what it outputs and how it is scored:

- `spectra`: rows are (L,) spectra, positive in expectation (so `log` makes sense); the supernet
  maps (B, L) -> (B, C) abundances; the loss is the MSE over samples and components; the `input`
  decision chooses among the registry's input transforms, with per-bin statistics fitted on the
  training spectra exactly as `speccomp.core.models.InputTransform` does. Derived model: `seq`.
- `matrices`: rows are matrices (8 + C, D) of encoded panels; the supernet scores each candidate
  after the eight context panels, (B·C, 9·D) -> (B·C, 1) (the view of
  `speccomp.matrices.models.context_candidate_pairs`), read back as (B, C) scores; the loss is the
  cross-entropy over the candidates. Panels are encoded already, so the `input` decision may only
  hold `none` (the matrices configs refuse other transforms). Derived model: `raven_seq`.

    dom = domain_of(split)                   # or search_domain("matrices")
    x, y = dom.tensors(split)                # rows and targets
    z = dom.prepare(net, x)                  # precomputed once per split (input transforms)
    pred = dom.forward(net, dom.rows(z, idx), weights)   # (B, C) predictions / scores
    loss = dom.loss(pred, y[idx])
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from speccomp.core.config import ConfigError
from speccomp.core.models import LOG_FLOOR
from speccomp.matrices.generator import PANEL_DIM
from speccomp.matrices.models import N_CONTEXT, context_candidate_pairs, scores_from


# ------------------------------------------------------------------------------------------------
# the candidate input transforms (spectra)
# ------------------------------------------------------------------------------------------------
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


# ------------------------------------------------------------------------------------------------
# domains
# ------------------------------------------------------------------------------------------------
class SearchDomain:
    """The spectra domain; `MatricesSearch` overrides what differs."""

    name = "spectra"
    model_type = "seq"
    """The registry model a derived architecture is trained as."""
    transforms: tuple[str, ...] | None = None
    """Input transforms the domain allows in a space (None: every one)."""
    selection_metric = "val/mse"
    """The in-distribution validation error (lower is better) on which the derived architecture
    is ranked among random draws and random search picks its best draw."""
    test_metric = "test/mse"
    """The same error on the test split (the novel combination)."""

    def reading_columns(self, cfg: Any) -> list[str]:
        """The per-seed measures a comparison reports: the validation MSE, then per tracked label
        the test MSE, in-distribution skill, combination skill, transfer and oracle efficiency."""
        kinds = ("test/mse", "skill/val", "skill/test", "transfer")
        return ["val/mse", *[f"{k}/{label}" for label in cfg.tracked_labels for k in kinds]]

    def floor_columns(self, cfg: Any) -> list[str]:
        """The per-seed measures against the physical floor (oracle MSE ÷ test MSE per label)."""
        return [f"oracle/efficiency/{label}" for label in cfg.tracked_labels]

    def not_learned_note(self, cfg: Any) -> str:
        return (f"not learned: runs whose in-distribution skill is below analysis.learned_skill "
                f"({cfg.analysis.learned_skill:g}); transfer is left out for them")

    def not_learned(self, rows: Any, cfg: Any) -> dict[str, int]:
        """{label: seeds (rows of a per-seed frame) whose in-distribution skill is below
        `analysis.learned_skill`}: for those, no transfer value exists and the gap says nothing."""
        out = {}
        for label in cfg.tracked_labels:
            column = f"skill/val/{label}"
            if column in rows:
                out[label] = int((rows[column].astype(float) < cfg.analysis.learned_skill).sum())
        return out

    def tensors(self, split: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """(rows, targets) of a split object (`.inputs` / `.targets`) or of an (x, y) pair."""
        if isinstance(split, tuple):
            return split[0], split[1]
        return split.inputs, split.targets

    def n_features(self, x: torch.Tensor) -> int:
        """Length of the vector the supernet reads per row (its `n_bins`)."""
        return x.shape[1]

    def n_outputs(self, y: torch.Tensor) -> int:
        return y.shape[1]

    def features_of(self, cfg: Any) -> int:
        """`n_features` from a validated config, before any data exists."""
        return cfg.physics.n_bins

    def supernet(self, space: Any, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator) -> nn.Module:
        """A supernet for these rows and targets, its input statistics fitted on `x`."""
        from speccomp.nas.supernet import Supernet

        net = Supernet(space, self.n_features(x), self.n_outputs(y), generator)
        self.fit_inputs(net, x)
        return net

    def fit_inputs(self, net: Any, x: torch.Tensor) -> None:
        net.fit_inputs(x)

    def prepare(self, net: Any, x: torch.Tensor) -> torch.Tensor:
        """The rows of a split as the search indexes them: (K, N, L), every input transform
        computed once."""
        return net.inputs.candidates(x)

    def rows(self, z: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return z[:, idx]

    def forward(self, net: Any, rows: torch.Tensor, weights: dict[str, torch.Tensor]) -> torch.Tensor:
        """Predictions of the architecture `weights` for a batch of rows: (B, C) abundances."""
        return net(rows, weights)

    def loss(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean squared error over samples and components (the training loop's loss)."""
        return ((prediction - target) ** 2).mean()

    def check(self, space: Any, n_features: int) -> None:
        """A space this domain cannot search is a ConfigError (one line naming the key)."""
        if self.transforms is not None:
            extra = [t for t in space.input_transforms if t not in self.transforms]
            if extra:
                raise ConfigError(
                    f"{space.path}: input_transforms: {', '.join(extra)} cannot be used on the {self.name} domain; "
                    f"allowed: {', '.join(self.transforms)}")
        space.check_bins(n_features)


class MatricesSearch(SearchDomain):
    """Candidate scoring: each candidate after the eight context panels (see module doc)."""

    name = "matrices"
    model_type = "raven_seq"
    transforms = ("none",)
    selection_metric = "val/error"
    test_metric = "test/error"

    def reading_columns(self, cfg: Any) -> list[str]:
        """In-distribution and held-out accuracy, their difference, and chance beside them."""
        return ["val/acc", "test/acc", "gap/acc", "chance/acc"]

    def floor_columns(self, cfg: Any) -> list[str]:
        """Chance is the floor here, and it is among the readings already."""
        return []

    def not_learned_note(self, cfg: Any) -> str:
        return (f"chance accuracy {cfg.chance:.3f} ({cfg.matrices.n_candidates} candidates); not learned: runs at or "
                "below chance in distribution")

    def not_learned(self, rows: Any, cfg: Any) -> dict[str, int]:
        """{"val/acc": seeds at or below chance in distribution}: nothing learned to compose."""
        if "val/acc" not in rows:
            return {}
        return {"val/acc": int((rows["val/acc"].astype(float) <= cfg.chance).sum())}

    def n_features(self, x: torch.Tensor) -> int:
        return (N_CONTEXT + 1) * x.shape[2]

    def n_outputs(self, y: torch.Tensor) -> int:
        return 1

    def features_of(self, cfg: Any) -> int:
        return (N_CONTEXT + 1) * PANEL_DIM

    def fit_inputs(self, net: Any, x: torch.Tensor) -> None:
        """Nothing to fit: panels are encoded already and `none` is the only transform."""

    def prepare(self, net: Any, x: torch.Tensor) -> torch.Tensor:
        return x

    def rows(self, z: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return z[idx]

    def forward(self, net: Any, rows: torch.Tensor, weights: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, 8 + C, D) matrices -> (B, C) candidate scores."""
        pairs = context_candidate_pairs(rows.unsqueeze(0))[0]  # (B * C, 9 D)
        return scores_from(net(pairs, weights).unsqueeze(0), rows.shape[1] - N_CONTEXT)[0]

    def loss(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of the answer over the candidates' scores (the matrices training loss)."""
        return F.cross_entropy(prediction, target)


SPECTRA, MATRICES = SearchDomain(), MatricesSearch()
DOMAINS = {d.name: d for d in (SPECTRA, MATRICES)}


def search_domain(name: str) -> SearchDomain:
    return DOMAINS[name]


def domain_of(split: Any) -> SearchDomain:
    """The domain of a split object (or an (x, y) pair: 3-D rows are matrices)."""
    x = split[0] if isinstance(split, tuple) else split.inputs
    return MATRICES if x.dim() == 3 else SPECTRA


def domain_for_config(cfg: Any) -> SearchDomain:
    """The domain of a validated experiment config."""
    return DOMAINS[getattr(type(cfg), "DOMAIN", "spectra")]
