"""A new SQLite store starts as a copy of a cached empty one (`speccomp_compat.store_template`): the same
store MLflow's migrations make, without running them; anything odd falls back to MLflow."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from speccomp_compat import store_template
from tracking.store import tracking_client


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    yield tmp_path / "cache" / "speccomp"
    mlflow.set_tracking_uri(None)  # the stores opened here are not the next test's


def open_store(path: Path, monkeypatch):
    monkeypatch.chdir(path.parent)  # MLflow puts the Default experiment's artifacts under the working folder
    mlflow.set_tracking_uri(f"sqlite:///{path}")
    client = tracking_client()
    client.create_experiment("speccomp")
    return client


def dump(path: Path) -> dict[str, object]:
    """Every table's schema and rows; the Default experiment's times left out (they are the
    moment the store was made)."""
    db = sqlite3.connect(path)
    try:
        out = {"schema": sorted(db.execute("SELECT type, name, sql FROM sqlite_master").fetchall(), key=str)}
        for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall():
            columns = [c[1] for c in db.execute(f'PRAGMA table_info("{name}")')]
            keep = [c for c in columns if not (name == "experiments" and c in ("creation_time", "last_update_time"))]
            out[name] = sorted(db.execute(f'SELECT {", ".join(keep)} FROM "{name}"').fetchall(), key=str)
        return out
    finally:
        db.close()


def test_the_second_new_store_is_a_copy_and_the_same_as_the_first(tmp_path, cache, monkeypatch):
    first, second = tmp_path / "a" / "mlflow.db", tmp_path / "b" / "mlflow.db"
    first.parent.mkdir()
    second.parent.mkdir()
    open_store(first, monkeypatch)  # made by MLflow's migrations; kept as the template
    template = store_template.template_path()
    assert template.is_file() and template.parent == cache
    assert oct(template.stat().st_mode & 0o777) == "0o600" and oct(cache.stat().st_mode & 0o777) == "0o700"
    stamp = template.stat().st_mtime_ns
    open_store(second, monkeypatch)  # a copy of it
    assert template.stat().st_mtime_ns == stamp  # used, not made again
    a, b = dump(first), dump(second)
    assert a["experiments"] == [(0, "Default", str(tmp_path / "a" / "mlruns" / "0"), "active", "default"),
                                (1, "speccomp", str(tmp_path / "a" / "mlruns" / "1"), "active", "default")]
    assert b["experiments"] == [(0, "Default", str(tmp_path / "b" / "mlruns" / "0"), "active", "default"),
                                (1, "speccomp", str(tmp_path / "b" / "mlruns" / "1"), "active", "default")]
    a.pop("experiments"), b.pop("experiments")
    assert a == b  # every table, its schema and rows (the alembic version among them)
    assert not [p for p in (tmp_path / "b").iterdir() if p.name.startswith(".")]  # no partial copy left
    assert dump(template)["experiments"] == []  # the template holds no experiment of its own


def test_a_template_that_is_not_a_store_falls_back_to_mlflow_and_is_made_again(tmp_path, cache, monkeypatch):
    cache.mkdir(parents=True, mode=0o700)
    template = store_template.template_path()
    template.write_bytes(b"SQLite format 3\x00" + b"\x00" * 200)  # the header, then nothing MLflow can open
    os.chmod(template, 0o600)
    path = tmp_path / "mlflow.db"
    client = open_store(path, monkeypatch)
    assert [e.name for e in client.search_experiments()] == ["speccomp", "Default"]
    assert dump(template)["experiments"] == []  # made again from the store MLflow made


def test_a_template_another_user_could_write_is_not_used(tmp_path, cache, monkeypatch):
    cache.mkdir(parents=True)
    os.chmod(cache, 0o777)
    template = store_template.template_path()
    template.write_bytes(b"not a store")
    path = tmp_path / "mlflow.db"
    open_store(path, monkeypatch)
    assert template.read_bytes() == b"not a store"  # neither used nor replaced: the folder is not private
    assert dump(path)["experiments"][0][1] == "Default"


def test_a_store_with_runs_is_never_made_a_template(tmp_path, cache, monkeypatch):
    path = tmp_path / "mlflow.db"
    client = open_store(path, monkeypatch)
    store_template.template_path().unlink()
    store_template.keep(path)  # the store now holds an experiment of its own
    assert not store_template.template_path().exists()
    assert client.search_experiments()  # and the store is untouched


def test_a_file_or_link_already_at_the_name_is_left_to_mlflow(tmp_path, cache, monkeypatch):
    (tmp_path / "a").mkdir()
    open_store(tmp_path / "a" / "mlflow.db", monkeypatch)  # the template
    empty = tmp_path / "b" / "mlflow.db"
    empty.parent.mkdir()
    empty.touch()
    target = tmp_path / "c" / "elsewhere.db"
    target.parent.mkdir()
    link = tmp_path / "c" / "mlflow.db"
    link.symlink_to(target)
    for path in (empty, link):
        open_store(path, monkeypatch)  # MLflow's own creation, through whatever is there
        assert not [p.name for p in path.parent.iterdir() if ".speccomp-" in p.name]
    assert link.is_symlink() and dump(target)["experiments"][1][1] == "speccomp"


def test_a_copied_store_has_the_mode_sqlite_gives_a_new_file(tmp_path, cache, monkeypatch):
    """Under a umask of 0 (where a plain file write would give 0666) the copy is 0644, as the
    store MLflow's SQLite makes."""
    mask = os.umask(0)
    try:
        (tmp_path / "a").mkdir()
        open_store(tmp_path / "a" / "mlflow.db", monkeypatch)  # made by MLflow: the template
        copy = tmp_path / "b" / "mlflow.db"
        copy.parent.mkdir()
        open_store(copy, monkeypatch)
    finally:
        os.umask(mask)
    assert (tmp_path / "a" / "mlflow.db").stat().st_mode & 0o777 == 0o644
    assert copy.stat().st_mode & 0o777 == 0o644


