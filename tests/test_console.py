"""What `nas`, `meta` and `meta-eval` tell a user while and after they run (in process, tiny):
progress on stderr with the elapsed time, paced where stderr is not a terminal (no two progress
lines within `MIN_GAP_S`, whichever stage printed them), and every address they print or store in
a description opens the MLflow UI's model-training view (`workflowType=machine_learning`).

Each command runs once with the progress clock running `DILATION` times faster than the wall clock
(so that tiny work lasts minutes on it and every stage has something to report, on any machine)
and `EVERY_S` at `PACE_S`, so that every `Progress` wants a line five times a second of that clock:
only the process-wide gap keeps them apart. stderr is not a terminal; each line is stamped with
the time the gate let it through (`tracking.progress._last_line`). `main` and `study` are checked
in `tests/test_ui.py`."""

from __future__ import annotations

import io
import math
import re
import sys
import threading
import time
from types import SimpleNamespace

import pytest

from speccomp.meta.settings import ENV_NAMES
from tests.conftest import isolated_store
from tests.test_tracking import all_runs

DILATION = 50.0
"""Progress seconds per wall second during these runs: a tiny search of 0.2 s is 10 s long to
`tracking.progress` (the heartbeat keeps its 10 s)."""
PACE_S = 0.2
"""`EVERY_S` during these runs (5 s by default): far below the 1 s gap, so the gap is what paces."""
ELAPSED = re.compile(r"· (\d+(\.\d)? s|\d+ min \d+ s|\d+ h \d+ min) elapsed")
NOTE_TAG = "mlflow.note.content"
META_TINY = [
    "--config", "smoke",
    "--num_meta_training_tasks", "4", "--num-meta-testing-tasks", "2", "--architecture_search_iterations", "12",
    "--overrides",
    "experiment.overrides=[physics.n_bins=64] tasks.n_single=12 tasks.n_empty=12 tasks.n_val_single=6 "
    "tasks.n_query=8 tasks.n_test=16 adapt.candidates=1 adapt.candidate_steps=3 adapt.search_steps=3 "
    "adapt.finetune_steps=5 baselines.nas_iterations=2 log_every=4 baselines.methods=[meta-weights,meta-arch,prior]",
]


class TimedStream(io.TextIOBase):
    """A stderr that is not a terminal and stamps each line with `stamp()` as it is completed."""

    def __init__(self, stamp) -> None:
        super().__init__()
        self.stamp = stamp
        self.lines: list[tuple[float, str]] = []
        self._partial = ""
        self._lock = threading.Lock()  # the heartbeat writes from its own thread

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def write(self, text: str) -> int:
        now = self.stamp()
        with self._lock:
            self._partial += text
            *done, self._partial = self._partial.split("\n")
            self.lines += [(now, line) for line in done]
        return len(text)

    def text(self) -> str:
        return "\n".join(line for _, line in self.lines) + self._partial

    def timeline(self) -> str:
        """Each line with its time from the first (for a failure's message)."""
        start = next((t for t, _ in self.lines if math.isfinite(t)), 0.0)
        return "\n".join(f"{t - start:7.2f} {line}" for t, line in self.lines)


def run_command(folder, argv: list[str], unset=()) -> SimpleNamespace:
    """`speccomp ARGV` in process in a fresh store, stderr timed, stdout captured."""
    import contextlib

    import tracking.progress as progress
    from speccomp_cli.main import main

    start = time.monotonic()

    def dilated() -> float:
        return start + DILATION * (time.monotonic() - start)

    gate = [-math.inf]  # when the last progress line was let through (`say` lines count too)
    err, out = TimedStream(lambda: gate[0]), io.StringIO()
    with isolated_store(folder, unset=unset) as store, pytest.MonkeyPatch.context() as mp:
        mp.setattr(progress, "time", SimpleNamespace(monotonic=dilated))  # tracking.progress's clock only
        mp.setattr(progress, "EVERY_S", PACE_S)
        mp.setattr(progress, "_last_line", gate)
        mp.setattr(sys, "stderr", err)
        with contextlib.redirect_stdout(out):
            code = main(argv)
        runs = all_runs(store.client)
    return SimpleNamespace(code=code, err=err, out=out.getvalue(), runs=runs)


def progress_lines(err: TimedStream) -> list[tuple[float, str]]:
    """The progress lines (a `Progress` status line, the heartbeat): those giving the elapsed time."""
    return [(t, line) for t, line in err.lines if " elapsed" in line]


