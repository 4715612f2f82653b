"""The oracle fit (speccomp.spectra.oracle): exactness without noise, efficiency against the Cramér–Rao
bound with noise, determinism, refusal of bad input, and the two fitting modes."""

from __future__ import annotations

import pytest
import torch

from speccomp.core.config import default_config_dir, load_config
from speccomp.spectra.data import SplitData, generate_split
from speccomp.spectra.oracle import (
    OracleFit,
    components_in_split,
    cramer_rao_bound,
    crb_mse_per_component,
    fit_oracle,
    oracle_component_mse,
)
from speccomp.spectra.physics import ForwardModel

N_BINS = 256
N_TEST = 256


@pytest.fixture(scope="module")
def setup() -> tuple[ForwardModel, SplitData, list[int]]:
    """A small world (256 bins) and its compositional test split (comp10 and comp4 together)."""
    cfg = load_config(
        default_config_dir(),
        overrides=[f"physics.n_bins={N_BINS}", f"data.splits.test.n_samples={N_TEST}"],
    )
    forward = ForwardModel.from_config(cfg.physics)
    test = generate_split(cfg.physics, cfg.data.resolved_splits()["test"], "test", 0, forward)
    tracked = [test.label_index("comp10"), test.label_index("comp4")]
    return forward, test, tracked


@pytest.fixture(scope="module")
def fits(setup) -> dict[str, OracleFit]:
    forward, test, tracked = setup
    return {"all": fit_oracle(forward, test.spectra), "tracked": fit_oracle(forward, test.spectra, tracked)}


