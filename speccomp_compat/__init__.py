"""Every use of a private (`_`-prefixed) API of torch, Optuna or MLflow, in one place.

Why: the project leans on a few library internals that have no public equivalent (a fused Adam
kernel over one flat buffer, Optuna's heartbeat machinery for journal storages and its samplers'
random states, MLflow's dataset entity, MLproject parser and SQLite store builder). Gathered here
they are easy to find when a library is upgraded, and `check()` (run by the test suite) fails
loudly, naming the API, when one of them disappears or changes shape. No module outside this
package touches a `_` name of a library (a test greps for it); in it, `store_template` reads
MLflow's schema head.

This module imports only the standard library at import time; each wrapper imports its library
when called, so `speccomp` (which must not import MLflow or Optuna) can use the torch wrapper.
"""

from __future__ import annotations

import functools
import importlib
from typing import Any

# ------------------------------------------------------------------------------------------------
# torch
# ------------------------------------------------------------------------------------------------


def fused_adam_(decoupled: bool, params: list, grads: list, exp_avg: list, exp_avg_sq: list, steps: list,
                **hyper: Any) -> None:
    """torch's fused (Adam|AdamW) kernel: one call updates every tensor in the lists in place (the
    kernel behind `torch.optim.AdamW(fused=True)`, without its per-parameter bookkeeping)."""
    import torch

    kernel = torch._fused_adamw_ if decoupled else torch._fused_adam_
    kernel(params, grads, exp_avg, exp_avg_sq, [], steps, **hyper)


# ------------------------------------------------------------------------------------------------
# Optuna
# ------------------------------------------------------------------------------------------------


def optuna_base_heartbeat() -> type:
    """Optuna's heartbeat interface (`optuna.storages._heartbeat.BaseHeartbeat`): a storage that
    subclasses it gets stale-trial detection from `study.optimize`, as RDBStorage has."""
    return importlib.import_module("optuna.storages._heartbeat").BaseHeartbeat


class StaleTrialsByHeartbeat:
    """Mixin mapping Optuna's private hook onto a public-named method of the storage."""

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        return self.stale_trial_ids(study_id)

    def stale_trial_ids(self, study_id: int) -> list[int]:
        raise NotImplementedError


def silent_trial_ids(storage: Any, study_id: int, silent_s: float) -> list[int]:
    """RUNNING trials of the study whose last heartbeat is older than `silent_s` (Optuna's stale
    check, `_get_stale_trial_ids`, with `silent_s` in place of the grace period): trials whose
    worker may have died, before the grace period says so."""
    saved = storage.grace_period
    storage.grace_period = silent_s
    try:
        return list(storage._get_stale_trial_ids(study_id))
    finally:
        storage.grace_period = saved


def trial_id(trial: Any) -> int:
    """The storage's id of a FrozenTrial (Optuna keeps it private)."""
    return trial._trial_id


def study_id(study: Any) -> int:
    """The storage's id of a Study (Optuna keeps it private)."""
    return study._study_id


def dashboard_notes() -> Any:
    """optuna-dashboard's note functions (`optuna_dashboard._note`: `save_note`, the one behind the
    package's public `save_note`, and its reader), None when optuna-dashboard is not installed.
    Loaded from the package's file without running the package's `__init__`, which imports its web
    app and, through `optuna.importance`, scikit-learn: about 1 s and the memory of both, in every
    study process, for code that needs only Optuna. Where the package is imported already (the
    dashboard itself, or a test), its own module is used."""
    import sys

    return sys.modules.get("optuna_dashboard._note") or _dashboard_notes_alone()


