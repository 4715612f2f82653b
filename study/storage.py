"""Optuna storage from one string, checked before any trial exists.

| storage string                         | what                                                       |
| -------------------------------------- | ---------------------------------------------------------- |
| (empty) / `optuna.log`                 | a journal file in the working directory (the default)      |
| `journal:PATH` or a path ending `.log` | a journal file: safe for several processes on one machine  |
| `sqlite:///PATH`                       | SQLite (one process at a time is safest)                   |
| `postgresql://user@host:5432/db`       | PostgreSQL: many workers on many machines                  |

A journal file is what Optuna recommends for several processes on one machine; it opens with
`optuna.load_study(storage=JournalStorage(JournalFileBackend(PATH)))` and `optuna-dashboard PATH`.
Every storage has a heartbeat: a trial whose worker died is failed after the grace period and
re-queued once (RetryHeartbeatStaleTrialCallback), never left RUNNING.
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState

from speccomp_compat import StaleTrialsByHeartbeat, optuna_base_heartbeat, trial_id
from tracking.store import REACH_TIMEOUT_S, creation_lock, folder_write_problem, redact_url, sqlite_path, sqlite_problem

warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

DEFAULT_JOURNAL = "optuna.log"
HEARTBEAT_INTERVAL_S = 10
GRACE_PERIOD_S = 40
MAX_RETRY = 1
HEARTBEAT_ATTR = "speccomp:heartbeat"


class StorageError(ValueError):
    """Unusable storage; one line, password redacted."""


class HeartbeatJournalStorage(StaleTrialsByHeartbeat, JournalStorage, optuna_base_heartbeat()):
    """A journal file with the heartbeat that RDBStorage has: the worker records a timestamp in
    the trial's system attributes every interval; a RUNNING trial whose last beat is older than
    the grace period belongs to a dead worker."""

    def __init__(
        self,
        backend: JournalFileBackend,
        heartbeat_interval: int = HEARTBEAT_INTERVAL_S,
        grace_period: int = GRACE_PERIOD_S,
        stale_trial_callback: Callable[[optuna.Study, FrozenTrial], None] | None = None,
    ):
        super().__init__(backend)
        self.heartbeat_interval = heartbeat_interval
        self.grace_period = grace_period
        self.stale_callback = stale_trial_callback

    def record_heartbeat(self, trial_id: int) -> None:
        self.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())

    def stale_trial_ids(self, study_id: int) -> list[int]:
        now = time.time()
        stale = []
        for trial in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
            # A retried trial carries a copy of its dead predecessor's system attributes, old beat
            # included, until its own first beat: its start time counts as a beat.
            beat = trial.system_attrs.get(HEARTBEAT_ATTR)
            started = trial.datetime_start.timestamp() if trial.datetime_start else now
            if now - max(beat if beat is not None else started, started) > self.grace_period:
                stale.append(trial_id(trial))
        return stale

    def get_heartbeat_interval(self) -> int | None:
        return self.heartbeat_interval

    def get_heartbeat_stale_trial_callback(self) -> Callable[[optuna.Study, FrozenTrial], None] | None:
        return self.stale_callback


class SteadyRDBStorage(RDBStorage):
    """RDBStorage whose heartbeat survives a dropped database connection (a restarted server,
    `pg_terminate_backend`): Optuna's heartbeat thread ends at the first exception, after which a
    live worker's trial would be failed as stale by the others. A beat that fails is tried again
    (pool_pre_ping opens a new connection), and one that still fails is skipped with a warning."""

    def record_heartbeat(self, trial_id: int) -> None:
        for attempt in range(HEARTBEAT_TRIES):
            try:
                super().record_heartbeat(trial_id)
                return
            except Exception as exc:  # the database's error, whatever its driver calls it
                if attempt == HEARTBEAT_TRIES - 1:
                    reason = redact_url(str(getattr(exc, "orig", None) or exc).strip().splitlines()[0])[:200]
                    print(f"warning: heartbeat of trial id {trial_id} not recorded ({reason}); next one in "
                          f"{self.heartbeat_interval} s", file=sys.stderr)
                    return
                time.sleep(1.0)


HEARTBEAT_TRIES = 3


def open_storage(
    spec: str,
    heartbeat_interval: int = HEARTBEAT_INTERVAL_S,
    grace_period: int = GRACE_PERIOD_S,
    on_stale: Callable[[optuna.Study, FrozenTrial], None] | None = None,
) -> BaseStorage:
    """Open (and check) the storage that `spec` names; StorageError if it is unusable.
    `on_stale(study, trial)` is called for each trial failed by the heartbeat, after its retry is
    queued (its errors are printed, not raised: a live worker must not die of a dead one)."""
    spec = (spec or "").strip() or DEFAULT_JOURNAL
    retry = _stale_callback(on_stale)
    if "://" in spec:
        scheme = spec.split("://", 1)[0].split("+")[0]
        if scheme not in ("sqlite", "postgresql", "postgres", "mysql"):
            raise StorageError(
                f"storage: unsupported URL scheme {scheme!r} in {redact_url(spec)}; "
                "allowed: a journal file path, sqlite:///PATH, postgresql://USER@HOST:PORT/DB"
            )
        if scheme == "postgres":
            spec = "postgresql" + spec[len("postgres"):]
        if scheme == "sqlite":
            problem = sqlite_problem(sqlite_path(spec), example="optuna.db")
            if problem:
                raise StorageError(f"storage: {redact_url(spec)}: {problem}")
        engine_kwargs = {"pool_pre_ping": True}
        if scheme.startswith("postgres"):
            engine_kwargs["connect_args"] = {"connect_timeout": int(REACH_TIMEOUT_S)}
        try:
            # Workers started together on a fresh database would all create the tables at once.
            with creation_lock(spec, "optuna"):
                return SteadyRDBStorage(
                    spec,
                    engine_kwargs=engine_kwargs,
                    heartbeat_interval=heartbeat_interval,
                    grace_period=grace_period,
                    heartbeat_stale_trial_callback=retry,
                )
        except Exception as exc:  # sqlalchemy/psycopg errors: unreachable host, bad db, no driver
            reason = getattr(exc, "orig", None) or exc
            reason = str(reason).strip().splitlines()[0] if str(reason).strip() else type(exc).__name__
            raise StorageError(f"storage: cannot open {redact_url(spec)}: {redact_url(reason)[:300]}") from None
    return _journal(Path(spec.removeprefix("journal:")), heartbeat_interval, grace_period, retry)


def _journal(path: Path, heartbeat_interval: int, grace_period: int, retry) -> HeartbeatJournalStorage:
    """A journal file's storage, after the checks the backend would fail on with a traceback: a
    folder, a missing or read-only folder (the lock file goes beside the journal), a read-only
    file."""
    if path.is_dir():
        raise StorageError(f"storage: {path} is a folder; allowed: a journal file path (e.g. {path / DEFAULT_JOURNAL}), "
                           "sqlite:///PATH or postgresql://USER@HOST:PORT/DB")
    if not path.parent.exists():
        raise StorageError(f"storage: folder {path.parent} does not exist (for journal file {path})")
    problem = folder_write_problem(path.parent)
    if problem:
        raise StorageError(f"storage: folder {path.parent} is not writable ({problem}; for journal file {path})")
    try:
        if path.exists():
            os.close(os.open(path, os.O_RDWR | os.O_APPEND))
        backend = JournalFileBackend(str(path))
    except OSError as exc:
        raise StorageError(f"storage: cannot open journal file {path}: {exc.strerror or exc}") from None
    return HeartbeatJournalStorage(backend, heartbeat_interval, grace_period, retry)


def _stale_callback(on_stale) -> Callable[[optuna.Study, FrozenTrial], None]:
    retry = RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)
    if on_stale is None:
        return retry

    def callback(study: optuna.Study, trial: FrozenTrial) -> None:
        retry(study, trial)
        try:
            on_stale(study, trial)
        except Exception as exc:  # reported, never fatal
            print(f"warning: trial {trial.number} (dead worker): {redact_url(str(exc))[:300]}", file=sys.stderr)

    return callback


def describe(spec: str) -> str:
    """The storage string as it may appear in logs, params and tags (password hidden)."""
    return redact_url((spec or "").strip() or DEFAULT_JOURNAL)
