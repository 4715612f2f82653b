"""What the core knows of a split: the interface every domain's split implements, and its digest.

A split holds one seeded draw of a domain's data: `inputs` (N, ...) for the model, `targets`
(N, ...) for the loss, its `name` (`train`, `val`, `test`), the `data_seed` it was drawn with and a
`digest` of its tensors (MLflow records it as the dataset's digest). The spectra's `SplitData`
(`speccomp.spectra.data`) and the matrices' `MatrixSplit` (`speccomp.matrices.data`) are the two
implementations; the training loop and the experiment use nothing else.
"""

from __future__ import annotations

import hashlib
from typing import Protocol

import torch


class Split(Protocol):
    """One split of a domain's data, as the training loop and the experiment read it."""

    name: str
    data_seed: int

    @property
    def inputs(self) -> torch.Tensor:
        """(N, ...) what a model reads."""

    @property
    def targets(self) -> torch.Tensor:
        """(N, ...) what the loss compares the model's outputs with."""

    @property
    def digest(self) -> str:
        """A short hash of the split's tensors (`tensor_digest`)."""

    def __len__(self) -> int: ...


class ComponentSplit(Split, Protocol):
    """A split whose targets are labelled components, each present or absent in a sample (the
    spectra's abundances): what the per-component metrics (`speccomp.core.metrics`) read."""

    abundances: torch.Tensor  # (N, C) the targets
    present: torch.Tensor  # (N, C) bool: the component was in the sample
    labels: list[str]

    def label_index(self, label: str) -> int: ...


def tensor_digest(*tensors: torch.Tensor) -> str:
    """sha256 of the tensors' bytes, in order (16 hex digits)."""
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()[:16]
