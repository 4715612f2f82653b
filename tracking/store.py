"""Where runs go: the tracking URI (an embedded SQLite file by default), and URL redaction."""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from pathlib import Path

from speccomp.core.config import ConfigError
from speccomp_compat.store_template import new_sqlite_file, sqlite_creation_lock, sqlite_path  # noqa: F401  (re-exported)

DEFAULT_DB = "mlflow.db"
DUPLICATE_WORDS = ("UNIQUE constraint failed", "duplicate key value", "Duplicate entry", "IntegrityError")
"""What a store's error says when two writers inserted the same new key at once (SQLite, PostgreSQL,
MySQL, SQLAlchemy): the loser's write is retried and finds the row."""


def tracking_uri() -> str:
    """`MLFLOW_TRACKING_URI` when set (a server URL or a database); otherwise a SQLite database in
    the working directory (`sqlite:///mlflow.db`), MLflow's own default on this project."""
    uri = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    return uri or f"sqlite:///{DEFAULT_DB}"


def configure() -> str:
    """Point mlflow at `tracking_uri()` and return it; with a tracking server, each retry of a
    request it did not answer is one console line (`report_http_retries`)."""
    import mlflow

    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    if uri.startswith(("http://", "https://")):
        report_http_retries()
    return uri


def retry_line(record) -> str | None:
    """urllib3's "Retrying (...) after connection broken" record as one console line:
    `warning: tracking server URL did not answer (REASON) for PATH; MLflow retries the request
    (retry N of M)`; None for any other record."""
    if not str(record.msg).startswith("Retrying") or len(record.args or ()) < 3:
        return None
    retry, err, path = record.args[:3]
    total = os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "")
    left = getattr(retry, "total", None)
    tries = f"retry {int(total) - left} of {total}" if isinstance(left, int) and total.isdigit() else "retrying"
    reason = " ".join(str(err).split()).split("Failed to establish a new connection: ")[-1].rstrip("')\"")[:120]
    return (f"warning: tracking server {redact_url(tracking_uri())} did not answer ({redact_url(reason)}) for "
            f"{str(path).split('?')[0]}; MLflow retries the request ({tries})")


def retry_span_s() -> float:
    """How long MLflow's client keeps retrying one request to a server that does not answer, from
    its settings (urllib3: no wait before the first retry, then factor * 2^(n-1) s, at most 120 s)."""
    def number(name: str, default: float) -> float:
        try:
            return float(os.environ.get(name, default))
        except ValueError:
            return default

    retries, factor = int(number("MLFLOW_HTTP_REQUEST_MAX_RETRIES", 7)), number("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", 2)
    return sum(min(120.0, factor * 2 ** (n - 1)) for n in range(2, retries + 1))


def unreachable(exc: BaseException) -> str | None:
    """One line for an MLflow request that failed because the tracking server never answered
    (MLflow's retries exhausted), else None; a record writer's failure is judged by its cause
    (`tracking.writer.RecordWriterFailed`, raised in the study's process for the writer's request)."""
    if type(exc).__name__ == "RecordWriterFailed" and exc.__cause__ is not None:
        exc = exc.__cause__
    text = " ".join(str(exc).split())
    if type(exc).__name__ != "MlflowException" or "Max retries exceeded" not in text:
        return None
    retries = os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "7")
    found = re.search(r"API request to (\S+?)/api/", text)
    server = found[1] if found else tracking_uri()
    return (f"tracking server {redact_url(server)} did not answer: MLflow retried the request {retries} "
            f"times over about {retry_span_s():.0f} s (MLFLOW_HTTP_REQUEST_MAX_RETRIES, "
            "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR) and gave up")


def report_http_retries() -> None:
    """Route urllib3's retry warnings (how MLflow's client rides out a tracking server that is
    away; otherwise silent) to one console line each; idempotent."""
    import logging
    import sys

    class RetryLines(logging.Handler):
        def emit(self, record) -> None:
            with contextlib.suppress(Exception):  # a log line must never break a request
                line = retry_line(record)
                if line:
                    print(line, file=sys.stderr, flush=True)

    log = logging.getLogger("urllib3.connectionpool")
    if not any(type(h).__name__ == "RetryLines" for h in log.handlers):
        log.addHandler(RetryLines(logging.WARNING))
        log.setLevel(logging.WARNING)