def assert_paced_progress(done: SimpleNamespace, names: set[str]) -> set[str]:
    """Progress came, each line with its elapsed time, never two within the gap (on the progress
    clock); the stages that reported are among `names` (what a line names before its colon).
    Returns those stages."""
    from tracking.progress import MIN_GAP_S

    assert done.code == 0, done.err.text()[-3000:]
    lines = progress_lines(done.err)
    assert len(lines) >= 2, done.err.timeline()
    assert all(ELAPSED.search(line) for _, line in lines), lines
    gaps = [later - earlier for (earlier, _), (later, _) in zip(lines, lines[1:], strict=False)]
    assert min(gaps) >= MIN_GAP_S, list(zip(gaps, [line for _, line in lines[1:]], strict=True))
    reported = {re.sub(r" \d+( seeds?)?$", "", line.split(":")[0]) for _, line in lines}
    assert reported <= names, reported
    return reported


def route_query(url: str) -> dict[str, list[str]]:
    """The query the MLflow UI reads from an address: the one after its `#/...` route."""
    from urllib.parse import parse_qs, urlsplit

    return parse_qs(urlsplit(urlsplit(url).fragment).query)


def assert_model_training_urls(done: SimpleNamespace, role: str) -> None:
    """Every http(s) address printed (stdout, stderr) or in a run's description carries
    workflowType=machine_learning; the parent's own page is printed and is among them."""
    found = {"printed": re.findall(r"https?://[^\s)\]>\"'`]+", done.out + "\n" + done.err.text())}
    for run in done.runs:
        found[run.info.run_name] = re.findall(r"https?://[^\s)\]>\"'`]+", run.data.tags.get(NOTE_TAG, ""))
    wrong = {k: [u for u in urls if route_query(u).get("workflowType") != ["machine_learning"]]
             for k, urls in found.items()}
    assert not any(wrong.values()), wrong
    (parent,) = [r for r in done.runs if r.data.tags.get("speccomp.role") == role]
    assert parent.data.tags[NOTE_TAG].strip()  # it has a description (its addresses checked above)
    page = [u for u in found["printed"] if f"/runs/{parent.info.run_id}" in u]
    assert page and all(u.split("#")[0] in ("http://127.0.0.1:5000/", "http://127.0.0.1:5000") for u in page), page


# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def nas_done(tmp_path_factory):
    import yaml

    from speccomp.core.config import default_config_dir
    from tests.conftest import TINY_OVERRIDES
    from tests.test_nas_tracking import TINY_SPACE

    folder = tmp_path_factory.mktemp("console-nas")
    space = folder / "space.yaml"
    space.write_text(yaml.safe_dump(TINY_SPACE))
    return run_command(folder, [
        "nas", "--seeds", "1,2", "--config-dir", str(default_config_dir()), "--space", str(space),
        "--architecture-search-iterations", "60", "--search-seeds", "1", "--random-draws", "3",
        *[a for item in TINY_OVERRIDES for a in ("--set", item)]])


@pytest.fixture(scope="module")
def meta_done(tmp_path_factory):
    return run_command(tmp_path_factory.mktemp("console-meta"), ["meta", *META_TINY, "--threads", "1"],
                       unset=ENV_NAMES.values())


@pytest.fixture(scope="module")
def meta_eval_done(tmp_path_factory):
    return run_command(tmp_path_factory.mktemp("console-meta-eval"),
                       ["meta-eval", "--repetitions", "2", *META_TINY], unset=ENV_NAMES.values())


@pytest.mark.slow
def test_nas_prints_paced_progress_of_its_searches_and_trainings(nas_done):
    reported = assert_paced_progress(nas_done, {
        "search seed", "retraining nas-s1", "retraining default", "retraining loglinear", "random search",
        "retraining random-1", "retraining random-2", "retraining random-3", "nas"})
    assert "search seed" in reported  # the search's own line
    assert not any(line.lstrip().startswith("iteration ") for _, line in nas_done.err.lines)  # none per step


@pytest.mark.slow
def test_nas_addresses_open_the_model_training_view(nas_done):
    assert_model_training_urls(nas_done, "nas")


@pytest.mark.slow
def test_meta_prints_paced_progress_of_meta_training_and_the_meta_test(meta_done):
    reported = assert_paced_progress(meta_done, {"meta-training", "meta-weights ablation", "meta-test", "meta"})
    assert {"meta-training", "meta-test"} <= reported, meta_done.err.timeline()


@pytest.mark.slow
def test_meta_addresses_open_the_model_training_view(meta_done):
    assert_model_training_urls(meta_done, "meta")


@pytest.mark.slow
def test_meta_eval_prints_paced_progress_and_its_repetitions_with_elapsed_time(meta_eval_done):
    assert_paced_progress(meta_eval_done, {"meta-training", "meta-weights ablation", "meta-test", "meta-eval"})
    starts = [line for _, line in meta_eval_done.err.lines if re.match(r"\[[^\]]+\] repetition \d/2 ", line)]
    assert len(starts) == 2, meta_eval_done.err.timeline()  # each repetition announced with the elapsed time


@pytest.mark.slow
def test_meta_eval_addresses_open_the_model_training_view(meta_eval_done):
    assert_model_training_urls(meta_eval_done, "meta-eval")

