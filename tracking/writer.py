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

Failures: the writer stops at its first failed call and says which; the next call here raises
`RecordWriterFailed` (not a trial's error: the study stops, as it does when its own write fails,
and the guard ends the runs FAILED, including those whose queued end was never written:
`RunTracker.close_all` asks `unconfirmed_ends`). From then on, and after `close`, every call is
made here, as without a writer.

Ctrl-C and SIGTERM are the caller's: the writer ignores both (Ctrl-C reaches the whole process
group), the guard's `close_all` lets it finish what was queued (`settle`, at most `SETTLE_S`),
then ends what is still open KILLED. When the caller dies, the writer writes what it was sent and
exits at the end of its input.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import subprocess
import sys
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

QUEUED = frozenset({"log_batch", "log_inputs", "log_artifact", "log_artifacts", "set_tag", "set_terminated"})
AT_ONCE = frozenset({"create_run"})
SETTLE_S = 30.0
"""How long a stopping caller waits for the writer to write what is queued before ending it."""


class RecordWriterFailed(Exception):
    """The record writer could not write a queued record (the cause: the writer's own exception
    where it could be sent, e.g. MLflow's; its message otherwise)."""


class DeferredClient:
    """An `MlflowClient` whose writes a second process makes (see the module's docstring)."""

    def __init__(self, client: Any, process: subprocess.Popen, jobs: Connection, acks: Connection):
        self._client = client
        self._process = process
        self._jobs = jobs
        self._acks = acks
        self._seq = itertools.count(1)
        self._pending: set[int] = set()  # queued, not yet written
        self._ending: dict[int, str] = {}  # queued set_terminated: sequence -> run id
        self._what: dict[int, str] = {}  # sequence -> "log_batch of run <id>", for a failure's message
        self._failure: RecordWriterFailed | None = None
        self._live = True
        self._unconfirmed: list[str] = []

    @classmethod
    def start(cls, client: Any, uri: str) -> DeferredClient:
        """Start the writer (`python -m tracking.writer`) on the store at `uri`."""
        jobs_read, jobs_write = os.pipe()
        acks_read, acks_write = os.pipe()
        env = dict(os.environ)
        env["MLFLOW_TRACKING_URI"] = uri  # in the environment, not on the command line: it may hold a password
        env.pop("MLFLOW_RUN_ID", None)  # the writer makes no run of its own
        root = str(Path(__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
        # Ctrl-C and SIGTERM held back until the writer is in hand (as `FigureWorker.start`): one
        # arriving while Popen returns would leave a writer nobody ends. The writer inherits the
        # mask: it ignores both before it unblocks them (sent to the group as it starts, they
        # would end it).
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        deferred = None
        try:
            process = subprocess.Popen([sys.executable, "-m", "tracking.writer", str(jobs_read), str(acks_write)],
                                       pass_fds=(jobs_read, acks_write), env=env, stdin=subprocess.DEVNULL)
            deferred = cls(client, process, Connection(jobs_write, readable=False),
                           Connection(acks_read, writable=False))
            jobs_write = acks_read = -1  # owned by the connections now
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)  # a Ctrl-C held back is raised here
        except BaseException:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
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
        if name == "_client":  # not set yet: no recursion
            raise AttributeError(name)
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr
        self._raise_failure()  # a failure not yet raised is raised by the next call
        if not self._live:
            return attr
        if name in QUEUED:
            return lambda *args, **kwargs: self._queue(("call", name, args, kwargs), name, args, kwargs)
        if name in AT_ONCE:
            return attr

        def after_the_queue(*args, **kwargs):
            self.wait()
            return attr(*args, **kwargs)

        return after_the_queue

    @property
    def live(self) -> bool:
        """Whether calls are still queued for the writer (False once it failed, or after `close`)."""
        return self._live

    def discard(self, path: str | Path) -> None:
        """Remove the folder `path` once the writer has written what was queued before (the files
        it logs as artifacts); at once when there is no writer any more."""
        if not self._live:
            shutil.rmtree(path, ignore_errors=True)
            return
        self._queue(("discard", str(path)), "discard", (str(path),), {})

    def wait(self) -> None:
        """Block until the writer has written everything queued; `RecordWriterFailed` if it could not."""
        self._raise_failure()
        if not self._live:
            return
        seq = self._send(("sync",), "sync")
        while seq in self._pending and self._failure is None:
            if not self._receive(block=True):
                break
        if seq in self._pending and self._failure is None:
            self._fail(f"record writer: ended (exit code {self._process.poll()}) before "
                       f"{self._describe(min(self._pending))} was written")
        self._raise_failure()

    def close(self) -> None:
        """Everything queued written, the writer ended; later calls are made here.
        `RecordWriterFailed` if something could not be written (`unconfirmed_ends` then lists the
        runs whose end was not written)."""
        self.settle()
        self._raise_failure()
        if self._pending:  # the writer ended without a word on some of them
            self._fail(f"record writer: ended (exit code {self._process.returncode}) before "
                       f"{self._describe(min(self._pending))} was written")
            self._raise_failure()

    def settle(self, timeout: float = SETTLE_S) -> None:
        """Let the writer write what is queued (at most `timeout` seconds, then end it) and stop it;
        later calls are made here. Never raises: what was not written is in `unconfirmed_ends`."""
        if not self._live:
            return
        self._live = False
        with contextlib.suppress(OSError):
            self._jobs.close()  # the end of its input: it exits once it has written the rest
        deadline = time.monotonic() + timeout
        while self._pending and self._failure is None:
            left = deadline - time.monotonic()
            try:
                if left <= 0 or not self._acks.poll(left):
                    break
                self._handle(self._acks.recv())
            except (EOFError, OSError):
                break
        if self._process.poll() is None:
            try:
                self._process.wait(timeout=max(0.0, deadline - time.monotonic()) + 1.0)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        with contextlib.suppress(OSError):
            self._acks.close()
        self._unconfirmed += [run_id for seq, run_id in self._ending.items() if seq in self._pending]
        self._ending.clear()

    def unconfirmed_ends(self, stop: bool = False) -> list[str]:
        """Runs whose queued end the writer did not write (it failed, or was stopped first), once
        each; with `stop`, the writer is settled first (a guard about to end every open run)."""
        if stop:
            self.settle()
        elif self._live:
            return []
        out, self._unconfirmed = self._unconfirmed, []
        return out

    # -- the queue ----------------------------------------------------------------------------
    def _queue(self, message: tuple, name: str, args: tuple, kwargs: dict) -> None:
        self._receive(block=False)
        self._raise_failure()
        if not self._live:  # failed meanwhile and raised before; a call after that is made here
            return getattr(self._client, name)(*args, **kwargs) if name != "discard" else self.discard(args[0])
        run_id = kwargs.get("run_id", args[0] if args else None)
        self._send(message, f"{name} of run {run_id}" if name != "discard" else f"the removal of {args[0]}",
                   ending=run_id if name == "set_terminated" else None)
        self._raise_failure()  # it could not be sent

    def _send(self, message: tuple, what: str, ending: str | None = None) -> int:
        """Send `message` as the next in the queue (`ending`: the run it ends); its sequence number."""
        seq = next(self._seq)
        self._pending.add(seq)
        self._what[seq] = what
        if ending is not None:
            self._ending[seq] = ending
        try:
            self._jobs.send((seq, *message))
        except (OSError, ValueError):  # the writer has gone: its last word says why, if it said one
            while self._receive(block=True):
                pass
            if self._failure is None:
                self._fail(f"record writer: ended (exit code {self._process.poll()}) before {what} was sent")
        return seq

    def _receive(self, block: bool) -> bool:
        """Read the writer's answers (all that are there; with `block`, at least one); False at
        its end."""
        try:
            if block:
                self._handle(self._acks.recv())
            while self._acks.poll():
                self._handle(self._acks.recv())
        except (EOFError, OSError):
            return False
        return True

    def _handle(self, answer: tuple) -> None:
        status, seq = answer[:2]
        if status == "ok":
            self._pending.discard(seq)
            self._ending.pop(seq, None)
            self._what.pop(seq, None)
            return
        line, cause = answer[2], answer[3]
        self._fail(f"record writer: {self._describe(seq)} failed: {line}", cause)

    def _describe(self, seq: int) -> str:
        return self._what.get(seq, f"call {seq}")

    def _fail(self, message: str, cause: BaseException | None = None) -> None:
        if self._failure is not None:
            return
        failure = RecordWriterFailed(message)
        failure.__cause__ = cause
        self._failure = failure
        self.settle(timeout=0)  # it has stopped writing; what it did not write is unconfirmed

    def _raise_failure(self) -> None:
        failure, self._failure = self._failure, None
        if failure is not None:
            raise failure


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
    `acks_fd` ("ok", seq) or, at the first failure, ("failed", seq, one line, exception) and stop."""
    import pickle

    for sig in (signal.SIGINT, signal.SIGTERM):  # the caller decides (see the module's docstring)
        signal.signal(sig, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})  # held back by the caller as it started this
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
            message = jobs.recv()
        except (EOFError, OSError, pickle.UnpicklingError):  # the end (a message cut short by a stop included)
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
            line = " ".join(f"{type(exc).__name__}: {exc}".split())[:2000]
            try:
                cause = pickle.loads(pickle.dumps(exc))
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
