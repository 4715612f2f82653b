"""The shared presentation helpers of parent runs (`tracking.describe`) and the console progress
(`tracking.progress`): names, numbers, descriptions, addresses, progress lines and their pace."""

from __future__ import annotations

import io
import math
from types import SimpleNamespace
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.conftest import tiny_config


# --------------------------------------------------------------------------------------------
# names and numbers
# --------------------------------------------------------------------------------------------
def test_seed_ranges_collapse_runs_of_three_or_more():
    from tracking.describe import run_name, seed_range

    assert seed_range([123, 124, 125]) == "123-125"
    assert seed_range([1, 5, 6, 7, 9]) == "1,5-7,9"
    assert seed_range([1, 2]) == "1,2" and seed_range([123]) == "123"
    assert run_name("nas", "spectra", "1000 it", seeds=[123, 124, 125]) == "nas spectra 1000 it seeds 123-125"
    assert run_name("meta", "spectra", "100/20 tasks") == "meta spectra 100/20 tasks"
    assert run_name("raven main", "", seeds=[123], data_seeds=[42]) == "raven main seeds 123"
    assert run_name("main", seeds=[1], data_seeds=[42, 43]) == "main seeds 1 data 42,43"


@pytest.mark.parametrize(("value", "shown"), [
    (0.01466353, "0.0147"), (1234.5, "1230"), (12.5, "12.5"), (9.996, "10"), (0.0009996, "0.001"),
    (2.5e-6, "2.5e-06"), (123456.0, "1.23e+05"), (-0.5, "-0.5"), (0, "0"), (3, "3"),
    (math.nan, "—"), (None, "—"), (math.inf, "—"),
])
def test_three_significant_digits(value, shown):
    from tracking.describe import sig

    assert sig(value) == shown


def test_mean_and_spread():
    from tracking.describe import pm

    assert pm(0.0147, 0.00123) == "0.0147 ± 0.0012"
    assert pm(0.5, 0.0) == "0.5" and pm(0.5, math.nan) == "0.5" and pm(math.nan, 0.1) == "—"


def test_descriptions_open_with_the_verdict_then_the_table():
    from tests.test_ui import markdown_tables
    from tracking.describe import description

    text = description("nas beats the default", ["model", "test MSE"], [["nas", "0.0147"], ["default", "0.0211"]],
                       notes=["Figures under `plots/`."])
    first, *rest = text.splitlines()
    assert first == "**nas beats the default**"
    (table,) = markdown_tables(text)
    assert table == [["model", "test MSE"], ["nas", "0.0147"], ["default", "0.0211"]]
    assert text.endswith("Figures under `plots/`.")
    with pytest.raises(ValueError, match="verdict"):
        description("two\nlines")


def test_headline_metrics_by_role_and_domain():
    from tracking.describe import headline_metrics

    spectra = headline_metrics("spectra", {"test/mse/comp10": 0.0147, "gap/comp10": 1.2, "test/mse/comp4": 0.2,
                                           "transfer/comp4": math.nan, "headline/ratio_to_default": 0.7,
                                           "val/mse/comp4": 0.1}, ["comp10", "comp4"])
    assert spectra == {"first/test/mse": 0.0147, "gap/first": 1.2, "second/test/mse": 0.2,
                       "headline/ratio_to_default": 0.7}
    matrices = headline_metrics("matrices", {"test/acc": 0.61, "gap/acc": 0.2, "test/loss": 1.0}, chance=0.125)
    assert matrices == {"test/acc": 0.61, "gap/acc": 0.2, "chance/acc": 0.125}


# --------------------------------------------------------------------------------------------
# addresses
# --------------------------------------------------------------------------------------------
def route_query(url: str) -> dict[str, list[str]]:
    """The query the MLflow UI reads: after the `#/...` route."""
    return parse_qs(urlsplit(urlsplit(url).fragment).query)


def test_every_address_opens_the_model_training_view():
    from tracking.describe import closing_lines, experiment_url, run_url, urls_in, with_workflow

    page = run_url("sqlite:///mlflow.db", "1", "ab12")
    assert page == "http://127.0.0.1:5000/#/experiments/1/runs/ab12?workflowType=machine_learning"
    server = experiment_url("https://me:secret@mlflow.example:8443/", "3")
    assert "secret" not in server and server.startswith("https://me:***@mlflow.example:8443/#/experiments/3/runs?")
    assert route_query(server) == {"workflowType": ["machine_learning"], "viewStateShareKey": ["speccomp-headline"]}
    assert with_workflow(page) == page
    assert with_workflow("http://h/#/experiments/1/runs?x=1") == "http://h/#/experiments/1/runs?x=1&workflowType=machine_learning"
    info = SimpleNamespace(run_id="ab12", run_name="main seeds 1", experiment_id="1")
    for uri in ("sqlite:///mlflow.db", "http://127.0.0.1:5001"):
        text = "\n".join(closing_lines(uri, info))
        found = urls_in(text)
        assert found and all(route_query(u)["workflowType"] == ["machine_learning"] for u in found), text
        assert any(u.split("?")[0].endswith("/runs/ab12") for u in found)


