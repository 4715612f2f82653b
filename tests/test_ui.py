"""What the MLflow UI and optuna-dashboard show: the experiment's kind, run names, descriptions,
compact params, role-named metrics, the saved runs-table view, the study run's own metrics, the
report as markdown tables, objective names and links, sampler seeding by study name.

The pure functions are checked directly; one slow test reads a default run and a study back with
`MlflowClient` as the UI would."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml

from speccomp.core.config import default_config_dir, load_config
from tests.conftest import TINY_OVERRIDES, tiny_config

REPO = Path(__file__).resolve().parents[1]
TINY_ARGS = [arg for item in TINY_OVERRIDES for arg in ("--set", item)]
pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")


def markdown_tables(text: str) -> list[list[list[str]]]:
    """Every GitHub-flavoured markdown table in `text`, as rows of cells (header first); fails on
    a table whose separator row is missing or whose rows have another number of cells."""
    tables, block = [], []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            block.append(line)
            continue
        if block:
            rows = [[c.strip() for c in re.split(r"(?<!\\)\|", row.strip())[1:-1]] for row in block]
            assert len(rows) >= 2 and all(re.fullmatch(r":?-{3,}:?", c) for c in rows[1]), block[:2]
            assert all(len(r) == len(rows[0]) for r in rows), block
            tables.append([rows[0], *rows[2:]])
            block = []
    return tables


# --------------------------------------------------------------------------------------------
# pure functions
# --------------------------------------------------------------------------------------------
def test_role_names_baseline_out_and_std_noise_zeroed():
    from tracking.ui import for_mlflow

    finals = {"test/mse/comp10": 0.01, "test/mse/comp4": 0.2, "std/test/mse/comp4": 0.02, "gap/comp10": 1.1,
              "oracle/mse/comp4": 1e-3, "std/oracle/mse/comp4": 8.3e-21, "baseline/test/mse/comp4": 0.19,
              "std/baseline/test/mse/comp4": 0.0, "train/loss": 0.3}
    out = for_mlflow(finals, ["comp10", "comp4"])
    # curves take the role first (a run page opens on them), final values in place of the label
    assert out["first/test/mse"] == 0.01 and out["second/test/mse"] == 0.2 and out["gap/first"] == 1.1
    assert out["std/test/mse/second"] == 0.02 and out["oracle/mse/second"] == 1e-3
    assert out["std/oracle/mse/comp4"] == 0.0 and out["std/oracle/mse/second"] == 0.0  # rounding noise
    assert out["std/test/mse/comp4"] == 0.02  # a real spread stays
    assert not [k for k in out if "baseline" in k]  # in the description table, not one-dot charts
    assert out["train/loss"] == 0.3 and "first/train/loss" not in out


def test_run_params_are_compact_live_and_never_empty():
    from tracking.pipeline import flatten
    from tracking.ui import run_params

    cfg = load_config(default_config_dir())
    params = run_params(cfg)
    assert len(params) < len(flatten(cfg.to_dict())) / 2
    assert all(v not in ("", "''", "None") for v in params.values())
    assert "training.seed" not in params and "training.num_workers" not in params  # dead fields
    assert not [k for k in params if k.startswith("training.cnn.")]  # an MLP has no CNN settings
    assert {k for k in params if k.startswith("physics.lines.")} == {"physics.lines.sha256"}
    assert set(f"physics.line.{label}" for label in cfg.tracked_labels) <= set(params)
    assert params["data.splits.train.combinations"] == "[] x1.0; [comp10] x1.0; [comp4] x1.0"
    assert params["training.learning_rate"] == "0.001" and params["data.splits.train.n_samples"] == "4096"
    cnn = run_params(load_config(default_config_dir(), ["training.model_type=cnn"]))
    assert "training.cnn.channels" in cnn and "training.hidden_dims" in cnn


def test_descriptions_are_headline_tables():
    from tracking.ui import seed_description, summary_description

    tracked = ["comp10", "comp4"]
    rows = [{"seed": s, "data_seed": 42, "test/mse/comp10": 0.01 * s, "test/mse/comp4": 0.2,
             "gap/comp10": 1.0, "gap/comp4": 3.0 + s, "oracle/mse/comp10": 4e-5, "oracle/mse/comp4": 1e-3,
             "oracle/efficiency/comp10": 4e-3 / s, "oracle/efficiency/comp4": 5e-3,
             "baseline/test/mse/comp4": 0.19} for s in (1, 2, 3)]
    text = summary_description("**main**", pd.DataFrame(rows), tracked)
    (table,) = markdown_tables(text)
    assert table[0] == ["component", "test MSE", "gap", "floor (oracle MSE)", "efficiency"]
    assert [r[0] for r in table[1:]] == ["comp10 (first)", "comp4 (second)"]
    assert table[1][1] == "0.02 ± 0.01" and table[2][2] == "5 ± 1"
    assert table[1][3] == "4e-05"  # the same for every seed: no "± 0"
    assert "Mean ± std over 3 seeds." in text and "comp4 0.19" in text
    (one,) = markdown_tables(seed_description(1, 42, rows[0], tracked))
    assert one[1][1] == "0.01" and "±" not in "".join(one[1])
    # a component learned in distribution has a transfer value; one that was not says so
    judged = {**rows[0], "skill/val/comp10": 0.9, "transfer/comp10": 0.8, "skill/val/comp4": 0.1}
    (table,) = markdown_tables(seed_description(1, 42, judged, tracked))
    column = table[0].index("transfer")
    assert [r[column] for r in table[1:]] == ["0.8", "not learned"]


def test_saved_view_selects_the_headline_columns():
    from tracking.ui import HEADLINE_COLUMNS, VIEW_ID, saved_view, view_url

    envelope = json.loads(saved_view())
    assert envelope["name"] and isinstance(envelope["createdAt"], int)
    state = json.loads(envelope["state"])
    assert state["selectedColumns"] == [f"{kind}.`{name}`" for kind, name in HEADLINE_COLUMNS]
    assert "metrics.`first/test/mse`" in state["selectedColumns"]
    assert {c["metricKey"] for c in state["compareRunCharts"]} >= {"first/test/mse", "transfer/second"}
    assert view_url("http://127.0.0.1:5000/", "7") == (
        f"http://127.0.0.1:5000/#/experiments/7/runs?workflowType=machine_learning&viewStateShareKey={VIEW_ID}")


def test_generated_run_names_are_replaced_chosen_ones_kept():
    from tracking.ui import GENERATED_NAME, main_run_name

    assert GENERATED_NAME.match("rumbling-goose-325") and not GENERATED_NAME.match("bad-seeds")
    assert main_run_name([123, 124, 125], [42], []) == "main seeds 123-125"
    assert main_run_name([1, 5], [42, 43], ["configs/presets/loglinear.yaml"]) == "main loglinear seeds 1,5 data 42,43"


def test_mlproject_defaults_are_never_empty_and_mean_not_given(monkeypatch):
    from tests.test_tracking import _parsed

    spec = yaml.safe_load((REPO / "MLproject").read_text())
    for entry, body in spec["entry_points"].items():
        for name, p in body["parameters"].items():
            assert str(p.get("default", "x")).strip() != "", (entry, name)  # would show as '' in the UI
    (run,), _ = _parsed(monkeypatch, "main", {}, "tracking.main.run")
    assert (run.threads, run.presets, run.overrides) == (None, [], [])
    (study,), _ = _parsed(monkeypatch, "study", {}, "study.main.main")
    assert (study.total_trials, study.sampler_seed, study.presets, study.overrides) == (None, None, [], [])
    assert study.storage == "auto"  # SPECCOMP_STORAGE or optuna.log, decided in study.main
    (pinned,), _ = _parsed(monkeypatch, "study", {"sampler_seed": "7", "total_trials": "5"}, "study.main.main")
    assert (pinned.sampler_seed, pinned.total_trials) == (7, 5)


def test_study_names_draw_different_trials_unless_the_seed_is_pinned():
    from study.main import make_sampler, name_seed

    def draws(seed: int) -> list[float]:
        study = optuna.create_study(sampler=make_sampler("random", seed, 1))
        out = []
        for _ in range(3):
            trial = study.ask()
            out.append(trial.suggest_float("x", 0, 1))
            study.tell(trial, 0.0)
        return out

    assert name_seed("a") == name_seed("a") and name_seed("a") != name_seed("b")
    assert draws(name_seed("a")) == draws(name_seed("a"))
    assert draws(name_seed("a")) != draws(name_seed("b"))
    assert draws(7) == draws(7)  # a pinned seed: the same trials whatever the name


@pytest.mark.slow
def test_report_renders_markdown_tables_and_labelled_figures(tmp_path):
    from study.report import build_report

    dists = {"training.model_type": optuna.distributions.CategoricalDistribution(["mlp", "linear"]),
             "training.learning_rate": optuna.distributions.FloatDistribution(3e-4, 3e-3, log=True)}
    study = optuna.create_study(study_name="planted")
    for i in range(8):
        params = {"training.model_type": ["mlp", "linear"][i % 2], "training.learning_rate": 3e-4 * 1.3 ** i}
        value = 1.0 + (i % 2) + 0.01 * i
        study.add_trial(optuna.trial.create_trial(params=params, distributions=dists, value=value,
                                                  user_attrs={"gap_tracked_mean": value, "gap_tracked_std": 0.1}))
    report = build_report(study, tmp_path / "single")
    names = {p.name for p in report.files}
    assert {"report.md", "importances.png", "trials.csv", "importances.csv"} <= names
    assert all(p.is_file() for p in report.files)
    text = (tmp_path / "single" / "report.md").read_text()
    tables = markdown_tables(text)
    assert len(tables) >= 2 and "Best trial" in text and "\n  " not in text  # no fixed-width pandas text
    assert any("training.model_type" in row[0] for table in tables for row in table[1:])

    two = optuna.create_study(study_name="two", directions=["minimize", "minimize"])
    for i in range(6):
        two.add_trial(optuna.trial.create_trial(params={"training.model_type": ["mlp", "linear"][i % 2],
                                                        "training.learning_rate": 3e-4 * 1.4 ** i},
                                                distributions=dists, values=[0.1 * (i + 1), 1.0 / (i + 1)]))
    report = build_report(two, tmp_path / "pareto")
    assert {"pareto.png", "pareto.csv"} <= {p.name for p in report.files}
    assert markdown_tables((tmp_path / "pareto" / "report.md").read_text())


def test_compact_seed_attributes_and_objective_names():
    from study.records import compact_seeds, objective_names

    out = compact_seeds({123: {"test/mse/tracked": 0.0123456, "gap/tracked": 1.23456, "transfer/tracked": math.nan}})
    assert compact_seeds({1: {"test/mse/tracked": 0.5}, 2: {"test/mse/tracked": 0.25}}) == \
        "1: test_mse 0.5; 2: test_mse 0.25"
    assert out == "123: test_mse 0.0123, gap 1.23"
    assert objective_names("pareto", 2) == ["in-distribution (val) MSE, tracked", "test MSE, tracked"]
    assert objective_names("test_mse", 1) == ["test MSE (tracked, mean)"]


# --------------------------------------------------------------------------------------------
# a default run and a study, read back as the UI reads them
# --------------------------------------------------------------------------------------------
@pytest.mark.slow
def route_query(url: str) -> dict[str, list[str]]:
    """The query the MLflow UI reads from an address: the one after its `#/...` route."""
    from urllib.parse import parse_qs, urlsplit

    return parse_qs(urlsplit(urlsplit(url).fragment).query)


def opens_model_training(text: str) -> list[str]:
    """Every address in `text`; each must open the UI's model-training view."""
    from tracking.describe import urls_in

    found = urls_in(text)
    wrong = [u for u in found if route_query(u).get("workflowType") != ["machine_learning"]]
    assert not wrong, wrong
    return found