# user:password@ up to the last "@" of the URL (a password may hold "/", ":" or even "@")
_CREDENTIALS = re.compile(
    r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.\-]*://)(?P<user>[^:/@\s]*)(?::(?P<pw>\S*))?@(?=[^@\s]*(?:\s|$))"
)


def redact_url(url: str) -> str:
    """Hide the password of `scheme://user:password@host/...` (also inside longer text)."""
    return _CREDENTIALS.sub(lambda m: f"{m['scheme']}{m['user']}{':***' if m['pw'] is not None else ''}@", url)


def has_password(url: str) -> bool:
    """Whether `scheme://user:password@host...` carries a password."""
    return any(m["pw"] is not None for m in _CREDENTIALS.finditer(url or ""))


def ui_command(uri: str) -> str:
    """The command that opens the MLflow UI on this store (bound to 127.0.0.1)."""
    if uri.startswith(("http://", "https://")):
        return f"open {redact_url(uri)} in a browser"
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        path = Path(uri.removeprefix("sqlite:///")).resolve()
        uri = f"sqlite:///{path}"
    return f"mlflow ui --host 127.0.0.1 --backend-store-uri {redact_url(uri)}"


STORE_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql", "file", "http", "https", "databricks")
REACH_TIMEOUT_S = 5.0
"""Bound on every check made before work starts (HTTP request, database connection)."""
SQLITE_HEADER = b"SQLite format 3\x00"
BUSY_TRIES = 3
"""A tracking server that times out (busy, e.g. many workers starting at once) is asked this many
times before the command refuses it; one that refuses the connection, once."""


class TrackingStoreError(ConfigError):
    """MLFLOW_TRACKING_URI names a store that cannot be used; one line, password hidden."""


def check_store(uri: str) -> None:
    """Refuse, before any work and within seconds, a tracking URI MLflow cannot use: an unknown
    scheme; a SQLite file that is a folder, not a SQLite database, or cannot be written (read-only
    file or folder); a database server that refuses the connection or has no such database; an
    HTTP URL where no MLflow tracking server answers. (MLflow itself would retry for minutes and
    then end in a traceback.)"""
    allowed = "sqlite:///PATH, postgresql://USER@HOST/DB, http(s)://HOST:PORT (a tracking server), or a folder"
    scheme = uri.split("://", 1)[0].split("+")[0] if "://" in uri else "file"
    where = f"MLFLOW_TRACKING_URI: {redact_url(uri)}"
    if scheme not in STORE_SCHEMES:
        raise TrackingStoreError(f"{where}: unsupported scheme {scheme!r}; allowed: {allowed}")
    problem = None
    if scheme == "sqlite":
        problem = sqlite_problem(sqlite_path(uri))
    elif scheme in ("postgresql", "mysql"):
        problem = database_problem(uri)
    elif scheme in ("http", "https"):
        problem = tracking_server_problem(uri)
    if problem:
        raise TrackingStoreError(f"{where}: {problem}")


def sqlite_problem(path: Path, example: str = DEFAULT_DB) -> str | None:
    """Why a SQLite database at `path` cannot be used for writing, or None. Tried the way the
    kernel decides (opening for writing, creating a file beside it: SQLite writes its journal
    there), not from permission bits, which root ignores and which miss read-only mounts and
    immutable files."""
    if str(path) in ("", ".", ":memory:"):
        return None  # an in-memory database
    path = path.resolve()
    folder = path.parent
    if not folder.is_dir():
        return f"folder {folder} does not exist"
    if path.is_dir():
        return f"{path} is a folder; allowed: a SQLite database file (new or existing), e.g. {path / example}"
    reason = folder_write_problem(folder)
    if reason:
        return f"folder {folder} is not writable ({reason}); SQLite writes its journal beside the database"
    if path.exists():
        try:
            fd = os.open(path, os.O_RDWR)
        except OSError as exc:
            return f"database file {path} is not writable ({exc.strerror or exc})"
        try:
            header = os.read(fd, len(SQLITE_HEADER))
        finally:
            os.close(fd)
        if header and header != SQLITE_HEADER[: len(header)]:
            return f"{path} is not a SQLite database"
    return None


