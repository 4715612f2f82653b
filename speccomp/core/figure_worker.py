"""The figures of an experiment, drawn in a second process while the caller goes on.

    worker = FigureWorker.start()        # early: the process imports the plotting stack meanwhile
    ...                                  # generate, train
    worker.submit(cfg, datasets, trajectory, predictions, plots_dir, floor)
    ...                                  # log the models, write the tables
    paths = worker.result()              # name -> path, or RuntimeError with the worker's traceback

The worker is a fresh interpreter (`python -m speccomp.core.figure_worker`), not a fork: it holds
only what drawing needs (torch one thread, matplotlib, pandas, the job's arrays), never the
caller's MLflow store or threads. The job goes to its stdin as one pickle, the answer comes back
on its stdout as one pickle; the files it writes are those `draw_figures` writes in the caller
(same inputs, same code, same bytes). The caller's training runs on one core; the figures take
the other. When the caller ends, the worker's stdin closes and it exits.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any


class FigureWorker:
    def __init__(self, process: subprocess.Popen):
        self._process = process
        self._submitted = False

    @classmethod
    def start(cls) -> FigureWorker:
        env = dict(os.environ)
        env.setdefault("OMP_NUM_THREADS", "1")  # one core for drawing; training keeps the other
        root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
        process = subprocess.Popen([sys.executable, "-m", "speccomp.core.figure_worker"], stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, env=env)
        return cls(process)

    def submit(self, cfg: Any, datasets: dict[str, Any], trajectory, predictions: dict[int, Any], plots_dir: Path,
               floor: Any = None) -> None:
        """Hand the worker its one job: the arguments of `experiment.draw_figures`."""
        job = (cfg, datasets, trajectory, predictions, Path(plots_dir), floor)
        try:
            pickle.dump(job, self._process.stdin, protocol=pickle.HIGHEST_PROTOCOL)
            self._process.stdin.close()
        except BrokenPipeError:
            pass  # the worker died; result() says why
        self._submitted = True

    def result(self) -> dict[str, Path]:
        """Wait for the figures: name -> path. The worker's error, re-raised as RuntimeError."""
        if not self._submitted:
            raise RuntimeError("figure worker: no job submitted")
        out = self._process.stdout.read()
        code = self._process.wait()
        try:
            status, value = pickle.loads(out)
        except Exception:
            raise RuntimeError(f"figure worker ended with exit code {code} and no answer") from None
        if status != "ok":
            raise RuntimeError(f"figure worker failed:\n{value}")
        return value

    def close(self) -> None:
        """End the worker if it is still running (the caller stopped before its answer: nothing
        it would draw is wanted any more)."""
        if self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        for stream in (self._process.stdin, self._process.stdout):
            if stream is not None and not stream.closed:
                stream.close()


def _serve() -> int:
    """The worker's side: import the plotting stack, read one job, draw it, answer."""
    import signal
    import traceback

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the caller decides, and kills it

    import torch

    torch.set_num_threads(1)
    import matplotlib.figure  # noqa: F401  (imported while the caller trains)

    from speccomp.core.task import task_for  # not core.experiment, which imports this module

    raw = sys.stdin.buffer.read()
    if not raw:
        return 0  # the caller ended without a job
    try:
        cfg, datasets, trajectory, predictions, plots_dir, floor = pickle.loads(raw)
        answer = ("ok", task_for(cfg).figures(cfg, datasets, trajectory, predictions, plots_dir, floor))
    except Exception:
        answer = ("error", traceback.format_exc())
    sys.stdout.buffer.write(pickle.dumps(answer))
    sys.stdout.buffer.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(_serve())
