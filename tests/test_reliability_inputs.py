"""Issue #23's bad inputs, one test each: every one ends in one line naming the input, exit code 2,
before any run exists (nothing RUNNING, nothing half-written), no traceback; and a Ctrl-C at the
instant a run is being created leaves no run RUNNING. (`mlflow run` versions of the sampler and
the password cases: tests/test_reliability_e2e.py.)"""

from __future__ import annotations

import io
import os
import signal

import numpy as np
import optuna  # noqa: F401  (the warning filter below names its class)
import pytest
from mlflow import MlflowClient

from tests.conftest import TINY_OVERRIDES
from tests.test_reliability import env, one_error_line, study_main, tracking_main  # noqa: F401  (env: a fixture)
from tests.test_tracking import all_runs

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
TINY = [a for o in TINY_OVERRIDES for a in ("--set", o)]


def failing_sampler(rng: np.random.Generator, n_samples: int, labels: list[str]) -> np.ndarray:
    raise RuntimeError("the sampler's own words\nsecond line")


def late_failing_sampler(rng: np.random.Generator, n_samples: int, labels: list[str]) -> np.ndarray:
    """Answers the two-sample probe made at load, fails on the real split."""
    if n_samples > 2:
        raise ValueError(f"cannot draw {n_samples}")
    return np.full((n_samples, len(labels)), 0.5)


def no_runs(env) -> bool:  # noqa: F811
    return not (env / "mlflow.db").exists() or all_runs(MlflowClient()) == []


def test_a_custom_sampler_that_cannot_be_called_is_one_line_before_any_run(env, capsys):  # noqa: F811
    """`sampler: "os:getcwd"` imports, but fails when called: refused at load, its own error named."""
    assert tracking_main(*TINY, "--set", 'data.splits.train.distribution={type: custom, sampler: "os:getcwd"}') == 2
    assert one_error_line(capsys) == (
        'error: override data.splits.train.distribution={type: custom, sampler: "os:getcwd"}: '
        "data.splits.train.distribution.sampler: os:getcwd(rng, n_samples=2, labels) raised TypeError: "
        "posix.getcwd() takes no arguments (3 given); allowed: a function (rng, n_samples, labels) -> array of "
        "shape (n_samples, n_components)")
    assert no_runs(env)


def test_a_custom_sampler_that_raises_reports_its_own_message(env, capsys):  # noqa: F811
    assert study_main(env, *TINY, "--set",
                      f"data.splits.test.distribution={{type: custom, sampler: '{__name__}:failing_sampler'}}") == 2
    line = one_error_line(capsys)
    assert line.endswith(f"data.splits.test.distribution.sampler: {__name__}:failing_sampler(rng, n_samples=2, labels) "
                         "raised RuntimeError: the sampler's own words second line; allowed: a function (rng, "
                         "n_samples, labels) -> array of shape (n_samples, n_components)"), line
    assert no_runs(env)


def test_a_sampler_that_fails_on_the_real_split_ends_its_runs_failed_with_its_words(env, capsys):  # noqa: F811
    """Past the probe, the failure comes during the run: exit 2, its message as one `error:` line
    and on the runs, which end FAILED (none RUNNING)."""
    sampler = f"{__name__}:late_failing_sampler"
    assert tracking_main(*TINY, "--no-models", "--no-figures", "--set",
                         f"data.splits.train.distribution={{type: custom, sampler: '{sampler}'}}") == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert errors == [f"error: data.splits.train.distribution.sampler: {sampler}(rng, n_samples=192, labels) raised "
                      "ValueError: cannot draw 192; allowed: a function (rng, n_samples, labels) -> array of shape "
                      "(n_samples, n_components)"]
    runs = all_runs(MlflowClient())
    assert runs and {r.info.status for r in runs} == {"FAILED"}
    assert all("cannot draw 192" in r.data.tags["error"] for r in runs)


@pytest.mark.parametrize(("where", "line"), [
    ("file", "error: --work-dir: {f} is a file; allowed: a folder (existing, or new under a writable folder)"),
    ("below-file", "error: --work-dir: {f}/sub: {f} is a file, so the folder cannot be created; allowed: a folder "
                   "(existing, or new under a writable folder)"),
])
def test_work_dir_that_is_a_file_is_one_line_before_any_run(env, capsys, where, line):  # noqa: F811
    f = env / "hostname"
    f.write_text("a file\n")
    assert tracking_main(*TINY, "--work-dir", str(f) if where == "file" else str(f / "sub")) == 2
    assert one_error_line(capsys) == line.format(f=f)
    assert no_runs(env) and f.read_text() == "a file\n"


