"""The spectra's splits: draw abundances, temperatures and noise per split, then spectra, all in batches.

Every split has its own generators, derived from the data seed and the split's name
(`seeding.numpy_generator(data_seed, "split", name)` for the per-spectrum draws, torch generators
for the (N, L) noise), so adding or resizing one split never changes another. Within a split the
draws come in a fixed order (component set, abundances, temperature, noise level, combined-sample
selection), each drawn whole, and each noise term has its own stream, so switching on a later
option leaves the earlier draws as they were. Spectra are computed in float32, the dtype they are
stored and trained in.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from speccomp.core.config import (
    CombinationsDistribution,
    ExperimentConfig,
    PhysicsConfig,
    SplitConfig,
)
from speccomp.core.schema import call_sampler
from speccomp.core.seeding import numpy_generator, torch_generator
from speccomp.core.splits import tensor_digest
from speccomp.spectra.physics import ForwardModel, noisy_spectra


@dataclass
class SplitData:
    """One split: float32 spectra and abundance targets plus what generated them."""

    name: str
    spectra: torch.Tensor  # (N, L) float32
    abundances: torch.Tensor  # (N, C) float32, the regression target
    present: torch.Tensor  # (N, C) bool: component was in the sample's drawn set
    temperature_k: torch.Tensor  # (N,) float64
    noise_sigma: torch.Tensor  # (N,) float64
    labels: list[str]
    data_seed: int
    _digest: str = field(default="", repr=False)

    @property
    def digest(self) -> str:
        """sha256 of spectra and abundances (16 hex digits), computed on first use."""
        if not self._digest:
            self._digest = tensor_digest(self.spectra, self.abundances)
        return self._digest

    def __len__(self) -> int:
        return self.spectra.shape[0]

    @property
    def inputs(self) -> torch.Tensor:
        """What a model reads (the task interface's name for the spectra)."""
        return self.spectra

    @property
    def targets(self) -> torch.Tensor:
        """What a model predicts (the task interface's name for the abundances)."""
        return self.abundances

    def label_index(self, label: str) -> int:
        return self.labels.index(label)


def _uniform(rng: np.random.Generator, lo: float, hi: float, n: int, log: bool = False) -> np.ndarray:
    if log:
        return np.exp(rng.uniform(np.log(lo), np.log(hi), size=n))
    return rng.uniform(lo, hi, size=n)


def generate_split(
    physics: PhysicsConfig,
    split: SplitConfig,
    name: str,
    data_seed: int,
    forward: ForwardModel | None = None,
) -> SplitData:
    """Draw one split of `split.n_samples` spectra from its own generator."""
    forward = forward or ForwardModel.from_config(physics)
    rng = numpy_generator(data_seed, "split", name)
    labels = physics.labels
    n, n_comp = split.n_samples, len(labels)
    sampling = physics.sampling
    a_lo, a_hi = split.abundance_range or sampling.abundance.range
    t_lo, t_hi = split.temperature_range or sampling.temperature.range
    s_lo, s_hi = split.noise_range or sampling.noise.range

    dist = split.distribution
    if isinstance(dist, CombinationsDistribution):
        weights = np.array([c.weight for c in dist.combinations], dtype=np.float64)
        members = np.zeros((len(weights), n_comp), dtype=bool)
        for k, combo in enumerate(dist.combinations):
            members[k, [labels.index(c) for c in combo.components]] = True
        choice = rng.choice(len(weights), size=n, p=weights / weights.sum())
        present = members[choice]
        draws = rng.uniform(a_lo, a_hi, size=(n, n_comp))
        abundances = np.where(present, draws, 0.0)
    else:
        abundances = call_sampler(dist.sampler, rng, n, labels, f"data.splits.{name}.distribution.sampler")
        present = abundances != 0

    temperature = _uniform(rng, t_lo, t_hi, n, log=sampling.temperature.distribution == "log_uniform")
    sigma = _uniform(rng, s_lo, s_hi, n, log=sampling.noise.distribution == "log_uniform")

    if split.combined_fraction > 0:
        k = int(round(split.combined_fraction * n))
        chosen = rng.permutation(n)[:k]
        combined = np.zeros(n_comp, dtype=bool)
        combined[[labels.index(c) for c in split.combined_components]] = True
        draws = rng.uniform(a_lo, a_hi, size=(k, n_comp))
        present[chosen] = combined
        abundances[chosen] = np.where(combined, draws, 0.0)

    # The (N, L) noise comes from torch generators of its own (float32, fast), one per term, so
    # switching the additive term on changes nothing else.
    shape = (n, forward.n_bins)
    eps = torch.randn(shape, generator=torch_generator(data_seed, "split", name, "noise"))
    additive = sampling.noise.additive
    eps_add = torch.randn(shape, generator=torch_generator(data_seed, "split", name, "additive")) if additive > 0 else None

    a_t = torch.from_numpy(abundances)
    t_t = torch.from_numpy(temperature)
    s_t = torch.from_numpy(sigma)
    spectra = noisy_spectra(forward, t_t, a_t, s_t, eps, additive, eps_add)  # in `eps`, block by block
    return SplitData(
        name=name,
        spectra=spectra,
        abundances=a_t.to(torch.float32),
        present=torch.from_numpy(present.copy()),
        temperature_k=t_t,
        noise_sigma=s_t,
        labels=list(labels),
        data_seed=int(data_seed),
    )


def generate_datasets(cfg: ExperimentConfig, data_seed: int) -> dict[str, SplitData]:
    """All splits of an experiment (the validation split included) for one data seed."""
    forward = ForwardModel.from_config(cfg.physics)
    return {
        name: generate_split(cfg.physics, split, name, data_seed, forward)
        for name, split in cfg.data.resolved_splits().items()
    }


# --- on disk: the tutorial's file names (<split>_spectra.pt, <split>_abundances.pt) plus the rest --
def save_datasets(datasets: dict[str, SplitData], folder: str | Path) -> Path:
    """Write every split to `folder` (tensors only, loadable with weights_only=True)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    index = {}
    for name, d in datasets.items():
        torch.save(d.spectra, folder / f"{name}_spectra.pt")
        torch.save(d.abundances, folder / f"{name}_abundances.pt")
        torch.save(
            {"present": d.present, "temperature_k": d.temperature_k, "noise_sigma": d.noise_sigma},
            folder / f"{name}_meta.pt",
        )
        index[name] = {"n_samples": len(d), "digest": d.digest, "data_seed": d.data_seed}
    (folder / "datasets.json").write_text(json.dumps({"labels": next(iter(datasets.values())).labels, "splits": index}, indent=2))
    return folder


def load_datasets(folder: str | Path) -> dict[str, SplitData]:
    """Read what `save_datasets` wrote."""
    folder = Path(folder)
    index_path = folder / "datasets.json"
    if not index_path.is_file():
        raise FileNotFoundError(f"{folder}: no datasets.json (write it with `python -m speccomp generate`)")
    index = json.loads(index_path.read_text())
    out = {}
    for name, meta in index["splits"].items():
        extra = torch.load(folder / f"{name}_meta.pt", weights_only=True)
        out[name] = SplitData(
            name=name,
            spectra=torch.load(folder / f"{name}_spectra.pt", weights_only=True),
            abundances=torch.load(folder / f"{name}_abundances.pt", weights_only=True),
            present=extra["present"],
            temperature_k=extra["temperature_k"],
            noise_sigma=extra["noise_sigma"],
            labels=index["labels"],
            data_seed=meta["data_seed"],
        )
    return out
