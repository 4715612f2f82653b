"""`mlflow run . --env-manager local -e meta` as a user runs it: the environment and `.env` are not
masked by the entry point's empty parameters, the records are left, and no run stays RUNNING."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from speccomp.meta.settings import ENV_NAMES
from tests.test_meta_tracking import TINY, all_runs

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
TINY_OVERRIDES = TINY[TINY.index("--overrides") + 1]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from mlflow import MlflowClient

    folder = tmp_path_factory.mktemp("mlflow-meta-e2e")
    uri = f"sqlite:///{folder}/mlflow.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_") and k not in ENV_NAMES.values()}
    env.update(MLFLOW_TRACKING_URI=uri, MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false",
               PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", PYTHONPATH=str(REPO))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        client = MlflowClient(uri)
        client.search_experiments()
        yield SimpleNamespace(path=folder, uri=uri, client=client, env=env)


def mlflow_run(store, *args: str, env: dict[str, str] | None = None, timeout: float = 600):
    return subprocess.run([str(BIN / "mlflow"), "run", str(REPO), "--env-manager", "local", "-e", "meta", *args],
                          cwd=store.path, env={**store.env, **(env or {})}, capture_output=True, text=True, timeout=timeout)


def test_mlflow_run_meta_reads_environment_and_dotenv(store):
    # `mlflow run` runs in the project folder, whose `.env` it reads by default; here one elsewhere
    dotenv = store.path / "meta.env"
    dotenv.write_text("# settings for the meta-learner\nNUM_META_TESTING_TASKS=2\nTASK_GENERATOR_SEED=3\n")
    env = {"NUM_META_TRAINING_TASKS": "4", "ARCHITECTURE_SEARCH_ITERATIONS": "6", "TASK_GENERATOR_SEED": "5"}
    done = mlflow_run(store, "-P", "config=smoke", "-P", f"overrides={TINY_OVERRIDES}", "-P", "threads=1",
                      "-P", f"env_file={dotenv}", env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "median_ratio_meta_to_method" in done.stdout and "mlflow ui" in done.stdout
    (parent,) = [r for r in all_runs(store.client) if r.data.tags.get("mlflow.project.entryPoint") == "meta"]
    p = parent.data.params
    assert (p["meta.num_meta_training_tasks"], p["meta.num_meta_training_tasks.source"]) == (
        "4", "environment NUM_META_TRAINING_TASKS")
    assert (p["meta.task_generator_seed"], p["meta.task_generator_seed.source"]) == ("5", "environment TASK_GENERATOR_SEED")
    assert (p["meta.num_meta_testing_tasks"], p["meta.num_meta_testing_tasks.source"]) == (
        "2", f".env file {dotenv} NUM_META_TESTING_TASKS")
    assert p["meta.meta_learning_rate.source"] == "default"
    assert [m.step for m in store.client.get_metric_history(parent.info.run_id, "meta/elbo")] == list(range(1, 7))
    children = [r for r in all_runs(store.client) if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 2 * 8 and {r.data.tags["method"] for r in children} >= {"meta", "oracle", "nas"}
    arts = {a.path for a in store.client.list_artifacts(parent.info.run_id, "plots")}
    assert {"plots/meta_posterior.png", "plots/meta_test.png"} <= arts
    assert all(r.info.status == "FINISHED" for r in [parent, *children])


def test_mlflow_run_meta_flag_beats_environment(store):
    done = mlflow_run(store, "-P", "config=smoke", "-P", f"overrides={TINY_OVERRIDES}", "-P", "num_meta_training_tasks=0",
                      "--run-name", "bad-flag", env={"NUM_META_TRAINING_TASKS": "4"})
    assert done.returncode != 0
    assert "error: NUM_META_TRAINING_TASKS=0 (set by flag --num_meta_training_tasks): zero tasks" in done.stderr
    (run,) = [r for r in all_runs(store.client) if r.info.run_name == "bad-flag"]
    assert run.info.status == "FAILED" and run.data.metrics == {}
    assert run.data.tags["error"].startswith("NUM_META_TRAINING_TASKS=0")
    assert all(r.info.status != "RUNNING" for r in all_runs(store.client))
