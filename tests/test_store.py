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
