"""Run lifecycle: every run the project opens ends FINISHED, FAILED (with the error recorded on
the run) or KILLED (Ctrl-C, SIGTERM), never left RUNNING; what was logged before is kept."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator

from mlflow import MlflowClient
from mlflow.entities import RunTag
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

from tracking import interrupts
from tracking.interrupts import Terminated, signals_held
from tracking.stale import process_tags
from tracking.store import record_error

DEFAULT_EXPERIMENT = "speccomp"
"""Where every entry point's parent run lands unless told otherwise: runs, studies, NAS and meta
runs side by side."""
USER_ERROR = 2
INTERRUPTED = 130  # 128 + SIGINT, the shell's convention
TERMINATED = 143  # 128 + SIGTERM


class RunTracker:
    """Opens runs through the client and remembers which are still open."""

    def __init__(self, client: MlflowClient, experiment_id: str):
        self.client = client
        self.experiment_id = experiment_id
        self.open: list[str] = []
        self.parent_of: dict[str, str | None] = {}

    def start(
        self,
        run_name: str,
        parent_id: str | None = None,
        tags: dict[str, str] | None = None,
    ) -> str:
        interrupts.check()  # a dropped Ctrl-C acts before the next run is made (setup has no progress bar)
        all_tags = {MLFLOW_RUN_NAME: run_name, **process_tags(), **(tags or {})}
        if parent_id is not None:
            all_tags[MLFLOW_PARENT_RUN_ID] = parent_id
        with signals_held():  # a run the store has made is known here before a signal can act
            run = self.client.create_run(self.experiment_id, tags=all_tags, run_name=run_name)
            self.open.append(run.info.run_id)
            self.parent_of[run.info.run_id] = parent_id
        return run.info.run_id

    def adopt(self, run_id: str) -> str:
        """Take over a run that someone else created (the one `mlflow run` made), tagged with this
        process so that a later start can tell whether it is still alive."""
        with signals_held():
            self.open.append(run_id)
            self.client.log_batch(run_id, tags=[RunTag(k, v) for k, v in process_tags().items()])
        return run_id

    def open_parent(self, run_name: str, attached: str | None) -> str:
        """The parent run of an entry point: the run `mlflow run` made (`attached`), renamed from its
        random name unless someone named it, else a new run `run_name`."""
        if attached:
            from tracking import ui

            parent = self.adopt(attached)
            ui.rename_run(self.client, parent, run_name)
            return parent
        return self.start(run_name)

    def finish(self, run_id: str, status: str = "FINISHED") -> None:
        if run_id in self.open:
            with signals_held():  # ended in the store and here together, or neither
                self.client.set_terminated(run_id, status=status, end_time=int(time.time() * 1000))
                self.open.remove(run_id)

    def _descends(self, run_id: str, ancestor: str) -> bool:
        while run_id is not None:
            if run_id == ancestor:
                return True
            run_id = self.parent_of.get(run_id)
        return False

    def close_all(self, status: str, error: str | None = None, under: str | None = None) -> None:
        """End every open run (innermost first) with `status`; record `error` on each. With
        `under`, only that run and the runs nested below it. With a record writer
        (`tracking.writer.DeferredClient`), the runs whose queued end it did not write are open
        again here; without `under` (the whole command stopping), it writes what is queued first."""
        from tracking.writer import DeferredClient

        if isinstance(self.client, DeferredClient):
            ends = self.client.unconfirmed_ends(stop=under is None)
            self.open += [run_id for run_id in ends if run_id not in self.open]
        for run_id in reversed(list(self.open)):
            if under is not None and not self._descends(run_id, under):
                continue
            if error:
                with contextlib.suppress(Exception):  # the store may be what failed; still try the rest
                    record_error(self.client, run_id, error)
            with contextlib.suppress(Exception):
                self.finish(run_id, status)


def parent_experiment(client: MlflowClient, uri: str, experiment_name: str | None, attached: str | None) -> str:
    """What every entry point does once its input is validated and before its parent run opens:
    end runs left RUNNING by dead processes (`tracking.stale`; the attached run is kept), find the
    experiment (the attached run's when `mlflow run` made one, else `experiment_name`, else
    MLFLOW_EXPERIMENT_NAME, else `DEFAULT_EXPERIMENT`; created if missing) and prepare it for the UI
    (`tracking.ui.prepare_experiment`). Returns the experiment's id."""
    from tracking import store, ui
    from tracking.stale import tidy

    if not attached:
        check_experiment_active(client, experiment_name)
    note = tidy(client, uri, keep={attached} if attached else set())
    if note:
        print(note, file=sys.stderr)
    if attached:
        experiment_id = client.get_run(attached).info.experiment_id
    else:
        name = experiment_name or os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT
        experiment_id = store.experiment_id(client, name)
    ui.prepare_experiment(client, experiment_id)
    return experiment_id


