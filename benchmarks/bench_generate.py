"""Data generation throughput: speccomp's batched generator vs a per-spectrum Python loop.

    python benchmarks/bench_generate.py [--repeats 5] [--loop-n 512] [--threads N] [--smoke] [--json PATH]

Both run in this one process, on the default configuration without the validation split
(train 4,096 + test 1,024 = 5,120 spectra, 1,024 bins, 20 lines):

- speccomp: `generate_datasets(cfg, data_seed)`, the fastest of `--repeats` runs after a warm-up;
- reference: the tutorial's equations one spectrum at a time (`physics.md`): draw the component
  set, abundances, temperature and noise level from NumPy's global random state, compute the
  Planck curve, divide by its maximum, loop over the 20 lines multiplying by (1 + s·a·g), add the
  multiplicative noise. Two variants are timed, the tutorial's own (float32 torch ops per
  spectrum, `tutorial_reference.loop_generate_split`) and a pure-NumPy float64 one; the loops run
  on a subset of `--loop-n` spectra (train and test in the 4:1 proportion of the real splits) and
  are extrapolated per spectrum to 5,120.


Target: speccomp's throughput >= 50x the tutorial-style loop's. The ratio to the plain NumPy loop
(faster than the tutorial's torch-per-spectrum style) is printed too, as the stricter comparison.
Before timing, the script checks that the loop and `ForwardModel` compute the same noise-free
spectra from the same parameters, and that the generated noise has the configured level.
--smoke: one repeat of each, the loops on 16 spectra, one thread, no verdict.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from _common import Report, add_smoke_flag, best_of, machine_line
from tutorial_reference import K_B, C, H, loop_generate_split

from speccomp.core.config import default_config_dir, load_config
from speccomp.spectra.data import generate_datasets
from speccomp.spectra.physics import ForwardModel

PROMISES = (  # measures every run prints (the smoke test checks them in the JSON); a prefix is enough
    'speccomp generate_datasets',
    'tutorial-style loop',
    'plain NumPy loop',
    'throughput vs the tutorial-style per-spectrum loop',
)

TARGET_SPEEDUP = 50.0
TUTORIAL_PUBLISHED_S = 7.0  # results.md / physics.md: "about 7 s for 5,120 spectra" (loop alone)


# ------------------------------------------------------------------------------------------------
# the reference: one spectrum at a time, pure NumPy (float64), global random state
# ------------------------------------------------------------------------------------------------
def _draw(sampling: dict) -> float:
    lo, hi = sampling["range"]
    if sampling.get("distribution", "uniform") == "log_uniform":
        return float(np.exp(np.random.uniform(np.log(lo), np.log(hi))))
    return float(np.random.uniform(lo, hi))


def numpy_clean_spectrum(physics: dict, wavelength_nm: np.ndarray, abundances: np.ndarray, temperature_k: float) -> np.ndarray:
    lam_m = wavelength_nm * 1e-9
    spectrum = 2 * H * C**2 / (lam_m**5 * np.expm1(H * C / (lam_m * K_B * temperature_k)))
    spectrum = spectrum / spectrum.max()
    for i, line in enumerate(physics["lines"]):
        profile = np.exp(-0.5 * ((wavelength_nm - line["center"]) / line["width"]) ** 2)
        spectrum = spectrum * (1.0 + line["strength"] * abundances[i] * profile)
    return spectrum


def numpy_loop_generate_split(physics: dict, split: dict, seed: int) -> tuple[np.ndarray, np.ndarray]:
    np.random.seed(seed)
    lines = physics["lines"]
    index = {ln["label"]: i for i, ln in enumerate(lines)}
    combos = split["distribution"]["combinations"]
    weights = np.array([c["weight"] for c in combos], dtype=float)
    weights /= weights.sum()
    n, n_bins = split["n_samples"], physics["n_bins"]
    wavelength_nm = np.linspace(physics["wavelength_min"], physics["wavelength_max"], n_bins)
    abundances = np.zeros((n, len(lines)))
    spectra = np.zeros((n, n_bins), dtype=np.float32)
    for i in range(n):
        for name in combos[np.random.choice(len(combos), p=weights)]["components"]:
            abundances[i, index[name]] = _draw(physics["sampling"]["abundance"])
        temperature = _draw(physics["sampling"]["temperature"])
        sigma = _draw(physics["sampling"]["noise"])
        clean = numpy_clean_spectrum(physics, wavelength_nm, abundances[i], temperature)
        spectra[i] = clean * (1.0 + sigma * np.random.standard_normal(n_bins))
    return spectra, abundances


# ------------------------------------------------------------------------------------------------
def _split_dicts(cfg, loop_n: int) -> tuple[dict, dict[str, dict]]:
    """The physics as the tutorial's YAML dict, and the splits shrunk to `loop_n` spectra in all."""
    physics = cfg.physics.model_dump()
    splits = cfg.data.resolved_splits()
    total = sum(s.n_samples for s in splits.values())
    out = {}
    for name, s in splits.items():
        out[name] = {"n_samples": max(1, round(loop_n * s.n_samples / total)),
                     "distribution": s.distribution.model_dump()}
    return physics, out