@functools.cache
def _dashboard_notes_alone() -> Any:
    import importlib.util
    from pathlib import Path

    package = importlib.util.find_spec("optuna_dashboard")  # a top-level name: not imported
    if package is None or not package.submodule_search_locations:
        return None
    path = Path(next(iter(package.submodule_search_locations))) / "_note.py"
    if not path.is_file():  # laid out otherwise: the package's own way
        return importlib.import_module("optuna_dashboard._note")
    spec = importlib.util.spec_from_file_location("speccomp_compat.optuna_dashboard_note", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def dashboard_note(storage: Any, study_id_: int, trial_id_: int | None = None) -> str | None:
    """The markdown of the optuna-dashboard note that `optuna_dashboard.save_note` saved on a study
    (or on one of its trials), None when there is none: read back as optuna-dashboard reads it
    (`optuna_dashboard._note`; the package has no public reader)."""
    found = dashboard_notes().get_note_from_system_attrs(storage.get_study_system_attrs(study_id_), trial_id_)
    return found["body"] or None


# A sampler's random states: its own, and those of the samplers it delegates to.
SAMPLER_RANDOM_STREAMS = ("_rng", "_random_sampler._rng", "_independent_sampler._rng")


def sampler_random_states(sampler: Any) -> list[tuple[tuple[str, ...], Any]]:
    """[(name, numpy RandomState)] of every random stream a built-in sampler holds, to be reseeded in
    place (helpers such as NSGA-II's child generation hold the same object). The name is () for
    the sampler's own stream and (path,) for a delegate's, so that seeds derived from it stay
    those of earlier versions."""
    out = []
    for path in SAMPLER_RANDOM_STREAMS:
        holder = sampler
        for attr in path.split("."):
            holder = getattr(holder, attr, None)
        if holder is not None and hasattr(holder, "rng"):  # a LazyRandomState
            out.append(((), holder.rng) if path == "_rng" else ((path,), holder.rng))
    return out


# ------------------------------------------------------------------------------------------------
# MLflow
# ------------------------------------------------------------------------------------------------


def dataset_entity(dataset: Any) -> Any:
    """The entity `MlflowClient.log_inputs` takes for an `mlflow.data` dataset (the fluent API
    converts it privately; the client API has no public converter)."""
    return dataset._to_mlflow_entity()


def mlproject_command(project_dir: str, entry_point: str, params: dict[str, str]) -> str:
    """The shell command `mlflow run PROJECT -e ENTRY -P ...` runs (MLflow's own MLproject parser)."""
    spec = importlib.import_module("mlflow.projects._project_spec")
    return spec.load_project(project_dir).get_entry_point(entry_point).compute_command(params, None)


def mlproject_parameters(project_dir: str, entry_point: str) -> list[str]:
    spec = importlib.import_module("mlflow.projects._project_spec")
    return list(spec.load_project(project_dir).get_entry_point(entry_point).parameters)


def gc_run(uri: str, run_id: str) -> bool:
    """Hard-delete one run in the `deleted` lifecycle stage, with its artifacts, by the routine
    `mlflow gc` runs (`mlflow.cli._gc_tracking_resources`, restricted to that run: the command
    without experiment ids would purge every deleted experiment and logged model of the store).
    False when the store at `uri` cannot hard-delete (a tracking server's REST store)."""
    store = importlib.import_module("mlflow.tracking._tracking_service.utils")._get_store(uri)
    if not hasattr(store, "_hard_delete_run"):
        return False
    importlib.import_module("mlflow.cli")._gc_tracking_resources(
        backend_store=store, run_ids=[run_id], experiment_ids=None, logged_model_ids=[], older_than=None,
        time_delta=0, skip_experiments=True, skip_logged_models=True)
    return True


# ------------------------------------------------------------------------------------------------
# the interpreter
# ------------------------------------------------------------------------------------------------


def sqlite_tracking_store(store_uri: str, artifact_uri: str | None = None) -> Any:
    """MLflow's tracking store for `sqlite:` URIs, registered as the `sqlite` plugin of the
    `mlflow.tracking_store` entry points (pyproject.toml), so that every MLflow process of this
    environment opens a new SQLite store as speccomp's commands do: a copy of the cached empty one
    (`speccomp_compat.store_template`), the same file MLflow's migrations make, in a fraction of
    their second. It is there for `mlflow run`: its launcher creates the README's store before
    speccomp's command starts. The store is MLflow's own (`_get_sqlalchemy_store`, what MLflow
    registers for the scheme); an existing store is opened as MLflow opens it. If anything about
    the template fails, MLflow makes the store itself, as it would without the plugin."""
    from mlflow.tracking._tracking_service.utils import _get_sqlalchemy_store

    from speccomp_compat import store_template

    def mlflows() -> Any:
        return _get_sqlalchemy_store(store_uri, artifact_uri)

    return store_template.opened(store_uri, mlflows)


def hold_signals_in_transactions(store: Any, hold: Any) -> bool:
    """Make every database transaction of a SQLAlchemy-backed MLflow `store` run inside `hold()` (a
    context manager that defers Ctrl-C and SIGTERM to its end, `tracking.interrupts.signals_held`): an
    interrupt then acts between transactions, never inside one, where it could leave the SQLite
    write lock held by a connection nobody closes (and the guard's own writes waiting for it up to
    MLflow's 20 s busy timeout). Whether the store was one (a tracking server's is not); once per
    store object."""
    import contextlib
    import functools

    maker = getattr(store, "ManagedSessionMaker", None)
    if maker is None or getattr(maker, "_speccomp_held", False):
        return maker is not None

    @functools.wraps(maker)
    @contextlib.contextmanager
    def held(*args, **kwargs):
        with hold(), maker(*args, **kwargs) as session:
            yield session

    held._speccomp_held = True
    store.ManagedSessionMaker = held
    return True


def finish_like_the_interpreter() -> None:
    """What Python's own shutdown does before it frees modules, in its order: stop the thread pools
    and join every non-daemon thread (`threading._shutdown`: `concurrent.futures` workers are told
    to stop by a hook it runs first, so an idle pool left alive by a library, e.g. MLflow's local
    artifact downloads, does not wait for work forever), then run the atexit handlers
    (`atexit._run_exitfuncs`). `speccomp_cli.main.exit_now` calls this, then `os._exit`."""
    import atexit
    import threading

    threading._shutdown()
    atexit._run_exitfuncs()


# ------------------------------------------------------------------------------------------------
OPTUNA_OPTIMIZE_LOGGER = "optuna.study._optimize"
"""The logger Optuna writes a failed trial's warning (with its traceback) to."""


def filter_trial_failure_logs(log_filter: Any) -> None:
    """Add `log_filter` (a logging.Filter) to the logger of Optuna's trial-failure warnings."""
    import logging

    logging.getLogger(OPTUNA_OPTIMIZE_LOGGER).addFilter(log_filter)


def check() -> list[str]:
    """Every private API above still exists with the shape used here; returns the problems (the
    test suite asserts there are none, so a library upgrade that breaks one fails loudly)."""
    problems = []

    def need(ok: bool, what: str) -> None:
        if not ok:
            problems.append(what)

    import mlflow.data
    import numpy as np
    import optuna
    import torch

    need(callable(getattr(torch, "_fused_adamw_", None)), "torch._fused_adamw_")
    need(callable(getattr(torch, "_fused_adam_", None)), "torch._fused_adam_")
    try:
        base = optuna_base_heartbeat()
        need(all(hasattr(base, m) for m in ("_get_stale_trial_ids", "record_heartbeat", "get_heartbeat_interval")),
             "optuna.storages._heartbeat.BaseHeartbeat methods")
    except (ImportError, AttributeError):
        problems.append("optuna.storages._heartbeat.BaseHeartbeat")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    need(isinstance(getattr(study.trials[0], "_trial_id", None), int), "optuna FrozenTrial._trial_id")
    need(isinstance(getattr(study, "_study_id", None), int), "optuna Study._study_id")
    import importlib.util

    need(importlib.util.find_spec(OPTUNA_OPTIMIZE_LOGGER) is not None, OPTUNA_OPTIMIZE_LOGGER)
    notes = dashboard_notes()  # optuna-dashboard is a user tool; without it no note is written or read
    if notes is not None:
        for name in ("save_note", "get_note_from_system_attrs"):
            need(callable(getattr(notes, name, None)), f"optuna_dashboard._note.{name}")
    for sampler in (optuna.samplers.RandomSampler(seed=0), optuna.samplers.TPESampler(seed=0)):
        states = sampler_random_states(sampler)
        need(bool(states) and all(isinstance(s, np.random.RandomState) for _, s in states),
             f"{type(sampler).__name__}._rng (LazyRandomState)")
    ds = mlflow.data.from_numpy(np.zeros((2, 2), np.float32), name="check")
    need(callable(getattr(ds, "_to_mlflow_entity", None)), "mlflow Dataset._to_mlflow_entity")
    import inspect

    try:
        gc_params = set(inspect.signature(importlib.import_module("mlflow.cli")._gc_tracking_resources).parameters)
        need({"backend_store", "run_ids", "skip_experiments", "skip_logged_models"} <= gc_params,
             "mlflow.cli._gc_tracking_resources(backend_store, run_ids, ..., skip_experiments, skip_logged_models)")
        need(callable(importlib.import_module("mlflow.tracking._tracking_service.utils")._get_store),
             "mlflow.tracking._tracking_service.utils._get_store")
        need(callable(importlib.import_module("mlflow.tracking._tracking_service.utils")._get_sqlalchemy_store),
             "mlflow.tracking._tracking_service.utils._get_sqlalchemy_store (speccomp_compat.sqlite_tracking_store)")
        need(callable(importlib.import_module("mlflow.store.db.utils")._get_latest_schema_revision),
             "mlflow.store.db.utils._get_latest_schema_revision (speccomp_compat.store_template)")
    except (ImportError, AttributeError):
        problems.append("mlflow.cli._gc_tracking_resources / _tracking_service.utils._get_store")
    import atexit
    import threading

    need(callable(getattr(threading, "_shutdown", None)), "threading._shutdown")
    need(callable(getattr(atexit, "_run_exitfuncs", None)), "atexit._run_exitfuncs")
    try:
        importlib.import_module("mlflow.projects._project_spec").load_project  # noqa: B018
    except (ImportError, AttributeError):
        problems.append("mlflow.projects._project_spec.load_project")
    return problems
