"""The records a tracked meta run must leave (in process, tiny), and every bad setting refused with
one line and exit code 2 before any run is created."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from speccomp.meta.settings import ENV_NAMES
from speccomp_cli.main import main as cli
from tests.conftest import isolated_store


def main(argv: list[str]) -> int:
    """`speccomp meta ARGS` in process."""
    return cli(["meta", *argv])

TINY = [
    "--config", "smoke",
    "--num_meta_training_tasks", "4", "--num-meta-testing-tasks", "2", "--architecture_search_iterations", "6",
    "--overrides",
    "experiment.overrides=[physics.n_bins=64] tasks.n_single=12 tasks.n_empty=12 tasks.n_val_single=6 "
    "tasks.n_query=8 tasks.n_test=16 adapt.candidates=1 adapt.candidate_steps=2 adapt.search_steps=2 "
    "adapt.finetune_steps=3 baselines.nas_iterations=2 log_every=4",
    "--threads", "1",
]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    with isolated_store(tmp_path_factory.mktemp("mlflow-meta"), unset=ENV_NAMES.values()) as store:
        store.client.search_experiments()
        yield store.client


def all_runs(client):
    exps = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(exps, max_results=5000) if exps else []


@pytest.fixture(scope="module")
def meta_run(store):
    assert main([*TINY, "--run-name", "tiny-meta"]) == 0
    parent = next(r for r in all_runs(store) if r.info.run_name == "tiny-meta")
    return store, parent


@pytest.mark.slow
def test_parent_records(meta_run):
    client, parent = meta_run
    assert parent.info.status == "FINISHED"
    params, tags = parent.data.params, parent.data.tags
    assert params["meta.num_meta_training_tasks"] == "4"
    assert params["meta.num_meta_training_tasks.source"] == "flag --num_meta_training_tasks"
    assert params["meta.num_meta_testing_tasks.source"] == "flag --num-meta-testing-tasks" or \
        params["meta.num_meta_testing_tasks.source"] == "flag --num_meta_testing_tasks"
    assert params["meta.task_generator_seed.source"] == "default"
    assert params["meta.meta_learning_rate"] == "0.001"
    assert len(tags["meta.pairs.test"].split(",")) == 2 and len(tags["meta.pairs.train"].split(",")) == 4
    for name in ("meta/elbo", "meta/query_loss", "meta/kl"):
        history = client.get_metric_history(parent.info.run_id, name)
        assert [m.step for m in history] == list(range(1, 7)), name
    probs = [k for k in parent.data.metrics if k.startswith("meta/prob/")]
    assert "meta/prob/input/log" in probs and len(probs) == 34  # the default space: 34 logits
    last = {k: parent.data.metrics[k] for k in probs if k.startswith("meta/prob/dense1/")}
    assert sum(last.values()) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.slow
def test_parent_artifacts(meta_run, tmp_path):
    client, parent = meta_run
    rid = parent.info.run_id
    names = {a.path for a in client.list_artifacts(rid, "meta")} | {a.path for a in client.list_artifacts(rid, "plots")}
    for name in ("meta/posterior.pt", "meta/comparison.csv", "meta/tasks.json", "meta/architecture_map.yaml",
                 "plots/meta_posterior.png", "plots/meta_test.png"):
        assert name in names
    path = client.download_artifacts(rid, "meta/posterior.pt", str(tmp_path))
    state = torch.load(path, weights_only=True)
    assert state["mean"].shape == state["std"].shape == (34,) and (state["std"] > 0).all()
    table = pd.read_csv(client.download_artifacts(rid, "meta/comparison.csv", str(tmp_path)))
    assert list(table.method) == ["meta", "meta-weights", "meta-arch", "prior", "nas", "default", "loglinear", "oracle"]
    assert (table.n_pairs == 2).all()
    assert table.set_index("method").loc["oracle", "median_ratio_to_oracle"] == pytest.approx(1.0)


@pytest.mark.slow
def test_one_child_per_pair_and_method(meta_run):
    client, parent = meta_run
    children = [r for r in all_runs(client) if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    pairs = parent.data.tags["meta.pairs.test"].split(",")
    methods = {"meta", "meta-weights", "meta-arch", "prior", "nas", "default", "loglinear", "oracle"}
    assert {(r.data.tags["pair"], r.data.tags["method"]) for r in children} == {(p, m) for p in pairs for m in methods}
    assert len(children) == len(pairs) * len(methods)
    for r in children:
        assert r.info.status == "FINISHED"
        a, b = r.data.tags["pair"].split("+")
        for label in (a, b):
            assert f"test/mse/{label}" in r.data.metrics and f"oracle/efficiency/{label}" in r.data.metrics
            if r.data.tags["method"] != "oracle":
                assert f"gap/{label}" in r.data.metrics
    oracle = [r for r in children if r.data.tags["method"] == "oracle"]
    assert all(r.data.metrics["oracle/ratio"] == pytest.approx(1.0) for r in oracle)


@pytest.mark.parametrize(
    ("args", "env", "dotenv", "expected"),
    [
        (["--num_meta_training_tasks", "0"], {}, None, "NUM_META_TRAINING_TASKS=0 (set by flag --num_meta_training_tasks): zero tasks"),
        ([], {"META_LEARNING_RATE": "abc"}, None, "META_LEARNING_RATE=abc (set by environment META_LEARNING_RATE): not a number"),
        ([], {"TASK_GENERATOR_SEED": "-1"}, None, "TASK_GENERATOR_SEED=-1 (set by environment TASK_GENERATOR_SEED): negative"),
        ([], {}, "NUM_META_TESTING_TASKS=500\n", "NUM_META_TESTING_TASKS=500 (set by .env file .env NUM_META_TESTING_TASKS): more tasks"),
        ([], {"NUM_META_TRAINING_TASKS": "180"}, "NUM_META_TESTING_TASKS=15\n", "NUM_META_TRAINING_TASKS=180 (set by environment"),
        ([], {}, "NUM_META_TESTING_TASKS 5\n", ".env: line 1: malformed line"),
        (["--config", "nope"], {}, None, "meta config: nope: no such file or name"),
    ],
)
def test_bad_values_exit_2_before_any_run(store, monkeypatch, tmp_path, capsys, args, env, dotenv, expected):
    monkeypatch.chdir(tmp_path)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    if dotenv is not None:
        (tmp_path / ".env").write_text(dotenv)
    before = len(all_runs(store))
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {expected}"), err
    assert len(err.splitlines()) == 1
    assert len(all_runs(store)) == before


@pytest.mark.slow
def test_no_run_left_running(meta_run):
    client, _ = meta_run
    assert all(r.info.status != "RUNNING" for r in all_runs(client))


def test_comparison_table_counts_wins_and_tests_pairs():
    from speccomp.meta.compare import comparison_table, format_table

    per_pair = pd.DataFrame({"pair": ["a+b", "a+b", "c+d", "c+d"], "method": ["meta", "prior"] * 2,
                             "test_mse": [1.0, 2.0, 1.0, 3.0], "oracle_mse": [0.5] * 4, "gap": [1.0] * 4})
    table = comparison_table(per_pair).set_index("method")
    assert table.loc["prior", "meta_wins"] == "2/2"
    assert table.loc["prior", "median_ratio_meta_to_method"] == pytest.approx((0.5 + 1 / 3) / 2)
    assert table.loc["meta", "median_ratio_to_oracle"] == pytest.approx(2.0)
    assert "meta_wins" in format_table(comparison_table(per_pair))
