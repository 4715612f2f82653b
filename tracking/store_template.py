"""New SQLite stores copied from an empty one, instead of built by MLflow's schema migrations.

MLflow makes a new SQLite store by running every schema migration since its first release: about
1 s on the 2-core machine, a sixth of a first `speccomp run` in a folder (the headline run). The
result is the same file every time but for one row, the Default experiment (id 0), whose artifact
location is the working directory's `mlruns/0`. So the first store speccomp creates with an
MLflow version is kept, that row removed, as a template in the user's cache folder
(`$XDG_CACHE_HOME/speccomp` or `~/.cache/speccomp`, private to the user), and every later new
store starts as a copy of it: MLflow then finds its tables at the current schema (no migration)
and the Default experiment missing, and creates that itself, as it does for any store that lacks
it (`SqlAlchemyStore.__init__`). The store is the one MLflow would have made (`tests/test_store_template.py`
compares every table with it).

Used only inside `tracking.store.tracking_client`, under the store's creation lock. Anything
unexpected (no cache folder, a template that is not ours, or not a sound SQLite file holding
MLflow's schema version and no experiment) falls back to MLflow's own creation, and the template
is made again from what MLflow made.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path


def cache_folder() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "speccomp"


def template_path() -> Path:
    """The template of this MLflow version (a schema belongs to a version)."""
    import mlflow

    return cache_folder() / f"mlflow-{mlflow.__version__}-empty-store.db"


def _usable(template: Path) -> bool:
    """Ours: owned by this user, in a folder only this user writes (what it holds is checked on
    the copy, `_an_empty_store`)."""
    try:
        folder, st = template.parent.stat(), template.stat()
        return st.st_uid == os.getuid() and folder.st_uid == os.getuid() and not folder.st_mode & 0o022
    except OSError:
        return False


def place(target: Path) -> bool:
    """Copy the template to `target` (which must not exist); whether a copy is there now."""
    template = template_path()
    if not _usable(template):
        return False
    partial = target.with_name(f".{target.name}.speccomp-{os.getpid()}")
    try:
        partial.write_bytes(template.read_bytes())
        if not _an_empty_store(partial):
            template.unlink()  # made again from the store MLflow now makes
            raise OSError("not an empty store")
        os.replace(partial, target)  # under the creation lock; target was checked missing or empty
        return True
    except OSError:
        with contextlib.suppress(OSError):
            partial.unlink()
        return False


def _an_empty_store(path: Path) -> bool:
    """A sound SQLite file with MLflow's schema version, its tables and no experiment."""
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            if db.execute("PRAGMA quick_check").fetchall() != [("ok",)]:
                return False
            if len(db.execute("SELECT version_num FROM alembic_version").fetchall()) != 1:
                return False
            return db.execute("SELECT count(*) FROM experiments").fetchone() == (0,)
        finally:
            db.close()
    except sqlite3.Error:
        return False


def keep(created: Path) -> None:
    """Make the template from a store MLflow has just created (best effort, never an error)."""
    partial = None
    with contextlib.suppress(Exception):
        template = template_path()
        folder = template.parent
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not _private(folder):
            return
        partial = folder / f".{template.name}.{os.getpid()}"
        source = sqlite3.connect(f"{created.resolve().as_uri()}?mode=ro", uri=True)
        copy = sqlite3.connect(partial)
        try:
            source.backup(copy)  # a consistent snapshot, whatever else has the store open
            rows = copy.execute("SELECT experiment_id FROM experiments").fetchall()
            if rows != [(0,)]:  # only the Default experiment: nothing has been logged to it yet
                raise ValueError("not an empty store")
            copy.execute("DELETE FROM experiments WHERE experiment_id = 0")
            copy.commit()
        finally:
            copy.close()
            source.close()
        os.chmod(partial, 0o600)
        os.replace(partial, template)
    if partial is not None:
        with contextlib.suppress(OSError):
            partial.unlink()  # what is left of a failed attempt


def _private(folder: Path) -> bool:
    st = folder.stat()
    return st.st_uid == os.getuid() and not st.st_mode & 0o022
