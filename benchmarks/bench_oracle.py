"""Oracle throughput and efficiency on the default test split (1,024 spectra, 1,024 bins).

    python benchmarks/bench_oracle.py [--data-seed 0] [--repeats 3] [--config-dir configs] [--smoke] [--json PATH]

Prints spectra per second of `fit_oracle` with all components free and with only the components
the split can contain, and, per tracked component, the oracle's MSE next to the Cramér–Rao bound
of the same parameterisation. Reports only; nothing is asserted. --smoke: 64 test spectra of 256
bins, one repeat, one thread.
"""

from __future__ import annotations

import argparse
import time

import torch
from _common import Report, add_smoke_flag, machine_line

from speccomp.core.config import default_config_dir, load_config
from speccomp.spectra.data import generate_split
from speccomp.spectra.oracle import (
    OracleFit,
    components_in_split,
    crb_mse_per_component,
    fit_oracle,
    oracle_component_mse,
)
from speccomp.spectra.physics import ForwardModel

PROMISES = (  # measures every run prints (the smoke test checks them in the JSON); a prefix is enough
    'all components: fit_oracle throughput',
    'all components: oracle MSE / Cramér–Rao bound',
    'split components',
)

def timed_fit(
    forward: ForwardModel,
    spectra: torch.Tensor,
    components: list[int] | None,
    repeats: int,
    **ranges: tuple[float, float],
) -> tuple[OracleFit, float]:
    """The fit and its fastest wall time in seconds over `repeats` runs (the least disturbed one)."""
    best = float("inf")
    fit = None
    for _ in range(repeats):
        start = time.perf_counter()
        fit = fit_oracle(forward, spectra, components, **ranges)
        best = min(best, time.perf_counter() - start)
    assert fit is not None
    return fit, best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--config-dir", default=str(default_config_dir()))
    parser.add_argument("--json", default="", help="also write the figures here")
    add_smoke_flag(parser)
    args = parser.parse_args()
    if args.smoke:
        args.repeats = 1
        torch.set_num_threads(1)
    report = Report("oracle", smoke=args.smoke)
    report.context["machine_start"] = machine_line()
    print("bench_oracle:", machine_line())

    cfg = load_config(args.config_dir, ["data.splits.test.n_samples=64", "physics.n_bins=256"] if args.smoke else [])
    forward = ForwardModel.from_config(cfg.physics)
    split_cfg = cfg.data.resolved_splits()["test"]
    test = generate_split(cfg.physics, split_cfg, "test", args.data_seed, forward)
    labels = cfg.physics.labels
    tracked = [labels.index(label) for label in cfg.tracked_labels]
    in_split = components_in_split(split_cfg, labels)
    sampling = cfg.physics.sampling  # the fit's box is the split's prior support
    ranges = {
        "abundance_range": split_cfg.abundance_range or sampling.abundance.range,
        "temperature_range_k": split_cfg.temperature_range or sampling.temperature.range,
    }
    print(
        f"test split: {len(test)} spectra x {forward.n_bins} bins, {forward.n_components} components, "
        f"data seed {args.data_seed}, torch threads {torch.get_num_threads()}"
    )

    modes = {"all components": None, f"split components {[labels[i] for i in in_split or []]}": in_split}
    for name, comps in modes.items():
        fit, seconds = timed_fit(forward, test.spectra, comps, args.repeats, **ranges)
        mse = oracle_component_mse(fit, test.abundances, tracked)
        crb = crb_mse_per_component(forward, test.temperature_k, test.abundances, test.noise_sigma, comps)
        fitted = fit.components
        print()
        report.info(f"{name}: fit_oracle throughput",
                    f"{len(test) / seconds:,.0f} spectra/s ({seconds:.2f} s for {len(test)}, best of {args.repeats}); "
                    f"mean LM iterations {fit.iterations.double().mean():.1f}, converged {int(fit.converged.sum())}/{len(test)}")
        print(f"  {'component':<10} {'oracle MSE':>12} {'CRB':>12} {'MSE/CRB':>8}")
        for k, idx in enumerate(tracked):
            bound = crb[fitted.index(idx)].item()
            print(f"  {labels[idx]:<10} {mse[k].item():12.4e} {bound:12.4e} {mse[k].item() / bound:8.3f}")
        sigma_err = (fit.sigma / test.noise_sigma - 1).abs().mean().item()
        t_rmse = (fit.temperature_k - test.temperature_k).pow(2).mean().sqrt().item()
        print(f"  noise level: mean |σ̂/σ − 1| = {sigma_err:.3%}; temperature RMSE = {t_rmse:.1f} K")
        ratios = ", ".join(f"{labels[idx]} {mse[k].item() / crb[fitted.index(idx)].item():.3f}" for k, idx in enumerate(tracked))
        report.info(f"{name}: oracle MSE / Cramér–Rao bound", ratios)
    report.finish(args.json)


if __name__ == "__main__":
    main()
