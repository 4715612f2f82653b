"""A third domain plugs in without editing the core: a linear-regression task of a few lines,
registered with `register_task`, is found by the core's lookups (by config class, by folder, by a
resolved `config.yaml`), trained by the shared loop and run as a whole experiment (data, training,
metrics, tables, figures, reading its folder back).

Architecture search and the meta-learner on this domain (`nas`, `meta`) need the search's and the
meta-learner's domain object, which is being rewritten; their part of this test comes with it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from pydantic import BaseModel, ConfigDict

from speccomp.core.config import TrainingConfig
from speccomp.core.experiment import read_config, redraw, run_experiment
from speccomp.core.models import ModelSpec
from speccomp.core.seeding import torch_generator
from speccomp.core.splits import tensor_digest
from speccomp.core.task import TASKS, Task, get_task, register_task, task_for, task_for_dir, task_for_raw
from speccomp.core.training import train

SEEDS = [1, 2]


class ToyConfig(BaseModel):
    """y = x · w + noise, with w drawn from the data seed; `toy.yaml` marks a folder of this domain."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    DOMAIN: ClassVar[str] = "toy"
    toy: dict[str, float] = {"n_features": 6, "n_train": 256, "n_test": 128, "noise": 0.01}
    training: TrainingConfig = TrainingConfig(model_type="linear", epochs=20, batch_size=32, learning_rate=0.05,
                                              checkpoint_ratio=0.25)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


@dataclass
class ToySplit:
    name: str
    inputs: torch.Tensor
    targets: torch.Tensor
    data_seed: int

    @property
    def digest(self) -> str:
        return tensor_digest(self.inputs, self.targets)

    def __len__(self) -> int:
        return self.inputs.shape[0]


class ToyTask(Task):
    name = "toy"
    section_files = {"toy": "toy.yaml"}

    def owns_dir(self, folder: Path) -> bool:
        return (folder / "toy.yaml").is_file()

    def owns_raw(self, raw: dict[str, Any]) -> bool:
        return "toy" in raw

    def schema(self) -> type[BaseModel]:
        return ToyConfig

    def check_config_dir(self, folder: Path) -> None:
        pass

    def load_config(self, config_dir, overrides=(), presets=()) -> ToyConfig:
        raw = yaml.safe_load((Path(config_dir) / "toy.yaml").read_text()) if config_dir else {}
        return ToyConfig(toy={**ToyConfig().toy, **(raw or {})})

    def config_from_dict(self, raw, overrides=(), paths=None) -> ToyConfig:
        return ToyConfig(**raw)

    def generate(self, cfg: ToyConfig, data_seed: int) -> dict[str, ToySplit]:
        n_features = int(cfg.toy["n_features"])
        w = torch.randn(n_features, 1, generator=torch_generator(data_seed, "toy", "w"))
        out = {}
        for name in ("train", "val", "test"):
            n = int(cfg.toy["n_test" if name != "train" else "n_train"])
            g = torch_generator(data_seed, "toy", name)
            x = torch.randn(n, n_features, generator=g)
            out[name] = ToySplit(name, x, x @ w + cfg.toy["noise"] * torch.randn(n, 1, generator=g), data_seed)
        return out

    def model_spec(self, cfg: ToyConfig, train: ToySplit) -> ModelSpec:
        return ModelSpec.from_training(cfg.training, train.inputs.shape[1], train.targets.shape[1])

    def loss_fn(self, cfg: ToyConfig):
        return lambda pred, target: ((pred - target) ** 2).mean(dim=(1, 2))

    def split_metrics(self, cfg, split_name, pred, split) -> list[dict[str, float]]:
        mse = ((pred - split.targets) ** 2).mean(dim=(1, 2))
        return [{f"{split_name}/mse": float(m)} for m in mse]

    def final_metrics(self, cfg, preds, datasets) -> list[dict[str, float]]:
        test = datasets["test"].targets
        var = float(((test - test.mean()) ** 2).mean())
        return [{"test/r2": 1.0 - float(((p - test) ** 2).mean()) / var} for p in preds["test"]]

    def trajectory_columns(self, cfg, metrics) -> dict[str, float]:
        return {"test_mse": metrics["test/mse"]}

    def figures(self, cfg, datasets, trajectory: pd.DataFrame, predictions, plots_dir: Path, floor=None):
        plots_dir.mkdir(parents=True, exist_ok=True)
        path = plots_dir / "toy_fit.csv"  # a "figure" of the toy domain: predicted against true
        pd.DataFrame({"true": datasets["test"].targets[:, 0].numpy(),
                      **{f"seed-{s}": p[:, 0] for s, p in sorted(predictions.items())}}).to_csv(path, index=False)
        return {"toy_fit": path}

    def tags(self, cfg) -> dict[str, str]:
        return {"domain": "toy"}


