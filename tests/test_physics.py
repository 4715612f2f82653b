"""The generator against the equations of physics.md, computed by hand, and its invariants."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from speccomp.core.config import load_config
from speccomp.spectra.data import generate_split
from speccomp.spectra.physics import ForwardModel

H, C, K = 6.626e-34, 3e8, 1.381e-23

# 901 bins over 300-1200 nm: the grid is every whole nanometre, so bin i is at 300 + i nm.
GRID_1NM = ["physics.n_bins=901"]
NOISE_OFF = ["physics.sampling.noise.distribution=uniform", "physics.sampling.noise.range=[0.0, 0.0]"]


def planck(lam_nm: float, t_k: float) -> float:
    lam = lam_nm * 1e-9
    return 2 * H * C**2 / (lam**5 * (math.exp(H * C / (lam * K * t_k)) - 1.0))


def hand_clean(lam_nm: float, t_k: float, grid_nm: np.ndarray, lines, abundances: dict[str, float]) -> float:
    """physics.md steps 1-3, one wavelength at a time with `math`."""
    peak = max(planck(float(x), t_k) for x in grid_nm)
    value = planck(lam_nm, t_k) / peak
    for line in lines:
        a = abundances.get(line.label, 0.0)
        g = math.exp(-0.5 * ((lam_nm - line.center) / line.width) ** 2)
        value *= 1.0 + line.strength * a * g
    return value


@pytest.fixture(scope="module")
def cfg():
    return load_config(None, GRID_1NM)


@pytest.fixture(scope="module")
def forward(cfg):
    return ForwardModel.from_config(cfg.physics)


def abundance_vector(cfg, values: dict[str, float]) -> torch.Tensor:
    a = torch.zeros(1, len(cfg.physics.labels), dtype=torch.float64)
    for label, v in values.items():
        a[0, cfg.physics.labels.index(label)] = v
    return a


def test_grid_is_evenly_spaced_with_both_ends(forward):
    grid = forward.wavelength_nm.numpy()
    assert grid[0] == 300.0 and grid[-1] == 1200.0 and len(grid) == 901
    np.testing.assert_allclose(np.diff(grid), 1.0, rtol=0, atol=1e-9)


CASES = [
    (5000.0, {"comp10": 0.8, "comp4": 0.5}),
    (3200.0, {"comp1": 1.0, "comp2": 0.3, "comp12": 0.6}),
    (6900.0, {}),
]
WAVELENGTHS = [300, 340, 423, 580, 732, 891, 956, 1045, 1200]


@pytest.mark.parametrize(("t_k", "abundances"), CASES)
def test_clean_spectrum_matches_hand_computation(cfg, forward, t_k, abundances):
    clean = forward.clean(torch.tensor([t_k], dtype=torch.float64), abundance_vector(cfg, abundances))[0]
    grid = forward.wavelength_nm.numpy()
    for lam in WAVELENGTHS:
        expected = hand_clean(float(lam), t_k, grid, cfg.physics.lines, abundances)
        got = float(clean[lam - 300])
        assert got == pytest.approx(expected, rel=1e-10), f"T={t_k} λ={lam}: {got} vs {expected}"


def test_hand_computation_is_sensitive_to_lines(cfg, forward):
    # guard: the two lines of the first case change the spectrum at their centres by a lot
    t = torch.tensor([5000.0], dtype=torch.float64)
    bare = forward.clean(t, abundance_vector(cfg, {}))[0]
    lined = forward.clean(t, abundance_vector(cfg, {"comp10": 0.8, "comp4": 0.5}))[0]
    # comp10 alone at its centre: 1 - 0.7*0.8 ; comp4 adds a little from its own centre 65 nm away
    ratio = float(lined[956 - 300] / bare[956 - 300])
    g4 = math.exp(-0.5 * ((956 - 891) / 9.0) ** 2)
    assert ratio == pytest.approx((1 - 0.7 * 0.8) * (1 - 0.4 * 0.5 * g4), rel=1e-12)
    assert float(lined[891 - 300] / bare[891 - 300]) < 0.75


def test_profiles_are_gaussians(cfg, forward):
    for i in (3, 9):
        line = cfg.physics.lines[i]
        for lam in (line.center, line.center + line.width, line.center - 2 * line.width):
            if 300 <= lam <= 1200 and float(lam).is_integer():
                got = float(forward.profiles[i, int(lam) - 300])
                assert got == pytest.approx(math.exp(-0.5 * ((lam - line.center) / line.width) ** 2), rel=1e-12)
    assert float(forward.profiles[9, 956 - 300]) == 1.0


def test_generated_split_without_noise_matches_hand_computation(cfg):
    cfg = load_config(None, [*GRID_1NM, *NOISE_OFF, "data.splits.test.n_samples=3"])
    split = generate_split(cfg.physics, cfg.data.splits["test"], "test", data_seed=7)
    assert torch.equal(split.noise_sigma, torch.zeros(3, dtype=torch.float64))
    grid = np.linspace(300, 1200, 901)
    for n in range(3):
        t_k = float(split.temperature_k[n])
        abund = {lab: float(split.abundances[n, i]) for i, lab in enumerate(split.labels) if split.abundances[n, i] != 0}
        assert set(abund) == {"comp10", "comp4"}
        for lam in (300, 891, 956, 1200):
            expected = hand_clean(float(lam), t_k, grid, cfg.physics.lines, abund)
            assert float(split.spectra[n, lam - 300]) == pytest.approx(expected, rel=2e-6)


def test_continuum_peaks_at_exactly_one(forward):
    temps = torch.tensor([3000.0, 3333.3, 4500.0, 5800.0, 7000.0], dtype=torch.float64)
    b = forward.continuum(temps)
    assert torch.equal(b.max(dim=1).values, torch.ones(5, dtype=torch.float64))
    assert bool((b > 0).all()) and bool((b <= 1).all())
    # the peak sits where Wien's law puts it: λ_max = hc / (4.965 k T)
    wien_nm = H * C / (4.965114 * K * temps.numpy()) * 1e9
    peaks_nm = forward.wavelength_nm[b.argmax(dim=1)].numpy()
    np.testing.assert_allclose(peaks_nm, wien_nm, atol=1.0)


def test_zero_abundances_give_the_bare_continuum(cfg, forward):
    temps = torch.tensor([3100.0, 6100.0], dtype=torch.float64)
    zeros = torch.zeros(2, len(cfg.physics.labels), dtype=torch.float64)
    assert torch.equal(forward.clean(temps, zeros), forward.continuum(temps))
    assert torch.equal(forward.modulation(zeros), torch.ones(2, 901, dtype=torch.float64))


def test_noise_free_split_with_no_components_peaks_at_one():
    cfg = load_config(None, ["physics.n_bins=128", *NOISE_OFF, "data.splits.train.n_samples=60", "training.batch_size=32"])
    split = generate_split(cfg.physics, cfg.data.splits["train"], "train", data_seed=3)
    bare = ~split.present.any(dim=1)
    assert 5 < int(bare.sum()) < 55
    assert torch.equal(split.spectra[bare].max(dim=1).values, torch.ones(int(bare.sum())))


def test_log_spectrum_is_additive_across_components(cfg, forward):
    t = torch.tensor([4200.0], dtype=torch.float64)
    singles = [{"comp10": 0.9}, {"comp4": 0.7}, {"comp12": 0.4}]
    log_b = torch.log(forward.continuum(t))
    combined = {k: v for d in singles for k, v in d.items()}
    lhs = torch.log(forward.clean(t, abundance_vector(cfg, combined))) - log_b
    rhs = sum(torch.log(forward.clean(t, abundance_vector(cfg, d))) - log_b for d in singles)
    torch.testing.assert_close(lhs, rhs, rtol=0, atol=1e-12)
    # ... and not in linear space (the composition is multiplicative)
    lin = sum(forward.clean(t, abundance_vector(cfg, d)) - forward.continuum(t) for d in singles)
    assert float((forward.clean(t, abundance_vector(cfg, combined)) - forward.continuum(t) - lin).abs().max()) > 1e-3
    # log_clean is the same quantity
    torch.testing.assert_close(
        forward.log_clean(t, abundance_vector(cfg, combined)),
        torch.log(forward.clean(t, abundance_vector(cfg, combined))), rtol=0, atol=1e-12,
    )


def test_multiplicative_noise_has_unit_variance_at_fixed_sigma():
    sigma = 0.05
    cfg = load_config(
        None,
        ["physics.n_bins=512", "physics.sampling.noise.distribution=uniform",
         f"physics.sampling.noise.range=[{sigma}, {sigma}]", "data.splits.train.n_samples=64"],
    )
    split = generate_split(cfg.physics, cfg.data.splits["train"], "train", data_seed=11)
    assert torch.allclose(split.noise_sigma, torch.full((64,), sigma, dtype=torch.float64))
    forward = ForwardModel.from_config(cfg.physics)
    clean = forward.clean(split.temperature_k, split.abundances.double())
    z = (split.spectra.double() / clean - 1.0) / sigma
    assert abs(float(z.mean())) < 0.02  # 32768 draws: standard error 0.0055
    assert abs(float(z.std()) - 1.0) < 0.02
    # independent per bin: neighbouring bins are uncorrelated
    corr = float((z[:, 1:] * z[:, :-1]).mean())
    assert abs(corr) < 0.03


def test_noise_level_follows_each_spectrum_sigma():
    cfg = load_config(None, ["physics.n_bins=1024", "data.splits.train.n_samples=40", "training.batch_size=32"])
    split = generate_split(cfg.physics, cfg.data.splits["train"], "train", data_seed=5)
    forward = ForwardModel.from_config(cfg.physics)
    rel = split.spectra.double() / forward.clean(split.temperature_k, split.abundances.double()) - 1.0
    np.testing.assert_allclose(rel.std(dim=1).numpy(), split.noise_sigma.numpy(), rtol=0.1)
    assert float(split.noise_sigma.min()) >= 0.01 and float(split.noise_sigma.max()) <= 0.15


def test_additive_noise_default_zero_equals_explicit_zero():
    base = ["physics.n_bins=64", "data.splits.train.n_samples=32", "training.batch_size=32"]
    a = load_config(None, base)
    b = load_config(None, [*base, "physics.sampling.noise.additive=0"])
    assert a.physics.sampling.noise.additive == 0.0
    sa = generate_split(a.physics, a.data.splits["train"], "train", 9)
    sb = generate_split(b.physics, b.data.splits["train"], "train", 9)
    assert torch.equal(sa.spectra, sb.spectra) and torch.equal(sa.abundances, sb.abundances)


def test_additive_noise_leaves_every_earlier_draw_unchanged():
    base = ["physics.n_bins=256", "data.splits.train.n_samples=64", "data.splits.train.combined_fraction=0.25",
            "data.splits.train.combined_components=[comp10, comp4]"]
    off = load_config(None, base)
    on = load_config(None, [*base, "physics.sampling.noise.additive=0.02"])
    s_off = generate_split(off.physics, off.data.splits["train"], "train", 21)
    s_on = generate_split(on.physics, on.data.splits["train"], "train", 21)
    assert torch.equal(s_off.abundances, s_on.abundances)
    assert torch.equal(s_off.present, s_on.present)
    assert torch.equal(s_off.temperature_k, s_on.temperature_k)
    assert torch.equal(s_off.noise_sigma, s_on.noise_sigma)
    diff = (s_on.spectra - s_off.spectra).double()
    assert not torch.equal(s_on.spectra, s_off.spectra)
    # x_on - x_off is exactly the additive term (same multiplicative noise underneath)
    assert abs(float(diff.std()) - 0.02) < 0.002 and abs(float(diff.mean())) < 0.002


@pytest.mark.parametrize(("n", "n_bins", "t_range", "additive"), [
    (1000, 1024, (3000, 7000), 0.0),  # four blocks of 256 rows and a short last one
    (333, 77, (3000, 7000), 0.05),  # bins that are no multiple of any SIMD width, additive noise
    (64, 901, (3000, 7000), 0.0),  # one block, shorter than BLOCK_ROWS
    (300, 128, (100, 7000), 0.0),  # too cold for the direct continuum somewhere: the one-pass route
])
@pytest.mark.parametrize("threads", [1, 2])
def test_block_by_block_spectra_are_the_one_pass_spectra_bit_for_bit(n, n_bins, t_range, additive, threads):
    """`noisy_spectra` (what the generator uses, to bound its memory) writes exactly the float32
    values of `add_noise_(fast_clean(...))` over the whole array, at either thread count."""
    from speccomp.spectra.physics import add_noise_, fast_clean, noisy_spectra

    cfg = load_config(None, [f"physics.n_bins={n_bins}"])
    forward = ForwardModel.from_config(cfg.physics)
    g = torch.Generator().manual_seed(n + n_bins)
    t = torch.empty(n, dtype=torch.float64).uniform_(*t_range, generator=g)
    a = torch.rand(n, forward.n_components, dtype=torch.float64, generator=g) * (torch.rand(n, 1, generator=g) < 0.7)
    a[:, 5] = 0  # a line absent everywhere
    a[: n // 2, 3] = 0  # and one absent from the first blocks only
    sigma = torch.rand(n, dtype=torch.float64, generator=g) * 0.1
    eps = torch.randn(n, n_bins, generator=g)
    eps_add = torch.randn(n, n_bins, generator=g) if additive else None
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        whole = add_noise_(fast_clean(forward, t, a), sigma, eps.clone(), additive,
                           None if eps_add is None else eps_add.clone())
        blocks = {rows: noisy_spectra(forward, t, a, sigma, eps.clone(), additive, eps_add, block_rows=rows)
                  for rows in (64, 128, 256)}  # 256: the default
    finally:
        torch.set_num_threads(before)
    for spectra in blocks.values():
        assert spectra.dtype == torch.float32
        assert torch.equal(spectra, whole)


def test_a_block_size_off_the_simd_lanes_is_refused():
    from speccomp.spectra.physics import noisy_spectra

    cfg = load_config(None, [])
    forward = ForwardModel.from_config(cfg.physics)
    for rows in (100, 0, -64):
        with pytest.raises(ValueError, match=f"block_rows: {rows}; must be a positive multiple of 64"):
            noisy_spectra(forward, torch.full((4,), 5000.0), torch.zeros(4, 20), torch.zeros(4), torch.zeros(4, 1024),
                          block_rows=rows)