@pytest.mark.parametrize("given", ["flag", "environment"])
def test_a_deleted_experiment_is_one_line_naming_where_it_was_named(env, capsys, monkeypatch, given):  # noqa: F811
    client = MlflowClient()
    gone = client.create_experiment("gone")
    client.delete_experiment(gone)
    capsys.readouterr()
    if given == "flag":
        code, option = tracking_main(*TINY, "--experiment-name", "gone"), "--experiment-name"
    else:
        monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "gone")
        code, option = study_main(env, *TINY), "MLFLOW_EXPERIMENT_NAME"
    assert code == 2
    assert one_error_line(capsys) == (
        f"error: {option}: experiment 'gone' (id {gone}) is deleted; allowed: an active or new experiment name "
        f"(or restore it: mlflow experiments restore --experiment-id {gone})")
    assert all_runs(client) == []


def meta_main(*argv: str) -> int:
    from speccomp_cli.main import main

    return main(["meta", "--config", "smoke", *argv])


def test_an_env_file_that_is_not_text_is_one_line(env, capsys):  # noqa: F811
    bad = env / "bad.env"
    bad.write_bytes(b"NUM_META_TESTING_TASKS=2\nMETA_LEARNING_RATE=\xff\xfe0.1\n")
    assert meta_main("--env-file", str(bad)) == 2
    assert one_error_line(capsys) == (f"error: --env-file: {bad}: line 2: not UTF-8 text (byte 0xff); allowed: a "
                                      "UTF-8 text file of NAME=VALUE lines")
    assert no_runs(env)


def test_the_default_env_file_that_is_not_text_is_refused_too(env, capsys):  # noqa: F811
    (env / ".env").write_bytes(b"\x00\x01binary")
    assert meta_main() == 2
    assert one_error_line(capsys) == ("error: --env-file: .env: holds NUL bytes (a binary file?); allowed: a UTF-8 "
                                      "text file of NAME=VALUE lines")


def test_a_named_env_file_that_does_not_exist_is_refused(env, capsys):  # noqa: F811
    assert meta_main("--env-file", "nosuch.env") == 2
    assert one_error_line(capsys) == (
        "error: --env-file: nosuch.env: no such file; allowed: an existing file of NAME=VALUE lines (or leave "
        "--env-file out: then .env in the working directory is read if present)")
    assert no_runs(env)


def test_a_password_passed_by_mlflow_run_is_removed_from_the_store_for_good(env, monkeypatch, capsys):  # noqa: F811
    """`mlflow run -P storage=...` logged the URL before the command started: refused, and the run
    that carried it deleted and garbage-collected (MLflow's own routines), the SQLite file vacuumed:
    the password is in no table and no byte of any file of the store. Other deleted experiments
    and runs are left alone (`mlflow gc` without ids would purge them all)."""
    client = MlflowClient()
    keep = client.create_experiment("deleted-but-kept")
    kept_run = client.create_run(keep).info.run_id
    client.delete_experiment(keep)
    run = client.create_run("0", tags={"mlflow.project.entryPoint": "study"})
    client.log_param(run.info.run_id, "storage", "postgresql://postgres:hunter2@127.0.0.1:5432/test")
    client.log_text(run.info.run_id, "an artifact", "note.txt")
    capsys.readouterr()
    monkeypatch.setenv("MLFLOW_RUN_ID", run.info.run_id)
    assert study_main(env, "--storage=postgresql://postgres:hunter2@127.0.0.1:5432/test") == 2
    line = one_error_line(capsys)
    assert line.endswith(f"`mlflow run -P storage=...` had logged it as a parameter of run {run.info.run_id}, "
                         "which is now removed for good (MLflow's delete and gc of that run); change the password")
    assert "hunter2" not in line
    assert run.info.run_id not in {r.info.run_id for r in all_runs(client)}
    assert client.get_experiment(keep).lifecycle_stage == "deleted" and client.get_run(kept_run)
    files = [p for p in env.rglob("*") if p.is_file()]
    assert any(p.name == "mlflow.db" for p in files)
    assert [p for p in files if b"hunter2" in p.read_bytes()] == []


