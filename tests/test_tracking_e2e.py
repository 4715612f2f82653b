"""End to end, as a user runs it: `mlflow run` on the repository, and SIGTERM to a running `main`.

Subprocesses on one SQLite store shared by the module (its migrations take seconds); the records are
checked with the same functions as the in-process tests (`tests/test_tracking.py`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from speccomp.core.config import default_config_dir
from speccomp.spectra.figures import FIGURE_NAMES
from tests.conftest import TINY_OVERRIDES
from tests.test_tracking import REPO, SEEDS, all_runs, check_records, history, load_records

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent  # the venv's bin: `mlflow`, and `python` for the entry points


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """The store, for the subprocesses (`env`) and for this process (models are loaded by URI)."""
    import mlflow
    from mlflow import MlflowClient

    folder = tmp_path_factory.mktemp("mlflow-e2e")
    uri = f"sqlite:///{folder}/mlflow.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(
        MLFLOW_TRACKING_URI=uri,
        MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false",
        PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        PYTHONPATH=str(REPO),
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        mp.chdir(folder)  # the store's default artifact root is taken from where it is created
        mlflow.set_tracking_uri(uri)  # over whatever an earlier test of this process set (models:/ URIs)
        client = MlflowClient(uri)
        client.search_experiments()  # create the database (and run its migrations) once, here
        yield SimpleNamespace(path=folder, uri=uri, client=client, env=env)
        mlflow.set_tracking_uri(None)


def mlflow_run(store, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "mlflow"), "run", str(REPO), "--env-manager", "local", *args],
        cwd=store.path, env=store.env, capture_output=True, text=True, timeout=timeout,
    )


def project_runs(client, entry_point: str) -> list:
    return [r for r in all_runs(client) if r.data.tags.get("mlflow.project.entryPoint") == entry_point]


def test_mlflow_run_records_the_study_and_redraws_it(store, tmp_path):
    overrides = " ".join(TINY_OVERRIDES)
    done = mlflow_run(store, "-P", "seeds=1,2", "-P", f"overrides={overrides}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "mlflow ui" in done.stdout

    (parent,) = project_runs(store.client, "main")  # the run `mlflow run` created is the parent
    assert parent.data.params["seeds"] == "1,2" and parent.data.params["training.epochs"] == "2"
    records = load_records(store.client, parent.info.run_id)
    assert sorted(records.children) == list(SEEDS)
    check_records(records, tmp_path)

    out = tmp_path / "redrawn"
    done = mlflow_run(store, "-e", "redraw", "-P", f"run_id={parent.info.run_id}", "-P", f"out={out}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert {p.name for p in out.iterdir()} == set(FIGURE_NAMES)
    (redraw,) = project_runs(store.client, "redraw")
    assert redraw.info.status == "FINISHED" and redraw.data.tags["source_run_id"] == parent.info.run_id
    assert {Path(a.path).name for a in store.client.list_artifacts(redraw.info.run_id, "plots")} == set(FIGURE_NAMES)


def test_mlflow_run_with_bad_seeds_fails_its_run(store):
    before = {r.info.run_id for r in all_runs(store.client)}
    done = mlflow_run(store, "-P", "seeds=1,,2", "--run-name", "bad-seeds")
    assert done.returncode != 0
    assert "error: --seeds: empty item" in done.stderr
    (run,) = [r for r in all_runs(store.client) if r.info.run_id not in before]
    assert run.info.run_name == "bad-seeds"
    assert run.info.status == "FAILED"
    assert run.data.tags["error"].startswith("--seeds: empty item in '1,,2'")
    assert run.data.metrics == {}
    from speccomp_compat import mlproject_parameters

    own = set(mlproject_parameters(str(REPO), "main"))
    assert set(run.data.params) <= own  # only what `mlflow run` logs itself: its -P parameters
    assert store.client.list_artifacts(run.info.run_id) == []


def test_sigterm_ends_parent_and_children_killed(store):
    long = [*TINY_OVERRIDES, "training.epochs=2000", "training.checkpoint_ratio=0.01"]
    argv = [sys.executable, "-m", "speccomp_cli", "run", "--seeds", "1,2", "--run-name", "sigterm", "--no-models",
            "--config-dir", str(default_config_dir()), *[a for o in long for a in ("--set", o)]]
    proc = subprocess.Popen(argv, cwd=store.path, env=store.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        children = _wait_for_children_with_metrics(store.client, proc, "sigterm", n=len(SEEDS), timeout=90)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143, err[-3000:]  # 128 + SIGTERM, after the runs were closed
    assert "KILLED" in err

    runs = {r.info.run_id: r for r in all_runs(store.client)}
    (parent,) = [r for r in runs.values() if r.info.run_name == "sigterm"]
    kids = [r for r in runs.values() if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(int(k.data.tags["seed"]) for k in kids) == list(SEEDS)
    for run in (parent, *kids):
        assert run.info.status == "KILLED"
        assert run.data.tags["error"] == "terminated (SIGTERM)"
    for kid in kids:  # what was logged before the signal is kept (and at least what we saw)
        steps = [s for s, _ in history(store.client, kid.info.run_id, "test/mse")]
        assert steps[0] == 0 and len(steps) >= len(children[kid.info.run_id])
        assert len(history(store.client, kid.info.run_id, "train/loss")) > 0
    assert [r.info.run_name for r in runs.values() if r.info.status == "RUNNING"] == []


def _wait_for_children_with_metrics(client, proc, name: str, n: int, timeout: float) -> dict[str, list]:
    """Poll the store until the invocation's `n` children each have two checkpoints logged."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        parents = [r for r in all_runs(client) if r.info.run_name == name]
        if parents:
            kids = client.search_runs(
                [parents[0].info.experiment_id], f"tags.mlflow.parentRunId = '{parents[0].info.run_id}'"
            )
            seen = {k.info.run_id: history(client, k.info.run_id, "test/mse") for k in kids}
            if len(seen) == n and all(len(h) >= 2 for h in seen.values()):
                return seen
        time.sleep(0.5)
    pytest.fail(f"no metrics from the children of {name!r} within {timeout} s")
