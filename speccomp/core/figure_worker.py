"""The figures of an experiment, drawn in a second process while the caller goes on, and what
of the floor depends on the data alone (`Task.floor_of_data`: the spectra's oracle fits).

    worker = FigureWorker.start()        # early: the process imports the plotting stack meanwhile
    worker.prepare(cfg, data_seed)       # optional, as soon as the config is known: the worker
                                         # generates the data itself and draws their figures aside
    ...                                  # generate
    worker.submit_data(cfg, datasets, plots_dir)   # optional: the figures of the data alone, now
                                         # (prepared: only the folder and the data's digests go)
    ...                                  # train
    of_data = worker.floor_of_data(datasets)   # prepared: what it computed of the floor for these
                                         # data meanwhile (None: compute it here)
    worker.submit(cfg, datasets, trajectory, predictions, plots_dir, floor)   # the rest
      or, after submit_data, in two steps:
    worker.submit_trained(trajectory, predictions)   # the run figures without the floor line, now
    ...                                  # measure the floor
    worker.submit_floor(floor)           # the rest
    ...                                  # log the models, write the tables
    paths = worker.result()              # name -> path, or RuntimeError with the worker's traceback

The worker is a fresh interpreter (`python -m speccomp.core.figure_worker`), not a fork: it holds
what drawing needs (torch, matplotlib, pandas, the job's arrays; prepared, the data it generated),
never the caller's MLflow store or threads. Jobs go to its stdin as pickles, in this order:

    ("all", cfg, datasets, trajectory, predictions, plots_dir, floor)     everything in one go; or
    ("prepare", cfg, data_seed, staging, threads)   optional: generate the data, compute
                                                    `Task.floor_of_data` and answer it at once,
                                                    draw the task's `data_figures` into `staging`
    ("place", plots_dir, digests)                   prepared, for the same data: check the digests,
                                                    move the staged files into `plots_dir`
      or ("data", cfg, datasets, plots_dir)         draw `data_figures` from these data (after a
                                                    "prepare" for other data, which is dropped)
    ("run", trajectory, predictions, floor)         the task's `run_figures`; or
    ("trained", trajectory, predictions)            its `floor_free_figures`, while the caller
    ("floor", floor)                                measures the floor, then the rest

The answers come back on its stdout as pickles: a prepared worker's `("floor", digests, value)`
first (value None when the task has none or computing it failed: the caller then computes it
and meets the error itself), then `("ok", name -> path)` or `("error", traceback)`. The files it
writes are those `draw_figures` writes in the caller (same inputs, same code, same bytes), and
the floor is the one the caller would compute (same data, checked by digest; same code; the
caller's thread count). The caller's training runs on one core; the figures take the other. When the
caller ends, the worker's stdin closes and it exits once it has read to the end (a prepared worker
after drawing the data figures, removing its staging folder).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any


class FigureWorker:
    def __init__(self, process: subprocess.Popen):
        self._process = process
        self._submitted = False
        self._data_sent = False
        self._trained_sent = False
        self._writer: threading.Thread | None = None
        self._prepared: tuple[Any, int, int] | None = None  # config, data seed, threads
        self._staging: tempfile.TemporaryDirectory | None = None
        self._placed: dict[str, str] | None = None  # the digests of the prepared data, once placed
        self._floor: tuple | None = None  # the worker's ("floor", digests, value), once read
        self._answer: tuple | None = None  # its last answer, if read while looking for the floor
        self._ended = False  # its stdout has ended

    @classmethod
    def start(cls) -> FigureWorker:
        from speccomp.core import import_phase
        from speccomp.core.children import child_env, signals_blocked

        env = child_env()
        env.setdefault("OMP_NUM_THREADS", "1")  # one core for drawing; training keeps the other
        # pandas as in this process: a DataFrame pickled where pandas uses pyarrow needs it to load
        hidden = import_phase.pyarrow_hidden()
        worker = None
        try:
            with signals_blocked({signal.SIGINT}):  # Ctrl-C held back until the worker is in hand
                worker = cls(subprocess.Popen([sys.executable, "-m", "speccomp.core.figure_worker",
                                               *([] if hidden else ["--with-pyarrow"])],
                                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env))
            if hidden:
                import pandas  # noqa: F401  (now, while pyarrow is hidden: this process's pandas is then the worker's)
        except BaseException:  # Popen failed, or Ctrl-C: the worker goes with the caller
            if worker is not None:
                worker.close()
            raise
        return worker

    def prepare(self, cfg: Any, data_seed: int, threads: int = 1) -> None:
        """Have the worker generate the data of `cfg` and `data_seed` itself and draw the task's
        `data_figures` into a folder of its own, while the caller is still setting up: the
        caller's `submit_data` with the same config and data seed then sends only the folder and
        the digests (checked there) instead of the data. `threads`: the torch threads the caller
        runs with: the worker generates the data and computes `Task.floor_of_data` with as many
        (the floor's rounding depends on them; `floor_of_data` checks that the caller still runs
        with them), then draws with one. With more than one, the worker's fit competes with the
        caller's set-up and training for the cores (see `speccomp.core.threads`)."""
        if self._prepared is not None or self._data_sent or self._submitted:
            raise RuntimeError("figure worker: prepared once, before the data")
        self._staging = tempfile.TemporaryDirectory(prefix="speccomp-figures-")
        self._send(("prepare", cfg, int(data_seed), Path(self._staging.name), int(threads)), close=False)
        self._prepared = (cfg, int(data_seed), int(threads))

    def submit_data(self, cfg: Any, datasets: dict[str, Any], plots_dir: Path) -> None:
        """Hand the worker the data, so that it draws the task's `data_figures` while the caller
        trains (prepared with this config and data seed: it has drawn them, and moves them into
        `plots_dir` once it has checked that its data are these). Written by a thread: the worker
        may still be importing, and the caller need not wait for it to read."""
        if self._submitted or self._data_sent:
            raise RuntimeError("figure worker: the data go before the job, once")
        seeds = {int(split.data_seed) for split in datasets.values()}
        if self._prepared is not None and self._prepared[0] == cfg and seeds == {self._prepared[1]}:
            digests = {name: split.digest for name, split in datasets.items()}
            self._send(("place", Path(plots_dir), digests), close=False)
            self._placed = digests
        else:  # not prepared, or for other data: the worker drops what it prepared
            self._send(("data", cfg, datasets, Path(plots_dir)), close=False)
        self._data_sent = True

    def floor_of_data(self, datasets: dict[str, Any]) -> Any:
        """What the prepared worker computed of `Task.floor_of_data` for `datasets`, waiting for
        it if need be (it starts as soon as the worker has generated the data); None when it was
        not prepared for these data (see `submit_data`), the caller no longer runs with the
        threads it was prepared with, the task has no such part, or computing it failed there, or
        the worker failed or ended before: the caller then computes it itself (and `result()`
        says what happened to the worker)."""
        import torch  # the caller's, imported long before

        if self._placed is None or {name: split.digest for name, split in datasets.items()} != self._placed:
            return None
        if torch.get_num_threads() != self._prepared[2]:
            return None  # fitted with another thread count: not the caller's rounding
        if self._floor is None:
            if self._answer is not None:  # the worker answered (failed) before any floor
                return None
            message = self._next_answer()
            if message is None or message[0] != "floor":  # it ended, or failed before: result() says why
                self._answer = message
                return None
            self._floor = message
        _, digests, value = self._floor
        return value if digests == self._placed else None

    def _next_answer(self) -> tuple | None:
        """The worker's next message on its stdout; None at its end (remembered: not read again)."""
        if self._ended:
            return None
        try:
            message = pickle.load(self._process.stdout)
        except (EOFError, pickle.UnpicklingError, OSError, ValueError):
            message = None
        if message is None:
            self._ended = True
        return message

    def submit(self, cfg: Any, datasets: dict[str, Any], trajectory, predictions: dict[int, Any], plots_dir: Path,
               floor: Any = None) -> None:
        """Hand the worker its job: the arguments of `experiment.draw_figures` (after
        `submit_data`, the worker has the config, data and folder already)."""
        if self._submitted or self._trained_sent:
            raise RuntimeError("figure worker: one job per worker")
        if self._prepared is not None and not self._data_sent:
            raise RuntimeError("figure worker: prepared: the data (submit_data) go before the job")
        if self._data_sent:
            self._send(("run", trajectory, predictions, floor), close=True)
        else:
            self._send(("all", cfg, datasets, trajectory, predictions, Path(plots_dir), floor), close=True)
        self._submitted = True

    def submit_trained(self, trajectory, predictions: dict[int, Any]) -> None:
        """After `submit_data`: the training's results, so that the worker draws the task's
        `floor_free_figures` while the caller measures the floor; `submit_floor` follows."""
        if self._submitted or not self._data_sent or self._trained_sent:
            raise RuntimeError("figure worker: the training's results go after the data, once, before the floor")
        self._send(("trained", trajectory, predictions), close=False)
        self._trained_sent = True

    def submit_floor(self, floor: Any) -> None:
        """After `submit_trained`: the floor; the worker draws the other run figures."""
        if self._submitted or not self._trained_sent:
            raise RuntimeError("figure worker: the floor goes after the training's results, once")
        self._send(("floor", floor), close=True)
        self._submitted = True

    def _send(self, message: tuple, close: bool) -> None:
        """Pickle `message` now (what the caller changes later is not sent) and write it from a
        thread, after the messages before it: the caller never waits for the worker to read (a
        worker still drawing the data figures reads the next message only when done)."""
        previous = self._writer
        payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        stdin = self._process.stdin

        def write() -> None:
            if previous is not None:
                previous.join()  # messages in order
            try:
                stdin.write(payload)
                stdin.flush()
            except (BrokenPipeError, ValueError, OSError):
                pass  # the worker died (or was closed); result() says why
            finally:
                if close:  # whatever happened, the worker must see the end of its input
                    with contextlib.suppress(OSError, ValueError):
                        stdin.close()

        self._writer = threading.Thread(target=write, name="figure-worker-job", daemon=True)
        self._writer.start()

    def result(self) -> dict[str, Path]:
        """Wait for the figures: name -> path. The worker's error, re-raised as RuntimeError."""
        if not self._submitted:
            raise RuntimeError("figure worker: no job submitted")
        answer = self._answer
        while answer is None or answer[0] == "floor":  # a floor the caller did not ask for
            answer = self._next_answer()
            if answer is None:
                break
        self._process.stdout.read()
        code = self._process.wait()
        if answer is None:
            raise RuntimeError(f"figure worker ended with exit code {code} and no answer")
        status, value = answer
        if status != "ok":
            raise RuntimeError(f"figure worker failed:\n{value}")
        return value

    def close(self) -> None:
        """End the worker if it is still running (the caller stopped before its answer: nothing
        it would draw is wanted any more)."""
        if self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        if self._writer is not None:
            self._writer.join()
        for stream in (self._process.stdin, self._process.stdout):
            if stream is not None and not stream.closed:
                stream.close()
        if self._staging is not None:  # what a prepared worker drew and never placed
            self._staging.cleanup()


