"""Names of models and domains, without importing torch or any domain.

Models: the config schema checks `training.model_type` here, and `models.build_model` imports the
module that defines the name on first use. A model class registers itself with
`models.register_model("name")`, which also records its module here. The core's models are listed
in `MODEL_MODULES` so that a config naming them validates before their module is imported; a
domain's models are declared by the domain list (`speccomp/domains.py`, with
`register_model_module`), and a model of yours needs its module imported before the config is
loaded (or an entry added with `register_model_module`).

Domains: the core knows none by name. `declare_domain(name, module)` records the module whose
import registers a domain's task (`speccomp.core.task.register_task`); the domain list
`speccomp/domains.py`, which the `speccomp` package imports first, declares the project's domains,
and `speccomp.core.task` imports a declared module the first time a domain is looked up. A domain
can also register its task directly (`register_task(MyTask())`), without a declaration.

The search and the meta-learner ask a domain object of their own (`speccomp.nas.domain.SearchDomain`,
`speccomp.meta.domain.MetaDomain`): `declare_domain(name, module, search=...)` records the module whose
import registers it (`speccomp.nas.domain.register_search_domain`), imported on the first lookup.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import TypeVar

T = TypeVar("T")

MODEL_MODULES: dict[str, str] = {
    "mlp": "speccomp.core.models",
    "cnn": "speccomp.core.models",
    "linear": "speccomp.core.models",
    "seq": "speccomp.core.models",
    "ridge": "speccomp.core.models",
}
MODEL_DOMAINS: dict[str, str] = {}
"""Model name -> the task (domain) whose inputs it reads; a name not listed is a model of the default
domain (`DEFAULT_DOMAIN`, whose schema is the core's `ExperimentConfig`)."""

DEFAULT_DOMAIN = "spectra"
"""The domain of the core's own config schema (`speccomp.core.schema.ExperimentConfig`, the
tutorial's files): a config folder no other domain claims is of this domain."""

DOMAIN_MODULES: dict[str, str] = {}
"""Domain name -> the module whose import registers its task; filled by `declare_domain`."""

SEARCH_MODULES: dict[str, str] = {}
"""Domain name -> the module whose import registers its search and meta-learner domain object;
filled by `declare_domain(..., search=...)`."""

VALIDATION_FITTED: set[str] = {"ridge"}
"""Models that choose a setting on the validation split (ridge: its regularisation), so a config
naming one needs `data.validation`."""


def declare_domain(name: str, module: str, search: str | None = None) -> None:
    """Record that importing `module` registers the task of domain `name`, and importing `search`
    its domain object of the search and the meta-learner (each imported on its first lookup)."""
    DOMAIN_MODULES[name] = module
    if search is not None:
        SEARCH_MODULES[name] = search


def register_model_module(name: str, module: str, domain: str = DEFAULT_DOMAIN) -> None:
    """Record that `module` defines model `name` (importing it registers the class) for `domain`."""
    MODEL_MODULES[name] = module
    MODEL_DOMAINS[name] = domain


def known_models(domain: str = DEFAULT_DOMAIN) -> list[str]:
    """Model names of one domain, sorted."""
    return sorted(n for n in MODEL_MODULES if MODEL_DOMAINS.get(n, DEFAULT_DOMAIN) == domain)


def import_declared(registered: Mapping[str, object], modules: Mapping[str, str]) -> None:
    """Import every declared module (`modules`: domain -> module) whose domain has not registered
    into `registered` yet; each registers itself on import."""
    for name, module in list(modules.items()):
        if name not in registered:
            importlib.import_module(module)


def lookup(registered: Mapping[str, T], modules: Mapping[str, str], name: str, kind: str) -> T:
    """`registered[name]`, its declared module imported first if need be; KeyError naming the known ones."""
    import_declared(registered, modules)
    if name not in registered:
        raise KeyError(f"unknown {kind} {name!r}; known: {', '.join(sorted(registered))}")
    return registered[name]
