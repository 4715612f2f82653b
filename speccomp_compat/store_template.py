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

Two callers, both through `opened`, under the store's creation lock: `tracking.store.tracking_client`
(every speccomp command) and `speccomp_compat.sqlite_tracking_store`, the MLflow plugin that makes
every MLflow process of the environment do the same (`mlflow run`'s launcher above all, which
creates the README's store before speccomp's command starts). Anything unexpected (no cache
folder, a template that is not ours, or not a sound SQLite file holding MLflow's schema version
and no experiment) falls back to MLflow's own creation, and the template is made again from what
MLflow made.

This module imports only the standard library (MLflow when a template is placed or kept): the
plugin loads it in processes that are not speccomp's, which must not see `tracking`'s settings.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def sqlite_path(uri: str) -> Path:
    """The file of `sqlite:///relative` or `sqlite:////absolute` (query string dropped)."""
    return Path(uri.split("://", 1)[1].removeprefix("/").split("?")[0])


def new_sqlite_file(uri: str) -> Path | None:
    """The file of a SQLite store `uri` that does not exist yet (nothing at that name, not even a
    link or an empty file: those are MLflow's to open), else None."""
    if not uri.startswith("sqlite:///") or "?" in uri:
        return None
    path = sqlite_path(uri)
    if str(path) in ("", ".", ":memory:"):
        return None
    return None if os.path.lexists(path) else path


_held = threading.local()  # the folders whose lock this thread holds


@contextlib.contextmanager
def sqlite_creation_lock(uri: str) -> Iterator[None]:
    """An exclusive lock (flock) on the folder of the SQLite store `uri` while its tables are made,
    so that processes opening a new store at once make it one at a time (`tracking.store.creation_lock`).
    Re-entrant within a thread: `tracking_client` holds it when MLflow calls the plugin, which takes
    it too (a second flock of the same folder in one process waits for the first). Not a SQLite
    file in an existing folder: nothing to lock."""
    folder = sqlite_path(uri).resolve().parent if uri.startswith("sqlite:") else None
    held = _held.__dict__.setdefault("folders", set())
    try:
        fd = None if folder is None or folder in held or not folder.is_dir() else os.open(folder, os.O_RDONLY)
    except OSError:  # a folder this user cannot open: MLflow's own error follows, if any
        fd = None
    if fd is None:
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        held.add(folder)
        try:
            yield
        finally:
            held.discard(folder)
    finally:
        os.close(fd)  # and with it the lock


def opened(uri: str, open_store: Callable[[], T]) -> T:
    """`open_store()`'s store at `uri`, under `sqlite_creation_lock`; a new SQLite file starts as a
    copy of the template, and a new store that MLflow made instead becomes the template."""
    with sqlite_creation_lock(uri):
        new = new_sqlite_file(uri)
        try:
            copied = new is not None and place(new)
        except Exception:  # whatever went wrong with the template (an MLflow it does not know): MLflow's own store
            copied = False
        store = open_store()
        if new is not None and not copied:
            keep(new)
    return store


def cache_folder() -> Path | None:
    """`$XDG_CACHE_HOME/speccomp`, else `~/.cache/speccomp`; None when neither is an absolute path
    (a relative XDG_CACHE_HOME is ignored, as the XDG spec says; no home folder: no template)."""
    for base in (os.environ.get("XDG_CACHE_HOME", ""), os.path.join(os.path.expanduser("~"), ".cache")):
        if os.path.isabs(base):
            return Path(base) / "speccomp"
    return None


def template_path() -> Path | None:
    """The template of this MLflow version (a schema belongs to a version; the copy is checked
    against the schema version too, for MLflow installed from a development tree)."""
    import mlflow

    folder = cache_folder()
    return None if folder is None else folder / f"mlflow-{mlflow.__version__}-empty-store.db"


def _usable(template: Path | None) -> bool:
    """Ours: owned by this user, in a folder only this user writes (what it holds is checked on
    the copy, `_an_empty_store`)."""
    if template is None:
        return False
    try:
        folder, st = template.parent.stat(), template.stat()
        return st.st_uid == os.getuid() and folder.st_uid == os.getuid() and not folder.st_mode & 0o022
    except OSError:
        return False


def place(target: Path) -> bool:
    """Copy the template to `target` (nothing may exist at that name); whether a copy is there now.
    The copy is a new file (never through a link), with the mode SQLite would give it."""
    template = template_path()
    if not _usable(template):
        return False
    partial = target.with_name(f".{target.name}.speccomp-{os.getpid()}-{os.urandom(4).hex()}")
    try:
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    except OSError:
        return False
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(template.read_bytes())
        if not _an_empty_store(partial):
            with contextlib.suppress(OSError):
                template.unlink()  # made again from the store MLflow now makes
            return False
        os.link(partial, target)  # fails if anything appeared at that name: MLflow opens that instead
        return True
    except OSError:
        return False
    finally:  # whatever happened (Ctrl-C included), no partial file is left beside the store
        with contextlib.suppress(OSError):
            partial.unlink()


def mlflow_schema_head() -> str:
    """The schema version (alembic head) this MLflow's stores are at."""
    from mlflow.store.db.utils import _get_latest_schema_revision

    return _get_latest_schema_revision()


def _an_empty_store(path: Path) -> bool:
    """A sound SQLite file at this MLflow's schema version, with no experiment."""
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            if db.execute("PRAGMA quick_check").fetchall() != [("ok",)]:
                return False
            if db.execute("SELECT version_num FROM alembic_version").fetchall() != [(mlflow_schema_head(),)]:
                return False
            return db.execute("SELECT count(*) FROM experiments").fetchone() == (0,)
        finally:
            db.close()
    except sqlite3.Error:
        return False


def keep(created: Path) -> None:
    """Make the template from a store MLflow has just created (best effort, never an error)."""
    template = template_path()
    if template is None:
        return
    partial = None
    try:
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
        partial = None
    except Exception:
        pass  # no template this time: the next new store is made by MLflow, and kept then
    finally:  # what is left of a failed or interrupted attempt
        if partial is not None:
            with contextlib.suppress(OSError):
                partial.unlink()


def _private(folder: Path) -> bool:
    st = folder.stat()
    return st.st_uid == os.getuid() and not st.st_mode & 0o022