def check_work_dir(text: str | None, option: str = "work_dir") -> Path | None:
    """A folder for staging files (`--work-dir`): existing and writable, or creatable (its nearest
    existing ancestor is a writable folder). ConfigError naming `option` otherwise; None stays None."""
    if text is None:
        return None
    path = Path(text).expanduser()
    allowed = "a folder (existing, or new under a writable folder)"
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{option}: {path} is a file; allowed: {allowed}")
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"{option}: {path}: {existing} is a file, so the folder cannot be created; allowed: {allowed}")
    reason = folder_write_problem(existing)
    if reason:
        raise ConfigError(f"{option}: {path}: folder {existing} is not writable ({reason}); allowed: {allowed}")
    return path


def folder_write_problem(folder: Path) -> str | None:
    """None if a file can be created in `folder`, else the system's reason."""
    import tempfile

    try:
        fd, name = tempfile.mkstemp(dir=folder, prefix=".speccomp-write-check-")
    except OSError as exc:
        return exc.strerror or str(exc)
    os.close(fd)
    os.unlink(name)
    return None


def database_problem(uri: str) -> str | None:
    """Connect once, bounded by REACH_TIMEOUT_S (a missing database, a refused login, no server);
    None if the connection works."""
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    try:
        engine = sqlalchemy.create_engine(uri, poolclass=NullPool,
                                          connect_args={"connect_timeout": int(REACH_TIMEOUT_S)})
    except Exception as exc:  # no driver for the scheme, a malformed URL
        return f"cannot use the URL ({_first_line(exc)})"
    try:
        with engine.connect():
            return None
    except Exception as exc:
        return f"cannot connect ({_first_line(getattr(exc, 'orig', None) or exc)})"
    finally:
        engine.dispose()


def tracking_server_problem(uri: str) -> str | None:
    """Ask the server for an experiment, the MLflow REST way: an MLflow tracking server answers
    JSON (the experiment, or an error code); anything else is not one."""
    import json
    import urllib.error
    import urllib.parse
    import urllib.request

    url = uri.rstrip("/") + "/api/2.0/mlflow/experiments/get-by-name?" + urllib.parse.urlencode(
        {"experiment_name": "Default"})
    request = urllib.request.Request(url, headers=_auth_headers())
    for attempt in range(BUSY_TRIES):  # a server that accepted the connection but is slow: busy, not gone
        try:
            with urllib.request.urlopen(request, timeout=REACH_TIMEOUT_S) as response:
                status, body = response.status, response.read(65536)
            break
        except urllib.error.HTTPError as exc:
            status, body = exc.code, exc.read(65536)
            break
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            timed_out = isinstance(reason, TimeoutError) or "timed out" in str(reason)
            if timed_out and attempt < BUSY_TRIES - 1:
                continue
            waited = f" {BUSY_TRIES} times, {REACH_TIMEOUT_S:g} s each" if timed_out else ""
            return f"no tracking server answers ({redact_url(str(reason))}{waited})"
    if status in (401, 403):
        return (f"the server refuses access (HTTP {status}); set MLFLOW_TRACKING_USERNAME and "
                "MLFLOW_TRACKING_PASSWORD, or MLFLOW_TRACKING_TOKEN")
    try:
        answer = json.loads(body)
    except ValueError:
        answer = None
    if not isinstance(answer, dict) or not ({"experiment", "error_code"} & set(answer)):
        return (f"the server answers (HTTP {status}) but is not an MLflow tracking server "
                "(no MLflow REST API under /api/2.0/mlflow/)")
    return None


