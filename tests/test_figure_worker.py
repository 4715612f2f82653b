"""The figures drawn by the second process (`speccomp.core.figure_worker`) are the files the
caller would draw itself, byte for byte; its errors reach the caller; a worker never given a job
ends when closed."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch

from speccomp.core.experiment import draw_figures
from speccomp.core.figure_worker import FigureWorker
from speccomp.spectra.data import generate_datasets
from speccomp.spectra.figures import DATA_FIGURES, FIGURE_NAMES, FLOOR_FREE_FIGURES, RUN_FIGURES
from tests.conftest import tiny_config
from tests.test_figures import make_predictions, make_trajectory


@pytest.fixture(scope="module")
def job():
    cfg = tiny_config()
    datasets = generate_datasets(cfg, 42)
    return cfg, datasets, make_trajectory(cfg.tracked_labels), make_predictions(datasets["test"])


@pytest.fixture(scope="module")
def inline(job, tmp_path_factory):
    """The nine figures drawn by the caller itself (floor 1e-3): what every worker must write."""
    cfg, datasets, trajectory, predictions = job
    return draw_figures(cfg, datasets, trajectory, predictions, tmp_path_factory.mktemp("inline"), _floor(cfg))


def _floor(cfg) -> dict[str, float]:
    return {label: 1e-3 for label in cfg.tracked_labels}


def _assert_as_inline(drawn: dict[str, Path], inline: dict[str, Path], folder: Path) -> None:
    """The worker's answer names the nine files in `folder`, each the bytes the caller drew."""
    assert set(drawn) == set(FIGURE_NAMES)
    for name in FIGURE_NAMES:
        assert drawn[name] == folder / name
        assert drawn[name].read_bytes() == inline[name].read_bytes(), name


def _end_of_input(worker: FigureWorker) -> int:
    """Close the worker's input after what was sent, as a caller that stops (or dies) does; its exit code."""
    worker._writer.join()
    worker._process.stdin.close()
    return worker._process.wait(timeout=120)


def _wait_until(condition, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)


@pytest.mark.slow
def test_the_worker_draws_the_same_files_as_the_caller(job, inline, tmp_path):
    cfg, datasets, trajectory, predictions = job
    floor = _floor(cfg)
    worker = FigureWorker.start()
    try:
        worker.submit(cfg, datasets, trajectory, predictions, tmp_path / "worker", floor)
        drawn = worker.result()
    finally:
        worker.close()
    _assert_as_inline(drawn, inline, tmp_path / "worker")


def test_an_error_in_the_worker_is_raised_in_the_caller(job, tmp_path):
    cfg, datasets, trajectory, _ = job
    worker = FigureWorker.start()
    try:
        worker.submit(cfg, datasets, trajectory, {123: np.zeros((3, 20))}, tmp_path, None)
        with pytest.raises(RuntimeError, match="shape"):
            worker.result()
    finally:
        worker.close()
    assert not any(tmp_path.iterdir()), "nothing is drawn when the inputs are wrong"


def test_a_worker_without_a_job_ends_when_closed():
    worker = FigureWorker.start()
    worker.close()
    assert worker._process.poll() is not None


@pytest.mark.slow
def test_the_data_figures_drawn_first_are_the_same_files(job, inline, tmp_path):
    """The data go first (the worker draws the figures of the data alone while the caller trains),
    the runs' results after: the same nine files, byte for byte, as one job or drawing inline."""
    cfg, datasets, trajectory, predictions = job
    floor = _floor(cfg)
    worker = FigureWorker.start()
    try:
        worker.submit_data(cfg, datasets, tmp_path / "worker")
        worker.submit(cfg, datasets, trajectory, predictions, tmp_path / "worker", floor)
        drawn = worker.result()
    finally:
        worker.close()
    assert list(drawn) == list(FIGURE_NAMES)
    _assert_as_inline(drawn, inline, tmp_path / "worker")


