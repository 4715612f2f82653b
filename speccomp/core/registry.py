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
"""

from __future__ import annotations

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

VALIDATION_FITTED: set[str] = {"ridge"}
"""Models that choose a setting on the validation split (ridge: its regularisation), so a config
naming one needs `data.validation`."""


def declare_domain(name: str, module: str) -> None:
    """Record that importing `module` registers the task of domain `name` (imported on first lookup)."""
    DOMAIN_MODULES[name] = module


def register_model_module(name: str, module: str, domain: str = DEFAULT_DOMAIN) -> None:
    """Record that `module` defines model `name` (importing it registers the class) for `domain`."""
    MODEL_MODULES[name] = module
    MODEL_DOMAINS[name] = domain


def known_models(domain: str = DEFAULT_DOMAIN) -> list[str]:
    """Model names of one domain, sorted."""
    return sorted(n for n in MODEL_MODULES if MODEL_DOMAINS.get(n, DEFAULT_DOMAIN) == domain)