def _auth_headers() -> dict[str, str]:
    """The credentials MLflow's own client would send."""
    import base64

    token = os.environ.get("MLFLOW_TRACKING_TOKEN")
    if token:
        return {"Authorization": f"Bearer {token}"}
    user, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
    if user and password:
        return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}
    return {}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    line = text.splitlines()[0].strip() if text else type(exc).__name__
    line = " ".join(line.removeprefix("connection failed: ").split())  # libpq's padding and prefix
    return redact_url(line)[:300]


def libpq_url(uri: str) -> str:
    """A SQLAlchemy PostgreSQL URL (`postgresql+psycopg://...`) as libpq reads it."""
    from sqlalchemy.engine import make_url

    return make_url(uri).set(drivername="postgresql").render_as_string(hide_password=False)


def _lock_key(name: str) -> int:
    """A signed 64-bit advisory-lock key of its own for `name`."""
    import hashlib

    return int.from_bytes(hashlib.sha256(f"speccomp:create:{name}".encode()).digest()[:8], "big", signed=True)


@contextlib.contextmanager
def creation_lock(uri: str, name: str) -> Iterator[None]:
    """Held while a store's tables are created or migrated, so that workers started together
    (on one machine or many) create them one at a time and the others find them made. Without it
    N workers on a fresh PostgreSQL database all run CREATE TABLE at once and all but one fail
    (`UniqueViolation ... pg_type_typname_nsp_index`, DuplicateTable), and on SQLite ("table
    experiments already exists", "duplicate column name").
    PostgreSQL: a session-level advisory lock on that database (released if the holder dies, its
    session ends); SQLite: an exclusive lock on the database's folder; other stores: nothing."""
    scheme = uri.split("://", 1)[0].split("+")[0] if "://" in uri else ""
    if scheme in ("postgresql", "postgres"):
        import psycopg

        with psycopg.connect(libpq_url(uri), connect_timeout=int(REACH_TIMEOUT_S), autocommit=True) as conn:
            conn.execute("SELECT pg_advisory_lock(%s)", (_lock_key(name),))
            try:
                yield
            finally:
                with contextlib.suppress(Exception):
                    conn.execute("SELECT pg_advisory_unlock(%s)", (_lock_key(name),))
        return
    if scheme != "sqlite":
        yield
        return
    with sqlite_creation_lock(uri):
        yield


def tracking_client():
    """An MlflowClient on the configured store, opened under `creation_lock`: workers started
    together on a new store (SQLite or PostgreSQL) would all create its tables and run its
    migrations at once; with the lock one creates the store and the others find it."""
    import mlflow
    from mlflow import MlflowClient

    from speccomp_compat import store_template

    def open_store():
        client = MlflowClient()  # may open the store already
        client.search_experiments(max_results=1)
        return client

    uri = mlflow.get_tracking_uri()
    with creation_lock(uri, "mlflow"):  # PostgreSQL's lock; SQLite's is taken (again) by `opened`
        # A new SQLite store starts as a copy of an empty one; MLflow's plugin of this package does
        # the same (speccomp_compat.sqlite_tracking_store), but may not be installed.
        client = store_template.opened(uri, open_store)
    from speccomp_compat import hold_signals_in_transactions
    from tracking.interrupts import signals_held

    hold_signals_in_transactions(client._tracking_client.store, signals_held)  # Ctrl-C between transactions
    return client


def experiment_id(client, name: str) -> str:
    """The experiment's id, created if missing. Workers started together on several machines all
    find it missing: whoever loses the race to create it reads the winner's."""
    from mlflow.exceptions import MlflowException

    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    try:
        return client.create_experiment(name)
    except MlflowException:
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


ERROR_TAG = "error"
NOTE_TAG = "mlflow.note.content"  # shown as the run's description in the UI


def record_error(client, run_id: str, message: str) -> None:
    """The one-line reason as the `error` tag and as the run's description, in one store write (a
    stop closes up to 17 runs within a supervisor's grace period)."""
    from mlflow.entities import RunTag

    line = redact_url(message.strip().splitlines()[0] if message.strip() else message)[:5000]
    client.log_batch(run_id, tags=[RunTag(ERROR_TAG, line), RunTag(NOTE_TAG, f"**Error:** {line}")])
