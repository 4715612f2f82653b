"""Runs left RUNNING by a process that no longer exists, found and ended FAILED at start.

Every run the project opens carries the host, pid and start identity of the process that opened
it (`process_tags`). A run still RUNNING is *stale* when either
- its process ran on this host and is gone (no such pid, a zombie, a pid reused by a later
  process, or a reboot since), or
- `mlflow run` created it for this project but the command never started (MLflow failed first,
  e.g. no conda: such a run has no process tags), its store is this machine's (SQLite or a
  folder), and no other live `mlflow run` process on this host uses that store.
Runs of other hosts are never touched: their processes cannot be checked from here.

`tidy(client, keep)` ends each stale run FAILED with the reason as its error and returns one line
for the console; the entry points call it automatically before work starts.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from mlflow import MlflowClient
from mlflow.entities import Run, RunStatus

HOST_TAG = "speccomp.host"
PID_TAG = "speccomp.pid"
PROCESS_TAG = "speccomp.process"
"""`<boot id>:<start time in clock ticks>` of the process (Linux): tells a reused pid apart."""
PROJECT_ROOT = Path(__file__).resolve().parents[1]
MAX_LISTED = 5


def process_identity(pid: int) -> str:
    """`<boot id>:<start time>` of a live process, "" where /proc is unavailable or it is gone."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    fields = stat.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    if fields[0] == "Z":  # a zombie: finished, not yet reaped
        return ""
    return f"{boot}:{fields[19]}"


def process_tags() -> dict[str, str]:
    """The tags that let a later process decide whether this one is still alive."""
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid()), PROCESS_TAG: process_identity(os.getpid())}


def process_gone(tags: dict[str, str]) -> bool | None:
    """True if the process named by the tags no longer exists, False if it does, None if that
    cannot be known from here (another host, no tags)."""
    if tags.get(HOST_TAG) != socket.gethostname() or not tags.get(PID_TAG, "").isdigit():
        return None
    pid, recorded = int(tags[PID_TAG]), tags.get(PROCESS_TAG, "")
    if recorded and Path("/proc").is_dir():
        return process_identity(pid) != recorded  # gone, a zombie, a reused pid or another boot
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


@dataclass
class Stale:
    run: Run
    reason: str


def find_stale(client: MlflowClient, store_uri: str, keep: set[str]) -> list[Stale]:
    """Every RUNNING run of the store (all experiments) that is stale, except those in `keep`."""
    ids = [e.experiment_id for e in client.search_experiments()]
    if not ids:
        return []
    running = client.search_runs(ids, filter_string=f"attributes.status = '{RunStatus.to_string(RunStatus.RUNNING)}'",
                                  max_results=50000)
    found, owners = [], None
    for run in running:
        if run.info.run_id in keep:
            continue
        tags = run.data.tags
        gone = process_gone(tags)
        if gone:
            found.append(Stale(run, f"left RUNNING by process {tags[PID_TAG]} on {tags[HOST_TAG]}, which no longer exists"))
        elif gone is None and HOST_TAG not in tags and _never_started(run, store_uri):
            if owners is None:
                owners = live_mlflow_run_processes(store_uri)
            if not owners:
                found.append(Stale(run, "left RUNNING by an `mlflow run` that ended before its command started"))
    return found


def _never_started(run: Run, store_uri: str) -> bool:
    """Made by `mlflow run` for this project in a store on this machine, never taken over."""
    tags = run.data.tags
    if tags.get("mlflow.source.type") != "PROJECT" or "mlflow.project.entryPoint" not in tags:
        return False
    source = tags.get("mlflow.source.name", "")
    path = unquote(urlparse(source).path) if source.startswith("file:") else source
    try:
        same_project = bool(path) and Path(path).resolve() == PROJECT_ROOT
    except OSError:
        return False
    return same_project and _local_store(store_uri) is not None


def _local_store(uri: str, cwd: Path | None = None) -> Path | None:
    """The file or folder of a store on this machine (SQLite, a folder), else None."""
    if uri.startswith("sqlite:"):
        text = uri.split("://", 1)[1].removeprefix("/").split("?")[0] if "://" in uri else ""
    elif uri.startswith("file:"):
        text = unquote(urlparse(uri).path)
    elif "://" not in uri:
        text = uri
    else:
        return None
    return ((cwd or Path.cwd()) / text).resolve() if text else None


def live_mlflow_run_processes(store_uri: str) -> list[int]:
    """Pids of `mlflow run` processes on this host that use (or may use) the store, our own
    ancestors excepted (the `mlflow run` that started us owns the run we were given)."""
    proc = Path("/proc")
    if not proc.is_dir():
        return [-1]  # cannot tell: count as one
    mine = _ancestors()
    target = _local_store(store_uri)
    out = []
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) in mine:
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if not _is_mlflow_run([a.decode(errors="replace") for a in argv]):
            continue
        try:
            env = dict(item.split("=", 1) for item in (entry / "environ").read_text(errors="replace").split("\0") if "=" in item)
            cwd = Path(os.readlink(entry / "cwd"))
        except OSError:
            out.append(int(entry.name))  # cannot see its store: it may be ours
            continue
        uri = env.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db"
        if _local_store(uri, cwd) == target:
            out.append(int(entry.name))
    return out


def _is_mlflow_run(argv: list[str]) -> bool:
    return any(Path(a).name == "mlflow" and argv[i + 1:i + 2] == ["run"] for i, a in enumerate(argv))


def _ancestors() -> set[int]:
    pids, pid = set(), os.getpid()
    while pid > 1 and pid not in pids:
        pids.add(pid)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            break
        pid = int(stat.rsplit(")", 1)[1].split()[1])
    return pids


def tidy(client: MlflowClient, store_uri: str, keep: set[str]) -> str | None:
    """End every stale run FAILED (its reason recorded as the run's error); one line saying what
    was done, or None when there was nothing to do. Never raises: a store that cannot be searched
    gives a warning line instead (the work itself may still succeed)."""
    from tracking.store import record_error, redact_url

    try:
        stale = find_stale(client, store_uri, keep)
    except Exception as exc:
        return f"warning: could not look for runs left RUNNING: {redact_url(str(exc).strip()[:200])}"
    for s in stale:
        record_error(client, s.run.info.run_id, f"{s.reason}; ended FAILED by process {os.getpid()} "
                                                 f"on {socket.gethostname()}")
        client.set_terminated(s.run.info.run_id, status="FAILED")
    if not stale:
        return None
    listed = ", ".join(f"{s.run.info.run_name or s.run.info.run_id} ({s.run.info.run_id[:8]})" for s in stale[:MAX_LISTED])
    more = f" and {len(stale) - MAX_LISTED} more" if len(stale) > MAX_LISTED else ""
    return (f"note: {len(stale)} run(s) left RUNNING by processes that no longer exist ended FAILED: "
            f"{listed}{more}")