MIGRATIONS = "Creating initial MLflow database tables"  # MLflow's log line when it builds a store itself


def test_mlflow_run_makes_a_new_store_from_the_template(tmp_path, cache):
    """The README's `mlflow run`: its launcher opens the store before speccomp's command starts, so
    the template reaches it through MLflow's plugin (`speccomp_compat.sqlite_tracking_store`): the
    first launcher on a machine builds the store with MLflow's migrations and keeps the template,
    the next one copies it, and both stores are the same."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "MLproject").write_text(f'name: nothing\nentry_points:\n  main:\n    command: "{sys.executable} -c pass"\n')
    stores = []
    for name in ("first", "second"):
        folder = tmp_path / name
        folder.mkdir()
        env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}", "XDG_CACHE_HOME": str(cache.parent)}
        done = subprocess.run([sys.executable, "-m", "mlflow", "run", str(project), "--env-manager", "local",
                               "--experiment-name", "speccomp"], cwd=folder, env=env, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, done.stderr
        stores.append(folder / "mlflow.db")
        assert (MIGRATIONS in done.stderr) == (name == "first"), done.stderr
        assert store_template.template_path().is_file()
    for path in stores:  # each holds its experiment and its finished run
        client = MlflowClient(f"sqlite:///{path}")
        assert [e.name for e in client.search_experiments()] == ["speccomp", "Default"]
        assert [r.info.status for r in client.search_runs(["1"])] == ["FINISHED"]
    a, b = dump(stores[0]), dump(stores[1])
    for d in (a, b):  # the rows of the experiment and the run are their own (ids, times, folders)
        for table in ("experiments", "runs", "tags", "params"):
            d.pop(table)
    assert a == b  # every table's schema, and every other table's rows


def test_the_plugin_leaves_a_process_that_is_not_speccomps_as_it_was(tmp_path, cache):
    """Any MLflow process of the environment loads the plugin: it copies the template and imports
    nothing of speccomp's that would change the process (`tracking` sets MLflow's HTTP retries)."""
    (tmp_path / "a").mkdir()
    open_store_in(tmp_path / "a" / "mlflow.db")  # the template
    code = ("import os, sys; from mlflow import MlflowClient; "
            f"print([e.name for e in MlflowClient('sqlite:///{tmp_path / 'b.db'}').search_experiments()]); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tracking', 'speccomp', 'study'))); "
            "print(os.environ.get('MLFLOW_HTTP_REQUEST_MAX_RETRIES'))")
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_HTTP_REQUEST_MAX_RETRIES"}
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env={**env, "XDG_CACHE_HOME": str(cache.parent)},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["['Default']", "[]", "None"]
    assert MIGRATIONS not in done.stderr  # copied, not built


def open_store_in(path: Path) -> None:
    """A store made at `path` by an MLflow client of this process (through the plugin)."""
    MlflowClient(f"sqlite:///{path}").search_experiments()


def test_a_template_that_fails_unexpectedly_leaves_the_store_to_mlflow(tmp_path, cache, monkeypatch):
    (tmp_path / "a").mkdir()
    open_store_in(tmp_path / "a" / "mlflow.db")  # the template

    def broken(target):
        raise AttributeError("an MLflow the template code does not know")

    monkeypatch.setattr(store_template, "place", broken)
    monkeypatch.chdir(tmp_path)
    client = MlflowClient(f"sqlite:///{tmp_path / 'b.db'}")
    assert [e.name for e in client.search_experiments()] == ["Default"]  # MLflow made it
    assert not [p.name for p in tmp_path.iterdir() if ".speccomp-" in p.name]


def test_the_creation_lock_is_reentrant_in_a_thread_and_exclusive_between_threads(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    order = []

    def nested():
        with store_template.sqlite_creation_lock(uri), store_template.sqlite_creation_lock(uri):  # no deadlock
            order.append("nested")

    worker = threading.Thread(target=nested, daemon=True)
    worker.start()
    worker.join(timeout=30)
    assert order == ["nested"]

    def other():
        with store_template.sqlite_creation_lock(uri):
            order.append("other")

    with store_template.sqlite_creation_lock(uri):
        worker = threading.Thread(target=other, daemon=True)
        worker.start()
        time.sleep(0.3)
        order.append("holder")  # the other thread still waits
    worker.join(timeout=30)
    assert order == ["nested", "holder", "other"]
