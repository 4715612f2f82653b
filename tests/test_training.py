"""The training loop: checkpoints (when, what, how many, loadable), the logger, the trajectory
table, and a short training that beats the predict-the-mean baseline in distribution."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from speccomp.core.config import load_config
from speccomp.core.metrics import component_mse, component_r2
from speccomp.core.models import CHECKPOINT_FORMAT, load_member
from speccomp.core.training import checkpoint_steps, train
from speccomp.spectra.data import generate_datasets
from tests.conftest import ListLogger, tiny_config

# tiny config: 192 train / batch 32 = 6 steps per epoch, 2 epochs = 12 steps, ratio 0.25
TINY_STEPS = [0, 3, 6, 9, 12]


@pytest.fixture(scope="module")
def datasets():
    return generate_datasets(tiny_config(), 42)


@pytest.fixture(scope="module")
def trained_all(datasets, tmp_path_factory):
    """Two seeds, every checkpoint kept, a ListLogger."""
    out = tmp_path_factory.mktemp("all")
    logger = ListLogger()
    result = train(tiny_config("training.checkpoint_retention=all"), datasets, [11, 12], logger=logger, out_dir=out)
    return result, logger, out


# --------------------------------------------------------------------------------------------
# when
# --------------------------------------------------------------------------------------------
def test_default_ratio_gives_21_checkpoints_with_step_zero_and_the_last():
    cfg = load_config()
    total = cfg.training.epochs * math.ceil(cfg.data.splits["train"].n_samples / cfg.training.batch_size)
    assert total == 384
    steps = checkpoint_steps(cfg.training, total)
    assert len(steps) == 21 and steps[0] == 0 and steps[-1] == total
    assert steps == sorted(set(steps))
    np.testing.assert_allclose(np.diff(steps), total / 20, atol=1)


@pytest.mark.parametrize("total", [7, 13, 100, 1000, 1001])
def test_ratio_checkpoints_for_awkward_totals(total):
    steps = checkpoint_steps(load_config().training, total)
    assert steps[0] == 0 and steps[-1] == total and steps == sorted(set(steps))
    assert len(steps) == min(21, total + 1)


def test_checkpoint_every_n_steps():
    training = load_config(None, ["training.checkpoint_by=step", "training.checkpoint_every_n_step=40"]).training
    assert checkpoint_steps(training, 100) == [0, 40, 80, 100]
    assert checkpoint_steps(training, 120) == [0, 40, 80, 120]


def test_training_evaluates_at_every_checkpoint(trained_all):
    result, logger, _ = trained_all
    assert result.total_steps == 12
    assert logger.checkpoints == TINY_STEPS
    traj = result.trajectory
    assert len(traj) == 2 * len(TINY_STEPS)
    for seed in (11, 12):
        rows = traj[traj.seed == seed]
        assert rows["step"].tolist() == TINY_STEPS and rows["checkpoint"].tolist() == list(range(5))
        assert math.isnan(rows["train_loss"].iloc[0]) and rows["train_loss"].iloc[1:].notna().all()
        # test/mse/<label> of every checkpoint is logged at its step
        assert [s for s, _ in logger.history(seed, "test/mse/comp10")] == TINY_STEPS
        assert [s for s, _ in logger.history(seed, "val/mse/comp4")] == TINY_STEPS
        assert [s for s, _ in logger.history(seed, "train/loss")] == list(range(1, 13))
        assert [s for s, _ in logger.history(seed, "gap/comp10")] == [12]
    assert set(traj.columns) >= {"data_seed", "seed", "checkpoint", "step", "epoch", "train_loss", "val_loss",
                                 "test_loss", "test_mse_comp10", "test_mse_comp4"}


def test_final_metrics_are_consistent_with_the_predictions(trained_all, datasets):
    result, logger, _ = trained_all
    test = datasets["test"]
    for r in result.seeds:
        pred = torch.from_numpy(r.test_predictions)
        per = component_mse(pred, test.abundances)
        i10 = test.label_index("comp10")
        assert r.final["test/mse/comp10"] == pytest.approx(float(per[i10]), rel=1e-5)
        assert r.final["test/mse"] == pytest.approx(float(per.mean()), rel=1e-5)
        assert r.final["test/r2/comp10"] == pytest.approx(float(component_r2(pred, test.abundances)[i10]), rel=1e-5)
        # the logged trajectory's last row is the final model
        last = result.trajectory[(result.trajectory.seed == r.seed) & (result.trajectory.step == 12)].iloc[0]
        assert last["test_mse_comp10"] == pytest.approx(r.final["test/mse/comp10"], rel=1e-6)
        gap = r.final["test/mse_present/comp10"] / r.final["val/mse_present/comp10"]
        assert r.final["gap/comp10"] == pytest.approx(gap, rel=1e-6)
        mean = datasets["train"].abundances.mean(0)
        base = float(((mean[i10] - test.abundances[:, i10]) ** 2).mean())
        assert r.final["baseline/test/mse/comp10"] == pytest.approx(base, rel=1e-5)


# --------------------------------------------------------------------------------------------
# what is written
# --------------------------------------------------------------------------------------------
def test_retention_all_writes_one_file_per_checkpoint_per_seed(trained_all):
    result, _, out = trained_all
    for seed in (11, 12):
        files = sorted((out / "checkpoints" / f"seed-{seed}").glob("*.pt"))
        assert [f.name for f in files] == [f"step-{s:06d}.pt" for s in TINY_STEPS]
        assert result.by_seed(seed).checkpoint_paths == files


@pytest.mark.parametrize(("retention", "expected"), [("last", ["step-000012.pt"]), ("none", [])])
def test_retention_last_and_none(datasets, tmp_path, retention, expected):
    result = train(tiny_config(f"training.checkpoint_retention={retention}"), datasets, [11], out_dir=tmp_path)
    found = sorted(p.name for p in tmp_path.rglob("*.pt"))
    assert found == expected
    assert [p.name for p in result.by_seed(11).checkpoint_paths] == expected


def test_no_out_dir_writes_nothing(datasets, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = train(tiny_config("training.checkpoint_retention=all"), datasets, [11])
    assert result.by_seed(11).checkpoint_paths == [] and not any(tmp_path.iterdir())


def test_checkpoints_load_safely_and_rebuild_the_final_model(trained_all, datasets):
    result, _, _ = trained_all
    x = datasets["test"].spectra
    for r in result.seeds:
        payloads = [torch.load(p, map_location="cpu", weights_only=True) for p in r.checkpoint_paths]
        assert [p["step"] for p in payloads] == TINY_STEPS and {p["seed"] for p in payloads} == {r.seed}
        assert all(p["format"] == CHECKPOINT_FORMAT for p in payloads)
        # optimiser state in the last checkpoint only
        assert ["optimizer" in p for p in payloads] == [False] * 4 + [True]
        opt = payloads[-1]["optimizer"]
        assert opt["lr"] == pytest.approx(1e-3) and opt["kind"] == "adamw" and opt["step"] == TINY_STEPS[-1]
        moments = [v["exp_avg"] for v in opt.values() if isinstance(v, dict)]
        assert moments and all(m.shape[0] == 1 for m in moments) and any(bool(m.any()) for m in moments)
        # the last checkpoint is the final model ...
        member = load_member(r.checkpoint_paths[-1])
        with torch.no_grad():
            np.testing.assert_allclose(member(x).numpy(), r.test_predictions, rtol=0, atol=1e-6)
            np.testing.assert_allclose(r.model(x).numpy(), r.test_predictions, rtol=0, atol=1e-6)
        # ... and the first is the initialisation, which differs from it
        with torch.no_grad():
            first = load_member(r.checkpoint_paths[0])(x).numpy()
        assert not np.allclose(first, r.test_predictions, atol=1e-3)
        # and the payload form loads too
        assert torch.equal(load_member(payloads[-1]).net.layers[0].weight, member.net.layers[0].weight)


def test_checkpoints_of_different_seeds_differ(trained_all):
    result, _, _ = trained_all
    a = torch.load(result.by_seed(11).checkpoint_paths[0], weights_only=True)["state_dict"]
    b = torch.load(result.by_seed(12).checkpoint_paths[0], weights_only=True)["state_dict"]
    assert not torch.equal(a["layers.0.weight"], b["layers.0.weight"])


def test_load_member_refuses_foreign_files(tmp_path):
    path = tmp_path / "x.pt"
    torch.save({"state_dict": {}}, path)
    with pytest.raises(ValueError, match="not a speccomp checkpoint"):
        load_member(path)


@pytest.mark.parametrize("kind", ["log", "standardize", "log+standardize"])
def test_input_transform_statistics_travel_in_the_checkpoint(datasets, tmp_path, kind):
    result = train(
        tiny_config(f"training.input_transform={kind}", "training.checkpoint_retention=last"), datasets, [3], out_dir=tmp_path
    )
    r = result.by_seed(3)
    payload = torch.load(r.checkpoint_paths[-1], weights_only=True)
    assert payload["spec"]["input_transform"] == kind
    mean, std = payload["state_dict"]["transform.mean"], payload["state_dict"]["transform.std"]
    train_x = datasets["train"].spectra.double()
    z = torch.log(train_x.clamp_min(1e-6)) if kind.startswith("log") else train_x
    if "standardize" in kind:
        torch.testing.assert_close(mean[0, 0].double(), z.mean(0), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(std[0, 0].double(), z.std(0), rtol=1e-5, atol=1e-6)
    else:
        assert not bool(mean.any()) and bool((std == 1).all())
    member = load_member(r.checkpoint_paths[-1])
    assert member.net.transform.kind == kind
    with torch.no_grad():
        np.testing.assert_allclose(member(datasets["test"].spectra).numpy(), r.test_predictions, rtol=0, atol=1e-6)


def test_refuses_no_seeds_and_duplicate_seeds(datasets):
    with pytest.raises(ValueError, match="seeds"):
        train(tiny_config(), datasets, [])
    with pytest.raises(ValueError, match="duplicates"):
        train(tiny_config(), datasets, [1, 1])


def test_a_logger_exception_stops_training(datasets):
    class Prune(Exception):
        pass

    class Pruner(ListLogger):
        def checkpoint(self, step, metrics_by_seed):
            super().checkpoint(step, metrics_by_seed)
            if step >= 3:
                raise Prune

    logger = Pruner()
    with pytest.raises(Prune):
        train(tiny_config(), datasets, [1], logger=logger)
    assert logger.checkpoints == [0, 3]
    assert max(step for _, step, _ in logger.records) == 3


# --------------------------------------------------------------------------------------------
# learning
# --------------------------------------------------------------------------------------------
# Enough signal to learn from in about a second: 256 bins, 1024 training spectra, 5 epochs. The
# log-linear model (the physics is additive in log space) learns both tracked components robustly
# in 80 steps; the default MLP at this budget is too slow and seed-dependent on comp4 to be a test.
LEARN = [
    "physics.n_bins=256",
    "data.splits.train.n_samples=1024",
    "data.splits.test.n_samples=128",
    "data.validation.n_samples=512",
    "training.epochs=5",
    "training.checkpoint_ratio=0.5",
    "training.model_type=linear",
    "training.input_transform=log+standardize",
    "training.learning_rate=0.01",
]


@pytest.mark.parametrize("data_seed", [42, 7])
def test_short_training_beats_the_no_skill_baseline_in_distribution(data_seed):
    cfg = load_config(None, LEARN)
    data = generate_datasets(cfg, data_seed)
    result = train(cfg, data, [123, 124])
    for r in result.seeds:
        for label in ("comp10", "comp4"):
            baseline = r.final[f"baseline/val/mse/{label}"]
            assert 0.05 < baseline < 0.12  # Uniform(0,1) present one time in three
            assert r.final[f"val/mse/{label}"] < 0.85 * baseline, (r.seed, label, r.final[f"val/mse/{label}"], baseline)
        assert r.final["val/mse"] < result.trajectory.query(f"seed == {r.seed}")["val_loss"].iloc[0]