def test_long_seed_lists_are_printed_and_tagged_in_short_form():
    from tracking.ui import main_run_name, seed_count, seed_list

    assert seed_list(range(5000)) == "0–4999 (5,000 seeds)"
    assert seed_list([123, 124, 125]) == "123,124,125"  # short lists stay as given
    assert seed_list([*range(100), *range(200, 300)]) == "0–99, 200–299 (200 seeds)"
    assert seed_list(range(0, 10000, 2)) == "0, 2, 4, …, 9996, 9998 (5,000 seeds)"
    assert main_run_name(list(range(5000)), [42], []) == "main seeds 0–4999 (5,000 seeds)"
    for seeds in (range(5000), [1, 2, 3], range(0, 10000, 2), [7]):
        assert seed_count(seed_list(seeds)) == len(seeds)


def test_a_run_of_many_seeds_prints_and_tags_them_short(env, capsys):  # noqa: F811
    assert tracking_main(*TINY, "--seeds", ",".join(map(str, range(12))), "--no-models", "--no-figures",
                         "--set", "training.epochs=1") == 0
    err = capsys.readouterr().err
    assert "training seeds 0–11 (12 seeds) ..." in err and max(map(len, err.splitlines())) < 200
    (parent,) = [r for r in all_runs(MlflowClient()) if r.data.tags.get("speccomp.role") == "main"]
    assert parent.data.tags["seeds"] == "0–11 (12 seeds)" and parent.info.run_name == "main seeds 0–11 (12 seeds)"


def test_a_signal_while_a_run_is_being_created_leaves_none_running(env, monkeypatch):  # noqa: F811
    """SIGINT delivered inside `create_run`, after the store made the run (the instant at which a
    5,000-seed run once left `seed-425` RUNNING): the signal is held until the tracker knows the
    run, then acts; every run ends KILLED."""
    from mlflow.tracking import MlflowClient as Client

    from speccomp_cli.main import main

    real = Client.create_run
    made = []

    def create_run(self, *args, **kwargs):
        run = real(self, *args, **kwargs)
        made.append(run.info.run_id)
        if len(made) == 3:  # the parent, seed 0, then during seed 1's creation
            os.kill(os.getpid(), signal.SIGINT)
        return run

    monkeypatch.setattr(Client, "create_run", create_run)
    assert main(["run", *TINY, "--seeds", "0,1,2", "--no-models", "--no-figures"]) == 130
    runs = {r.info.run_id: r for r in all_runs(MlflowClient())}
    assert len(made) == 3 and set(made) == set(runs)
    assert {r.info.status for r in runs.values()} == {"KILLED"}


def test_a_signal_inside_a_store_transaction_acts_after_it(tmp_path, monkeypatch):
    """Ctrl-C landing in the middle of a store write (here: as the batch's first metric row is
    inserted) is raised once the transaction is over: the batch is in the store whole, and the
    SQLite file is free at once for the guard's own writes (an interrupted transaction could leave
    its write lock to a connection nobody closes, and MLflow waits up to 20 s for a lock)."""
    import sqlite3

    import mlflow
    from mlflow.entities import Metric
    from sqlalchemy import event

    from tracking.store import tracking_client

    monkeypatch.chdir(tmp_path)
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    try:
        client = tracking_client()
        run_id = client.create_run(client.create_experiment("held")).info.run_id
        engine = client._tracking_client.store.engine
        sent = []

        def interrupt(conn, cursor, statement, *args):
            if "INSERT INTO metrics" in statement and not sent:
                sent.append(statement)
                os.kill(os.getpid(), signal.SIGINT)

        event.listen(engine, "before_cursor_execute", interrupt)
        try:
            with pytest.raises(KeyboardInterrupt):
                client.log_batch(run_id, metrics=[Metric("m", float(s), 0, s) for s in range(10)])
        finally:
            event.remove(engine, "before_cursor_execute", interrupt)
        assert sent
        assert [m.step for m in client.get_metric_history(run_id, "m")] == list(range(10))
        free = sqlite3.connect(tmp_path / "mlflow.db", timeout=0)  # no waiting for a lock
        free.execute("CREATE TABLE probe (a)")
        free.commit()
        free.close()
    finally:
        mlflow.set_tracking_uri(None)


