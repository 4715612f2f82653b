"""Workers started at the same instant on a fresh PostgreSQL database (the many-machines start):
none may die of the others creating the same tables. Needs the server on 127.0.0.1:5432 (user
postgres, trust authentication); these tests create and drop databases of their own
(`speccomp_race_<random>_*`) and fail, not skip, when the server is unreachable.

Without the creation lock (`tracking.store.creation_lock`), three of four workers died in every
start tried (`UniqueViolation ... pg_type_typname_nsp_index` while Optuna created its tables)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import optuna
import psycopg
import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState

from tests.conftest import TINY_OVERRIDES
from tests.test_study import CONFIGS, REPO, write_space

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")]

SERVER = "postgresql://postgres@127.0.0.1:5432"
WORKERS = 4
REPETITIONS = 10  # the "10 times in a row"
SPACE = {"name": "race", "params": {"training.learning_rate": {"type": "float", "low": 3e-4, "high": 3e-3, "log": True}}}


class Launcher:
    """`tests/start_together.py --serve`: imports once, then forks workers that start together."""

    def __init__(self):
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
               "OMP_NUM_THREADS": "1"}
        self.proc = subprocess.Popen([sys.executable, str(REPO / "tests" / "start_together.py"), "--serve"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)

    def start(self, n: int, argv: list[str], cwd: Path, env: dict[str, str]) -> list[int]:
        job = {"n": n, "argv": argv, "cwd": str(cwd), "env": env, "logs": str(cwd)}
        self.proc.stdin.write(json.dumps(job) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, f"the launcher died (exit {self.proc.poll()})"
        return json.loads(line)["codes"]

    def close(self) -> None:
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture(scope="module")
def shared_store(tmp_path_factory):
    """An MLflow store made once for the repetitions that do not race on creating it (its
    migrations are the costliest part of a start); each repetition has its own experiment."""
    folder = tmp_path_factory.mktemp("mlflow-shared")
    uri = f"sqlite:///{folder}/mlflow.db"
    MlflowClient(uri).search_experiments()
    return uri


@pytest.fixture(scope="module")
def launcher():
    try:
        psycopg.connect(f"{SERVER}/postgres", connect_timeout=5).close()
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL is not reachable at {SERVER}: {str(exc).strip().splitlines()[0]}")
    launcher = Launcher()
    yield launcher
    launcher.close()


@pytest.fixture
def fresh_database():
    """A factory of new, empty databases (dropped afterwards): name -> URL."""
    made = []

    def make(what: str) -> str:
        name = f"speccomp_race_{uuid.uuid4().hex[:10]}_{what}"
        with psycopg.connect(f"{SERVER}/postgres", autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        made.append(name)
        return f"{SERVER}/{name}"

    yield make
    with psycopg.connect(f"{SERVER}/postgres", autocommit=True, connect_timeout=5) as conn:
        for name in made:
            with contextlib.suppress(psycopg.Error):
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.parametrize("repetition", range(REPETITIONS))
def test_workers_started_together_on_a_fresh_database(launcher, fresh_database, shared_store, tmp_path, repetition):
    """Four workers, one trial each, released at the same instant on a new Optuna database; the
    MLflow store is new too in the first two repetitions (a PostgreSQL database on the same
    server, then a SQLite file), and an existing one with a new experiment afterwards. Every
    worker exits 0; the study holds exactly four trials, each complete and counted once, each with
    one MLflow trial run; the four study runs share one experiment."""
    storage = fresh_database("optuna")
    tracking = {0: lambda: fresh_database("mlflow"), 1: lambda: f"sqlite:///{tmp_path}/mlflow.db"}.get(
        repetition, lambda: shared_store)()
    experiment = f"race-{repetition}"
    argv = ["--n-trials", "1", "--total-trials", str(WORKERS), "--study-name", "race", "--storage", storage,
            "--config-dir", str(CONFIGS), "--space", str(write_space(tmp_path, SPACE)), "--seeds", "1",
            "--no-report", "--threads", "1"]
    for item in TINY_OVERRIDES:
        argv += ["--set", item]
    codes = launcher.start(WORKERS, argv, tmp_path, {"MLFLOW_TRACKING_URI": tracking, "MLFLOW_EXPERIMENT_NAME": experiment})
    logs = "\n".join(f"--- worker {i} ---\n{(tmp_path / f'worker-{i}.log').read_text()}" for i in range(WORKERS))
    assert codes == [0] * WORKERS, logs

    study = optuna.load_study(study_name="race", storage=storage)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * WORKERS, logs
    assert sorted(t.number for t in study.trials) == list(range(WORKERS))

    client = MlflowClient(tracking)
    (exp,) = [e for e in client.search_experiments() if e.name == experiment]  # made once, whoever won
    found = client.search_runs([exp.experiment_id], max_results=1000)
    by_role = {role: [r for r in found if r.data.tags.get("speccomp.role") == role] for role in ("study", "trial", "seed")}
    assert len(by_role["study"]) == WORKERS  # one study run per worker
    assert sorted(r.info.run_id for r in by_role["trial"]) == sorted(t.user_attrs["mlflow_run_id"] for t in study.trials)
    assert len(by_role["seed"]) == WORKERS
    assert {r.info.status for r in found} == {"FINISHED"}