@pytest.mark.slow
def test_the_figures_without_the_floor_drawn_before_it_are_the_same_files(job, inline, tmp_path):
    """Data, then the training's results (the worker draws the figures without a floor line while
    the caller measures the floor), then the floor: the same nine files, byte for byte."""
    cfg, datasets, trajectory, predictions = job
    floor = _floor(cfg)
    worker = FigureWorker.start()
    try:
        worker.submit_data(cfg, datasets, tmp_path / "worker")
        with pytest.raises(RuntimeError, match="after the training"):
            worker.submit_floor(floor)
        worker.submit_trained(trajectory, predictions)
        _wait_until(lambda: all((tmp_path / "worker" / n).exists() for n in FLOOR_FREE_FIGURES))  # before the floor
        assert {p.name for p in (tmp_path / "worker").iterdir()} == set(DATA_FIGURES) | set(FLOOR_FREE_FIGURES)
        worker.submit_floor(floor)
        drawn = worker.result()
        with pytest.raises(RuntimeError, match="one job"):
            worker.submit(cfg, datasets, trajectory, predictions, tmp_path, floor)
    finally:
        worker.close()
    _assert_as_inline(drawn, inline, tmp_path / "worker")


@pytest.mark.slow
def test_a_prepared_worker_draws_the_data_it_generated_and_places_the_same_files(job, inline, tmp_path):
    """Told the config and data seed before the caller has its data, the worker generates them
    itself and draws their figures aside; given the caller's folder and digests, it moves them
    there: the nine files are those drawn inline, byte for byte, and nothing is left aside."""
    cfg, datasets, trajectory, predictions = job
    floor = _floor(cfg)
    worker = FigureWorker.start()
    try:
        worker.prepare(cfg, 42)
        staging = Path(worker._staging.name)
        _wait_until(lambda: len(list(staging.iterdir())) >= len(DATA_FIGURES))  # drawn aside before told where
        assert sorted(p.name for p in staging.iterdir()) == sorted(DATA_FIGURES)
        assert not (tmp_path / "worker").exists()
        worker.submit_data(cfg, datasets, tmp_path / "worker")
        worker.submit_trained(trajectory, predictions)
        worker.submit_floor(floor)
        drawn = worker.result()
    finally:
        worker.close()
    assert not staging.exists()
    _assert_as_inline(drawn, inline, tmp_path / "worker")


@pytest.mark.slow
def test_a_prepared_worker_computes_the_oracle_floor_the_caller_would(job, inline, tmp_path):
    """The data's part of the floor (the oracle's fits) comes from the prepared worker while the
    caller trains: the same floats as computed in the caller, asked for once or twice; the figures
    are still the caller's."""
    from speccomp.core.task import get_task

    cfg, datasets, trajectory, predictions = job
    expected = get_task("spectra").floor_of_data(cfg, datasets)
    assert any(key.startswith("oracle/mse/") for key in expected)
    worker = FigureWorker.start()
    try:
        worker.prepare(cfg, 42, threads=torch.get_num_threads())
        worker.submit_data(cfg, datasets, tmp_path / "worker")
        assert worker.floor_of_data(datasets) == expected
        assert worker.floor_of_data(datasets) == expected
        worker.submit_trained(trajectory, predictions)
        worker.submit_floor(_floor(cfg))
        drawn = worker.result()
    finally:
        worker.close()
    _assert_as_inline(drawn, inline, tmp_path / "worker")


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.mark.slow
def test_the_workers_oracle_is_fitted_with_the_callers_threads_or_not_taken(two_threads, tmp_path):
    """The oracle's rounding may depend on the thread count (it did at the default size on an
    AVX2 machine; on an AVX-512 one it does not): a worker prepared with the caller's two threads
    gives the caller's floats; once the caller runs with another count, `floor_of_data` answers
    None (the caller fits it itself), whether or not the floats would differ on this CPU."""
    import speccomp.spectra.floor as floor_module
    from speccomp.core.config import load_config
    from speccomp.core.task import get_task

    cfg = load_config(None, [])
    task = get_task("spectra")
    datasets = generate_datasets(cfg, 42)
    floor_module._CACHE.clear()
    at_two = task.floor_of_data(cfg, datasets)
    worker = FigureWorker.start()
    try:
        worker.prepare(cfg, 42, threads=2)
        worker.submit_data(cfg, datasets, tmp_path)
        torch.set_num_threads(1)
        assert worker.floor_of_data(datasets) is None
        torch.set_num_threads(2)
        assert worker.floor_of_data(datasets) == at_two
    finally:
        worker.close()