def _random_parameters(forward: ForwardModel, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    temperature = 3000.0 + 4000.0 * torch.rand(n, generator=gen, dtype=torch.float64)
    abundances = torch.rand(n, forward.n_components, generator=gen, dtype=torch.float64)
    abundances[abundances < 0.3] = 0.0  # a mix of absent (on the bound) and present lines
    return temperature, abundances


@pytest.mark.parametrize("mode", ["all", "tracked"])
def test_noiseless_spectra_are_recovered(setup, mode: str) -> None:
    forward, _, tracked = setup
    temperature, abundances = _random_parameters(forward, 48, seed=1)
    if mode == "tracked":
        keep = torch.zeros(forward.n_components, dtype=torch.bool)
        keep[tracked] = True
        abundances[:, ~keep] = 0.0
    fit = fit_oracle(forward, forward.clean(temperature, abundances), None if mode == "all" else tracked)
    assert (fit.abundances - abundances).abs().max() < 1e-3
    assert ((fit.temperature_k - temperature).abs() / temperature).max() < 0.01
    assert fit.sigma.max() < 1e-6
    assert bool(fit.converged.all())


def test_float32_noiseless_spectra_are_recovered(setup) -> None:
    # The data module stores spectra as float32; rounding (~6e-8 relative) must not matter.
    forward, _, _ = setup
    temperature, abundances = _random_parameters(forward, 16, seed=2)
    fit = fit_oracle(forward, forward.clean(temperature, abundances).to(torch.float32))
    assert (fit.abundances - abundances).abs().max() < 1e-3
    assert ((fit.temperature_k - temperature).abs() / temperature).max() < 0.01


def test_tracked_mode_is_efficient(setup, fits) -> None:
    """Fitting the two components the split contains, the oracle's MSE matches the Cramér–Rao bound.

    Both sides are checked: MSE ≤ 2 CRB (the fit is efficient) and MSE ≥ CRB / 2 (nothing leaks
    truth into the fit). Clipping to [0, 1] lets a bounded estimator beat the CRB a little near the
    ends of the range (here by ~5–15 %), well inside the factor 2.
    """
    forward, test, tracked = setup
    fit = fits["tracked"]
    mse = oracle_component_mse(fit, test.abundances, tracked)
    crb = crb_mse_per_component(forward, test.temperature_k, test.abundances, test.noise_sigma, tracked)
    assert crb.shape == (2,)
    assert bool((mse <= 2 * crb).all()), (mse, crb)
    assert bool((mse >= crb / 2).all()), (mse, crb)
    # σ is estimated from the residuals: a few per cent per spectrum with 256 bins.
    assert ((fit.sigma / test.noise_sigma - 1).abs().mean()) < 0.1


def test_all_mode_is_within_the_bound(setup, fits) -> None:
    """With all 20 components free, 18 of which are truly 0 (on the box's lower bound), clipping
    those nuisances at 0 removes much of the variance the unbiased bound charges for them, so the
    oracle can sit well below this CRB: only the upper side (MSE ≤ 2 CRB) is a valid check."""
    forward, test, tracked = setup
    mse = oracle_component_mse(fits["all"], test.abundances, tracked)
    crb_all = crb_mse_per_component(forward, test.temperature_k, test.abundances, test.noise_sigma)
    assert crb_all.shape == (forward.n_components,)
    assert bool((mse <= 2 * crb_all[tracked]).all()), (mse, crb_all[tracked])


def test_tracked_mode_at_least_as_accurate_as_all_mode(setup, fits) -> None:
    forward, test, tracked = setup
    mse_all = oracle_component_mse(fits["all"], test.abundances, tracked)
    mse_tracked = oracle_component_mse(fits["tracked"], test.abundances, tracked)
    # Fewer nuisance parameters can only help; the margin allows for sampling noise in a component
    # where the two are nearly equal (comp4: the extra lines barely overlap it).
    assert bool((mse_tracked <= 1.05 * mse_all).all()), (mse_tracked, mse_all)
    assert mse_tracked.sum() <= mse_all.sum()
    # Untracked components are reported as exactly 0.
    others = [c for c in range(forward.n_components) if c not in tracked]
    assert bool((fits["tracked"].abundances[:, others] == 0).all())
    assert fits["tracked"].components == tracked


def test_abundances_stay_in_range(setup, fits) -> None:
    _, test, _ = setup
    for fit in fits.values():
        assert fit.abundances.shape == (len(test), 20)
        assert fit.abundances.dtype == torch.float64
        assert bool(((fit.abundances >= 0) & (fit.abundances <= 1)).all())
        assert bool(((fit.temperature_k >= 3000) & (fit.temperature_k <= 7000)).all())
    narrow = fit_oracle(setup[0], test.spectra[:16], setup[2], abundance_range=(0.2, 0.6))
    kept = narrow.abundances[:, setup[2]]
    assert bool(((kept >= 0.2) & (kept <= 0.6)).all())


def test_deterministic(setup) -> None:
    forward, test, tracked = setup
    first = fit_oracle(forward, test.spectra[:64])
    second = fit_oracle(forward, test.spectra[:64])
    for name in ("abundances", "temperature_k", "sigma", "converged", "iterations"):
        assert torch.equal(getattr(first, name), getattr(second, name)), name
    crb1 = cramer_rao_bound(forward, test.temperature_k, test.abundances, test.noise_sigma, tracked)
    crb2 = cramer_rao_bound(forward, test.temperature_k, test.abundances, test.noise_sigma, tracked)
    assert torch.equal(crb1, crb2)


def test_the_chunk_size_changes_the_fit_only_in_rounding(setup) -> None:
    """Each spectrum is fitted, and its bound computed, on its own: 200 spectra in chunks of 7, 16
    or 256 agree with the default 64 to rounding (the kernels' blocking follows the batch size)."""
    forward, test, tracked = setup
    n = 200
    spectra = test.spectra[:n]
    default = fit_oracle(forward, spectra, tracked)
    args = (forward, test.temperature_k[:n], test.abundances[:n], test.noise_sigma[:n], tracked)
    crb = cramer_rao_bound(*args)
    assert crb.shape == (n, len(tracked))
    for chunk in (7, 16, 256):
        other = fit_oracle(forward, spectra, tracked, chunk_size=chunk)
        torch.testing.assert_close(other.abundances, default.abundances, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(other.temperature_k, default.temperature_k, rtol=1e-9, atol=0)
        torch.testing.assert_close(cramer_rao_bound(*args, chunk_size=chunk), crb, rtol=1e-9, atol=0)


def test_the_headline_runs_floor_is_the_same_in_chunks_of_64_as_of_256() -> None:
    """The default config's test split (1,024 spectra of 1,024 bins): the floor the headline run
    records is the same bits in the chunks of 64 as in the earlier 256."""
    cfg = load_config(default_config_dir())
    forward = ForwardModel.from_config(cfg.physics)
    test = generate_split(cfg.physics, cfg.data.resolved_splits()["test"], "test", 42, forward)
    fitted = [test.label_index(label) for label in ("comp10", "comp4")]
    now, before = (fit_oracle(forward, test.spectra, fitted, chunk_size=c) for c in (64, 256))
    assert torch.equal(now.abundances, before.abundances) and torch.equal(now.sigma, before.sigma)
    args = (forward, test.temperature_k, test.abundances, test.noise_sigma, fitted)
    assert torch.equal(cramer_rao_bound(*args), cramer_rao_bound(*args, chunk_size=1024))


def test_rare_nonpositive_bins_are_masked(setup) -> None:
    """A bin that noise pushed to ≤ 0 cannot be logged; it is left out, not refused."""
    forward, test, tracked = setup
    spectra = test.spectra[:8].clone()
    spectra[0, 100] = -0.01
    spectra[1, 0] = 0.0
    fit = fit_oracle(forward, spectra, tracked)
    ref = fit_oracle(forward, test.spectra[:8], tracked)
    assert torch.isfinite(fit.abundances).all() and torch.isfinite(fit.sigma).all()
    assert (fit.abundances - ref.abundances).abs().max() < 0.05
    # Other spectra are unaffected (up to rounding: they share batched linear algebra).
    torch.testing.assert_close(fit.abundances[2:], ref.abundances[2:], rtol=0, atol=1e-9)


@pytest.mark.parametrize(
    ("make_bad", "message"),
    [
        (lambda x: x.index_put_((torch.tensor([3]), torch.tensor([7])), torch.tensor(float("nan"))), "NaN or inf"),
        (lambda x: x.index_put_((torch.tensor([1]), torch.tensor([2])), torch.tensor(float("inf"))), "NaN or inf"),
        (lambda x: x.index_fill_(0, torch.tensor([2]), 0.0), "spectrum 2 has all 256 bins <= 0"),
        (lambda x: x.index_fill_(0, torch.tensor([5]), -1.0), "spectrum 5 has all 256 bins <= 0"),
        (lambda x: torch.cat([x[:, :128], -x[:, 128:]], dim=1), "spectrum 0 has 128 of 256 bins <= 0"),
        (lambda x: x[:, :200], "spectra have 200 bins but the forward model has n_bins=256"),
        (lambda x: x[0], "must be 2-D"),
        (lambda x: x[None], "must be 2-D"),
        (lambda x: x[:0], "empty"),
    ],
)
def test_bad_spectra_are_refused(setup, make_bad, message: str) -> None:
    forward, test, _ = setup
    bad = make_bad(test.spectra[:8].clone())
    with pytest.raises(ValueError, match=message):
        fit_oracle(forward, bad)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"components": [3, 99]}, "out of range"),
        ({"components": [3, 3]}, "duplicates"),
        ({"components": []}, "components is empty"),
        ({"abundance_range": (1.0, 0.0)}, "abundance_range"),
        ({"abundance_range": (0.0, 2.0)}, "1 \\+ s\\*a"),
        ({"temperature_range_k": (0.0, 7000.0)}, "temperature_range_k"),
    ],
)
def test_bad_arguments_are_refused(setup, kwargs: dict, message: str) -> None:
    forward, test, _ = setup
    with pytest.raises(ValueError, match=message):
        fit_oracle(forward, test.spectra[:4], **kwargs)