def test_held_signals_are_delivered_when_the_block_ends():
    from tracking.runs import Terminated, signals_held, sigterm_as_interrupt

    steps = []
    with pytest.raises(KeyboardInterrupt), signals_held():
        os.kill(os.getpid(), signal.SIGINT)
        steps.append("after the signal, still inside")
    assert steps == ["after the signal, still inside"]
    with sigterm_as_interrupt(), pytest.raises(Terminated), signals_held():
        os.kill(os.getpid(), signal.SIGTERM)
        steps.append("SIGTERM held too")
    assert steps[-1] == "SIGTERM held too"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


SWALLOWED = """
import io, signal
from tracking.progress import Progress
from tracking.runs import sigterm_as_interrupt

class Dropped:  # Python drops what a __del__ raises ("Exception ignored in ..."), as a weakref callback's
    def __del__(self):
        signal.raise_signal(signal.SIG{name})
        sum(range(10_000))  # the handler runs here and its exception is dropped

with sigterm_as_interrupt():
    bar = Progress("work", total=100, stream=io.StringIO(), tty=False)
    done = 0
    try:
        Dropped()
        print("went on")
        for _ in range(100):
            bar.update(1)  # the next step of work
            done += 1
        print("lost")
    except KeyboardInterrupt as exc:
        print(type(exc).__name__, "at step", done)
"""


@pytest.mark.parametrize("name", ["INT", "TERM"])
def test_an_interrupt_a_library_swallowed_is_raised_at_the_next_progress_update(name):
    """A Ctrl-C or SIGTERM whose exception Python dropped (it landed in a `__del__`, a weakref callback
    or the garbage collector: CI once saw a 5,000-seed run go on after SIGINT) is raised again by the
    next progress update of the work that went on, and only then (never while an exception unwinds)."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", SWALLOWED.format(name=name)], capture_output=True, text=True,
                          timeout=60, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert "Exception ignored" in done.stderr  # the first delivery was dropped
    expected = "KeyboardInterrupt" if name == "INT" else "Terminated"
    assert done.stdout.split() == ["went", "on", expected, "at", "step", "0"], (done.stdout, done.stderr[-2000:])


def test_an_answered_interrupt_is_not_raised_again():
    """Once the guard's cleanup has begun (`signals_deferred`) or the block is left, progress goes on."""
    from tracking import interrupts
    from tracking.progress import Progress
    from tracking.runs import signals_deferred

    interrupts.raised(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        Progress("work", total=2, stream=io.StringIO(), tty=False).update(1)
    with signals_deferred():
        Progress("cleanup", total=2, stream=io.StringIO(), tty=False).update(1)
    assert interrupts.pending() is None


# --- a tracking server that does not answer ------------------------------------------------------
def test_each_mlflow_retry_is_one_line_and_giving_up_says_for_how_long(monkeypatch, capsys):
    """Against a port where nothing listens: every retry MLflow's client makes is one console line,
    and the exhausted request is one line naming the server and how long it was retried."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from tracking import store

    with socket_free_port() as port:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
        try:
            store.configure()
            with pytest.raises(MlflowException) as caught:
                MlflowClient().get_run("0" * 32)
        finally:
            mlflow.set_tracking_uri(None)
        lines = capsys.readouterr().err.strip().splitlines()
        assert [line.split(" (", 1)[0] for line in lines] == [
            f"warning: tracking server http://127.0.0.1:{port} did not answer"] * 2, lines
        assert lines[-1].endswith("for /api/2.0/mlflow/runs/get; MLflow retries the request (retry 2 of 2)")
        assert store.unreachable(caught.value) == (
            f"tracking server http://127.0.0.1:{port} did not answer: MLflow retried the request 2 times over about "
            "2 s (MLFLOW_HTTP_REQUEST_MAX_RETRIES, MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR) and gave up")
    assert store.unreachable(ValueError("Max retries exceeded")) is None


def test_mlflow_request_retries_are_set_explicitly():
    import tracking
    from tracking.store import retry_span_s

    assert tracking.HTTP_RETRIES["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "10"
    for name in tracking.HTTP_RETRIES:
        assert name in os.environ
    if all(os.environ[k] == v for k, v in tracking.HTTP_RETRIES.items()):
        assert 450 < retry_span_s() < 500  # about 8 minutes of outage before a request fails


def socket_free_port():
    """A port on 127.0.0.1 where nothing listens (bound, then closed)."""
    import contextlib
    import socket

    @contextlib.contextmanager
    def free():
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        yield port

    return free()
