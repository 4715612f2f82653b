"""Remove one run for good: MLflow's deletion, then MLflow's garbage collection of that run only.

Used when a run holds something that must not stay in the store: `mlflow run -e study -P
storage=postgresql://user:PASSWORD@...` records the URL as a parameter of the run it creates before
our command starts. The command refuses the URL and the run is removed for good; a soft delete
alone would keep the parameter in the store (and a SQLite file keeps the deleted rows' bytes in
its free pages until it is vacuumed).

`mlflow run` sets its run's end status after our command exits (it needs the run active then), so
when a `mlflow run` process started us, the removal waits for that process to end: a small
detached process (`python -m tracking.purge RUN_ID --after PID:IDENTITY`), bounded in time.

    purge_run(client, uri, run_id)   delete, then gc that run (its artifacts too); SQLite: VACUUM
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

WAIT_FOR_OWNER_S = 300.0
"""The detached remover waits at most this long for `mlflow run` to end (it ends within a second
of our command; past this the run is removed anyway)."""
POLL_S = 0.2


def purge_run(client, uri: str, run_id: str) -> bool:
    """Delete `run_id` (soft, MLflow's lifecycle), then hard-delete it and its artifacts with MLflow's
    own gc routine, restricted to that run (the `mlflow gc` command without experiment ids would
    also purge every deleted experiment and logged model of the store). SQLite: VACUUM afterwards,
    so that the freed pages holding its rows are gone from the file. Returns False when the store
    cannot hard-delete (a tracking server: only its operator can run gc), True when it is gone."""
    from mlflow.entities import LifecycleStage
    from mlflow.exceptions import MlflowException

    from speccomp_compat import gc_run

    try:
        run = client.get_run(run_id)
    except MlflowException:
        return True  # gone already
    if run.info.lifecycle_stage != LifecycleStage.DELETED:
        client.delete_run(run_id)
    if uri.startswith(("http://", "https://", "databricks")) or not gc_run(uri, run_id):
        return False  # only the server's operator can run gc on its backend store
    if uri.startswith("sqlite:"):
        _vacuum_sqlite(uri)
    return True


def _vacuum_sqlite(uri: str) -> None:
    import sqlite3

    from tracking.store import sqlite_path

    path = sqlite_path(uri)
    if str(path) in ("", ":memory:") or not path.is_file():
        return
    with contextlib.closing(sqlite3.connect(path, timeout=20)) as conn:
        conn.execute("VACUUM")


def owning_mlflow_run() -> tuple[int, str] | None:
    """The `mlflow run` process among our ancestors (pid, start identity), or None."""
    from tracking.stale import _ancestors, _is_mlflow_run, process_identity

    for pid in sorted(_ancestors() - {os.getpid()}, reverse=True):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if _is_mlflow_run([a.decode(errors="replace") for a in argv]):
            return pid, process_identity(pid)
    return None


def purge_after(run_id: str, owner: tuple[int, str]) -> None:
    """Start the detached remover: it waits for `owner` (the `mlflow run` process) to end, then
    `purge_run`. Its own output goes nowhere (the command has said what happens)."""
    argv = [sys.executable, "-m", "tracking.purge", run_id, "--after", f"{owner[0]}:{owner[1]}"]
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    env.pop("MLFLOW_RUN_ID", None)
    subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                     start_new_session=True, close_fds=True)


def _wait_for(pid: int, identity: str, timeout_s: float) -> None:
    from tracking.stale import process_identity

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and process_identity(pid) == identity and identity:
        time.sleep(POLL_S)


def main(argv: list[str]) -> int:
    """`python -m tracking.purge RUN_ID --after PID:IDENTITY` (started by `purge_after`)."""
    from mlflow import MlflowClient

    from tracking import store

    run_id, pid_identity = argv[0], argv[2]
    pid, _, identity = pid_identity.partition(":")
    _wait_for(int(pid), identity, WAIT_FOR_OWNER_S)
    uri = store.configure()
    purge_run(MlflowClient(), uri, run_id)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