def _serve(hide_pyarrow: bool = True) -> int:
    """The worker's side: import the plotting stack, read one job, draw it, answer. `hide_pyarrow`:
    pandas without pyarrow, as in the caller (`FigureWorker.start`)."""
    import traceback

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the caller decides, and kills it
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # held back by the caller as it started this process

    from speccomp.core import import_phase

    with import_phase.during_imports(hide_pyarrow):  # no collections (and no pyarrow) meanwhile
        import torch

        torch.set_num_threads(1)
        import matplotlib.figure  # noqa: F401  (imported while the caller trains)
        import pandas  # noqa: F401  (the figures', imported anyway)

    try:
        answer = ("ok", _draw())
    except _Ended:
        return 0  # the caller stopped before the job was whole: nothing more is wanted
    except Exception:
        answer = ("error", traceback.format_exc())
    with contextlib.suppress(_Ended):
        _answer(answer)
    return 0


def _answer(message: tuple) -> None:
    """One message to the caller; `_Ended` when the caller has gone (its end of the pipe closed)."""
    try:
        sys.stdout.buffer.write(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))
        sys.stdout.buffer.flush()
    except (BrokenPipeError, OSError, ValueError):
        raise _Ended from None


def _floor_of_data(task, cfg, datasets) -> Any:
    """`task.floor_of_data`, None if it fails: the caller computes it again and meets the error."""
    try:
        return task.floor_of_data(cfg, datasets)
    except Exception:
        return None


