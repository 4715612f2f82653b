"""Faults and bad input that must end in one line and exit code 2 before any work: tracking
stores and study storages that cannot be used, values refused at load, passwords given where
MLflow would record them."""

from __future__ import annotations

import contextlib
import errno
import functools
import http.server
import os
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import optuna  # noqa: F401  (the warning filter below names its class)
import pytest
from mlflow import MlflowClient

from speccomp.core.config import ConfigError, default_config_dir, load_config
from tests.conftest import TINY_OVERRIDES

ROOT = os.geteuid() == 0
pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")


@pytest.fixture
def env(tmp_path, monkeypatch):
    """A working folder with its own store; the tracking URI an entry point set in this process
    (mlflow.set_tracking_uri) is forgotten before and after."""
    import mlflow

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    for name in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID", "SPECCOMP_STORAGE"):
        monkeypatch.delenv(name, raising=False)
    mlflow.set_tracking_uri(None)
    yield tmp_path
    mlflow.set_tracking_uri(None)


def one_error_line(capsys) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    return lines[0]


def tracking_main(*argv: str) -> int:
    """`speccomp run --seeds 1 ...` in this process."""
    from speccomp_cli.main import main

    return main(["run", "--seeds", "1", *argv])


def study_main(folder: Path, *argv: str) -> int:
    """`speccomp study --n-trials 1 --seeds 1 --no-report ...` in this process."""
    from speccomp_cli.main import main

    return main(["study", "--n-trials", "1", "--seeds", "1", "--no-report", *argv])


@contextlib.contextmanager
def read_only(path: Path):
    """Make a file or folder read-only in the way that binds even root: the immutable attribute
    (`chattr +i`) as root, the permission bits otherwise. (Root ignores permission bits, so a
    check that read them would pass here and fail for users, or the reverse.)"""
    if ROOT:
        if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode:
            pytest.skip("running as root where `chattr +i` is unavailable: nothing is read-only for root")
        try:
            yield os.strerror(errno.EPERM)
        finally:
            subprocess.run(["chattr", "-i", str(path)], check=True)
    else:
        mode = path.stat().st_mode
        path.chmod(0o555 if path.is_dir() else 0o444)
        try:
            yield os.strerror(errno.EACCES)
        finally:
            path.chmod(mode)


@pytest.fixture
def not_mlflow_server(tmp_path):
    """A plain static-file HTTP server on 127.0.0.1 (what a wrong port often finds): its URL."""
    (tmp_path / "index.html").write_text("<html>hello</html>")
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