def test_a_prepared_worker_whose_caller_is_gone_before_the_floor_ends_quietly(job, capfd):
    """The caller gone (its end of the worker's stdout closed) before the worker answers the
    floor: the worker exits 0 without a traceback, and removes what it staged."""
    cfg = job[0]
    worker = FigureWorker.start()
    try:
        worker.prepare(cfg, 42)
        staging = Path(worker._staging.name)
        worker._process.stdout.close()  # before the worker has even imported torch
        assert _end_of_input(worker) == 0
        assert not staging.exists()
    finally:
        worker.close()
    assert "Traceback" not in capfd.readouterr().err


@pytest.mark.slow
def test_a_prepared_worker_given_other_data_draws_those(job, inline, tmp_path):
    """Prepared for data seed 43, given data seed 42's data: it drops what it prepared and draws
    the figures of the data it was given (then finds the end of its input, and exits)."""
    cfg, datasets, _, _ = job
    worker = FigureWorker.start()
    try:
        worker.prepare(cfg, 43)
        worker.submit_data(cfg, datasets, tmp_path)
        assert _end_of_input(worker) == 0
    finally:
        worker.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(DATA_FIGURES)
    for name in DATA_FIGURES:
        assert (tmp_path / name).read_bytes() == inline[name].read_bytes(), name


@pytest.mark.slow
def test_a_prepared_worker_whose_data_are_not_the_callers_says_so_and_places_nothing(job, tmp_path):
    import copy

    cfg, datasets, trajectory, predictions = job
    other = {name: copy.copy(split) for name, split in datasets.items()}
    other["train"]._digest = "0123456789abcdef"  # as if the caller's data differed
    worker = FigureWorker.start()
    try:
        worker.prepare(cfg, 42)
        with pytest.raises(RuntimeError, match="prepared"):
            worker.submit(cfg, datasets, trajectory, predictions, tmp_path, None)
        worker.submit_data(cfg, other, tmp_path / "worker")
        assert worker.floor_of_data(other) is None  # computed for its own data, not these
        assert worker.floor_of_data(datasets) is None  # nor for data other than those placed
        worker.submit_trained(trajectory, predictions)
        worker.submit_floor(None)
        with pytest.raises(RuntimeError, match="not the caller's.*0123456789abcdef"):
            worker.result()
    finally:
        worker.close()
    assert not (tmp_path / "worker").exists()


def test_a_prepared_worker_closed_early_leaves_nothing_behind(job):
    cfg = job[0]
    worker = FigureWorker.start()
    worker.prepare(cfg, 42)
    staging = Path(worker._staging.name)
    with pytest.raises(RuntimeError, match="once"):
        worker.prepare(cfg, 42)
    worker.close()
    assert worker._process.poll() is not None
    assert not staging.exists()


@pytest.mark.slow
def test_a_prepared_worker_whose_caller_is_gone_removes_what_it_staged(job):
    """The caller killed (SIGTERM before its guard, SIGKILL) after `prepare`: the worker finds the
    end of its input once it has drawn the data figures, removes them and exits 0."""
    cfg = job[0]
    worker = FigureWorker.start()
    try:
        worker.prepare(cfg, 42)
        staging = Path(worker._staging.name)
        _wait_until(lambda: len(list(staging.glob("*.png"))) >= len(DATA_FIGURES))
        assert len(list(staging.glob("*.png"))) == len(DATA_FIGURES)
        assert _end_of_input(worker) == 0  # what the caller's death does to the pipe
        assert not staging.exists()
    finally:
        worker.close()


class _Recorded(FigureWorker):
    """A worker whose messages are recorded, not sent."""

    def __init__(self):
        super().__init__(process=None)
        self.sent: list[tuple] = []

    def _send(self, message: tuple, close: bool) -> None:
        self.sent.append(message)

    def _next_answer(self):
        raise AssertionError("a worker never prepared for these data is not waited for")


@pytest.mark.parametrize(("prepared_with", "prepared_seed", "kind"), [
    ((), 42, "place"),  # the same config and data seed: the folder and the digests only
    (("training.learning_rate=0.5",), 42, "data"),  # another config, the same data seed
    ((), 43, "data"),  # the same config, another data seed
])
def test_a_prepared_worker_gets_the_data_only_when_they_are_not_the_prepared_ones(
        job, prepared_with, prepared_seed, kind, tmp_path):
    cfg, datasets = job[0], job[1]
    worker = _Recorded()
    worker.prepare(tiny_config(*prepared_with), prepared_seed, threads=2)
    try:
        worker.submit_data(cfg, datasets, tmp_path)
        assert worker.sent[0][0] == "prepare" and worker.sent[0][-1] == 2
        assert worker.sent[1][0] == kind
        if kind == "place":
            assert worker.sent[1][2] == {name: split.digest for name, split in datasets.items()}
        else:  # the caller computes the floor itself, without waiting for the worker
            assert worker.floor_of_data(datasets) is None
    finally:
        worker._staging.cleanup()


