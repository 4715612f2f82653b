"""Matrices splits: each drawn from its own generator (`numpy_generator(data_seed, "matrices",
name)`), so adding or resizing one split never changes another."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from speccomp.core.seeding import numpy_generator
from speccomp.core.splits import tensor_digest
from speccomp.matrices.config import MatricesExperimentConfig
from speccomp.matrices.generator import ATTRIBUTES, RULES, MatrixBatch, encode, generate


@dataclass
class MatrixSplit:
    """One split of matrices: encoded panels, the answer index and what generated them."""

    name: str
    panels: torch.Tensor  # (N, 8 + C, D) float32 encoded panels: context then candidates
    target: torch.Tensor  # (N,) int64 index of the answer among the C candidates
    batch: MatrixBatch  # the symbolic matrices (values, positions, rules, variants, answer)
    data_seed: int
    heldout_pairs: list[tuple[int, int]] = field(default_factory=list)
    """(rule, attribute) indices held out of training in this experiment."""
    _digest: str = field(default="", repr=False)

    @property
    def digest(self) -> str:
        if not self._digest:
            self._digest = tensor_digest(self.panels, self.target)
        return self._digest

    def __len__(self) -> int:
        return self.panels.shape[0]

    @property
    def inputs(self) -> torch.Tensor:
        """(N, 8 + C, D) what a model reads."""
        return self.panels

    @property
    def targets(self) -> torch.Tensor:
        """(N,) the answer's index."""
        return self.target

    def pair_mask(self, rule: str, attribute: str) -> np.ndarray:
        """(N,) bool: matrices whose `attribute` follows `rule`."""
        return self.batch.rules[:, ATTRIBUTES.index(attribute)] == RULES.index(rule)

    def heldout_mask(self) -> np.ndarray:
        """(N,) bool: matrices holding at least one held-out pair."""
        hit = np.zeros(len(self), bool)
        for rule, attr in self.heldout_pairs:
            hit |= self.batch.rules[:, attr] == rule
        return hit


def generate_split(cfg: MatricesExperimentConfig, name: str, data_seed: int) -> MatrixSplit:
    spec = cfg.split_specs()[name]
    n = cfg.data.resolved_splits()[name].n_samples
    batch = generate(numpy_generator(data_seed, "matrices", name), spec, n)
    return MatrixSplit(
        name=name,
        panels=torch.from_numpy(encode(batch.values, batch.positions)),
        target=torch.from_numpy(batch.target.astype(np.int64)),
        batch=batch,
        data_seed=int(data_seed),
        heldout_pairs=[(RULES.index(p.rule), ATTRIBUTES.index(p.attribute)) for p in cfg.data.heldout_pairs],
    )


def generate_datasets(cfg: MatricesExperimentConfig, data_seed: int) -> dict[str, MatrixSplit]:
    """Every split (the validation split included) for one data seed."""
    return {name: generate_split(cfg, name, data_seed) for name in cfg.data.resolved_splits()}


def save_datasets(datasets: dict[str, MatrixSplit], folder) -> Path:
    """Write every split to `folder`: `<split>_panels.pt` (N, 8 + C, D) float32, `<split>_target.pt`
    (N,) int64, `<split>_symbols.pt` (values, positions, rules, variants; loadable with
    weights_only=True) and `datasets.json`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    index = {}
    for name, d in datasets.items():
        torch.save(d.panels, folder / f"{name}_panels.pt")
        torch.save(d.target, folder / f"{name}_target.pt")
        b = d.batch
        torch.save({k: torch.from_numpy(np.ascontiguousarray(getattr(b, k))) for k in ("values", "positions", "rules", "variants")},
                   folder / f"{name}_symbols.pt")
        index[name] = {"n_samples": len(d), "digest": d.digest, "data_seed": d.data_seed}
    (folder / "datasets.json").write_text(json.dumps({"domain": "matrices", "attributes": list(ATTRIBUTES),
                                                      "rules": list(RULES), "splits": index}, indent=2))
    return folder
