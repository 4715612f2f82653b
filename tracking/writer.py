"""A study's MLflow records written by a second process while the next trial trains.

A trial's records (its runs' params, metric batches, dataset inputs, artifacts, descriptions and
ends) cost a study about a third of a trial beyond its training, almost all of it in MLflow's
store code in Python (`benchmarks/bench_study.py`): a thread would hold the interpreter's lock
the training needs, a second process runs beside it on the core the trial's training (one torch
thread by default) leaves free.

    client = DeferredClient.start(tracking_client(), uri)   # the writer imports MLflow meanwhile
    run_id = client.create_run(...).info.run_id             # at once, in this process: its id is needed
    client.log_batch(run_id, metrics=...)                    # queued: pickled now, written there, in order
    client.set_terminated(run_id, ...)                       # queued after them
    client.get_run(run_id)                                   # waits until everything queued is written
    discard(client, folder)                                  # removed once the artifacts queued before are written
    client.close()                                           # everything written; then this process writes itself

What is queued and what is not:
- Queued (`QUEUED`): `log_batch`, `log_inputs`, `log_artifact`, `log_artifacts`, `set_tag`,
  `set_terminated`: calls that return nothing. Their arguments are pickled when the call is made
  (a list the caller clears afterwards is sent as it was), and the writer makes the same calls on
  its own `MlflowClient` of the same store, in the order they were made. So the records are the
  ones the calls would have made here; a run's end time is the one given here (the moment the
  trial ended it), not the moment it was written.
- `create_run` goes through at once: a new run depends on nothing queued.
- Anything else (`get_run`, `search_runs`, `update_run`, `create_logged_model`, ...) waits until
  the writer has written everything queued, then runs here: a read sees every write made before.

Failures: the writer stops at its first failed call and says which (any password in its message
hidden); the next call here raises `RecordWriterFailed`, naming the call and the run
(`trial-3/seed-123 (id)`). It is not a trial's error (not in the study's `catch` list): the study
stops, as it does when its own write fails, and the guard ends the runs FAILED, including those
whose queued end was never written (`RunTracker.close_all` asks `unconfirmed_ends`); should the
exception be swallowed on the way, no new run is made after it (`create_run` raises it again).
From then on, and after `close`, every call is made here, as without a writer. A trial that Optuna
holds COMPLETE keeps its value: only its MLflow runs lack what was not written, and they end
FAILED with the error.

Ctrl-C and SIGTERM are the caller's: the writer ignores both (Ctrl-C reaches the whole process
group), the guard's `close_all` lets it finish what was queued (`settle`, at most `STOP_S`), then
ends what is still open KILLED. When the caller dies, the writer writes what it was sent and exits
at the end of its input.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pickle
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

QUEUED = frozenset({"log_batch", "log_inputs", "log_artifact", "log_artifacts", "set_tag", "set_terminated"})
AT_ONCE = frozenset({"create_run"})
STOP_S = 5.0
"""How long a stopping command (Ctrl-C, SIGTERM, an error) waits for the writer to write what is
queued before it ends the writer and the runs still open (a supervisor's grace period is often 10 s)."""
BACKLOG_BYTES = 1 << 20
"""Queued and not yet written: above this (about ten quick trials' records) a call waits for the
writer, so that a writer slower than the trials (a distant tracking server) holds them back
instead of falling ever further behind."""
POLL_S = 0.5  # waits are made of such slices: a signal acts between them


class RecordWriterFailed(Exception):
    """The record writer could not write a queued record (the cause: the writer's own exception
    where it could be sent, e.g. MLflow's; its message otherwise)."""


class DeferredClient:
    """An `MlflowClient` whose writes a second process makes (see the module's docstring).

    Two threads of this process carry the messages: one writes the queued calls to the writer's
    input, one reads its answers. A call here only pickles and hands over its message, so that a
    Ctrl-C can never cut one in two, and the trial never waits on the pipe; it waits for the writer
    only in `wait`, `close`, a read, or when more than `BACKLOG_BYTES` are queued. The answers are
    small (a sequence number), the jobs larger: the pipes cannot fill each other."""

    def __init__(self, client: Any, process: subprocess.Popen, jobs: Connection, acks: Connection):
        self._client = client
        self._process = process
        self._outbox: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._inbox: queue.SimpleQueue[tuple | None] = queue.SimpleQueue()
        self._seq = itertools.count(1)
        self._pending: dict[int, int] = {}  # queued, not yet written: sequence -> bytes
        self._backlog = 0  # their bytes
        self._ending: dict[int, str] = {}  # queued set_terminated: sequence -> run id
        self._what: dict[int, str] = {}  # sequence -> "log_batch of run trial-3/seed-123 (id)"
        self._names: dict[str, str] = {}  # run id -> its place (`trial-3/seed-123`), for messages
        self._failure: RecordWriterFailed | None = None  # not raised yet
        self._failed = False  # for good: no new run is made after a failure
        self._live = True  # calls are queued
        self._settled = False  # the writer has ended and its answers are read
        self._ended = False  # its answers have ended
        self._unconfirmed: list[str] = []
        self._sender = threading.Thread(target=_send_all, args=(self._outbox, jobs), name="record-writer-jobs",
                                        daemon=True)
        self._receiver = threading.Thread(target=_receive_all, args=(acks, self._inbox), name="record-writer-acks",
                                          daemon=True)
        self._sender.start()
        self._receiver.start()

    @classmethod
    def start(cls, client: Any, uri: str) -> DeferredClient:
        """Start the writer (`python -m tracking.writer`) on the store at `uri`."""
        from speccomp.core.children import child_env, signals_blocked

        jobs_read, jobs_write = os.pipe()
        acks_read, acks_write = os.pipe()
        # the URI in the environment, not on the command line: it may hold a password; no run of its own
        env = child_env(MLFLOW_TRACKING_URI=uri, MLFLOW_RUN_ID=None)
        deferred = None
        try:
            # Ctrl-C and SIGTERM held back until the writer is in hand; it inherits them blocked and
            # ignores both before it unblocks them (sent to the group as it starts, they would end it).
            with signals_blocked({signal.SIGINT, signal.SIGTERM}):
                process = subprocess.Popen([sys.executable, "-m", "tracking.writer", str(jobs_read),
                                            str(acks_write)], pass_fds=(jobs_read, acks_write), env=env,
                                           stdin=subprocess.DEVNULL)
                deferred = cls(client, process, Connection(jobs_write, readable=False),
                               Connection(acks_read, writable=False))
                jobs_write = acks_read = -1  # owned by the connections now
        except BaseException:
            if deferred is not None:
                deferred.settle(timeout=0)
            raise
        finally:
            for fd in (jobs_read, acks_write, jobs_write, acks_read):  # the writer's ends, and ours if unused
                if fd >= 0:
                    with contextlib.suppress(OSError):
                        os.close(fd)
        return deferred

    # -- the client's interface ---------------------------------------------------------------
    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name == "_client":  # not the client's; `_client` not set yet
            raise AttributeError(name)
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr

        def call(*args, **kwargs):
            self._read(block=False)
            self._raise_failure()  # a failure not yet raised is raised by the next call
            if self._failed and name in AT_ONCE:
                raise RecordWriterFailed("record writer: failed earlier in this study; no new run is made")
            if self._live and name in QUEUED:
                run_id = kwargs.get("run_id", args[0] if args else None)
                self._queue(("call", name, args, kwargs), f"{name} of run {self._name(run_id)}",
                            ending=run_id if name == "set_terminated" else None)
                return None
            if self._live and name not in AT_ONCE:
                self.wait()
            result = attr(*args, **kwargs)
            if name == "create_run":
                self._remember(result, args, kwargs)
            return result

        return call

    @property
    def live(self) -> bool:
        """Whether calls are still queued for the writer (False once it failed, or after `close`)."""
        return self._live

    @property
    def process(self) -> subprocess.Popen:
        """The writer's process."""
        return self._process

    def discard(self, path: str | Path) -> None:
        """Remove the folder `path` once the writer has written what was queued before (the files
        it logs as artifacts); at once when there is no writer any more. Never raises a writer's
        failure (it is called on the way out of a trial, whatever ended it)."""
        if not self._live or self._failed:
            shutil.rmtree(path, ignore_errors=True)
            return
        self._queue(("discard", str(path)), f"the removal of {path}")

    def wait(self) -> None:
        """Block until the writer has written everything queued; `RecordWriterFailed` if it could not."""
        self._raise_failure()
        if not self._live:
            return
        seq = self._queue(("sync",), "sync")
        while seq in self._pending and not self._failed and not self._ended:
            self._read(block=True)
        self._check_ended()
        self._raise_failure()

    def close(self) -> None:
        """Everything queued written (as long as it takes), the writer ended; later calls are made
        here. `RecordWriterFailed` if something could not be written (`unconfirmed_ends` then
        lists the runs whose end was not written)."""
        self.settle(timeout=None)
        self._check_ended()
        self._raise_failure()

    def settle(self, timeout: float | None = STOP_S) -> None:
        """Stop queueing, let the writer write what is queued (at most `timeout` seconds, None:
        as long as it takes; then it is ended) and wait for its end; later calls are made here.
        Never raises a writer's failure (`close` does): what was not written is in
        `unconfirmed_ends`. Interrupted, it can be called again and goes on waiting."""
        if self._settled:
            return
        if self._live:
            self._live = False
            self._outbox.put(None)  # the end of its input, after what is queued
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._pending and not self._failed and not self._ended:
            if deadline is not None and time.monotonic() >= deadline:
                break
            self._read(block=True, until=deadline)
        if self._process.poll() is None:
            try:  # it exits at the end of its input; kept waiting past the deadline, it is ended
                self._process.wait(timeout=1.0 if not self._pending else 0.1)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._sender.join(timeout=1.0)
        self._read(block=False)  # its last answers
        self._unconfirmed += [run_id for seq, run_id in self._ending.items() if seq in self._pending]
        self._ending.clear()
        self._settled = True

    def unconfirmed_ends(self, stop: bool = False) -> list[str]:
        """Runs whose queued end the writer did not write (it failed, or was stopped first), once
        each; with `stop` (a command stopping, about to end its open runs here), the writer is
        settled first (`STOP_S`), and a failure not raised yet is said on stderr instead."""
        if stop:
            self.settle()
            failure, self._failure = self._failure, None
            if failure is not None:
                print(f"warning: {failure}", file=sys.stderr)
        elif self._live:
            return []
        out, self._unconfirmed = self._unconfirmed, []
        return out

    # -- the queue ----------------------------------------------------------------------------
    def _queue(self, message: tuple, what: str, ending: str | None = None) -> int:
        """Hand `message` to the sender as the next in the queue (`ending`: the run it ends); its
        sequence number. Pickled here and now: an argument that cannot be pickled raises here."""
        seq = next(self._seq)
        payload = pickle.dumps((seq, *message), protocol=pickle.HIGHEST_PROTOCOL)
        self._pending[seq] = len(payload)
        self._backlog += len(payload)
        self._what[seq] = what
        if ending is not None:
            self._ending[seq] = ending
        self._outbox.put(payload)
        while self._backlog > BACKLOG_BYTES and not self._failed and not self._ended:
            self._read(block=True)  # the writer is behind: wait for it
        return seq

    def _read(self, block: bool, until: float | None = None) -> None:
        """Handle the writer's answers that are there; with `block`, wait (in slices of `POLL_S`,
        until `until`) for at least one."""
        while not self._ended:
            try:
                if block:
                    left = POLL_S if until is None else min(POLL_S, until - time.monotonic())
                    if left <= 0:
                        return
                    answer = self._inbox.get(timeout=left)
                else:
                    answer = self._inbox.get_nowait()
            except queue.Empty:
                if block and until is None:
                    continue
                return
            block = False  # one answer was enough to wait for; take the rest that are there
            if answer is None:
                self._ended = True
                return
            self._handle(answer)

    def _handle(self, answer: tuple) -> None:
        status, seq = answer[:2]
        if status == "ok":
            self._backlog -= self._pending.pop(seq, 0)
            self._ending.pop(seq, None)
            self._what.pop(seq, None)
            return
        line, cause_bytes = answer[2], answer[3]
        try:
            cause = pickle.loads(cause_bytes) if cause_bytes is not None else None
        except Exception:
            cause = None
        self._fail(f"record writer: {self._what.get(seq, f'call {seq}')} failed: {line}", cause)

    def _check_ended(self) -> None:
        """The writer ended with queued calls unanswered and no word: a failure."""
        if self._pending and not self._failed and (self._ended or self._settled):
            first = min(self._pending)
            self._fail(f"record writer: ended (exit code {self._process.poll()}) before "
                       f"{self._what.get(first, f'call {first}')} was written")

    def _fail(self, message: str, cause: BaseException | None = None) -> None:
        if self._failed:
            return
        failure = RecordWriterFailed(message)
        failure.__cause__ = cause
        self._failure, self._failed = failure, True
        self.settle(timeout=0)  # it has stopped writing; what it did not write is unconfirmed

    def _raise_failure(self) -> None:
        if not self._failed and self._ended:
            self._check_ended()
        failure, self._failure = self._failure, None
        if failure is not None:
            raise failure

    def _remember(self, run: Any, args: tuple, kwargs: dict) -> None:
        """The place of a run made here (`trial-3/seed-123`), for the messages."""
        tags = kwargs.get("tags") or (args[2] if len(args) > 2 else None) or {}
        name = kwargs.get("run_name") or tags.get("mlflow.runName") or run.info.run_name
        parent = tags.get("mlflow.parentRunId")
        place = f"{self._names[parent]}/{name}" if parent in self._names else name
        self._names[run.info.run_id] = place

    def _name(self, run_id: str | None) -> str:
        place = self._names.get(run_id or "")
        return f"{place} ({run_id})" if place else str(run_id)


def _send_all(outbox: queue.SimpleQueue, jobs: Connection) -> None:
    """The sender thread: each queued message to the writer's input, in order, whole; at None,
    the end of its input. A writer gone: the rest is dropped (the answers' end says so)."""
    broken = False
    while True:
        payload = outbox.get()
        if payload is None:
            break
        if not broken:
            try:
                jobs.send_bytes(payload)
            except (OSError, ValueError):
                broken = True
    with contextlib.suppress(OSError):
        jobs.close()


def _receive_all(acks: Connection, inbox: queue.SimpleQueue) -> None:
    """The receiver thread: the writer's answers, in order, then None at their end."""
    try:
        while True:
            inbox.put(acks.recv())
    except Exception:  # EOFError at its end; anything else: the answers can no longer be trusted
        pass
    finally:
        inbox.put(None)
        with contextlib.suppress(OSError):
            acks.close()


def discard(client: Any, path: str | Path) -> None:
    """Remove a trial's work folder: once its queued artifacts are written (`DeferredClient`), at
    once otherwise."""
    if isinstance(client, DeferredClient):
        client.discard(path)
    else:
        shutil.rmtree(path, ignore_errors=True)


# ------------------------------------------------------------------------------------------------
# the writer's side
# ------------------------------------------------------------------------------------------------
def _serve(jobs_fd: int, acks_fd: int) -> int:
    """Make each call read on `jobs_fd`, in order, on this process's own client; answer each on
    `acks_fd` ("ok", seq) or, at the first failure, ("failed", seq, one line with any password
    hidden, the pickled exception or None) and stop."""
    for sig in (signal.SIGINT, signal.SIGTERM):  # the caller decides (see the module's docstring)
        signal.signal(sig, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})  # held back by the caller
    jobs = Connection(jobs_fd, writable=False)
    acks = Connection(acks_fd, readable=False)

    def answer(message: tuple) -> None:
        with contextlib.suppress(OSError):  # the caller has gone: write the rest all the same
            acks.send(message)

    from speccomp.core import import_phase

    with import_phase.during_imports():
        from tracking import store  # the package sets MLflow's environment first

        store.configure()
        import mlflow

        client = mlflow.MlflowClient()
    while True:
        try:
            message = pickle.loads(jobs.recv_bytes())
        except Exception:  # EOFError: the end of its input
            return 0
        seq, kind = message[:2]
        try:
            if kind == "call":
                _, _, name, args, kwargs = message
                if name not in QUEUED:
                    raise ValueError(f"not a queued call: {name}")
                getattr(client, name)(*args, **kwargs)
            elif kind == "discard":
                shutil.rmtree(message[2], ignore_errors=True)
        except Exception as exc:
            line = store.redact_url(" ".join(f"{type(exc).__name__}: {exc}".split()))[:2000]
            try:
                cause = pickle.dumps(exc, protocol=pickle.HIGHEST_PROTOCOL)
            except Exception:
                cause = None
            answer(("failed", seq, line, cause))
            return 1
        answer(("ok", seq))


if __name__ == "__main__":
    code = _serve(int(sys.argv[1]), int(sys.argv[2]))
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.flush()
    os._exit(code)  # every record is committed: the interpreter's teardown of MLflow would only take time
