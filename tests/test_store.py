"""Passwords in URLs never reach logs, params or tags: the redaction every message goes through."""

from __future__ import annotations

import pytest

from tracking.store import redact_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://u:secret@host:5432/db", "postgresql://u:***@host:5432/db"),
        ("postgresql://u:ab/cd@host:5432/db", "postgresql://u:***@host:5432/db"),  # "/" in a password
        ("postgresql://u:a@b:c@host/db", "postgresql://u:***@host/db"),  # "@" and ":" too
        ("postgresql+psycopg://postgres@127.0.0.1:5432/test", "postgresql+psycopg://postgres@127.0.0.1:5432/test"),
        ("http://user:pw@tracking:5000", "http://user:***@tracking:5000"),
        ("optuna.log", "optuna.log"),
        ("cannot open postgresql://u:s3cret@h/db: refused (see mysql://a:b@c/d)",
         "cannot open postgresql://u:***@h/db: refused (see mysql://a:***@c/d)"),
    ],
)
def test_redact_url_hides_every_password(url, expected):
    assert redact_url(url) == expected


@pytest.mark.parametrize(
    ("uri", "words"),
    [
        ("bogus://x", ["unsupported scheme 'bogus'", "allowed"]),
        ("sqlite:////no/such/folder/mlflow.db", ["/no/such/folder", "does not exist"]),
        ("http://user:hunter2@127.0.0.1:1", ["no tracking server answers", "user:***@"]),
    ],
)
def test_an_unusable_tracking_store_is_one_line_before_any_work(uri, words):
    from tracking.store import TrackingStoreError, check_store

    with pytest.raises(TrackingStoreError) as info:
        check_store(uri)
    msg = str(info.value)
    assert "\n" not in msg and "hunter2" not in msg and msg.startswith("MLFLOW_TRACKING_URI:")
    for word in words:
        assert word in msg


def test_main_refuses_an_unreachable_server_with_exit_2(monkeypatch, capsys):
    from speccomp_cli.main import main

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:1")
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    assert main(["run", "--seeds", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: MLFLOW_TRACKING_URI:")
