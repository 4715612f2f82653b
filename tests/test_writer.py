"""The record writer (`tracking.writer`): a study's MLflow writes made by a second process, in
order, the same records as without it; its failures stop the study in one line with no run left
RUNNING; Ctrl-C is the caller's."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag

from tests.test_study import CONFIGS, STUDY, runs, study_argv, write_space
from tests.test_study import env as env  # noqa: F401, PLC0414  (the fixture)
from tracking.runs import RunTracker
from tracking.writer import DeferredClient, RecordWriterFailed, discard

REPO = Path(__file__).resolve().parents[1]
pytestmark = [
    pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize"),
    pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning"),
]


@pytest.fixture
def store(env):  # noqa: F811
    uri = f"sqlite:///{env}/mlflow.db"
    client = MlflowClient(uri)
    experiment = client.create_experiment("writer")
    deferred = DeferredClient.start(client, uri)
    yield client, deferred, experiment
    deferred.settle(timeout=5)


def test_queued_writes_land_in_order_and_a_read_waits_for_them(store, tmp_path):
    client, deferred, experiment = store
    run_id = deferred.create_run(experiment).info.run_id  # at once: its id is needed
    metrics = [Metric("loss", float(i), 1000 + i, i) for i in range(300)]
    deferred.log_batch(run_id, metrics=metrics, params=[Param("lr", "0.1")], tags=[RunTag("seed", "1")])
    metrics.clear()  # what the caller does after: the call was pickled when it was made
    deferred.log_batch(run_id, metrics=[Metric("loss", -1.0, 5000, 300)])
    (tmp_path / "a.csv").write_text("x\n1\n")
    deferred.log_artifact(run_id, str(tmp_path / "a.csv"))
    deferred.set_tag(run_id, "mlflow.note.content", "done")
    deferred.set_terminated(run_id, status="FINISHED", end_time=1234567)
    run = deferred.get_run(run_id)  # waits for the queue
    assert run.info.status == "FINISHED" and run.info.end_time == 1234567  # the end time given here
    assert len(client.get_metric_history(run_id, "loss")) == 301
    assert run.data.metrics["loss"] == -1.0 and run.data.params == {"lr": "0.1"}
    assert run.data.tags["seed"] == "1" and run.data.tags["mlflow.note.content"] == "done"
    assert [f.path for f in client.list_artifacts(run_id)] == ["a.csv"]
    process = deferred.process
    deferred.close()
    assert process.returncode == 0 and not deferred.live
    deferred.set_tag(run_id, "after", "close")  # made here from now on
    assert client.get_run(run_id).data.tags["after"] == "close"


def test_discard_removes_the_folder_once_its_artifacts_are_written(store, tmp_path):
    client, deferred, experiment = store
    run_id = deferred.create_run(experiment).info.run_id
    folder = tmp_path / "trial-0"
    folder.mkdir()
    (folder / "summary.csv").write_text("a\n1\n")
    deferred.log_artifact(run_id, str(folder / "summary.csv"))
    discard(deferred, folder)
    deferred.close()
    assert not folder.exists()
    assert [f.path for f in client.list_artifacts(run_id)] == ["summary.csv"]
    other = tmp_path / "other"
    other.mkdir()
    discard(client, other)  # a plain client: at once
    assert not other.exists()


def test_a_failed_write_stops_the_writer_and_the_next_call_names_it(store, tmp_path):
    client, deferred, experiment = store
    trial = deferred.create_run(experiment, run_name="trial-3").info.run_id
    run_id = deferred.create_run(experiment, run_name="seed-1", tags={"mlflow.parentRunId": trial}).info.run_id
    deferred.log_artifact(run_id, str(tmp_path / "missing.csv"))  # fails there
    deferred.set_terminated(run_id, status="FINISHED")  # never written: the writer stopped
    with pytest.raises(RecordWriterFailed, match=rf"record writer: log_artifact of run trial-3/seed-1 \({run_id}\) "
                       r"failed: FileNotFoundError: .*missing\.csv'$"):
        deferred.wait()
    assert not deferred.live
    assert deferred.process.returncode == 1
    assert client.get_run(run_id).info.status == "RUNNING"
    assert deferred.unconfirmed_ends() == [run_id]
    assert deferred.unconfirmed_ends() == []  # once
    deferred.set_tag(run_id, "after", "failure")  # made here now
    assert client.get_run(run_id).data.tags["after"] == "failure"


def test_a_failure_line_hides_passwords(store, tmp_path):
    client, deferred, experiment = store
    run_id = deferred.create_run(experiment).info.run_id
    deferred.log_artifact(run_id, f"{tmp_path}/postgresql://postgres:hunter2@127.0.0.1:5432/x.csv")
    with pytest.raises(RecordWriterFailed) as failed:
        deferred.wait()
    assert "postgresql://postgres:***@127.0.0.1:5432" in str(failed.value) and "hunter2" not in str(failed.value)


def test_a_failure_first_seen_while_stopping_leaves_no_run_running(store, tmp_path, capsys):
    """The writer fails and nothing has read its answer when the command stops (Ctrl-C): the
    guard's `close_all` settles it, says the failure on stderr, and ends every run, the one whose
    end was queued after the failed call included."""
    client, deferred, experiment = store
    tracker = RunTracker(deferred, experiment)
    parent = tracker.start("trial-0")
    child = tracker.start("seed-1", parent_id=parent)
    deferred.log_artifact(child, str(tmp_path / "missing.csv"))
    tracker.finish(child)
    tracker.close_all("KILLED", error="interrupted (Ctrl-C)")
    assert {client.get_run(r).info.status for r in (parent, child)} == {"KILLED"}
    assert client.get_run(child).data.tags["error"] == "interrupted (Ctrl-C)"
    warning = capsys.readouterr().err.strip().splitlines()
    assert len(warning) == 1 and warning[0].startswith("warning: record writer: log_artifact of run trial-0/seed-1")


def test_close_all_ends_the_runs_whose_queued_end_was_not_written(store, tmp_path):
    client, deferred, experiment = store
    tracker = RunTracker(deferred, experiment)
    parent = tracker.start("trial-0")
    child = tracker.start("seed-1", parent_id=parent)
    deferred.log_artifact(child, str(tmp_path / "missing.csv"))
    tracker.finish(child)  # queued: the tracker forgets it, the store does not have it
    assert tracker.open == [parent]
    with pytest.raises(RecordWriterFailed):
        deferred.wait()
    tracker.close_all("FAILED", error="RecordWriterFailed: the writer failed")
    for run_id in (parent, child):
        run = client.get_run(run_id)
        assert run.info.status == "FAILED" and run.data.tags["error"] == "RecordWriterFailed: the writer failed"
    assert tracker.open == []


def test_ctrl_c_is_the_callers_the_writer_writes_what_was_queued(store):
    client, deferred, experiment = store
    tracker = RunTracker(deferred, experiment)
    run_id = tracker.start("seed-1")
    deferred.log_batch(run_id, metrics=[Metric("loss", float(i), 1, i) for i in range(500)])
    deferred.process.send_signal(signal.SIGINT)  # as Ctrl-C reaches the whole process group
    deferred.process.send_signal(signal.SIGTERM)
    tracker.finish(run_id)
    tracker.close_all("KILLED", error="interrupted (Ctrl-C)")  # the guard: settles the writer first
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"  # ended before the stop, and written
    assert len(client.get_metric_history(run_id, "loss")) == 500
    assert deferred.process.returncode == 0


def test_a_killed_writer_is_a_failure_that_names_what_was_not_written(store):
    client, deferred, experiment = store
    run_id = deferred.create_run(experiment).info.run_id
    deferred.wait()  # the writer is up
    deferred.process.kill()
    deferred.process.wait()
    with pytest.raises(RecordWriterFailed, match=r"record writer: ended \(exit code -9\) before "):
        for _ in range(50):  # the first calls may still fit in the pipe
            deferred.log_batch(run_id, metrics=[Metric("loss", 1.0, 1, 0)])
        deferred.wait()
    assert not deferred.live


def _records(folder: Path) -> dict:
    """Every run of the store by its place in the hierarchy: status, tags (those naming a process,
    run or path left out), params, metric rows (wall times left out), dataset inputs, artifact files."""
    con = sqlite3.connect(folder / "mlflow.db")
    rows = {rid: (name, status, uri) for rid, name, status, uri in
            con.execute("SELECT run_uuid, name, status, artifact_uri FROM runs")}
    parent = dict(con.execute("SELECT run_uuid, value FROM tags WHERE key = 'mlflow.parentRunId'"))

    def place(rid: str) -> str:
        return (place(parent[rid]) + "/" if rid in parent else "") + rows[rid][0]

    volatile = {"speccomp.process", "speccomp.pid", "mlflow.parentRunId", "mlflow.note.content", "optuna.storage",
                "best_trial_run_id"}
    out = {}
    for rid, (_, status, uri) in rows.items():
        root = Path(urlparse(uri).path)
        out[place(rid)] = {
            "status": status,
            "tags": {k: v for k, v in con.execute("SELECT key, value FROM tags WHERE run_uuid = ?", (rid,))
                     if k not in volatile},
            "params": dict(con.execute("SELECT key, value FROM params WHERE run_uuid = ?", (rid,))),
            "metrics": sorted((k, v, s) for k, v, s in con.execute(
                "SELECT key, value, step FROM metrics WHERE run_uuid = ?", (rid,)) if "wall_s" not in k),
            "inputs": sorted(con.execute("SELECT d.name, d.digest FROM inputs i JOIN datasets d ON "
                                         "d.dataset_uuid = i.source_id WHERE i.destination_id = ?", (rid,))),
            "files": sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()),
        }
    return out


def test_a_study_leaves_the_same_records_with_and_without_the_writer(tmp_path):
    """Two studies of the same trials, one whose records a second process writes (the default),
    one writing them itself: the same runs, statuses, tags, params, metric rows, dataset inputs
    and artifact files (what names a process, a run or a path aside)."""
    found, space = {}, write_space(tmp_path)  # one space file: its path is a tag
    for mode in ("--record-writer", "--no-record-writer"):
        folder = tmp_path / mode.strip("-")
        folder.mkdir()
        env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{folder}/mlflow.db",
               "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
        for name in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID"):
            env.pop(name, None)
        argv = study_argv(folder, mode, "--sampler-seed", "0", space=space, n_trials=2)
        done = subprocess.run([sys.executable, "-m", "speccomp_cli", *argv], cwd=folder, env=env,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        found[mode] = _records(folder)
    with_writer, without = found.values()
    assert sorted(with_writer) == sorted(without) and len(with_writer) == 1 + 2 * 3  # study, 2 trials x (trial + 2 seeds)
    assert {r["status"] for r in with_writer.values()} == {"FINISHED"}
    assert any(r["metrics"] and r["inputs"] and r["files"] for r in with_writer.values())
    for place, records in with_writer.items():
        other = without[place]
        differ = {kind: v for kind, v in records.items() if v != other[kind]}
        if "tags" in differ:  # the one that differs, in the message
            differ["tags"] = {k: (v, other["tags"].get(k)) for k, v in records["tags"].items() if v != other["tags"].get(k)}
        assert not differ, (place, differ)


def _writer_of(pid: int, timeout: float = 60) -> int:
    """The pid of the record writer process started by `pid`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
                cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid and b"tracking.writer" in cmdline:
                return int(entry.name)
        time.sleep(0.1)
    raise AssertionError(f"no record writer under process {pid}")


