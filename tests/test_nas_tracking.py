"""The `nas` entry point's MLflow records (in-process, tiny), and every bad input: one line, exit
code 2, no run left RUNNING. The `mlflow run -e nas` end-to-end check is in the slow tier."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from speccomp.core.config import default_config_dir, load_config
from tests.conftest import TINY_OVERRIDES, isolated_store
from tests.test_tracking import REPO, all_runs, history, runs_named

ITERATIONS = 12
TINY_SPACE = {
    "input_transforms": ["none", "log"],
    "activations": ["relu", "tanh"],
    "conv": {"positions": 1, "channels": 2, "ops": ["conv3", "identity"]},
    "dense": {"positions": 1, "ops": ["dense16", "identity", "zero"]},
    "search": {"architecture_search_iterations": 50, "batch_size": 16},
}
MODELS = ("nas", "default", "loglinear")
SEARCH_SEEDS = ("1", "2")
DRAWS = 3


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    with isolated_store(tmp_path_factory.mktemp("mlflow-nas")) as store:
        store.space = store.path / "space.yaml"
        store.space.write_text(yaml.safe_dump(TINY_SPACE))
        yield store


def run_nas(store, name: str, *extra: str) -> int:
    from speccomp_cli.main import main

    args = ["nas", "--seeds", "1,2", "--run-name", name, "--config-dir", str(default_config_dir()),
            "--space", str(store.space), "--architecture-search-iterations", str(ITERATIONS),
            "--search-seeds", ",".join(SEARCH_SEEDS), "--random-draws", str(DRAWS)]
    return main([*args, *[a for item in TINY_OVERRIDES for a in ("--set", item)], *extra])


@pytest.fixture(scope="module")
def nas_run(store):
    assert run_nas(store, "nas-full") == 0
    (parent,) = runs_named(store.client, "nas-full")
    kids = store.client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    return SimpleNamespace(parent=parent, children=kids, client=store.client)


def _searches(nas_run):
    return [k for k in nas_run.children if k.data.tags["speccomp.role"] == "nas-search"]


def _retrained(nas_run):
    return [k for k in nas_run.children if k.data.tags["speccomp.role"] == "nas-retrain"]


def test_parent_one_search_run_per_search_seed_and_one_child_per_model_and_seed(nas_run):
    parent = nas_run.parent
    assert parent.info.status == "FINISHED" and parent.data.tags["speccomp.role"] == "nas"
    assert sorted(k.data.tags["search_seed"] for k in _searches(nas_run)) == list(SEARCH_SEEDS)
    kids = _retrained(nas_run)
    expected = [("nas", s, seed) for s in SEARCH_SEEDS for seed in ("1", "2")]
    expected += [(m, "", seed) for m in MODELS[1:] for seed in ("1", "2")]
    got = [(k.data.tags["model"], k.data.tags.get("search_seed", ""), k.data.tags["seed"]) for k in kids
           if k.data.tags["model"] != "random"]
    assert sorted(got) == sorted(expected)
    draws = [k for k in kids if k.data.tags["model"] == "random"]
    # every draw on the first seed; the best one (tagged) on the other seed too
    assert sorted(k.data.tags["draw"] for k in draws if k.data.tags["seed"] == "1") == ["1", "2", "3"]
    (rest,) = [k for k in draws if k.data.tags["seed"] == "2"]
    best = [k for k in draws if k.data.tags.get("random.best") == "true"]
    assert {k.data.tags["draw"] for k in best} == {rest.data.tags["draw"]} and len(best) == 2
    first = {k.data.tags["draw"]: k.data.metrics["val/mse"] for k in draws if k.data.tags["seed"] == "1"}
    assert min(first, key=first.get) == rest.data.tags["draw"]  # chosen on in-distribution validation
    assert all(k.info.status == "FINISHED" for k in nas_run.children)
    types = {k.data.tags["model"]: k.data.params["training.model_type"] for k in kids}
    assert types == {"nas": "seq", "default": "mlp", "loglinear": "linear", "random": "seq"}
    for k in kids:  # every child trained and scored like a `main` seed run
        assert {"test/mse", "val/mse", "train/loss"} <= set(k.data.metrics)
        assert any(name.startswith("gap/") for name in k.data.metrics)


def test_search_metrics_every_iteration(nas_run):
    from speccomp.nas import load_space, metric_names

    client = nas_run.client
    space = load_space(nas_run.parent.data.params["nas.space"])
    names = metric_names(space)
    assert {"nas/tau", "nas/train_loss", "nas/val_loss", "nas/entropy"} <= set(names)
    warm = round(space.search.warmup_fraction * ITERATIONS)
    for search in _searches(nas_run):
        run_id = search.info.run_id
        curves = {name: history(client, run_id, name) for name in names}
        for name, curve in curves.items():
            steps = [step for step, _ in curve]
            assert steps == list(range(warm + 1 if name == "nas/val_loss" else 1, ITERATIONS + 1)), name
        taus = [v for _, v in curves["nas/tau"]]
        assert taus[0] == pytest.approx(10.0) and taus[-1] == pytest.approx(0.1) and taus == sorted(taus, reverse=True)
        for d in space.decisions:  # the probabilities of a decision sum to one at every step
            rows = zip(*[curves[f"nas/prob/{d.name}/{o.replace('+', '_')}"] for o in d.options], strict=True)
            assert all(math.isclose(sum(v for _, v in row), 1.0, rel_tol=1e-6) for row in rows)
        assert all(0 <= v <= math.log(3) + 1e-6 for _, v in curves["nas/entropy"])
        metrics = search.data.metrics
        assert 0 < metrics["nas/entropy_ratio"] <= 1.0 + 1e-6 and "nas/grad_snr/input" in metrics
        assert metrics["nas/gradient_steps"] == ITERATIONS + (ITERATIONS - warm) * space.search.alpha_samples


def test_architecture_artifact_is_a_preset_main_trains(nas_run, tmp_path):
    client, parent = nas_run.client, nas_run.parent
    path = Path(client.download_artifacts(parent.info.run_id, "nas/architecture.yaml", str(tmp_path)))
    preset = yaml.safe_load(path.read_text())
    cfg = load_config(default_config_dir(), list(TINY_OVERRIDES), presets=[path])
    assert cfg.training.model_type == "seq" and cfg.training.input_transform == parent.data.params["nas.arch.input"]
    assert preset["training"]["seq"]["layers"][-1]["op"] == {
        "dense16": "dense", "identity": "identity"}[parent.data.params["nas.arch.dense1"]]
    chosen = parent.data.params["nas.arch.search_seed"]
    nas_kids = [k for k in _retrained(nas_run) if k.data.tags["model"] == "nas" and k.data.tags["search_seed"] == chosen]
    assert all(k.data.params["training.input_transform"] == parent.data.params["nas.arch.input"] for k in nas_kids)
    tables = {Path(a.path).name for a in client.list_artifacts(parent.info.run_id, "nas")}
    assert {"architecture.yaml", "comparison.csv", "comparison_per_seed.csv", "ranks.csv", "paired_test.csv"} <= tables
    for search in _searches(nas_run):
        run_id = search.info.run_id
        assert {Path(a.path).name for a in client.list_artifacts(run_id, "plots")} == {"nas_probabilities.png"}
        assert {"architecture.yaml", "search_history.csv", "decisions.csv"} <= {
            Path(a.path).name for a in client.list_artifacts(run_id, "nas")}


def test_parent_compares_the_models_with_random_search_at_equal_budget(nas_run):
    metrics = nas_run.parent.data.metrics
    kids = _retrained(nas_run)
    for model in (*MODELS, "random"):
        mine = [k.data.metrics["test/mse/comp4"] for k in kids if k.data.tags["model"] == model
                and (model != "random" or k.data.tags.get("random.best") == "true")]
        assert metrics[f"compare/{model}/test/mse/comp4"] == pytest.approx(sum(mine) / len(mine))
        assert f"compare/{model}/std/skill/val/comp10" in metrics
        assert f"compare/{model}/oracle/efficiency/comp10" in metrics
    assert metrics["nas/random_draws"] == DRAWS
    steps = [s.data.metrics["nas/gradient_steps"] for s in _searches(nas_run)]
    assert metrics["nas/search_gradient_steps"] == sum(steps)
    assert 1 <= metrics["nas/rank/val"] <= DRAWS + 1 and 0 <= metrics["nas/better_fraction/val"] <= 1
    assert metrics["nas/paired/val/pairs"] == len(SEARCH_SEEDS) * 2


def test_the_default_draw_count_is_the_searches_budget(store):
    """Without --random-draws, random search gets the gradient steps the searches took."""
    from speccomp.nas.random_search import training_steps

    assert run_nas(store, "nas-auto", "--random-draws", "auto", "--search-seeds", "1") == 0
    (parent,) = runs_named(store.client, "nas-auto")
    cfg = load_config(default_config_dir(), list(TINY_OVERRIDES))
    n_train = cfg.data.resolved_splits()["train"].n_samples
    per_draw = training_steps(cfg, n_train)
    search_steps = parent.data.metrics["nas/search_gradient_steps"]
    assert parent.data.metrics["nas/random_draws"] == max(1, round(search_steps / per_draw))
    assert parent.data.metrics["nas/random_gradient_steps"] == parent.data.metrics["nas/random_draws"] * per_draw


BAD_ARGS = [
    (["--architecture-search-iterations", "0"], "--architecture-search-iterations: 0 is too small; allowed: an integer >= 1"),
    (["--architecture-search-iterations", "ten"], "--architecture-search-iterations: 'ten' is not an integer"),
    (["--architecture-learning-rate", "0"], "--architecture-learning-rate: '0' is out of range; allowed: a number > 0"),
    (["--architecture-learning-rate", "-0.01"], "--architecture-learning-rate: '-0.01' is out of range"),
    (["--architecture-learning-rate", "fast"], "--architecture-learning-rate: 'fast' is not a number"),
    (["--architecture-learning-rate", "nan"], "--architecture-learning-rate: 'nan' is out of range"),
    (["--seeds", "1,,2"], "seeds: empty item"),
    (["--random-draws", "0"], "--random-draws: 0 is too small; allowed: an integer >= 1"),
    (["--random-draws", "-2"], "--random-draws: -2 is too small; allowed: an integer >= 1"),
    (["--search-seeds", ""], "--search-seeds: empty; allowed: comma-separated non-negative integers"),
    (["--search-seeds", "1,,2"], "--search-seeds: empty item"),
    (["--search-seeds", "4,4"], "--search-seeds: 4 appears twice"),
    (["--space", "nowhere.yaml"], "space: nowhere.yaml: file not found"),
    (["--preset", "nosuch"], "preset: nosuch: no such file or preset"),
    (["--set", "data.validation.n_samples=0"], "data.validation.n_samples: is 0"),
]
BAD_SPACES = [
    ({"dense": {"positions": 1, "ops": []}}, "dense.ops: empty candidate list"),
    ({"dense": {"positions": 1, "ops": ["dense16", "attention"]}}, "dense.ops: unknown op 'attention'"),
    ({"search": {"tau_min": 5.0, "tau_max": 1.0}}, "search.tau_min: must be <= tau_max (1.0), got 5.0"),
    ({"search": {"tau_min": -0.1}}, "search.tau_min: Input should be greater than 0"),
    ({"search": {"architecture_search_iterations": -3}}, "search.architecture_search_iterations: Input should be greater than 0"),
    ({"search": {"architecture_learning_rate": "0.1x"}}, "search.architecture_learning_rate: Input should be a valid number"),
    ({"conv": {"positions": 0}, "dense": {"positions": 0}}, "dense.positions: conv.positions + dense.positions is 0"),
    ({"conv": {"pool": 256}}, "conv.positions: 1 pooling stages of 256 leave no bins of physics.n_bins=128"),
]


def _assert_refused(store, capsys, code: int, text: str, before: set[str], space: Path | None = None) -> None:
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: ") and text in err, err
    if space is not None:
        assert err.startswith(f"error: {space}: ")
    assert {r.info.run_id for r in all_runs(store.client)} == before  # nothing created, nothing RUNNING


@pytest.mark.parametrize(("extra", "text"), BAD_ARGS, ids=[" ".join(a) for a, _ in BAD_ARGS])
def test_bad_parameter_is_one_line_exit_2_and_no_run(store, capsys, extra, text):
    before = {r.info.run_id for r in all_runs(store.client)}
    _assert_refused(store, capsys, run_nas(store, "bad", *extra), text, before)


@pytest.mark.parametrize(("edit", "text"), BAD_SPACES, ids=[t.split(":")[0] + ":" + t.split(":")[1][:14] for _, t in BAD_SPACES])
def test_bad_space_file_is_one_line_naming_file_and_key(store, capsys, tmp_path, edit, text):
    raw = {**TINY_SPACE, **{k: {**TINY_SPACE.get(k, {}), **v} for k, v in edit.items()}}
    path = tmp_path / "bad-space.yaml"
    path.write_text(yaml.safe_dump(raw))
    before = {r.info.run_id for r in all_runs(store.client)}
    _assert_refused(store, capsys, run_nas(store, "bad", "--space", str(path)), text, before, space=path)


def test_refusal_ends_the_attached_run_failed(store, capsys, monkeypatch):
    """Under `mlflow run` the run exists before the program starts: it ends FAILED with the line."""
    experiment = store.client.get_experiment_by_name("speccomp") or store.client.get_experiment(
        store.client.create_experiment("speccomp"))
    run = store.client.create_run(experiment.experiment_id)
    monkeypatch.setenv("MLFLOW_RUN_ID", run.info.run_id)
    assert run_nas(store, "attached", "--architecture-learning-rate", "-1") == 2
    assert "--architecture-learning-rate" in capsys.readouterr().err
    done = store.client.get_run(run.info.run_id)
    assert done.info.status == "FAILED" and done.data.tags["error"].startswith("--architecture-learning-rate: '-1'")
    assert done.data.metrics == {} and not any(r.info.status == "RUNNING" for r in all_runs(store.client))


@pytest.mark.slow
def test_mlflow_run_nas_end_to_end(tmp_path):
    """`mlflow run . -e nas` as a user runs it (tiny sizes), and a refused parameter through it."""
    bin_dir = Path(sys.executable).parent
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(MLFLOW_TRACKING_URI=uri, PYTHONPATH=str(REPO), PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
               MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false")
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(TINY_SPACE))

    def mlflow_run(*params: str) -> subprocess.CompletedProcess:
        args = [str(bin_dir / "mlflow"), "run", str(REPO), "--env-manager", "local", "-e", "nas"]
        for p in params:
            args += ["-P", p]
        return subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)

    done = mlflow_run("seeds=1,2", f"space={space}", "architecture_search_iterations=10", "search_seeds=1",
                      "random_draws=2",
                      f"overrides={' '.join(TINY_OVERRIDES)}", f"config_dir={default_config_dir()}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "derived architecture" in done.stdout and "loglinear" in done.stdout
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    runs = all_runs(client)
    (parent,) = [r for r in runs if r.data.tags.get("mlflow.project.entryPoint") == "nas"]
    assert parent.info.status == "FINISHED"
    assert parent.info.run_name == "nas spectra 10 it seeds 1,2"  # renamed from `mlflow run`'s random name
    kids = [r for r in runs if r.info.run_id != parent.info.run_id]
    assert sum(r.data.tags.get("speccomp.role") == "nas-search" for r in kids) == 1
    assert {r.data.tags.get("model") for r in kids if r.data.tags.get("speccomp.role") == "nas-retrain"} == {
        *MODELS, "random"}

    bad = mlflow_run("architecture_learning_rate=abc", f"space={space}")
    assert bad.returncode != 0 and "error: --architecture-learning-rate: 'abc' is not a number" in bad.stderr
    failed = [r for r in all_runs(client) if r.info.run_id not in {x.info.run_id for x in runs}]
    assert [r.info.status for r in failed] == ["FAILED"]
