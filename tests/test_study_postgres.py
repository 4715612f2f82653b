"""Many workers on one PostgreSQL study (the many-machines set-up, on this machine): the server on
127.0.0.1:5432 (user postgres, trust authentication, database test) must be up; these tests skip
with the reason when it is not, unless CI is set (then they fail; see tests/conftest.py)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import psycopg
import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState

from speccomp_cli.main import main
from tests.conftest import TINY_OVERRIDES
from tests.test_study import CONFIGS, REPO, finished, runs, write_space

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning"),
]

PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
PG_URL_WITH_PASSWORD = "postgresql://postgres:hunter2@127.0.0.1:5432/test"  # trust auth: any password works


@pytest.fixture
def study_name():
    """A study name of its own on the shared server, deleted afterwards."""
    try:
        with psycopg.connect(PG_URL, connect_timeout=5) as conn:
            conn.execute("select 1")
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL is not reachable at {PG_URL}: {str(exc).strip().splitlines()[0]}")
    name = f"speccomp-test-{uuid.uuid4().hex[:12]}"
    yield name
    with contextlib.suppress(KeyError):  # never created: a test that failed early
        optuna.delete_study(study_name=name, storage=PG_URL)


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    for name in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def argv(folder: Path, study_name: str, storage: str, n_trials: int, *extra: str) -> list[str]:
    out = ["study", "--n-trials", str(n_trials), "--study-name", study_name, "--storage", storage,
           "--config-dir", str(CONFIGS), "--space", str(write_space(folder)), "--seeds", "1,2"]
    for item in TINY_OVERRIDES:
        out += ["--set", item]
    return [*out, *extra]


@pytest.mark.slow
def test_two_workers_share_one_postgres_study(env, study_name):
    """Two worker processes started together with the same command and a study-wide budget of N
    (on a new MLflow store: both create it, and the experiment, at the same moment): exactly N
    finished trials, no trial run twice, one MLflow trial run per trial."""
    n = 4
    command = [sys.executable, "-m", "speccomp_cli",
               *argv(env, study_name, PG_URL, n, "--total-trials", str(n), "--no-report", "--threads", "1")]
    child_env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    started = time.perf_counter()
    logs = [open(env / f"worker-{i}.log", "w+") for i in range(2)]  # noqa: SIM115 - closed below
    try:
        workers = [subprocess.Popen(command, env=child_env, stdout=log, stderr=subprocess.STDOUT) for log in logs]
        codes = [w.wait(timeout=600) for w in workers]
    finally:
        for log in logs:
            log.close()
    wall_s = time.perf_counter() - started
    output = "\n".join(f"--- worker {i} ---\n{(env / f'worker-{i}.log').read_text()}" for i in range(2))
    assert codes == [0, 0], output

    study = optuna.load_study(study_name=study_name, storage=PG_URL)
    done = finished(study)
    assert len(done) == n, output
    assert len({t.number for t in done}) == n
    assert len({tuple(sorted(t.params.items())) for t in done}) == n  # no trial drawn twice
    others = [t for t in study.trials if t not in done]
    assert all(t.state == TrialState.FAIL and t.user_attrs.get("surplus") for t in others), others

    trial_runs = [r for r in runs(env, "trial") if r.data.tags["optuna.study_name"] == study_name]
    assert sorted(r.info.run_id for r in trial_runs) == sorted(t.user_attrs["mlflow_run_id"] for t in done)
    by_number = {str(t.number): t for t in done}
    for r in trial_runs:
        assert r.info.status == "FINISHED"
        assert by_number[r.data.tags["optuna.trial_number"]].user_attrs["mlflow_run_id"] == r.info.run_id
    parents = {r.info.run_id for r in runs(env, "study")}
    assert len(parents) == 2  # one study run per worker, both in one experiment
    assert {r.data.tags["mlflow.parentRunId"] for r in trial_runs} <= parents
    per_worker = sorted(sum(r.data.tags["mlflow.parentRunId"] == p for r in trial_runs) for p in parents)
    print(f"\ntwo workers, {n} trials on PostgreSQL: {wall_s:.1f} s wall (with start-up); trials per worker {per_worker}")


def test_password_in_storage_url_is_never_recorded(env, study_name, capfd, monkeypatch):
    """The storage URL given in the environment may carry a password: it reaches neither MLflow
    (params, tags, report) nor the console."""
    monkeypatch.setenv("SPECCOMP_STORAGE", PG_URL_WITH_PASSWORD)
    assert main(argv(env, study_name, "", 2)) == 0
    out, err = capfd.readouterr()
    assert "hunter2" not in out + err
    assert "postgresql://postgres:***@127.0.0.1:5432/test" in out

    study = optuna.load_study(study_name=study_name, storage=PG_URL)
    assert len(finished(study)) == 2
    all_runs = runs(env)
    assert {r.data.tags.get("speccomp.role") for r in all_runs} == {"study", "trial", "seed"}
    for run in all_runs:
        for key, value in [*run.data.params.items(), *run.data.tags.items()]:
            assert "hunter2" not in f"{key}={value}", (run.info.run_name, key)
    (parent,) = runs(env, "study")
    assert parent.data.tags["optuna.storage"] == "postgresql://postgres:***@127.0.0.1:5432/test"
    client = MlflowClient()
    report = Path(client.download_artifacts(parent.info.run_id, "report", str(env)))
    for path in report.iterdir():
        if path.suffix in (".csv", ".md"):
            assert "hunter2" not in path.read_text()
