"""Where runs go: the tracking URI (an embedded SQLite file by default), and URL redaction."""

from __future__ import annotations

import os
import re
from pathlib import Path

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


_CREDENTIALS = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.\-]*://)(?P<user>[^:/@\s]*)(?::(?P<pw>[^@/\s]*))?@")


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