def check_experiment_active(client: MlflowClient, experiment_name: str | None) -> None:
    """The experiment named by `--experiment-name` (or MLFLOW_EXPERIMENT_NAME) must be active or new: a
    deleted one can take no runs (MLflow keeps its name reserved until it is purged). ConfigError."""
    from speccomp.core.config import ConfigError

    from_env = os.environ.get("MLFLOW_EXPERIMENT_NAME")
    name = experiment_name or from_env or DEFAULT_EXPERIMENT
    option = "--experiment-name" if experiment_name else "MLFLOW_EXPERIMENT_NAME" if from_env else "experiment"
    exp = client.get_experiment_by_name(name)
    if exp is not None and exp.lifecycle_stage == "deleted":
        raise ConfigError(
            f"{option}: experiment {name!r} (id {exp.experiment_id}) is deleted; allowed: an active or new experiment "
            f"name (or restore it: mlflow experiments restore --experiment-id {exp.experiment_id})")


def refused(message: str) -> int:
    """A refused input: the one line on stderr, the run `mlflow run` made (if any) ended FAILED with
    it; returns the exit code."""
    print(f"error: {message}", file=sys.stderr)
    fail_attached_run(message)
    return USER_ERROR


def stopped(exc: KeyboardInterrupt, what_ended: str) -> int:
    """Ctrl-C or SIGTERM after the guard ended the runs: say so, return the shell's exit code."""
    what = "terminated" if isinstance(exc, Terminated) else "interrupted"
    print(f"{what}: {what_ended}; what was logged is kept", file=sys.stderr)
    return TERMINATED if isinstance(exc, Terminated) else INTERRUPTED


def fail_attached_run(message: str) -> None:
    """`mlflow run` creates a run before our command starts (its id in MLFLOW_RUN_ID): when the
    command refuses its input, that run ends FAILED with the one-line reason instead of RUNNING."""
    run_id = os.environ.get("MLFLOW_RUN_ID")
    if not run_id:
        return
    from tracking import store

    store.configure()
    client = MlflowClient()
    record_error(client, run_id, message)
    client.set_terminated(run_id, status="FAILED")


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block SIGTERM raises `Terminated` and Ctrl-C `KeyboardInterrupt`, so that cleanup
    runs; an interrupt that some library swallowed is raised again at the next progress update
    (`tracking.interrupts`)."""

    def on_term(signum, frame):  # noqa: ARG001
        interrupts.raised(signum)
        raise Terminated(f"signal {signum}")

    def on_int(signum, frame):  # noqa: ARG001
        interrupts.raised(signum)
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():  # signals go to the main thread only
        yield
        return
    previous = {signal.SIGTERM: signal.signal(signal.SIGTERM, on_term)}
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not when Ctrl-C is ignored
        previous[signal.SIGINT] = signal.signal(signal.SIGINT, on_int)
    try:
        yield
    finally:
        interrupts.acknowledge()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Within the block Ctrl-C and SIGTERM are ignored, so that a second one cannot cut the cleanup
    short and leave runs RUNNING (only possible in the main thread; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    interrupts.acknowledge()  # the cleanup has begun: the interrupt it answers is not raised again
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def guarded(tracker: RunTracker) -> Iterator[RunTracker]:
    """Close every run the tracker still holds: KILLED on interrupt, FAILED on an exception."""
    with sigterm_as_interrupt():
        try:
            yield tracker
        except KeyboardInterrupt as exc:
            with signals_deferred():
                what = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted (Ctrl-C)"
                tracker.close_all("KILLED", error=what)
            raise
        except BaseException as exc:
            from tracking.store import unreachable

            gone = unreachable(exc)
            with signals_deferred(), _no_http_retries(bool(gone)):
                tracker.close_all("FAILED", error=gone or f"{type(exc).__name__}: {exc}")
            raise


@contextlib.contextmanager
def _no_http_retries(active: bool) -> Iterator[None]:
    """With a tracking server that has stopped answering, closing runs tries each request once
    (not MLflow's minutes of retries per run); the next start on this host ends what it could not."""
    if not active:
        yield
        return
    previous = os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES")
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("MLFLOW_HTTP_REQUEST_MAX_RETRIES", None)
        else:
            os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = previous
