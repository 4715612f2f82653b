"""What the architecture search asks a domain, and where it finds the domain's answer.

The search never tests which domain it has: it looks the domain object up (`domain_for_config`,
`search_domain`, `domain_of`) and asks it. `SearchDomain` defines the questions, with defaults for
the plainest domain: rows are (N, F) feature vectors, targets (N, C), the supernet maps (B, F) ->
(B, C) and the loss is the MSE over samples and targets; the `input` decision chooses among the
input transforms (`speccomp.nas.inputs.InputStage`), computed once per split. A domain package
subclasses it (usually through `speccomp.meta.domain.MetaDomain`, which adds the meta-learner's
questions), overrides what differs and registers an instance:

    register_search_domain(MyDomain())       # name = the task's name (`speccomp.core.task`)
    dom = domain_for_config(cfg)             # or search_domain("matrices"), domain_of(split)
    x, y = dom.tensors(split)                # rows and targets
    z = dom.prepare(net, x)                  # precomputed once per split (input transforms)
    pred = dom.forward(net, dom.rows(z, idx), weights)   # (B, C) predictions / scores
    loss = dom.loss(pred, y[idx])

The project's domains (`speccomp/spectra/search.py`, `speccomp/matrices/search.py`) are declared in
`speccomp/domains.py` (`declare_domain(..., search=module)`) and imported on the first lookup, so
that nothing here names a domain.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import nn

from speccomp.core import registry
from speccomp.core.config import ConfigError


class SearchDomain:
    """One domain as the search sees it (see module doc); subclasses override what differs."""

    name: ClassVar[str] = ""
    """The domain's name: the name of its task (`speccomp.core.task.Task.name`)."""
    model_type: ClassVar[str] = "seq"
    """The registry model a derived architecture is trained as."""
    transforms: ClassVar[tuple[str, ...] | None] = None
    """Input transforms the domain allows in a space (None: every one)."""
    selection_metric: ClassVar[str] = "val/mse"
    """The in-distribution validation error (lower is better) on which the derived architecture
    is ranked among random draws and random search picks its best draw."""
    test_metric: ClassVar[str] = "test/mse"
    """The same error on the test split (the novel combination)."""
    default_space: ClassVar[str | None] = None
    """The search-space file (relative to the project folder) when none is given."""
    reference_models: ClassVar[dict[str, tuple[str | None, tuple[str, ...]]]] = {}
    """Models trained beside the config's own (`default`) by the `nas` comparison and as baselines of
    the meta-learner: name -> (preset or None, dotted overrides)."""

    # --- reading the results ---------------------------------------------------------------------
    def features_of(self, cfg: Any) -> int:
        """`n_features` from a validated config, before any data exists."""
        raise NotImplementedError(f"{self.name}: features_of")

    def reading_columns(self, cfg: Any) -> list[str]:
        """The per-seed measures a comparison reports (default: the validation and test errors)."""
        return [self.selection_metric, self.test_metric]

    def floor_columns(self, cfg: Any) -> list[str]:
        """The per-seed measures against the domain's floor (default: none)."""
        return []

    def not_learned(self, rows: Any, cfg: Any) -> dict[str, int]:
        """{reading: seeds (rows of a per-seed frame) that learned nothing} (default: none counted)."""
        return {}

    def not_learned_note(self, cfg: Any) -> str:
        """One line saying what `not_learned` counts (the last line of the comparison table)."""
        return "not learned: not judged on this domain"

    # --- rows and the supernet -------------------------------------------------------------------
    def owns_split(self, split: Any) -> bool:
        """Whether a split object (or an (x, y) pair) is of this domain (`domain_of`)."""
        return False

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

    def supernet(self, space: Any, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator) -> nn.Module:
        """A supernet for these rows and targets, its input statistics fitted on `x`."""
        from speccomp.nas.supernet import Supernet

        net = Supernet(space, self.n_features(x), self.n_outputs(y), generator)
        self.fit_inputs(net, x)
        return net

    def fit_inputs(self, net: Any, x: torch.Tensor) -> None:
        net.fit_inputs(x)

    def prepare(self, net: Any, x: torch.Tensor) -> torch.Tensor:
        """The rows of a split as the search indexes them: (K, N, F), every input transform
        computed once."""
        return net.inputs.candidates(x)

    def rows(self, z: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return z[:, idx]

    def forward(self, net: Any, rows: torch.Tensor, weights: dict[str, torch.Tensor]) -> torch.Tensor:
        """Predictions of the architecture `weights` for a batch of rows: (B, C)."""
        return net(rows, weights)

    def loss(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean squared error over samples and targets."""
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


# ------------------------------------------------------------------------------------------------
# the registry
# ------------------------------------------------------------------------------------------------
SEARCH_DOMAINS: dict[str, SearchDomain] = {}
"""Domain name -> its domain object, filled by `register_search_domain`."""


def register_search_domain(domain: SearchDomain) -> SearchDomain:
    SEARCH_DOMAINS[domain.name] = domain
    return domain


def search_domain(name: str) -> SearchDomain:
    """The domain object of `name` (its declared module imported on the first lookup)."""
    return registry.lookup(SEARCH_DOMAINS, registry.SEARCH_MODULES, name, "search domain")


def all_search_domains() -> list[SearchDomain]:
    """Every registered domain object (the declared ones imported)."""
    registry.import_declared(SEARCH_DOMAINS, registry.SEARCH_MODULES)
    return list(SEARCH_DOMAINS.values())


def domain_for_config(cfg: Any) -> SearchDomain:
    """The domain object of a validated experiment config (its class's DOMAIN, as `task_for`)."""
    return search_domain(getattr(type(cfg), "DOMAIN", registry.DEFAULT_DOMAIN))


def _claimed(owns: Callable[[SearchDomain], bool]) -> SearchDomain:
    for domain in all_search_domains():
        if domain.name != registry.DEFAULT_DOMAIN and owns(domain):
            return domain
    return search_domain(registry.DEFAULT_DOMAIN)


def domain_of(split: Any) -> SearchDomain:
    """The domain of a split object (or an (x, y) pair): the first other than the default one that
    claims it (`owns_split`), else the default domain's."""
    return _claimed(lambda domain: domain.owns_split(split))