# --- tracking stores ---------------------------------------------------------------------------
def test_a_server_that_is_not_mlflow_is_one_line(env, not_mlflow_server, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", not_mlflow_server)
    assert tracking_main() == 2
    assert one_error_line(capsys) == (
        f"error: MLFLOW_TRACKING_URI: {not_mlflow_server}: the server answers (HTTP 404) but is not an MLflow "
        "tracking server (no MLflow REST API under /api/2.0/mlflow/)")


def test_sqlite_store_in_a_read_only_folder_is_one_line(env, monkeypatch, capsys):
    folder = env / "ro"
    folder.mkdir()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{folder}/mlflow.db")
    with read_only(folder) as reason:
        assert tracking_main() == 2
        assert one_error_line(capsys) == (
            f"error: MLFLOW_TRACKING_URI: sqlite:///{folder}/mlflow.db: folder {folder} is not writable ({reason}); "
            "SQLite writes its journal beside the database")
        assert study_main(env, "--storage", str(env / "optuna.log")) == 2
        assert "is not writable" in one_error_line(capsys)
        assert list(folder.iterdir()) == []  # nothing half-written


def test_read_only_sqlite_database_file_is_one_line(env, capsys):
    db = env / "mlflow.db"
    MlflowClient(f"sqlite:///{db}").search_experiments()  # an existing store
    capsys.readouterr()  # (MLflow's messages while creating it)
    with read_only(db) as reason:
        assert tracking_main() == 2
        assert one_error_line(capsys) == (
            f"error: MLFLOW_TRACKING_URI: sqlite:///{db}: database file {db} is not writable ({reason})")


def test_sqlite_store_that_is_a_folder_or_not_sqlite(env, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{env}")
    assert tracking_main() == 2
    assert one_error_line(capsys) == (
        f"error: MLFLOW_TRACKING_URI: sqlite:///{env}: {env} is a folder; allowed: a SQLite database file "
        f"(new or existing), e.g. {env / 'mlflow.db'}")
    (env / "notes.txt").write_text("not a database")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{env}/notes.txt")
    assert tracking_main() == 2
    assert one_error_line(capsys).endswith(f"{env / 'notes.txt'} is not a SQLite database")


@pytest.mark.postgres
def test_missing_postgres_tracking_database_is_one_line_with_the_password_hidden(env, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "postgresql://postgres:hunter2@127.0.0.1:5432/speccomp_no_such_db")
    assert tracking_main() == 2
    assert one_error_line(capsys) == (
        "error: MLFLOW_TRACKING_URI: postgresql://postgres:***@127.0.0.1:5432/speccomp_no_such_db: cannot connect "
        '(connection to server at "127.0.0.1", port 5432 failed: FATAL: database "speccomp_no_such_db" does not exist)')


def test_refused_postgres_connection_is_one_line(env, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "postgresql://u:hunter2@127.0.0.1:1/db")
    assert tracking_main() == 2
    line = one_error_line(capsys)
    assert line.startswith("error: MLFLOW_TRACKING_URI: postgresql://u:***@127.0.0.1:1/db: cannot connect (")
    assert "hunter2" not in line


# --- study storages ------------------------------------------------------------------------------
def test_study_storage_that_names_a_folder(env, capsys):
    assert study_main(env, "--storage", str(env)) == 2
    assert one_error_line(capsys) == (
        f"error: storage: {env} is a folder; allowed: a journal file path (e.g. {env / 'optuna.log'}), "
        "sqlite:///PATH or postgresql://USER@HOST:PORT/DB")
    assert study_main(env, "--storage", f"sqlite:///{env}") == 2
    assert one_error_line(capsys) == (
        f"error: storage: sqlite:///{env}: {env} is a folder; allowed: a SQLite database file (new or existing), "
        f"e.g. {env / 'optuna.db'}")


def test_read_only_journal_file(env, capsys):
    journal = env / "optuna.log"
    journal.write_text("")
    with read_only(journal) as reason:
        assert study_main(env, "--storage", str(journal)) == 2
        assert one_error_line(capsys) == f"error: storage: cannot open journal file {journal}: {reason}"
    assert not (env / "mlflow.db").exists()  # refused before MLflow was touched


# --- values refused at load ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("training.batch_size=193", "override training.batch_size=193: training.batch_size: is 193, larger than the "
         "training split (data.splits.train.n_samples = 192); allowed: 1 to 192"),
        ("training.learning_rate=inf", "override training.learning_rate=inf: training.learning_rate: Input should be "
         "a finite number (got 'inf')"),
        ("training.weight_decay=inf", "override training.weight_decay=inf: training.weight_decay: Input should be a "
         "finite number (got 'inf')"),
        ("training.learning_rate=.inf", "override training.learning_rate=.inf: training.learning_rate: Input should "
         "be a finite number (got inf)"),
    ],
)
def test_values_refused_at_load(override, message):
    with pytest.raises(ConfigError) as info:
        load_config(default_config_dir(), [*TINY_OVERRIDES, override])
    assert str(info.value) == message


def test_batch_equal_to_the_training_split_is_allowed():
    assert load_config(default_config_dir(), [*TINY_OVERRIDES, "training.batch_size=192"]).training.batch_size == 192


def test_infinite_learning_rate_in_a_file_names_the_file(edited_config_dir):
    folder = edited_config_dir("training.yaml", lambda raw: raw.update(learning_rate=float("inf")))
    with pytest.raises(ConfigError) as info:
        load_config(folder)
    assert str(info.value).startswith(f"{folder / 'training.yaml'}: training.learning_rate: ")
    assert "finite" in str(info.value)


def test_main_refuses_a_batch_larger_than_the_training_split(env, capsys):
    overrides = " ".join([*TINY_OVERRIDES, "training.batch_size=4096"])
    assert tracking_main("--overrides", overrides) == 2
    assert one_error_line(capsys) == ("error: override training.batch_size=4096: training.batch_size: is 4096, larger "
                                      "than the training split (data.splits.train.n_samples = 192); allowed: 1 to 192")
    assert not (env / "mlflow.db").exists() or all(
        r.info.status != "RUNNING" for r in MlflowClient().search_runs(["0"]))


# --- secrets --------------------------------------------------------------------------------------
SECRET_URL = "postgresql://postgres:hunter2@127.0.0.1:5432/test"
REFUSED = ("error: storage: postgresql://postgres:***@127.0.0.1:5432/test carries a password, which is refused on the "
           "command line; give the URL in the environment (SPECCOMP_STORAGE, used when --storage is empty) or the "
           "password in PGPASSWORD or ~/.pgpass, and --storage without it")