def test_a_study_whose_writer_is_killed_stops_in_one_line_with_no_run_running(env):  # noqa: F811
    """The writer SIGKILLed (as by the OOM killer) while trials run: the study stops with one
    `error:` line naming what was not written, exit code 1, no traceback; every run it opened ends
    FAILED or FINISHED, none RUNNING."""
    argv = study_argv(env, n_trials=50)
    proc = subprocess.Popen([sys.executable, "-m", "speccomp_cli", *argv], cwd=env, env=os.environ,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        writer = _writer_of(proc.pid)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not any(r.info.status == "FINISHED" for r in runs(env, "trial")):
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            time.sleep(0.2)
        os.kill(writer, signal.SIGKILL)
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1, err[-3000:]
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: record writer: ended (exit code -9) before "), err[-3000:]
    assert "Traceback" not in err
    mine = runs(env)
    assert mine and "RUNNING" not in {r.info.status for r in mine}, [(r.info.run_name, r.info.status) for r in mine]
    assert {r.info.status for r in mine if r.data.tags.get("speccomp.role") == "study"} == {"FAILED"}


def test_the_study_command_line_has_the_writer_on_by_default(env, monkeypatch):  # noqa: F811
    import study.main as study_main

    seen = []
    monkeypatch.setattr(study_main, "main", lambda options: seen.append(options.record_writer) or 0)
    from speccomp_cli.main import main as cli

    space = write_space(env)
    for extra, expected in (((), True), (("--no-record-writer",), False)):
        assert cli(["study", "--space", str(space), "--config-dir", str(CONFIGS), "--study-name", STUDY,
                    *extra]) == 0
        assert seen[-1] is expected


def test_ctrl_c_to_a_study_leaves_the_finished_trials_records_whole_and_no_run_running(env):  # noqa: F811
    """Ctrl-C (SIGINT to the whole process group, the writer included) while trials run: exit 130;
    the trials that ended before keep every record and end FINISHED; the rest end KILLED; none
    RUNNING."""
    argv = study_argv(env, n_trials=200)
    proc = subprocess.Popen([sys.executable, "-m", "speccomp_cli", *argv], cwd=env, env=os.environ,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and sum(r.info.status == "FINISHED" for r in runs(env, "trial")) < 2:
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            time.sleep(0.1)
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err
    mine = runs(env)
    assert "RUNNING" not in {r.info.status for r in mine}, [(r.info.run_name, r.info.status) for r in mine]
    finished = [r for r in runs(env, "trial") if r.info.status == "FINISHED"]
    assert len(finished) >= 2
    client = MlflowClient(f"sqlite:///{env}/mlflow.db")  # not the process's current store: another test's
    for trial in finished:
        seeds = [r for r in mine if r.data.tags.get("mlflow.parentRunId") == trial.info.run_id]
        assert len(seeds) == 2 and {r.info.status for r in seeds} == {"FINISHED"}
        assert trial.data.tags["optuna.trial_state"] == "COMPLETE" and "objective" in trial.data.metrics
        assert {f.path for f in client.list_artifacts(trial.info.run_id)} >= {"config.yaml", "summary.csv"}
        for seed in seeds:
            assert seed.data.metrics and seed.data.params
            assert len(client.get_run(seed.info.run_id).inputs.dataset_inputs) >= 2


def test_a_writer_behind_holds_the_caller_back_at_the_backlog(store, monkeypatch):
    """More than `BACKLOG_BYTES` queued and not written: the next call waits until the writer has
    caught up below it, so a slow writer cannot fall ever further behind."""
    import tracking.writer as writer

    client, deferred, experiment = store
    monkeypatch.setattr(writer, "BACKLOG_BYTES", 20_000)
    run_id = deferred.create_run(experiment).info.run_id
    peak = 0
    for i in range(30):  # about 12 kB pickled each
        deferred.log_batch(run_id, metrics=[Metric(f"m{j}", float(i), 1, i) for j in range(300)])
        peak = max(peak, deferred._backlog)
    assert peak <= 20_000 + 13_000  # the limit, plus the one call that went over it
    deferred.close()
    assert len(client.get_metric_history(run_id, "m0")) == 30


def test_signals_held_by_hold_act_at_release():
    """`hold` (a study's worker, as its objective returns) records Ctrl-C instead of acting on it;
    `release` (after Optuna has recorded the trial) delivers it."""
    from tracking import interrupts

    interrupts.hold()
    try:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)  # delivered and recorded, not raised
    except KeyboardInterrupt:
        interrupts.release()
        pytest.fail("Ctrl-C acted while held")
    with pytest.raises(KeyboardInterrupt):
        interrupts.release()
    interrupts.release()  # nothing held: nothing happens