@pytest.fixture
def toy():
    task = register_task(ToyTask())
    yield task
    TASKS.pop("toy", None)


def test_the_core_finds_a_registered_domain(toy, tmp_path):
    (tmp_path / "toy.yaml").write_text("n_features: 4\n")
    assert get_task("toy") is toy
    cfg = task_for_dir(tmp_path).load_config(tmp_path)
    assert task_for(cfg) is toy and cfg.toy["n_features"] == 4
    assert task_for_raw(cfg.to_dict()) is toy
    assert task_for_dir("configs/raven").name == "matrices"  # the others are still found
    assert task_for_dir(None).name == "spectra"


def test_the_shared_loop_trains_the_toy_domain(toy):
    cfg = ToyConfig()
    data = toy.generate(cfg, data_seed=7)
    result = train(cfg, data, SEEDS)
    first = result.trajectory[result.trajectory.checkpoint == 0].set_index("seed")["test_mse"]
    for r in result.seeds:
        assert r.final["test/mse"] < 0.05 * first[r.seed]  # a linear model learns a linear map
        assert r.final["test/r2"] > 0.95
        assert r.test_predictions.shape == (len(data["test"]), 1)
    again = train(cfg, toy.generate(cfg, data_seed=7), SEEDS)
    assert [r.final for r in again.seeds] == [r.final for r in result.seeds]  # seeded, exactly


def test_a_whole_experiment_runs_on_the_toy_domain_and_reads_back(toy, tmp_path):
    res = run_experiment(ToyConfig(), data_seed=3, seeds=SEEDS, out_dir=tmp_path)
    summary = pd.read_csv(tmp_path / "summary.csv")
    assert list(summary.seed) == SEEDS and (summary["test/r2"] > 0.95).all()
    fit = pd.read_csv(tmp_path / "plots" / "toy_fit.csv")
    assert np.allclose(fit["seed-1"], res.result.seeds[0].test_predictions[:, 0], atol=1e-6)
    assert task_for(read_config(tmp_path / "config.yaml")) is toy  # found from its resolved config
    assert set(redraw(tmp_path)) == {"toy_fit"}


def test_a_study_asks_the_domain_for_its_objectives(toy):
    from speccomp.core.config import ConfigError
    from study.objective import check_measure, objective_values

    spectra, matrices = get_task("spectra"), get_task("matrices")
    measures = {"test/mse/tracked": 0.1, "gap/tracked": 1.2, "transfer/tracked": 0.9,
                "val/mse_present/tracked": 0.05, "test/mse_present/tracked": 0.2,
                "test/error": 0.7, "val/error": 0.6, "gap/acc": 0.1}
    assert objective_values(measures, "test_mse", spectra) == (0.1,) == objective_values(measures, "test", spectra)
    assert objective_values(measures, "pareto", spectra) == (0.05, 0.2)
    assert objective_values(measures, "test", matrices) == (0.7,)
    assert objective_values(measures, "pareto", matrices) == (0.6, 0.7)
    check_measure("transfer", "spectra")
    with pytest.raises(ConfigError, match="^objective: transfer is a spectra measure; allowed for the matrices "
                                          "domain: gap, pareto, test$"):
        check_measure("transfer", "matrices")
    with pytest.raises(ConfigError, match="^objective: gap is a matrices or spectra measure; allowed for the toy domain: $"):
        check_measure("gap", "toy")  # the toy domain defines no study objective
