"""End to end, as a user meets them: SIGTERM to a run of 200 seeds, SIGINT at several instants of a
run of 5,000 seeds, `mlflow run` without conda leaving its run RUNNING (tidied by the next start),
a password passed as `mlflow run -P` and a custom sampler that fails, through `mlflow run`."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from speccomp.core.config import default_config_dir
from speccomp.core.experiment import MAX_ENSEMBLE, ensembles
from tests.conftest import TINY_OVERRIDES
from tests.test_tracking import REPO, all_runs
from tests.test_tracking_e2e import BIN, mlflow_run, project_runs, store  # noqa: F401  (store: a fixture)

pytestmark = pytest.mark.slow

GRACE_S = 10  # what `docker stop` gives a container before SIGKILL
STUDY_GRACE_S = 30  # systemd's default is 90 s


def test_sigterm_on_a_long_seed_list_leaves_nothing_running(store):  # noqa: F811
    """200 tiny seeds, SIGTERM once the first ensembles are done: the process exits by itself
    within the grace period; seeds finished before keep their FINISHED runs, the ensemble being
    trained ends KILLED, seeds not started have no run, and nothing is left RUNNING."""
    seeds = list(range(200))
    groups = ensembles(seeds)
    argv = [sys.executable, "-m", "speccomp_cli", "run", "--seeds", ",".join(map(str, seeds)), "--run-name", "many",
            "--no-models", "--no-figures", "--threads", "1", "--config-dir", str(default_config_dir()),
            *[a for o in [*TINY_OVERRIDES, "training.checkpoint_retention=last"] for a in ("--set", o)]]
    proc = subprocess.Popen(argv, cwd=store.path, env=store.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        _wait_for_finished_seed_runs(store.client, proc, "many", n=len(groups[0]) + 1, timeout=300)
        proc.send_signal(signal.SIGTERM)
        try:
            _, err = proc.communicate(timeout=GRACE_S)
        except subprocess.TimeoutExpired:
            proc.kill()  # what a supervisor does when the grace period is over
            _, err = proc.communicate()
            pytest.fail(f"still running {GRACE_S} s after SIGTERM")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143, err[-3000:]

    runs = all_runs(store.client)
    (parent,) = [r for r in runs if r.info.run_name == "many"]
    kids = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert parent.info.status == "KILLED"
    by_status = {s: sorted(int(k.data.tags["seed"]) for k in kids if k.info.status == s) for s in ("FINISHED", "KILLED")}
    assert [k for k in kids if k.info.status not in by_status] == []  # nothing RUNNING, nothing FAILED
    # runs are made ensemble by ensemble, in seed order (the signal may come while the last one's
    # are being made); seeds finish in order; only the ensemble being trained ends KILLED
    created = sorted(by_status["FINISHED"] + by_status["KILLED"])
    assert created == seeds[:len(created)]
    assert by_status["FINISHED"] == created[:len(by_status["FINISHED"])]
    group_of = {s: i for i, g in enumerate(groups) for s in g}
    assert {group_of[s] for s in by_status["KILLED"]} <= {group_of[created[-1]]}
    assert len(by_status["KILLED"]) <= MAX_ENSEMBLE
    assert len(kids) < len(seeds)  # the seeds not started have no run
    assert [r.info.run_name for r in all_runs(store.client) if r.info.status == "RUNNING"] == []


@pytest.mark.parametrize("after_s", [0.0, 0.8, 2.5])
def test_sigint_at_any_instant_of_a_5000_seed_run_leaves_nothing_running(store, after_s):  # noqa: F811
    """`speccomp run --seeds 0,1,...,4999`, SIGINT at several instants after its parent run
    appears (while seed runs are being created, trained, ended): exit 130 within the grace period,
    every run it made KILLED or FINISHED, none RUNNING; the seeds printed and tagged in short form."""
    name = f"sigint-{after_s}"
    argv = [sys.executable, "-m", "speccomp_cli", "run", "--seeds", ",".join(map(str, range(5000))), "--run-name",
            name, "--no-models", "--no-figures", "--threads", "1", "--config-dir", str(default_config_dir()),
            *[a for o in [*TINY_OVERRIDES, "training.checkpoint_retention=last"] for a in ("--set", o)]]
    proc = subprocess.Popen(argv, cwd=store.path, env={**store.env, "PYTHONFAULTHANDLER": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=_sigint_default)  # Ctrl-C acts even if this shell ignores it
    try:
        deadline = time.monotonic() + 120
        while not [r for r in all_runs(store.client) if r.info.run_name == name]:
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-3000:]
            time.sleep(0.05)
        time.sleep(after_s)
        proc.send_signal(signal.SIGINT)
        try:
            out, err = proc.communicate(timeout=GRACE_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running {GRACE_S} s after SIGINT; where each thread was:\n{_stacks(proc)}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err[-3000:]
    assert max(map(len, (out + err).splitlines()), default=0) < 300  # no line lists 5,000 seeds
    runs = all_runs(store.client)
    (parent,) = [r for r in runs if r.info.run_name == name]
    mine = [parent, *[r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]]
    assert parent.info.status == "KILLED"
    assert {r.info.status for r in mine} <= {"KILLED", "FINISHED"}, [(r.info.run_name, r.info.status) for r in mine]
    if "seeds" in parent.data.tags:  # tagged unless the signal came before the tags were written
        assert parent.data.tags["seeds"] == "0–4999 (5,000 seeds)"
    assert [r.info.run_name for r in all_runs(store.client) if r.info.status == "RUNNING"] == []


def _stacks(proc: subprocess.Popen) -> str:
    """A stuck process's threads, as its faulthandler prints them on SIGABRT (PYTHONFAULTHANDLER=1),
    with the end of what it wrote before."""
    proc.send_signal(signal.SIGABRT)
    try:
        _, err = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    return err[-6000:]


def _sigint_default() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # a background shell starts its children with SIGINT ignored


def _wait_for_finished_seed_runs(client, proc, name: str, n: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        parents = [r for r in all_runs(client) if r.info.run_name == name]
        if parents:
            kids = client.search_runs([parents[0].info.experiment_id],
                                      f"tags.mlflow.parentRunId = '{parents[0].info.run_id}' "
                                      "and attributes.status = 'FINISHED'", max_results=1000)
            if len(kids) >= n:
                return
        time.sleep(0.5)
    pytest.fail(f"fewer than {n} seed runs of {name!r} finished within {timeout} s")


def test_mlflow_run_without_conda_leaves_a_run_the_next_start_ends(store, tmp_path):  # noqa: F811
    """The literal `mlflow run . -P seeds=...` on a machine without conda fails inside MLflow and
    leaves its run RUNNING; the next start reports it in one line and ends it FAILED."""
    before = {r.info.run_id for r in all_runs(store.client)}
    failed = subprocess.run([str(BIN / "mlflow"), "run", str(REPO), "-P", "seeds=1"], cwd=store.path,
                            env={**store.env, "PATH": str(BIN)},  # no conda on PATH, wherever the tests run
                            capture_output=True, text=True, timeout=300)
    assert failed.returncode != 0
    (left,) = [r for r in all_runs(store.client) if r.info.run_id not in before]
    assert left.info.status == "RUNNING"  # MLflow's doing: nothing of ours ran

    overrides = " ".join(TINY_OVERRIDES)
    done = mlflow_run(store, "-P", "seeds=1", "-P", f"overrides={overrides}", "--run-name", "next")
    assert done.returncode == 0, done.stderr[-3000:]
    notes = [line for line in done.stderr.splitlines() if line.startswith("note:")]
    assert notes == ["note: 1 run(s) left RUNNING by processes that no longer exist ended FAILED: "
                     f"{left.info.run_name} ({left.info.run_id[:8]})"]
    after = store.client.get_run(left.info.run_id)
    assert after.info.status == "FAILED"
    assert after.data.tags["error"].startswith("left RUNNING by an `mlflow run` that ended before its command started")
    (next_run,) = [r for r in project_runs(store.client, "main") if r.info.run_name == "next"]
    assert next_run.info.status == "FINISHED"


def test_mlflow_run_with_a_storage_password_is_refused_and_its_run_removed_for_good(store):  # noqa: F811
    """The command refuses the URL in one line; `mlflow run` then records its run's end (it needs
    the run then) and says, without a traceback, that the run failed; once it has exited, the run
    that carried the password is removed (MLflow's delete and gc) and the SQLite file vacuumed:
    no byte of any file of the store holds the password."""
    before = {r.info.run_id for r in all_runs(store.client)}
    done = mlflow_run(store, "-e", "study", "-P", "storage=postgresql://postgres:hunter2@127.0.0.1:5432/test",
                      "-P", "n_trials=1")
    assert done.returncode == 1  # `mlflow run`'s own code for a failed command (ours was 2)
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "carries a password, which is refused" in errors[0], done.stderr[-3000:]
    assert "hunter2" not in errors[0] and "removed for good" in errors[0]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    assert "ERROR mlflow.cli: === Run (ID " in done.stderr  # MLflow's one line for a failed run
    deadline = time.monotonic() + 60  # the remover waits for `mlflow run` to exit, then works
    while time.monotonic() < deadline:
        left = [r for r in all_runs(store.client) if r.info.run_id not in before]
        leaking = [p for p in store.path.rglob("*") if p.is_file() and b"hunter2" in p.read_bytes()]
        if not left and not leaking:
            break
        time.sleep(0.5)
    assert left == [] and leaking == []


def test_mlflow_run_with_a_custom_sampler_that_fails_is_one_line(store):  # noqa: F811
    before = {r.info.run_id for r in all_runs(store.client)}
    done = mlflow_run(store, "-P", "seeds=1", "-P", "overrides=data.splits.train.distribution={type: custom, "
                      "sampler: os:getcwd}")
    assert done.returncode == 1, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: override data.splits.train.distribution={type: custom, sampler: os:getcwd}: "
                      "data.splits.train.distribution.sampler: os:getcwd(rng, n_samples=2, labels) raised TypeError: "
                      "posix.getcwd() takes no arguments (3 given); allowed: a function (rng, n_samples, labels) -> "
                      "array of shape (n_samples, n_components)"], done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    (run,) = [r for r in all_runs(store.client) if r.info.run_id not in before]
    assert run.info.status == "FAILED" and "os:getcwd" in run.data.tags["error"]
    assert run.data.metrics == {}  # refused before any work


def test_sigterm_stops_a_study_and_the_workers_it_started(store, tmp_path):  # noqa: F811
    """SIGTERM to `speccomp study --workers 2` in the middle of long trials: exit 143 within
    `STUDY_GRACE_S` (two processes close their runs on one SQLite store, one after the other,
    the launcher waiting for its worker), every run of the study KILLED (the spawned worker's too), the trials FAIL in
    Optuna, nothing RUNNING."""
    import optuna
    from optuna.trial import TrialState

    from study.storage import open_storage
    from tests.test_study import CONFIGS, write_space

    journal = tmp_path / "optuna.log"
    long = [*TINY_OVERRIDES, "training.epochs=100000", "training.checkpoint_ratio=0.01"]
    argv = [sys.executable, "-m", "speccomp_cli", "study", "--n-trials", "2", "--study-name", "stopped",
            "--storage", str(journal), "--config-dir", str(CONFIGS), "--space", str(write_space(tmp_path)),
            "--seeds", "1", "--workers", "2", "--no-report", *[a for o in long for a in ("--set", o)]]
    proc = subprocess.Popen(argv, cwd=store.path, env=store.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:  # until both workers train a trial
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            trials = [r for r in all_runs(store.client) if r.data.tags.get("optuna.study_name") == "stopped"
                      and r.data.tags.get("speccomp.role") == "seed" and r.data.metrics]
            if len(trials) >= 2:
                break
            time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        try:
            _, err = proc.communicate(timeout=STUDY_GRACE_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
            pytest.fail(f"still running {STUDY_GRACE_S} s after SIGTERM")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143, err[-3000:]
    assert "terminated: the study's runs opened here ended KILLED" in err
    mine = [r for r in all_runs(store.client) if r.data.tags.get("optuna.study_name") == "stopped"
            or r.data.tags.get("speccomp.role") == "study" and r.info.run_name.startswith("study-stopped")]
    assert {r.data.tags.get("speccomp.role") for r in mine} == {"study", "trial", "seed"}
    assert {r.info.status for r in mine} == {"KILLED"}, [(r.info.run_name, r.info.status) for r in mine]
    study = optuna.load_study(study_name="stopped", storage=open_storage(str(journal)))
    assert {t.state for t in study.trials} == {TrialState.FAIL} and len(study.trials) == 2