def repeated_params(run) -> list[str]:
    """Tags of `run` that repeat one of its params (same name, or a dotted param ending in the
    tag's name with the same value)."""
    params = run.data.params
    return [k for k, v in run.data.tags.items() if not k.startswith("mlflow.") and (
        k in params or any(p.endswith(f".{k}") and params[p] == v for p in params))]


@pytest.mark.slow
def test_a_run_and_a_study_read_back_as_the_ui_shows_them(tmp_path, monkeypatch, capsys):
    from mlflow import MlflowClient

    from speccomp_cli.main import main
    from study.storage import open_storage
    from tests.test_matrices import RAVEN
    from tests.test_matrices import TINY as RAVEN_TINY
    from tracking.ui import EXPERIMENT_KIND_TAG, HEADLINE_COLUMNS, NOTE_TAG, TRAINING_KIND, VIEW_ID, VIEW_TAG_PREFIX

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    for name in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID"):
        monkeypatch.delenv(name, raising=False)
    printed = {}
    assert main(["run", "--seeds", "1,2", "--threads", "1", "--config-dir", str(default_config_dir()), *TINY_ARGS]) == 0
    printed["main"] = capsys.readouterr()
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({"name": "tiny", "params": {
        "training.model_type": {"type": "categorical", "choices": ["mlp", "linear"]},
        "training.learning_rate": {"type": "float", "low": 3e-4, "high": 3e-3, "log": True}}}))
    assert main(["study", "--n-trials", "3", "--study-name", "ui-study", "--storage", str(tmp_path / "optuna.log"),
                       "--space", str(space), "--seeds", "1,2", "--threads", "1",
                       "--config-dir", str(default_config_dir()), *TINY_ARGS]) == 0
    printed["study"] = capsys.readouterr()
    assert main(["run", "--seeds", "1", "--threads", "1", "--config-dir", str(RAVEN),
                 *[a for item in RAVEN_TINY for a in ("--set", item)]]) == 0
    printed["raven"] = capsys.readouterr()

    client = MlflowClient()
    (exp,) = [e for e in client.search_experiments() if e.name != "Default"]
    assert exp.name == "speccomp" and exp.tags[EXPERIMENT_KIND_TAG] == TRAINING_KIND
    assert json.loads(exp.tags[VIEW_TAG_PREFIX + VIEW_ID])["name"]
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    by_role = {}
    for run in runs:
        by_role.setdefault(run.data.tags["speccomp.role"], []).append(run)
        assert NOTE_TAG in run.data.tags, run.info.run_name  # every run has a description
        assert all(v.strip() not in ("", "''") for v in run.data.params.values()), run.info.run_name
        assert "training.seed" not in run.data.params
    (main_run,) = [r for r in by_role["main"] if r.data.tags["domain"] == "spectra"]
    (raven,) = [r for r in by_role["main"] if r.data.tags["domain"] == "matrices"]
    assert main_run.info.run_name == "main seeds 1,2"
    assert len(markdown_tables(main_run.data.tags[NOTE_TAG])) == 1
    label = tiny_config().tracked_labels[0]
    assert main_run.data.metrics["first/test/mse"] == main_run.data.metrics[f"test/mse/{label}"]
    assert main_run.data.metrics[f"std/oracle/mse/{label}"] == 0.0
    seeds = [r for r in by_role["seed"] if r.data.tags["mlflow.parentRunId"] == main_run.info.run_id]
    assert sorted(r.info.run_name for r in seeds) == ["seed-1", "seed-2"]
    models = client.search_logged_models([exp.experiment_id])
    assert sorted(m.name for m in models if m.source_run_id in {r.info.run_id for r in seeds}) == [
        "spectra-seed-1", "spectra-seed-2"]

    (study_run,) = by_role["study"]
    assert study_run.info.run_name == "study ui-study space space seeds 1,2"
    study = optuna.load_study(study_name="ui-study", storage=open_storage(str(tmp_path / "optuna.log")))
    m = study_run.data.metrics
    assert m["study/n_trials"] == 3 and m["study/n_complete"] == 3 and m["study/n_pruned"] == m["study/n_failed"] == 0
    assert m["study/best_value"] == pytest.approx(study.best_value) and m["study/wall_s_per_trial"] > 0
    history = client.get_metric_history(study_run.info.run_id, "study/value")
    assert sorted(h.step for h in history) == [0, 1, 2]
    assert study_run.data.tags["best_trial"] == str(study.best_trial.number)
    assert f"#{study.best_trial.number}" in study_run.data.tags[NOTE_TAG]
    assert sorted(r.info.run_name for r in by_role["trial"]) == ["trial-0", "trial-1", "trial-2"]
    logged = {Path(a.path).name for a in client.list_artifacts(study_run.info.run_id, "report")}
    assert {"report.md", "trials.csv", "importances.csv", "importances.png", "effects.png", "significance.csv"} <= logged
    report = Path(client.download_artifacts(study_run.info.run_id, "report/report.md", str(tmp_path))).read_text()
    assert len(markdown_tables(report)) >= 2

    # optuna-dashboard: objective names, the way back to MLflow, compact attributes
    assert study.metric_names == ["test MSE (tracked, mean)"]
    assert study.user_attrs["mlflow_study_run_id"] == study_run.info.run_id
    assert study.user_attrs["mlflow_experiment"] == f"speccomp (id {exp.experiment_id})"
    assert all(len(t.user_attrs["seeds"]) < 120 and t.user_attrs["seeds"].isascii() for t in study.trials)

    # the raven run: named and its model named by domain
    assert raven.info.run_name == "raven main seeds 1"
    (raven_seed,) = [r for r in by_role["seed"] if r.data.tags["mlflow.parentRunId"] == raven.info.run_id]
    assert [m.name for m in models if m.source_run_id == raven_seed.info.run_id] == ["raven-seed-1"]

    # every address printed or stored opens the model-training view; the run pages are among them
    for command, out in printed.items():
        found = opens_model_training(out.out + out.err)
        assert any("/runs/" in u for u in found), command
    study_page = [u for u in opens_model_training(printed["study"].out) if study_run.info.run_id in u]
    assert study_page and "report/report.md" in printed["study"].out
    assert "## Significance" not in printed["study"].out  # the summary, not the whole report
    trial_lines = [line for line in printed["study"].err.splitlines() if line.startswith("trial ")]
    assert len(trial_lines) == 3 and all("value" in line and "best" in line and "elapsed" in line for line in trial_lines)
    assert "ETA" in trial_lines[0]
    for run in client.search_runs([exp.experiment_id], max_results=1000):
        opens_model_training(run.data.tags[NOTE_TAG])
        assert not repeated_params(run), (run.info.run_name, repeated_params(run))
    for parent in (main_run, study_run, raven):
        verdict = parent.data.tags[NOTE_TAG].splitlines()[0]
        assert verdict.startswith("**") and verdict.endswith("**") and len(verdict) > 10, verdict
        filled = [name for kind, name in HEADLINE_COLUMNS if getattr(parent.data, kind).get(name) not in (None, "")]
        assert len(filled) >= 4, (parent.info.run_name, filled)
    assert [r.info.run_id in study_run.data.tags[NOTE_TAG] for r in by_role["trial"]].count(True) == 3

    # optuna-dashboard: the study's and each trial's note link to their MLflow runs; seed values
    from speccomp_compat import dashboard_note, study_id, trial_id

    storage = open_storage(str(tmp_path / "optuna.log"))
    note = dashboard_note(storage, study_id(study))
    assert any(study_run.info.run_id in u for u in opens_model_training(note))
    for t in study.trials:
        note = dashboard_note(storage, study_id(study), trial_id(t))
        assert any(t.user_attrs["mlflow_run_id"] in u for u in opens_model_training(note))
        assert sorted(t.intermediate_values) == [0, 1]


def test_a_dashboard_note_is_saved_without_importing_the_dashboard_and_reads_back_with_it():
    """A study saves its optuna-dashboard notes with the dashboard's own note code, loaded alone:
    neither the dashboard's web app nor scikit-learn (about 1 s) is imported, and the dashboard's
    public reader reads the notes back."""
    import subprocess
    import sys

    code = (
        "import sys, optuna\n"
        "from study.records import save_note\n"
        "optuna.logging.set_verbosity(optuna.logging.WARNING)\n"
        "study = optuna.create_study()\n"
        "trial = study.ask()\n"
        "assert save_note(study, '**study** note') and save_note(trial, 'trial ' * 600)\n"
        "assert save_note(study, '**study** again')\n"
        "heavy = sorted(m for m in ('sklearn', 'optuna_dashboard', 'optuna.importance') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
        "from optuna_dashboard import get_note\n"
        "assert get_note(study) == '**study** again', get_note(study)\n"
        "assert get_note(trial) == 'trial ' * 600\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