class _Ended(Exception):
    """The worker's input ended before its job was whole."""


def _next_job() -> tuple:
    """The next pickled message on stdin; `_Ended` at its end."""
    try:
        return pickle.load(sys.stdin.buffer)
    except EOFError:
        raise _Ended from None


def _draw() -> dict[str, Path]:
    """The messages of one job (see the module's docstring), drawn as they come: name -> path."""
    import torch

    from speccomp.core.task import task_for  # not core.experiment, which imports this module

    message = _next_job()
    if message[0] == "all":
        _, cfg, datasets, trajectory, predictions, plots_dir, floor = message
        return task_for(cfg).figures(cfg, datasets, trajectory, predictions, plots_dir, floor)
    drawn: dict[str, Path] = {}
    if message[0] == "prepare":
        _, cfg, data_seed, staging, threads = message
        task = task_for(cfg)
        try:  # the staging folder goes whatever happens: placed, dropped, or the caller gone
            torch.set_num_threads(threads)  # as the caller generates its own copy and fits the floor
            datasets = task.generate(cfg, data_seed)
            mine = {name: split.digest for name, split in datasets.items()}
            _answer(("floor", mine, _floor_of_data(task, cfg, datasets)))  # the caller needs it first
            torch.set_num_threads(1)
            staged = task.data_figures(cfg, datasets, staging)
            message = _next_job()
            if message[0] == "place":
                _, plots_dir, digests = message
                if mine != digests:
                    raise RuntimeError(f"the data this worker generated are not the caller's: digests {mine}, "
                                       f"the caller's {digests}")
                for name, path in staged.items():
                    target = plots_dir / Path(path).relative_to(staging)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    drawn[name] = Path(shutil.move(path, target))
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    if message[0] == "data":  # (after a "prepare": other data than prepared, which are dropped)
        _, cfg, datasets, plots_dir = message
        drawn = task_for(cfg).data_figures(cfg, datasets, plots_dir)
    task = task_for(cfg)
    message = _next_job()
    if message[0] == "trained":
        _, trajectory, predictions = message
        early = task.floor_free_figures
        drawn.update(task.run_figures(cfg, datasets, trajectory, predictions, plots_dir, None, early))
        _, floor = _next_job()
        rest = [name for name in task.run_figure_names if name not in early]
        drawn.update(task.run_figures(cfg, datasets, trajectory, predictions, plots_dir, floor, rest))
    else:
        _, trajectory, predictions, floor = message
        drawn.update(task.run_figures(cfg, datasets, trajectory, predictions, plots_dir, floor))
    return drawn


if __name__ == "__main__":
    code = _serve(hide_pyarrow="--with-pyarrow" not in sys.argv[1:])
    # The answer is written and every file closed: the interpreter's teardown of torch and
    # matplotlib (about half a second) would only delay the caller, which reads to the end.
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a caller gone: nothing is left to say
            stream.flush()
    os._exit(code)
