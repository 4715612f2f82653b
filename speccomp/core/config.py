"""The configuration, in one import: the schema (`schema.py`) and its loading (`loading.py`).

    from speccomp.core.config import load_config, ConfigError
    cfg = load_config("configs", overrides=["training.epochs=2"])   # frozen ExperimentConfig

Importing this module does not import torch.
"""

from speccomp.core.loading import (
    TUTORIAL_ONLY_KEYS,
    apply_override,
    check_override_key,
    config_from_dict,
    default_config_dir,
    load_config,
    parse_seed_list,
    parse_value,
    read_yaml,
    resolve_preset,
    split_overrides,
)
from speccomp.core.schema import (
    SECTION_FILES,
    AnalysisConfig,
    CNNConfig,
    Combination,
    CombinationsDistribution,
    ConfigError,
    CustomDistribution,
    DataConfig,
    ExperimentConfig,
    Line,
    PhysicsConfig,
    SplitConfig,
    TrainingConfig,
    ValidationSplit,
    check_modulation_positive,
    resolve_sampler,
)

__all__ = [
    "SECTION_FILES", "TUTORIAL_ONLY_KEYS", "AnalysisConfig", "CNNConfig", "Combination", "CombinationsDistribution",
    "ConfigError", "CustomDistribution", "DataConfig", "ExperimentConfig", "Line", "PhysicsConfig", "SplitConfig",
    "TrainingConfig", "ValidationSplit", "apply_override", "check_modulation_positive", "check_override_key",
    "config_from_dict", "default_config_dir", "load_config", "parse_seed_list", "parse_value", "read_yaml",
    "resolve_preset", "resolve_sampler", "split_overrides",
]
