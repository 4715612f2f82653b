"""Where runs go: the tracking URI (an embedded SQLite file by default), and URL redaction."""

from __future__ import annotations

import fcntl
import os
import re
from pathlib import Path

from speccomp.core.config import ConfigError

DEFAULT_DB = "mlflow.db"


def tracking_uri() -> str:
    """`MLFLOW_TRACKING_URI` when set (a server URL or a database); otherwise a SQLite database in
    the working directory (`sqlite:///mlflow.db`), MLflow's own default on this project."""
    uri = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    return uri or f"sqlite:///{DEFAULT_DB}"


def configure() -> str:
    """Point mlflow at `tracking_uri()` and return it."""
    import mlflow

    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    return uri


# user:password@ up to the last "@" of the URL (a password may hold "/", ":" or even "@")
_CREDENTIALS = re.compile(
    r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.\-]*://)(?P<user>[^:/@\s]*)(?::(?P<pw>\S*))?@(?=[^@\s]*(?:\s|$))"
)


def redact_url(url: str) -> str:
    """Hide the password of `scheme://user:password@host/...` (also inside longer text)."""
    return _CREDENTIALS.sub(lambda m: f"{m['scheme']}{m['user']}{':***' if m['pw'] is not None else ''}@", url)


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


class TrackingStoreError(ConfigError):
    """MLFLOW_TRACKING_URI names a store that cannot be used; one line, password hidden."""


def check_store(uri: str) -> None:
    """Refuse, before any work, a tracking URI MLflow cannot use: an unknown scheme, a SQLite file
    in a folder that does not exist, a server that does not answer (MLflow itself would retry for
    minutes and then end in a traceback)."""
    allowed = "sqlite:///PATH, postgresql://USER@HOST/DB, http(s)://HOST:PORT (a tracking server), or a folder"
    scheme = uri.split("://", 1)[0].split("+")[0] if "://" in uri else "file"
    where = f"MLFLOW_TRACKING_URI: {redact_url(uri)}"
    if scheme not in STORE_SCHEMES:
        raise TrackingStoreError(f"{where}: unsupported scheme {scheme!r}; allowed: {allowed}")
    if scheme == "sqlite":
        folder = Path(uri.removeprefix("sqlite:///").split("?")[0]).resolve().parent
        if not folder.is_dir():
            raise TrackingStoreError(f"{where}: folder {folder} does not exist")
    if scheme in ("http", "https"):
        import urllib.error
        import urllib.request

        try:
            urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=REACH_TIMEOUT_S).close()
        except urllib.error.HTTPError:
            pass  # it answered (auth proxies may refuse /health): reachable
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise TrackingStoreError(f"{where}: no tracking server answers ({redact_url(str(reason))})") from None


def tracking_client():
    """An MlflowClient on the configured store, opened. Workers started together on a new SQLite
    store would all create its tables and run its migrations at once, and all but one fail
    ("table experiments already exists", "duplicate column name"): on SQLite the first opening
    holds a lock on the database's folder, so one worker creates the store and the others find it."""
    import mlflow
    from mlflow import MlflowClient

    uri = mlflow.get_tracking_uri()
    folder = Path(uri.removeprefix("sqlite:///").split("?")[0]).resolve().parent
    if not uri.startswith("sqlite:///") or not folder.is_dir():
        return MlflowClient()
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        client = MlflowClient()  # may open the store already
        client.search_experiments(max_results=1)
    finally:
        os.close(fd)  # and with it the lock
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