def test_a_password_in_storage_is_refused_before_any_work(env, capsys):
    assert study_main(env, "--storage", SECRET_URL) == 2
    assert one_error_line(capsys) == REFUSED
    assert sorted(p.name for p in env.iterdir()) == []  # no store, no journal, nothing


# (a password passed by `mlflow run -P storage=...`: tests/test_reliability_inputs.py)


# --- runs left RUNNING by a process that no longer exists ---------------------------------------------
def dead_process_tags() -> dict[str, str]:
    """The process tags a run would carry from a process that has since ended."""
    from tracking.stale import process_tags

    proc = subprocess.Popen(["sleep", "60"])
    try:
        tags = {**process_tags(), "speccomp.pid": str(proc.pid)}
        from tracking.stale import process_identity

        tags["speccomp.process"] = process_identity(proc.pid)
    finally:
        proc.kill()
        proc.wait()
    return tags


def project_run_tags(entry_point: str = "main") -> dict[str, str]:
    """What `mlflow run` tags its run with before the command starts (nothing of ours)."""
    from tests.test_study import REPO

    return {"mlflow.source.type": "PROJECT", "mlflow.source.name": f"file://{REPO}",
            "mlflow.project.entryPoint": entry_point, "mlflow.project.env": "conda"}


def test_process_liveness_from_the_tags():
    from tracking.stale import process_gone, process_tags

    mine = process_tags()
    assert process_gone(mine) is False
    assert process_gone(dead_process_tags()) is True
    assert process_gone({**mine, "speccomp.process": mine["speccomp.process"] + "0"}) is True  # a reused pid
    assert process_gone({**mine, "speccomp.host": "elsewhere"}) is None  # cannot be checked from here
    assert process_gone({}) is None


def test_stale_runs_are_ended_failed_and_live_ones_kept(env):
    from tracking.stale import tidy

    uri = f"sqlite:///{env}/mlflow.db"
    client = MlflowClient(uri)
    dead = client.create_run("0", run_name="dead", tags=dead_process_tags()).info.run_id
    never = client.create_run("0", run_name="never-started", tags=project_run_tags()).info.run_id
    from tracking.stale import process_tags

    alive = client.create_run("0", run_name="alive", tags=process_tags()).info.run_id
    remote = client.create_run("0", run_name="remote", tags={**dead_process_tags(), "speccomp.host": "elsewhere"}).info.run_id
    mine = client.create_run("0", run_name="mine", tags=project_run_tags()).info.run_id  # kept: given as ours
    other_project = client.create_run("0", run_name="other", tags={**project_run_tags(), "mlflow.source.name": "/x"}).info.run_id

    # While an `mlflow run` on this store lives, a run it may still take over is not touched.
    fake = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "mlflow", "run"], cwd=env,
                            env={**os.environ, "MLFLOW_TRACKING_URI": uri})
    try:
        line = tidy(client, uri, keep={mine})
    finally:
        fake.kill()
        fake.wait()
    assert line == f"note: 1 run(s) left RUNNING by processes that no longer exist ended FAILED: dead ({dead[:8]})"
    assert client.get_run(never).info.status == "RUNNING"

    line = tidy(client, uri, keep={mine})
    assert line == ("note: 1 run(s) left RUNNING by processes that no longer exist ended FAILED: "
                    f"never-started ({never[:8]})")
    status = {r: client.get_run(r).info.status for r in (dead, never, alive, remote, mine, other_project)}
    assert status == {dead: "FAILED", never: "FAILED", alive: "RUNNING", remote: "RUNNING", mine: "RUNNING",
                      other_project: "RUNNING"}
    error = client.get_run(dead).data.tags["error"]
    pid = client.get_run(dead).data.tags["speccomp.pid"]
    assert error.startswith(f"left RUNNING by process {pid} on {socket.gethostname()}, which no longer exists; ")
    assert client.get_run(never).data.tags["error"].startswith(
        "left RUNNING by an `mlflow run` that ended before its command started")
    assert tidy(client, uri, keep=set()) == ("note: 1 run(s) left RUNNING by processes that no longer exist ended "
                                             f"FAILED: mine ({mine[:8]})")  # once no longer kept
    assert tidy(client, uri, keep=set()) is None