def test_the_data_are_the_same_bits_whatever_the_thread_count():
    """What lets a prepared worker generate the caller's data itself (the digests are checked too)."""
    import torch

    from speccomp.core.task import load_any_config, task_for

    raven = load_any_config("configs/raven", ["data.splits.train.n_samples=256", "data.splits.test.n_samples=64",
                                              "data.validation.n_samples=64"])
    before = torch.get_num_threads()
    try:
        for cfg in (tiny_config(), raven):
            digests = []
            for threads in (1, 2):
                torch.set_num_threads(threads)
                digests.append({n: s.digest for n, s in task_for(cfg).generate(cfg, 42).items()})
            assert digests[0] == digests[1]
    finally:
        torch.set_num_threads(before)


def test_every_task_names_floor_free_figures_among_its_run_figures_and_a_wrong_one_is_refused():
    from types import SimpleNamespace

    from speccomp.core.task import TASKS, get_task, register_task

    assert set(get_task("spectra").floor_free_figures) < set(get_task("spectra").run_figure_names)
    assert get_task("matrices").floor_free_figures == ()  # it draws its figures in one go
    for early in (("nope.png",), RUN_FIGURES):
        bad = SimpleNamespace(name="bad", run_figure_names=RUN_FIGURES, floor_free_figures=early)
        with pytest.raises(ValueError, match="bad: floor_free_figures .* must be some, not all"):
            register_task(bad)
    assert "bad" not in TASKS


def test_a_task_with_a_floor_of_its_data_must_take_it_in_floor():
    from speccomp.core.task import TASKS, Task, register_task

    class NoOfData(Task):  # the abstract methods do not matter to register_task
        name = "no-of-data"
        run_figure_names, floor_free_figures = ("a.png",), ()

        def floor_of_data(self, cfg, datasets):
            return {"x": 1.0}

        def floor(self, cfg, datasets, seeds, finals):
            raise AssertionError

    NoOfData.__abstractmethods__ = frozenset()
    with pytest.raises(ValueError, match="no-of-data: floor_of_data is defined, so floor must take of_data"):
        register_task(NoOfData())
    assert "no-of-data" not in TASKS


def test_a_subset_of_run_figures_is_drawn_alone_and_a_wrong_name_refused(job, tmp_path):
    from speccomp.spectra.figures import draw_run_figures

    cfg, datasets, trajectory, predictions = job
    drawn = draw_run_figures(tmp_path, cfg.physics, datasets, trajectory, predictions, cfg.tracked_labels,
                             names=FLOOR_FREE_FIGURES)
    assert sorted(drawn) == sorted(FLOOR_FREE_FIGURES) == sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(ValueError, match="nope.png.*allowed"):
        draw_run_figures(tmp_path, cfg.physics, datasets, trajectory, predictions, cfg.tracked_labels,
                         names=["nope.png"])


def test_a_worker_given_only_the_data_draws_them_and_ends_at_the_end_of_its_input(job, tmp_path):
    """The caller stopped after the data (Ctrl-C while training): the worker draws the data figures,
    finds the end of its input and exits 0 by itself; a second job is refused."""
    cfg, datasets, _, _ = job
    worker = FigureWorker.start()
    try:
        worker.submit_data(cfg, datasets, tmp_path)
        assert _end_of_input(worker) == 0
    finally:
        worker.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(DATA_FIGURES)
    with pytest.raises(RuntimeError, match="once"):
        worker.submit_data(cfg, datasets, tmp_path)


def test_an_error_in_the_data_figures_is_raised_in_the_caller(job, tmp_path):
    cfg, datasets, trajectory, predictions = job
    worker = FigureWorker.start()
    try:
        worker.submit_data(cfg, {"train": datasets["train"]}, tmp_path)  # no test split
        worker.submit(cfg, datasets, trajectory, predictions, tmp_path, None)
        with pytest.raises(RuntimeError, match="test"):
            worker.result()
        with pytest.raises(RuntimeError, match="one job"):
            worker.submit(cfg, datasets, trajectory, predictions, tmp_path, None)
    finally:
        worker.close()


