"""Shared fixtures: the real default config, shrunk (few bins, few spectra, one epoch), CPU only."""

from __future__ import annotations

import pytest

from speccomp.config import ExperimentConfig, default_config_dir, load_config

TINY_OVERRIDES = [
    "physics.n_bins=128",
    "data.splits.train.n_samples=192",
    "data.splits.test.n_samples=64",
    "data.validation.n_samples=64",
    "training.epochs=2",
    "training.batch_size=32",
    "training.hidden_dims=[32,16]",
    "training.checkpoint_ratio=0.25",
]


def tiny_config(*extra: str) -> ExperimentConfig:
    """The project's default config shrunk to run in well under a second."""
    return load_config(default_config_dir(), [*TINY_OVERRIDES, *extra])


@pytest.fixture
def tiny_cfg() -> ExperimentConfig:
    return tiny_config()


@pytest.fixture
def default_cfg() -> ExperimentConfig:
    return load_config(default_config_dir())
