"""Model names, without importing torch: the config schema checks `training.model_type` here, and
`models.build_model` imports the module that defines the name on first use.

A model class registers itself with `models.register_model("name")`, which also records its
module here. Models defined in the project are listed in `MODEL_MODULES` so that a config naming
them validates before their module is imported; a model of yours needs its module imported before
the config is loaded (or an entry added with `register_model_module`).
"""

from __future__ import annotations

MODEL_MODULES: dict[str, str] = {
    "mlp": "speccomp.core.models",
    "cnn": "speccomp.core.models",
    "linear": "speccomp.core.models",
    "seq": "speccomp.core.models",
    "ridge": "speccomp.core.models",
    "raven_mlp": "speccomp.matrices.models",
    "raven_wren": "speccomp.matrices.models",
    "raven_candidates": "speccomp.matrices.models",
    "raven_seq": "speccomp.matrices.models",
}
MODEL_DOMAINS: dict[str, str] = {"raven_mlp": "matrices", "raven_wren": "matrices", "raven_candidates": "matrices",
                                 "raven_seq": "matrices"}
"""Model name -> the task (domain) whose inputs it reads; a name not listed is a spectra model."""

VALIDATION_FITTED: set[str] = {"ridge"}
"""Models that choose a setting on the validation split (ridge: its regularisation), so a config
naming one needs `data.validation`."""


def register_model_module(name: str, module: str, domain: str = "spectra") -> None:
    """Record that `module` defines model `name` (importing it registers the class) for `domain`."""
    MODEL_MODULES[name] = module
    MODEL_DOMAINS[name] = domain


def known_models(domain: str = "spectra") -> list[str]:
    """Model names of one domain (spectra or matrices), sorted."""
    return sorted(n for n in MODEL_MODULES if MODEL_DOMAINS.get(n, "spectra") == domain)