def test_jacobian_matches_autograd(setup) -> None:
    """The closed-form Jacobian (continuum normalisation included) equals autograd of the physics."""
    from speccomp.spectra.oracle import _LogModel

    forward, _, tracked = setup
    temperature, abundances = _random_parameters(forward, 4, seed=3)
    for comps in (tracked, list(range(forward.n_components))):
        model = _LogModel(forward, comps)
        theta = torch.cat([temperature[:, None], abundances[:, comps]], dim=1)

        def log_clean(th: torch.Tensor, comps: list[int] = comps) -> torch.Tensor:
            """physics.log_clean of one θ = (T, a_comps), the other lines at 0, shape (n, L)."""
            a = torch.zeros(th.shape[0], forward.n_components, dtype=torch.float64)
            a[:, comps] = th[:, 1:]
            return forward.log_clean(th[:, 0], a)

        torch.testing.assert_close(model.value(theta), log_clean(theta), rtol=0, atol=1e-12)
        jac = model.jacobian(theta)  # (n, P, L)
        for i in range(theta.shape[0]):
            auto = torch.autograd.functional.jacobian(lambda th: log_clean(th[None])[0], theta[i])  # (L, P)
            torch.testing.assert_close(jac[i].T, auto, rtol=1e-9, atol=1e-12)


def test_crb_includes_temperature_as_nuisance(setup) -> None:
    """The bound is the diagonal of F⁻¹, at least 1 / F_ii, and scales with σ²."""
    forward, test, tracked = setup
    t, a, s = test.temperature_k[:32], test.abundances[:32], test.noise_sigma[:32]
    crb = cramer_rao_bound(forward, t, a, s, tracked)
    assert crb.shape == (32, 2) and bool((crb > 0).all())
    torch.testing.assert_close(cramer_rao_bound(forward, t, a, 2 * s, tracked), 4 * crb)
    only_a = cramer_rao_bound(forward, t, a, s, tracked[:1])
    assert bool((crb[:, 0] >= only_a[:, 0] * (1 - 1e-9)).all())  # another free line cannot help


def test_components_in_split() -> None:
    cfg = load_config(default_config_dir())
    splits = cfg.data.resolved_splits()
    labels = cfg.physics.labels
    assert components_in_split(splits["test"], labels) == sorted([labels.index("comp10"), labels.index("comp4")])
    assert components_in_split(splits["train"], labels) == sorted([labels.index("comp10"), labels.index("comp4")])
