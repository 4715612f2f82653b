"""Shared fixtures: the real default config, shrunk (few bins, few spectra, one epoch), CPU only."""

from __future__ import annotations

import contextlib
import os
import socket
from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest

from speccomp.core.config import ExperimentConfig, default_config_dir, load_config

TINY_OVERRIDES = [
    "physics.n_bins=128",
    "data.splits.train.n_samples=192",
    "data.splits.test.n_samples=64",
    "data.validation.n_samples=64",
    "training.epochs=2",
    "training.batch_size=32",
    "training.hidden_dims=[32,16]",
    "training.checkpoint_ratio=0.25",
]


def tiny_config(*extra: str) -> ExperimentConfig:
    """The project's default config shrunk to run in well under a second."""
    return load_config(default_config_dir(), [*TINY_OVERRIDES, *extra])


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory):
    """The suite's own cache folder (the empty-store template of `speccomp_compat.store_template`), made
    once and inherited by every subprocess: the user's `~/.cache/speccomp` is left alone."""
    previous = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if previous is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = previous


@pytest.fixture
def tiny_cfg() -> ExperimentConfig:
    return tiny_config()


@pytest.fixture
def default_cfg() -> ExperimentConfig:
    return load_config(default_config_dir())


@pytest.fixture
def edited_config_dir(tmp_path):
    """A factory: copy the project's configs/ into tmp_path and edit one file's parsed YAML.

    `edited_config_dir("training.yaml", lambda raw: raw.update(epochz=3))` returns the folder;
    `edit` may also return a string to write verbatim, and `remove=[...]` deletes files.
    """
    import shutil

    import yaml

    counter = iter(range(1000))

    def make(filename: str | None = None, edit=None, remove: tuple[str, ...] = ()):
        folder = tmp_path / f"configs-{next(counter)}"
        shutil.copytree(default_config_dir(), folder)
        for name in remove:
            (folder / name).unlink()
        if filename is not None and edit is not None:
            path = folder / filename
            raw = yaml.safe_load(path.read_text())
            out = edit(raw)
            path.write_text(out if isinstance(out, str) else yaml.safe_dump(raw, sort_keys=False))
        return folder

    return make


@dataclass
class ListLogger:
    """Keeps every call in memory: `records` holds (seed, step, metrics) tuples."""

    records: list[tuple[int, int, dict[str, float]]] = field(default_factory=list)
    checkpoints: list[int] = field(default_factory=list)

    def log_metrics(self, seed: int, metrics: dict[str, float], step: int) -> None:
        self.records.append((seed, step, dict(metrics)))

    def checkpoint(self, step: int, metrics_by_seed: dict[int, dict[str, float]]) -> None:
        self.checkpoints.append(step)

    def history(self, seed: int, name: str) -> list[tuple[int, float]]:
        return [(step, m[name]) for s, step, m in self.records if s == seed and name in m]


# --- PostgreSQL: tests marked `postgres` need the server on 127.0.0.1:5432 ------------------------
PG_HOST, PG_PORT = "127.0.0.1", 5432


def _postgres_answers() -> bool:
    try:
        socket.create_connection((PG_HOST, PG_PORT), timeout=2).close()
        return True
    except OSError:
        return False


# Shared end-to-end fixtures (a tracked run, a NAS run, a meta run, a study report): every test that
# uses one is in the slow tier, so that the fast tier (`-m "not slow"`) stays under 90 s.
END_TO_END_FIXTURES = {"main_run", "nas_run", "meta_run", "report"}


def pytest_collection_modifyitems(config, items):
    """Tests on a shared end-to-end fixture are marked slow. Without a server, `postgres` tests
    skip with one line saying why, so that a laptop runs the rest; where `CI` is set they run and
    fail loudly instead (CI starts the server)."""
    for item in items:
        if END_TO_END_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
    marked = [item for item in items if "postgres" in item.keywords]
    if not marked or os.environ.get("CI") or _postgres_answers():
        return
    skip = pytest.mark.skip(reason=f"no PostgreSQL server answers on {PG_HOST}:{PG_PORT} "
                                   "(start one, or set CI=1 to make this a failure)")
    for item in marked:
        item.add_marker(skip)


@contextlib.contextmanager
def isolated_store(folder, unset=()):
    """A fresh SQLite tracking store in `folder` for this process: MLFLOW_TRACKING_URI set, the
    working directory `folder` (artifacts land there), MLFLOW_RUN_ID / MLFLOW_EXPERIMENT_* and
    `unset` removed from the environment. Yields (path, uri, client)."""
    import mlflow
    from mlflow import MlflowClient

    uri = f"sqlite:///{folder}/mlflow.db"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        for name in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME", *unset):
            mp.delenv(name, raising=False)
        mp.chdir(folder)
        yield SimpleNamespace(path=folder, uri=uri, client=MlflowClient(uri))
        mlflow.set_tracking_uri(None)  # forget the module's store (mlflow keeps it globally)
