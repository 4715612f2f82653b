"""A third domain plugs in without editing `core/`, `nas/` or `meta/`: a linear-regression task of
a few lines, registered here with `register_task`, is found by the core's lookups (by config class,
by folder, by a resolved `config.yaml`), trained by the shared loop and run as a whole experiment
(data, training, metrics, tables, figures, reading its folder back).

Its domain object for the search and the meta-learner (`ToySearch`, a `MetaDomain` registered with
`register_search_domain`) overrides only what the defaults cannot know: the features a config
implies, which splits are its own, its tasks (one feature held out of training each) and their
splits. With it the architecture search runs on the toy domain (search, derive, retrain the derived
`seq` model with the shared loop) and so does the meta-learner (plan, meta-train, stage two and the
supernet and default baselines on every meta-test task, the comparison table), each at tiny size."""

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
from speccomp.meta.domain import MetaDomain
from speccomp.nas.domain import SEARCH_DOMAINS, register_search_domain

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

    def generate(self, cfg: ToyConfig, data_seed: int, held: int | None = None) -> dict[str, ToySplit]:
        """train, val and test splits; with `held` = j, feature j is 0 in train and val (the task's
        novel part, present in every test row)."""
        n_features = int(cfg.toy["n_features"])
        w = torch.randn(n_features, 1, generator=torch_generator(data_seed, "toy", "w"))
        out = {}
        for name in ("train", "val", "test"):
            n = int(cfg.toy["n_test" if name != "train" else "n_train"])
            g = torch_generator(data_seed, "toy", name)
            x = torch.randn(n, n_features, generator=g)
            if held is not None and name != "test":
                x[:, held] = 0.0
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


@dataclass(frozen=True)
class HeldFeature:
    """A toy meta-learning task: feature `j` never varies in training, is always on in its test."""

    j: int

    @property
    def name(self) -> str:
        return f"x{self.j}"


class ToySearch(MetaDomain):
    """The toy domain for the search and the meta-learner: rows (N, F), targets (N, 1) and the MSE
    are the interface's defaults, so is the rest (no floor, `val/mse` and `test/mse` as scores)."""

    name = "toy"

    def features_of(self, cfg: ToyConfig) -> int:
        return int(cfg.toy["n_features"])

    def owns_split(self, split: Any) -> bool:
        return isinstance(split, ToySplit)

    def all_tasks(self, cfg: ToyConfig) -> list[HeldFeature]:
        return [HeldFeature(j) for j in range(int(cfg.toy["n_features"]))]

    def task_splits(self, cfg: ToyConfig, meta: Any, task: HeldFeature, final: bool) -> dict[str, ToySplit]:
        return ToyTask().generate(cfg, meta.experiment.data_seed + task.j, held=task.j)


@pytest.fixture
def toy():
    task = register_task(ToyTask())
    register_search_domain(ToySearch())
    yield task
    TASKS.pop("toy", None)
    SEARCH_DOMAINS.pop("toy", None)


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


TOY_SPACE = {"input_transforms": ["none", "standardize"], "activations": ["relu", "tanh"], "conv": {"positions": 0},
             "dense": {"positions": 1, "ops": ["dense16", "identity"]},
             "search": {"architecture_search_iterations": 40, "batch_size": 32, "warmup_fraction": 0.25}}


def test_the_architecture_search_runs_on_the_toy_domain(toy):
    """Search (the domain found from the splits), derive the argmax architecture as a `seq` preset
    and retrain it with the shared loop: the derived model learns the linear map."""
    from speccomp.nas import run_search, space_from_dict
    from speccomp.nas.domain import domain_for_config

    cfg = ToyConfig()
    data = toy.generate(cfg, data_seed=5)
    space = space_from_dict(TOY_SPACE)
    result = run_search(space, data["train"], data["val"], seed=0)
    assert result.domain is SEARCH_DOMAINS["toy"] is domain_for_config(cfg)
    history = result.history[:, 1].numpy()  # nas/train_loss per iteration
    assert history[-10:].mean() < history[:10].mean()
    preset = result.preset
    assert preset["training"]["model_type"] == "seq" and preset["training"]["input_transform"] in ("none", "standardize")
    derived = ToyConfig(training=TrainingConfig(**{**cfg.training.model_dump(), **preset["training"]}))
    retrained = train(derived, data, SEEDS)
    assert all(r.final["test/r2"] > 0.9 for r in retrained.seeds)
    again = run_search(space, data["train"], data["val"], seed=0)
    assert torch.equal(again.alpha_trajectory, result.alpha_trajectory)  # seeded, exactly


def _toy_meta_config(tmp_path: Path) -> Path:
    (tmp_path / "toy").mkdir()
    (tmp_path / "toy" / "toy.yaml").write_text("n_features: 6\nn_train: 96\nn_test: 48\n")
    # no standardize: the held-out feature is constant in training, and dividing by its std (1e-6)
    # sends its test values to 1e6
    (tmp_path / "space.yaml").write_text(yaml.safe_dump({**TOY_SPACE, "input_transforms": ["none"]}))
    meta = {
        "settings": {"num_meta_training_tasks": 4, "num_meta_testing_tasks": 2, "architecture_search_iterations": 8,
                     "meta_learning_rate": 0.01, "architecture_learning_rate": 0.1},
        "space": str(tmp_path / "space.yaml"),
        "experiment": {"config_dir": str(tmp_path / "toy"), "seeds": [1]},
        "inner": {"steps": 2, "batch_size": 16, "query_batch_size": 16},
        "adapt": {"candidates": 1, "candidate_steps": 3, "search_steps": 3, "finetune_steps": 6, "batch_size": 16},
        "baselines": {"methods": ["meta-weights", "meta-arch", "default", "prior", "nas"], "nas_iterations": 4},
    }
    path = tmp_path / "toy_meta.yaml"
    path.write_text(yaml.safe_dump(meta))
    return path


def test_the_meta_learner_runs_on_the_toy_domain(toy, tmp_path, monkeypatch):
    """Plan (tasks drawn by the interface's default draw), meta-train and meta-test with every
    supernet baseline and the domain's default model; the table compares them on `test_mse`."""
    from speccomp.meta.compare import comparison_table
    from speccomp.meta.run import plan_meta, run_meta
    from speccomp.meta.settings import ENV_NAMES

    for name in ENV_NAMES.values():
        monkeypatch.delenv(name, raising=False)
    config = _toy_meta_config(tmp_path)
    plan = plan_meta(meta_config=config, env_file=None)
    assert plan.domain is SEARCH_DOMAINS["toy"]
    train_tasks, test_tasks = plan.tasks.meta_train, plan.tasks.meta_test
    assert len(train_tasks) == 4 and len(test_tasks) == 2 and not set(train_tasks) & set(test_tasks)
    outcome = run_meta(plan)
    assert len(outcome.training.records) == 8
    per_pair = outcome.per_pair
    methods = {"meta", "meta-weights", "meta-arch", "prior", "nas", "default"}
    assert set(per_pair.method) == methods and set(per_pair.pair) == {t.name for t in test_tasks}
    assert np.isfinite(per_pair["test_mse"]).all() and (per_pair["test_mse"] > 0).all()
    assert (per_pair["test_mse"] == per_pair["test/mse"]).all()
    table = comparison_table(per_pair)
    assert set(table.method) == methods and (table.n_pairs == 2).all()
    again = run_meta(plan_meta(meta_config=config, env_file=None))
    assert again.per_pair["test_mse"].tolist() == per_pair["test_mse"].tolist()  # seeded, exactly