def _workers_tagged(tag: str) -> list[int]:
    """Live processes whose environment holds `tag` (the command and the worker it started)."""
    import os
    from pathlib import Path

    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if tag.encode() in (proc / "environ").read_bytes() and b"figure_worker" in (proc / "cmdline").read_bytes():
                    found.append(int(proc.name))
            except OSError:
                pass
    return [pid for pid in found if pid != os.getpid()]


def test_a_ctrl_c_while_the_worker_starts_is_raised_and_ends_the_worker(tmp_path):
    """A SIGINT that lands as Popen returns (sent from inside it here) is held back until the
    worker object exists, then raised, and the worker it started is ended, not left to run."""
    import json
    import os
    import subprocess
    import sys

    code = """
import json, os, signal, subprocess
from speccomp.core.figure_worker import FigureWorker
made = []
real = subprocess.Popen
def popen(*args, **kwargs):
    process = real(*args, **kwargs)
    made.append(process)
    os.kill(os.getpid(), signal.SIGINT)
    return process
subprocess.Popen = popen
try:
    FigureWorker.start()
    outcome = "started"
except KeyboardInterrupt:
    outcome = "interrupted"
print(json.dumps([outcome, len(made), made[0].poll() is not None]))
"""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[1]),
                                                                      os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == ["interrupted", 1, True]


def test_the_worker_started_before_the_imports_ends_with_the_command(tmp_path):
    """`speccomp run` starts its figure worker first thing: Ctrl-C during the command's imports ends
    it with the command, not a second later when its own imports are done. (A refused config is
    found after the imports, when the worker is waiting for its input and ends at its end.)"""
    import os
    import signal
    import subprocess
    import sys
    import time
    import uuid

    tag = f"SPECCOMP_TEST_TAG={uuid.uuid4().hex}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db", tag.split("=")[0]: tag}
    argv = [sys.executable, "-m", "speccomp_cli", "run", "--seeds", "1"]
    log = (tmp_path / "stderr.txt").open("w")  # not a pipe: the worker shares it, and reading it to its end would wait for the worker
    proc = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=log)
    deadline = time.monotonic() + 30
    while not _workers_tagged(tag) and time.monotonic() < deadline:  # the worker is up
        time.sleep(0.02)
    assert _workers_tagged(tag), "no figure worker started"
    proc.send_signal(signal.SIGINT)  # to the command alone, while it imports torch and MLflow
    proc.wait(timeout=60)
    left = _workers_tagged(tag)  # at once: a worker that ends on its own ends about a second later
    log.close()
    assert proc.returncode == 130, (tmp_path / "stderr.txt").read_text()[-2000:]
    assert left == []
    assert not (tmp_path / "mlflow.db").exists()  # nothing half-written


@pytest.mark.slow
def test_a_run_with_a_prepared_worker_takes_the_oracle_from_it(job, monkeypatch, tmp_path):
    """`run_experiment` with a worker prepared for its data fits no oracle itself, and its seeds'
    oracle metrics are those of a run that fits it in the caller."""
    import speccomp.spectra.floor as floor_module
    from speccomp.core.experiment import run_experiment

    cfg = job[0]
    seeds = [1, 2, 3, 4, 5, 6]  # two ensembles of three: the floor is asked for twice
    inline_run = run_experiment(cfg, 42, seeds, tmp_path / "inline", figures=False, max_ensemble=3)
    fitted_here = []
    original = floor_module.physical_floor
    monkeypatch.setattr(floor_module, "physical_floor", lambda *a: fitted_here.append(1) or original(*a))
    floor_module._CACHE.clear()
    worker = FigureWorker.start()
    worker.prepare(cfg, 42, threads=torch.get_num_threads())
    run = run_experiment(cfg, 42, seeds, tmp_path / "worker", background_figures=True, figure_worker=worker,
                         max_ensemble=3)
    assert fitted_here == []
    for mine, theirs in zip(run.result.seeds, inline_run.result.seeds, strict=True):
        oracle = {k: v for k, v in mine.final.items() if k.startswith("oracle/")}
        assert oracle and oracle == {k: v for k, v in theirs.final.items() if k.startswith("oracle/")}
    assert sorted(p.name for p in (tmp_path / "worker" / "plots").iterdir()) == sorted(FIGURE_NAMES)
