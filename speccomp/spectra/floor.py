"""The physical floor of an experiment: the oracle's per-component MSE on the test split, and the
Cramér–Rao bound beside it, computed once per dataset and thread count (cached by the split's
digest and torch's thread count, on which the fits' last digits depend)."""

from __future__ import annotations

import torch

from speccomp.core.config import ExperimentConfig
from speccomp.spectra.data import SplitData
from speccomp.spectra.oracle import components_in_split, crb_mse_per_component, fit_oracle, oracle_component_mse
from speccomp.spectra.physics import ForwardModel

_CACHE: dict[tuple, dict[str, float]] = {}


def physical_floor(cfg: ExperimentConfig, test: SplitData) -> dict[str, float]:
    """`oracle/mse/<label>` and `oracle/crb/<label>` for each tracked label ({} when turned off)."""
    mode = cfg.analysis.oracle
    if mode == "off":
        return {}
    split_cfg = cfg.data.resolved_splits()[test.name]
    components = None if mode == "all" else components_in_split(split_cfg, test.labels)
    physics = cfg.physics.sampling
    abundance_range = split_cfg.abundance_range or physics.abundance.range
    temperature_range = split_cfg.temperature_range or physics.temperature.range
    tracked = cfg.tracked_labels
    key = (test.digest, tuple(components or ()), mode, tuple(abundance_range), tuple(temperature_range), tuple(tracked),
           torch.get_num_threads())
    if key not in _CACHE:
        forward = ForwardModel.from_config(cfg.physics)
        fitted = components if components is not None else list(range(len(test.labels)))
        fit = fit_oracle(forward, test.spectra, fitted, abundance_range, temperature_range)
        mse = oracle_component_mse(fit, test.abundances, fitted)
        crb = crb_mse_per_component(forward, test.temperature_k, test.abundances, test.noise_sigma, fitted)
        out: dict[str, float] = {}
        for label in tracked:
            k = fitted.index(test.label_index(label))
            out[f"oracle/mse/{label}"] = float(mse[k])
            out[f"oracle/crb/{label}"] = float(crb[k])
        _CACHE[key] = out
    return dict(_CACHE[key])


def with_efficiency(final: dict[str, float], floor: dict[str, float], tracked: list[str]) -> dict[str, float]:
    """`oracle/efficiency/<label>` = oracle MSE ÷ test MSE (1 = as good as the physics allows)."""
    out = dict(floor)
    for label in tracked:
        oracle, test = floor.get(f"oracle/mse/{label}"), final.get(f"test/mse/{label}")
        if oracle is not None and test:
            out[f"oracle/efficiency/{label}"] = oracle / test
    return out