def test_main_reports_stale_runs_in_one_line_and_tags_its_own(env, capsys):
    client = MlflowClient(f"sqlite:///{env}/mlflow.db")
    dead = client.create_run("0", run_name="dead", tags=dead_process_tags()).info.run_id
    capsys.readouterr()
    assert tracking_main("--no-models", "--no-figures", "--run-name", "now",
                         *[a for o in TINY_OVERRIDES for a in ("--set", o)]) == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note:")]
    assert notes == [f"note: 1 run(s) left RUNNING by processes that no longer exist ended FAILED: dead ({dead[:8]})"]
    assert client.get_run(dead).info.status == "FAILED"
    (now,) = [r for r in client.search_runs([e.experiment_id for e in client.search_experiments()])
              if r.info.run_name == "now"]
    assert now.data.tags["speccomp.pid"] == str(os.getpid())
    assert now.data.tags["speccomp.host"] == socket.gethostname()


def _tiny_nas(folder: Path) -> list[str]:
    import yaml

    from tests.test_nas_tracking import TINY_SPACE

    space = folder / "space.yaml"
    space.write_text(yaml.safe_dump(TINY_SPACE))
    return ["nas", "--seeds", "1", "--space", str(space), "--architecture-search-iterations", "2",
            "--config-dir", str(default_config_dir()), *[a for o in TINY_OVERRIDES for a in ("--set", o)]]


def _tiny_meta(folder: Path) -> list[str]:  # the folder is unused: the meta-learner writes no input file
    from tests.test_meta_tracking import TINY

    return ["meta", *TINY]


@pytest.mark.slow
@pytest.mark.parametrize("argv", [_tiny_nas, _tiny_meta], ids=["nas", "meta"])
def test_nas_and_meta_start_their_parent_as_run_does(env, capsys, argv):
    """`speccomp nas` and `speccomp meta` tidy runs left RUNNING by dead processes and prepare the
    experiment for the UI before their parent opens, as `speccomp run` does; both land in the
    default experiment `speccomp`."""
    from speccomp_cli.main import main
    from tracking.ui import EXPERIMENT_KIND_TAG, TRAINING_KIND

    client = MlflowClient(f"sqlite:///{env}/mlflow.db")
    experiment = client.create_experiment("speccomp")  # made elsewhere: not yet marked for the UI
    dead = client.create_run(experiment, run_name="dead", tags=dead_process_tags()).info.run_id
    capsys.readouterr()
    assert main([*argv(env), "--run-name", "now"]) == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note:")]
    assert notes == [f"note: 1 run(s) left RUNNING by processes that no longer exist ended FAILED: dead ({dead[:8]})"]
    assert client.get_run(dead).info.status == "FAILED"
    (now,) = [r for r in client.search_runs([e.experiment_id for e in client.search_experiments()])
              if r.info.run_name == "now"]
    assert now.info.experiment_id == experiment and now.info.status == "FINISHED"
    assert client.get_experiment(experiment).tags[EXPERIMENT_KIND_TAG] == TRAINING_KIND
    assert now.data.tags["speccomp.pid"] == str(os.getpid())


@pytest.mark.parametrize(("argv", "line"), [
    (["run", "--seeds", "1,,2"], "error: --seeds: empty item"),
    (["nas", "--seeds", "1,,2"], "error: --seeds: empty item"),
    (["meta", "--num_meta_training_tasks", "0"], "error: NUM_META_TRAINING_TASKS=0 (set by flag"),
], ids=["run", "nas", "meta"])
def test_a_refused_input_touches_no_store(env, capsys, argv, line):
    """Refused before the store is opened: no runs tidied, no experiment made, no database file."""
    from speccomp_cli.main import main

    assert main(argv) == 2
    assert one_error_line(capsys).startswith(line)
    assert not (env / "mlflow.db").exists()


def test_dataset_inputs_logged_together_by_two_workers_are_retried():
    """Two workers logging the same dataset at the same moment: MLflow's insert fails on the
    unique key for one of them (seen with four workers started together); the retry links it.
    Any other error is not retried."""
    from mlflow.exceptions import MlflowException

    from tracking.pipeline import log_inputs_retrying

    class Client:
        def __init__(self, errors):
            self.errors, self.calls = list(errors), 0

        def log_inputs(self, run_id, datasets):
            self.calls += 1
            if self.errors:
                raise MlflowException(self.errors.pop(0))

    lost_race = Client(["(sqlite3.IntegrityError) UNIQUE constraint failed: datasets.experiment_id, datasets.name"])
    log_inputs_retrying(lost_race, "run", [])
    assert lost_race.calls == 2
    other = Client(["RESOURCE_DOES_NOT_EXIST: run 'x' not found"])
    with pytest.raises(MlflowException):
        log_inputs_retrying(other, "run", [])
    assert other.calls == 1