# --------------------------------------------------------------------------------------------
# progress
# --------------------------------------------------------------------------------------------
class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def fresh_gate(monkeypatch):
    import tracking.progress as progress

    monkeypatch.setattr(progress, "_last_line", [-math.inf])
    monkeypatch.setattr(progress, "_stage", [""])
    return progress


def test_progress_lines_come_every_few_seconds_with_elapsed_and_eta(fresh_gate):
    from tracking.progress import Progress

    out, clock = io.StringIO(), FakeClock()
    bar = Progress("training 3 seeds", total=100, every_s=5, stream=out, tty=False, clock=clock)
    printed = []
    for _ in range(40):
        clock.now += 0.5  # 20 s of work, a step every 0.5 s
        printed.append(bar.update(1))
    lines = out.getvalue().splitlines()
    assert sum(printed) == len(lines) == 4  # at 5, 10, 15, 20 s
    assert lines[0] == "training 3 seeds: 10/100 steps (10 %) · 5.0 s elapsed · ETA 45 s"
    clock.now += 1
    bar.close()
    assert out.getvalue().splitlines()[-1] == "training 3 seeds: 40/100 steps in 21 s"


def test_progress_lines_of_one_process_never_come_closer_than_a_second(fresh_gate):
    from tracking.progress import MIN_GAP_S, Progress

    out, clock = io.StringIO(), FakeClock()
    a = Progress("a", total=10, every_s=0, stream=out, tty=False, clock=clock)
    b = Progress("b", total=10, every_s=0, stream=out, tty=False, clock=clock)
    times = []
    for _ in range(30):
        clock.now += 0.25
        for bar in (a, b):
            if bar.update(1):
                times.append(clock.now)
    assert len(times) >= 5
    assert all(later - earlier >= MIN_GAP_S for earlier, later in zip(times, times[1:], strict=False))
    a.say("trial 3 finished")  # an event is never held back
    assert out.getvalue().splitlines()[-1].endswith("trial 3 finished")


def test_heartbeat_speaks_only_after_a_silence(fresh_gate):
    from tracking.progress import Heartbeat, set_stage

    fresh_gate._mark_line(100.0)
    beat = Heartbeat("main", every_s=10, started=100.0)
    set_stage("drawing figures")
    assert beat.tick(105.0) is None
    assert beat.tick(110.0) == "main: working (drawing figures) · 10 s elapsed"
    assert beat.tick(115.0) is None  # the line just printed counts
    fresh_gate._mark_line(118.0)  # another progress line (a Progress, `say`)
    assert beat.tick(121.0) is None
    assert beat.tick(128.5) == "main: working (drawing figures) · 28 s elapsed"


def test_training_takes_a_progress_factory_and_updates_it_every_step(fresh_gate):
    from speccomp.core.training import train
    from speccomp.spectra.data import generate_datasets

    cfg = tiny_config()
    calls = []

    class Recorder:
        def __init__(self, total: int, n_seeds: int) -> None:
            calls.append(("start", total, n_seeds))
            self.steps = 0

        def update(self, n: int = 1) -> None:
            self.steps += n

        def close(self) -> None:
            calls.append(("close", self.steps))

    result = train(cfg, generate_datasets(cfg, 42), [1, 2], progress=Recorder)
    assert calls == [("start", result.total_steps, 2), ("close", result.total_steps)]


# --------------------------------------------------------------------------------------------
# the command line
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["run", "study", "nas", "meta"])
def test_help_offers_no_double_negatives(command, capsys):
    from speccomp_cli.main import main

    main([command, "--help"])
    text = capsys.readouterr().out
    assert "Usage:" in text
    assert "--no-no-" not in text and "--no-log-models" not in text  # each flag once, no negated negation
    if command == "run":
        assert "--no-models" in text and "--no-figures" in text
    if command == "study":
        assert "--no-report" in text and "--log-models" in text


def test_a_users_env_file_is_never_committed():
    from pathlib import Path

    ignored = (Path(__file__).resolve().parents[1] / ".gitignore").read_text().splitlines()
    assert ".env" in ignored
