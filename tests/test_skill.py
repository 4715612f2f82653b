"""Skill-aware reading of the compositional gap: in-distribution skill (R² where present on
validation), combination skill (R² where present on test), transfer = their ratio, and the
*not learned* verdict; and the closed-form ridge reference."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from speccomp.core.metrics import final_metrics, is_learned, not_learned, present_r2, transfer
from speccomp.core.training import train
from speccomp.spectra.data import generate_datasets
from speccomp.spectra.physics import ForwardModel
from tests.conftest import ListLogger, tiny_config

TRACKED = ["comp10", "comp4"]


@pytest.fixture(scope="module")
def datasets():
    return generate_datasets(tiny_config(), 42)


def _finals(datasets, val_pred, test_pred, **kw):
    return final_metrics(val_pred.unsqueeze(0), test_pred.unsqueeze(0), datasets["val"], datasets["test"],
                         datasets["train"], TRACKED, **kw)[0]


def test_a_model_that_predicts_the_training_mean_is_not_learned_and_has_no_transfer(datasets):
    train_mean = datasets["train"].abundances.mean(0)
    val_pred = train_mean.expand_as(datasets["val"].abundances)
    test_pred = train_mean.expand_as(datasets["test"].abundances)
    final = _finals(datasets, val_pred, test_pred)
    for label in TRACKED:
        assert final[f"skill/val/{label}"] < 0  # the mean of all samples, pulled towards 0
        assert f"transfer/{label}" not in final
        assert math.isfinite(final[f"gap/{label}"])  # the old measure still reads "about 1"
    assert not_learned(final, TRACKED) == TRACKED


def test_a_model_that_predicts_the_true_abundances_transfers_fully(datasets):
    final = _finals(datasets, datasets["val"].abundances, datasets["test"].abundances)
    for label in TRACKED:
        assert final[f"skill/val/{label}"] == 1.0 and final[f"skill/test/{label}"] == 1.0
        assert final[f"transfer/{label}"] == 1.0
    assert not_learned(final, TRACKED) == []


def test_exact_in_distribution_but_the_mean_on_the_combination_transfers_nothing(datasets):
    test = datasets["test"]
    present_mean = (test.abundances * test.present).sum(0) / test.present.sum(0)
    final = _finals(datasets, datasets["val"].abundances, present_mean.expand_as(test.abundances))
    for label in TRACKED:
        assert final[f"skill/val/{label}"] == 1.0
        assert final[f"transfer/{label}"] == pytest.approx(0.0, abs=1e-6)
    assert not_learned(final, TRACKED) == []


@pytest.mark.parametrize(("skill", "learned"), [(0.6, True), (0.4, False)])
def test_the_threshold_decides_on_in_distribution_skill(datasets, skill, learned):
    val, test = datasets["val"], datasets["test"]
    # shrink towards the present mean by k: R² where present = 1 − (1 − k)²
    k = 1.0 - math.sqrt(1.0 - skill)
    mean = (val.abundances * val.present).sum(0) / val.present.sum(0)
    shrunk = torch.where(val.present, mean + k * (val.abundances - mean), val.abundances)
    final = _finals(datasets, shrunk, test.abundances)
    assert final["skill/val/comp10"] == pytest.approx(skill, abs=1e-5)
    assert ("transfer/comp10" in final) == learned
    if learned:
        assert final["transfer/comp10"] == pytest.approx(1.0 / skill, rel=1e-5)
        strict = _finals(datasets, shrunk, test.abundances, learned_skill=0.9)
        assert "transfer/comp10" not in strict and not_learned(strict, TRACKED, 0.9) == TRACKED


def test_present_r2_ignores_absent_rows_and_is_nan_without_any():
    target = torch.tensor([[0.2, 0.0], [0.8, 0.0], [0.0, 0.0], [0.5, 0.0]])
    mask = target > 0
    pred = target.clone()
    pred[2, 0] = 5.0  # an absent row: must not count
    r2 = present_r2(pred, target, mask)
    assert r2[0] == 1.0 and math.isnan(r2[1])


def test_transfer_and_learned_helpers():
    assert transfer(0.45, 0.9) == pytest.approx(0.5)
    assert math.isnan(transfer(0.9, 0.4)) and math.isnan(transfer(0.9, math.nan))
    assert is_learned(0.5) and not is_learned(0.49) and not is_learned(math.nan)
    assert not_learned({"skill/test/comp4": 0.9}, ["comp4"]) is None  # no validation split: no verdict


def test_training_logs_skill_transfer_and_present_mse_at_every_checkpoint(datasets):
    logger = ListLogger()
    result = train(tiny_config(), datasets, [11], logger=logger)
    steps = sorted({s for s, _ in logger.history(11, "test/mse")})
    for label in TRACKED:
        assert [s for s, _ in logger.history(11, f"val/mse_present/{label}")] == steps
        assert [s for s, _ in logger.history(11, f"skill/val/{label}")] == [steps[-1]]
    final = result.by_seed(11).final
    assert final["gap/comp10"] == pytest.approx(final["test/mse_present/comp10"] / final["val/mse_present/comp10"])
    traj = result.trajectory
    assert {"val_mse_present_comp10", "test_mse_present_comp4"} <= set(traj.columns)
    last = traj[traj.step == steps[-1]].iloc[0]
    assert last["val_mse_present_comp10"] == pytest.approx(final["val/mse_present/comp10"])


# --------------------------------------------------------------------------------------------
# the closed-form ridge reference
# --------------------------------------------------------------------------------------------
def _linear_in_log(split, forward: ForwardModel):
    """The split's spectra rebuilt noise-free with components that add exactly in log space."""
    scaled = split.abundances.to(torch.float64) * forward.strengths
    log_spectra = forward.log_continuum(split.temperature_k) + scaled @ forward.profiles
    return dataclasses.replace(split, spectra=torch.exp(log_spectra).to(torch.float32))


def test_ridge_on_noiseless_spectra_recovers_linear_in_log_targets():
    cfg = tiny_config("training.model_type=ridge", "training.input_transform=log")
    forward = ForwardModel.from_config(cfg.physics)
    data = {k: _linear_in_log(v, forward) for k, v in generate_datasets(cfg, 42).items()}
    result = train(cfg, data, [11])
    final = result.by_seed(11).final
    for label in TRACKED:
        assert final[f"skill/val/{label}"] > 0.999 and final[f"skill/test/{label}"] > 0.999
        assert final[f"transfer/{label}"] == pytest.approx(1.0, abs=2e-3)
        assert final[f"ridge/lambda/{label}"] > 0


def test_ridge_trains_in_one_solve_through_train_and_every_seed_gets_the_same_model(datasets):
    logger = ListLogger()
    result = train(tiny_config("training.model_type=ridge", "training.input_transform=log"), datasets, [1, 2],
                   logger=logger)
    assert result.total_steps == 1 and result.trajectory["step"].tolist() == [0, 0, 1, 1]
    assert [s for s, _ in logger.history(1, "train/loss")] == [1]
    a, b = (result.by_seed(s) for s in (1, 2))
    assert torch.equal(a.model.net.layer.weight, b.model.net.layer.weight)
    assert a.final["test/mse/comp10"] < 0.5 * a.final["baseline/test/mse/comp10"]


def test_ridge_needs_a_validation_split(datasets):
    cfg = tiny_config("training.model_type=ridge")
    with pytest.raises(ValueError, match="validation"):
        train(cfg, {k: v for k, v in datasets.items() if k != "val"}, [1])