def check_same_equations(cfg, datasets) -> float:
    """Max relative difference between the loop's and ForwardModel's noise-free spectra for the
    parameters of the first 64 test spectra."""
    physics = cfg.physics.model_dump()
    forward = ForwardModel.from_config(cfg.physics)
    test = datasets["test"]
    k = min(64, len(test))
    ours = forward.clean(test.temperature_k[:k], test.abundances[:k].to(torch.float64)).numpy()
    grid = forward.wavelength_nm.numpy()
    loop = np.stack([numpy_clean_spectrum(physics, grid, test.abundances[i].double().numpy(), float(test.temperature_k[i]))
                     for i in range(k)])
    return float(np.max(np.abs(loop - ours) / np.abs(ours)))


def noise_check(cfg, datasets) -> float:
    """std of (x / clean - 1) / sigma over the test split: 1 if the noise is as specified."""
    forward = ForwardModel.from_config(cfg.physics)
    test = datasets["test"]
    clean = forward.clean(test.temperature_k, test.abundances.to(torch.float64))
    z = (test.spectra.double() / clean - 1.0) / test.noise_sigma[:, None]
    return float(z.std())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--loop-n", type=int, default=512, help="spectra the reference loops generate (then extrapolated)")
    p.add_argument("--loop-repeats", type=int, default=2)
    p.add_argument("--data-seed", type=int, default=42)
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--json", default="", help="also write the results here")
    add_smoke_flag(p)
    args = p.parse_args(argv)
    if args.smoke:
        args.repeats, args.loop_n, args.loop_repeats, args.threads = 1, 16, 1, args.threads or 1
    if args.threads:
        torch.set_num_threads(args.threads)

    report = Report("generate", smoke=args.smoke)
    print("bench_generate:", machine_line())
    report.context["machine"] = machine_line()
    cfg = load_config(default_config_dir(), ["data.validation.n_samples=0"])
    n_total = sum(s.n_samples for s in cfg.data.resolved_splits().values())

    datasets = generate_datasets(cfg, args.data_seed)  # warm-up (and the data for the checks)
    rel = check_same_equations(cfg, datasets)
    z_std = noise_check(cfg, datasets)
    print(f"same equations: loop vs ForwardModel noise-free spectra, max relative difference {rel:.1e}; "
          f"noise (x/clean-1)/sigma has std {z_std:.4f} (expected 1)")

    ours_s, _ = best_of(lambda: generate_datasets(cfg, args.data_seed), args.repeats)

    physics, small = _split_dicts(cfg, args.loop_n)
    n_loop = sum(s["n_samples"] for s in small.values())

    def run_loop(fn):
        return lambda: [fn(physics, s, args.data_seed + k) for k, s in enumerate(small.values())]

    torch_loop_s, _ = best_of(run_loop(loop_generate_split), args.loop_repeats)
    numpy_loop_s, _ = best_of(run_loop(numpy_loop_generate_split), args.loop_repeats)
    per_torch, per_numpy = torch_loop_s / n_loop, numpy_loop_s / n_loop

    print(f"\n{n_total} spectra (train+test), {cfg.physics.n_bins} bins, {len(cfg.physics.lines)} lines")
    report.info("speccomp generate_datasets, 5,120 spectra", f"{ours_s:.3f} s ({n_total / ours_s:,.0f} spectra/s), best of {args.repeats}")
    report.info("tutorial-style loop (torch ops per spectrum)", f"{per_torch * 1e3:.3f} ms/spectrum -> {per_torch * n_total:.2f} s for {n_total} (measured on {n_loop}, best of {args.loop_repeats})")
    report.info("plain NumPy loop (float64)", f"{per_numpy * 1e3:.3f} ms/spectrum -> {per_numpy * n_total:.2f} s for {n_total} (measured on {n_loop}, best of {args.loop_repeats})")
    report.info("speedup vs the plain NumPy loop (stricter)", f"{per_numpy * n_total / ours_s:.1f}x")
    report.info("speedup vs the published tutorial figure", f"about {TUTORIAL_PUBLISHED_S:.0f} s / {ours_s:.3f} s = {TUTORIAL_PUBLISHED_S / ours_s:.0f}x")
    speedup = per_torch * n_total / ours_s
    report.target("throughput vs the tutorial-style per-spectrum loop", speedup, "{:.1f}x", f">= {TARGET_SPEEDUP:.0f}x",
                  speedup >= TARGET_SPEEDUP)
    report.context.update({"ours_s": ours_s, "loop_torch_ms": per_torch * 1e3, "loop_numpy_ms": per_numpy * 1e3,
                           "equations_max_rel_diff": rel, "noise_std": z_std})
    return report.finish(args.json)


if __name__ == "__main__":
    raise SystemExit(main())
