"""The Optuna study end to end on tiny trials: what a study leaves in Optuna and in MLflow, resuming,
pruning, the report, bad inputs, a dead worker's trial, workers and sampler reproducibility."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient
from optuna.trial import TrialState

from speccomp_cli.main import main as cli
from speccomp_compat import study_id
from study.main import make_sampler
from study.objective import TRIAL_LOG_EVERY_N_STEP, configure_trial_size
from study.storage import HEARTBEAT_ATTR, open_storage
from tests.conftest import TINY_OVERRIDES

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
STUDY = "tiny"
pytestmark = [
    pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize"),
    pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning"),
]
REPORT_FILES = ("trials.csv", "importances.csv", "effects.csv", "significance.csv", "effects.png", "report.md")

SPACE = {
    "name": "tiny",
    "params": {
        "training.model_type": {"type": "categorical", "choices": ["mlp", "linear"]},
        "training.learning_rate": {"type": "float", "low": 3.0e-4, "high": 3.0e-3, "log": True},
        "combined_fraction": {"type": "float", "low": 0.0, "high": 0.1},
    },
}

# the same space as Optuna distributions (for studies driven without training)
DISTRIBUTIONS = {
    "training.model_type": optuna.distributions.CategoricalDistribution(["mlp", "linear"]),
    "training.learning_rate": optuna.distributions.FloatDistribution(3e-4, 3e-3, log=True),
    "combined_fraction": optuna.distributions.FloatDistribution(0.0, 0.1),
}


@pytest.fixture
def env(tmp_path, monkeypatch):
    """A fresh working folder with its own MLflow database and Optuna journal."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    for name in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID"):
        monkeypatch.delenv(name, raising=False)
    # workers spawned by --workers import the repository's packages, whatever the working folder
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    return tmp_path


def write_space(folder: Path, space: dict = SPACE, name: str = "space.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(space, sort_keys=False))
    return path


def study_argv(folder: Path, *extra: str, space: Path | None = None, n_trials: int = 3) -> list[str]:
    argv = [
        "study", "--n-trials", str(n_trials), "--study-name", STUDY, "--storage", str(folder / "optuna.log"),
        "--config-dir", str(CONFIGS), "--space", str(space or write_space(folder)), "--seeds", "1,2",
    ]
    for item in TINY_OVERRIDES:
        argv += ["--set", item]
    return [*argv, *extra]


def load(folder: Path, name: str = STUDY) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=open_storage(str(folder / "optuna.log")))


def runs(folder: Path, role: str | None = None) -> list:
    """Every MLflow run in the folder's database (optionally only one `speccomp.role`)."""
    if not (folder / "mlflow.db").exists():
        return []
    client = MlflowClient(f"sqlite:///{folder}/mlflow.db")
    ids = [e.experiment_id for e in client.search_experiments()]
    found = client.search_runs(ids, max_results=5000)
    return [r for r in found if role is None or r.data.tags.get("speccomp.role") == role]


def children(all_runs: list, parent_id: str) -> list:
    return [r for r in all_runs if r.data.tags.get("mlflow.parentRunId") == parent_id]


def finished(study: optuna.Study) -> list:
    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))


def test_trials_log_the_loss_every_4th_step_and_keep_no_weights_unless_told():
    every_step, raven = 1, 5  # the spectra config logs every step; the raven config every 5th already
    assert configure_trial_size(["a.b=1"], every_step) == [
        "training.checkpoint_retention=none", f"training.log_every_n_step={TRIAL_LOG_EVERY_N_STEP}", "a.b=1"]
    assert configure_trial_size([], raven) == ["training.checkpoint_retention=none"]
    told = ["training.log_every_n_step=1", "training.checkpoint_retention=last"]
    assert configure_trial_size(told, every_step) == ["training.checkpoint_retention=none", *told]  # the user's win


# --- a study, its MLflow records, its report, resuming -----------------------------------------------
@pytest.mark.slow
def test_study_tracks_each_trial_reports_and_resumes(env, capsys):
    assert cli(study_argv(env)) == 0
    study = load(env)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3

    all_runs = runs(env)
    (parent,) = [r for r in all_runs if r.data.tags.get("speccomp.role") == "study"]
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["optuna.study_name"] == STUDY
    trial_runs = {r.info.run_id: r for r in all_runs if r.data.tags.get("speccomp.role") == "trial"}
    assert len(trial_runs) == 3
    for t in study.trials:
        # the trial's own training time, a part of its duration (bench_study.py reads the rest as overhead)
        assert 0 < t.user_attrs["train_seconds"] < t.duration.total_seconds()
        run = trial_runs[t.user_attrs["mlflow_run_id"]]
        assert run.info.status == "FINISHED"
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.data.tags["optuna.study_name"] == STUDY
        assert run.data.tags["optuna.trial_number"] == str(t.number)
        assert run.data.tags["optuna.trial_state"] == "COMPLETE"
        # the trial's values, as suggested and as the resolved config holds them
        for name, value in t.params.items():
            assert run.data.params[f"trial.{name}"] == str(value)
        assert run.data.params["training.model_type"] == t.params["training.model_type"]
        assert float(run.data.params["training.learning_rate"]) == pytest.approx(t.params["training.learning_rate"])
        assert float(run.data.params["data.splits.train.combined_fraction"]) == pytest.approx(
            t.params["combined_fraction"])
        assert run.data.metrics["objective"] == pytest.approx(t.value)
        assert run.data.metrics["test/mse/tracked"] == pytest.approx(t.value)
        assert {"gap/tracked", "std/gap/tracked", "test/mse"} <= set(run.data.metrics)
        seed_runs = children(all_runs, run.info.run_id)
        assert sorted(r.data.tags["seed"] for r in seed_runs) == ["1", "2"]
        assert all(r.data.tags["speccomp.role"] == "seed" and r.info.status == "FINISHED" for r in seed_runs)
        assert all(r.data.tags["optuna.trial_number"] == str(t.number) for r in seed_runs)
        for r in seed_runs:  # the study's defaults: the loss at every 4th step and each checkpoint, no weights
            history = MlflowClient().get_metric_history
            checkpoints = {m.step for m in history(r.info.run_id, "test/mse")} - {0}
            steps = [m.step for m in history(r.info.run_id, "train/loss")]
            last = max(checkpoints)
            assert steps == [s for s in range(1, last + 1) if s % TRIAL_LOG_EVERY_N_STEP == 0 or s in checkpoints]
            assert len(steps) < last
            assert "checkpoints" not in {f.path for f in MlflowClient().list_artifacts(r.info.run_id)}

    # the report: logged with the study run, importances of each (target, evaluator) sum to one
    client = MlflowClient()
    logged = {Path(f.path).name for f in client.list_artifacts(parent.info.run_id, "report")}
    assert set(REPORT_FILES) <= logged
    imp = pd.read_csv(client.download_artifacts(parent.info.run_id, "report/importances.csv", str(env)))
    imp = imp.dropna(subset=["param"])
    assert {"objective", "skill/val"} <= set(imp["target"]) <= {"objective", "skill/val", "transfer"}
    assert set(imp["param"]) == set(SPACE["params"])
    for _, group in imp.groupby(["target", "evaluator"]):
        assert group["importance"].sum() == pytest.approx(1.0)
        assert (group["importance"] >= 0).all()
    assert "Sensitivity report" in capsys.readouterr().out

    # resuming: the same study (same storage, same name) grows; a new study run holds the new trials
    assert cli(study_argv(env, n_trials=2)) == 0
    resumed = load(env)
    assert study_id(resumed) == study_id(study)
    assert [t.number for t in resumed.trials] == [0, 1, 2, 3, 4]
    assert all(t.state == TrialState.COMPLETE for t in resumed.trials)
    parents = [r for r in runs(env, "study")]
    assert len(parents) == 2
    later = next(r for r in parents if r.info.run_id != parent.info.run_id)
    trial_runs = runs(env, "trial")
    assert len(trial_runs) == 5
    assert sorted(r.data.tags["optuna.trial_number"] for r in children(trial_runs, later.info.run_id)) == ["3", "4"]


@pytest.mark.slow
def test_pruned_trial_is_recorded_as_pruned(env):
    """Three good trials, then one that cannot learn (learning rate 1e-7): the median pruner stops
    it after its first seed; Optuna and MLflow both record it as pruned."""
    space = {"name": "prune", "params": {
        "training.model_type": {"type": "categorical", "choices": ["mlp"]},
        "training.learning_rate": {"type": "float", "low": 1.0e-7, "high": 1.0e-2, "log": True},
    }}
    path = write_space(env, space)
    study = optuna.create_study(study_name=STUDY, storage=open_storage(str(env / "optuna.log")))
    for lr in (1e-2, 9e-3, 8e-3, 1e-7):
        study.enqueue_trial({"training.model_type": "mlp", "training.learning_rate": lr})

    assert cli(study_argv(env, "--pruner", "median", space=path, n_trials=4)) == 0
    study = load(env)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3 + [TrialState.PRUNED]
    pruned = study.trials[3]
    assert list(pruned.intermediate_values) == [0]  # one seed reported, the second never trained
    assert pruned.intermediate_values[0] > max(t.intermediate_values[0] for t in study.trials[:3])

    trial_runs = {r.info.run_id: r for r in runs(env, "trial")}
    run = trial_runs[pruned.user_attrs["mlflow_run_id"]]
    assert run.data.tags["optuna.trial_state"] == "PRUNED"
    assert run.info.status == "FINISHED"
    assert [r.data.tags["seed"] for r in children(runs(env, "seed"), run.info.run_id)] == ["1"]
    complete = trial_runs[study.trials[0].user_attrs["mlflow_run_id"]]
    assert len(children(runs(env, "seed"), complete.info.run_id)) == 2


@pytest.mark.slow
def test_transfer_objective_maximises_and_a_trial_that_learned_nothing_fails_with_its_measures(env, capsys):
    """Ridge on log-spectra learns both components even on tiny data, the tiny MLP learns
    neither: one trial of each, the MLP's has no transfer value."""
    space = write_space(env, {"name": "t", "params": {
        "training.model_type": {"type": "categorical", "choices": ["ridge", "mlp"]}}})
    assert cli(study_argv(env, "--objective", "transfer", "--set", "training.input_transform=log",
                           "--sampler", "tpe", space=space, n_trials=4)) == 0
    study = load(env)
    assert study.directions == [optuna.study.StudyDirection.MAXIMIZE]
    by_model = {t.params["training.model_type"]: t for t in study.trials}
    assert set(by_model) == {"ridge", "mlp"}, "the sampler tried both"
    ridge, mlp = by_model["ridge"], by_model["mlp"]
    assert ridge.state == TrialState.COMPLETE and ridge.value == pytest.approx(ridge.user_attrs["transfer_tracked_mean"])
    assert ridge.user_attrs["learned_tracked_mean"] == 1.0 and ridge.user_attrs["skill_val_tracked_mean"] > 0.5
    assert mlp.state == TrialState.FAIL and mlp.user_attrs["transfer_tracked_mean"] is None
    assert mlp.user_attrs["learned_tracked_mean"] == 0.0 and mlp.user_attrs["skill_val_tracked_mean"] < 0.5
    all_runs = runs(env)
    trial_runs = {r.info.run_id: r for r in all_runs if r.data.tags.get("speccomp.role") == "trial"}
    ridge_run, mlp_run = (trial_runs[t.user_attrs["mlflow_run_id"]] for t in (ridge, mlp))
    assert ridge_run.data.metrics["objective"] == pytest.approx(ridge.value)
    assert {"transfer/tracked", "std/transfer/tracked", "skill/val/tracked", "transfer/comp10"} <= set(ridge_run.data.metrics)
    assert ridge_run.data.metrics["not_learned/comp4"] == 0 and ridge_run.data.tags["optuna.trial_state"] == "COMPLETE"
    assert "transfer/tracked" not in mlp_run.data.metrics and mlp_run.data.metrics["not_learned/comp4"] == 2
    assert mlp_run.data.tags["optuna.trial_state"] == "FAIL" and mlp_run.data.tags["not_learned"] == "comp10,comp4"
    for seed_run in children(all_runs, mlp_run.info.run_id):
        assert seed_run.data.tags["not_learned"] == "comp10,comp4" and "transfer/comp4" not in seed_run.data.metrics
    for seed_run in children(all_runs, ridge_run.info.run_id):
        assert seed_run.data.tags["not_learned"] == "" and "transfer/comp4" in seed_run.data.metrics
    out = capsys.readouterr()
    assert f"trial {mlp.number}: no seed learned every tracked component" in out.err
    assert "learned every tracked component in distribution" in out.out  # the report's count


@pytest.mark.slow
def test_pareto_objective_has_two_directions_and_a_front(env):
    assert cli(study_argv(env, "--objective", "pareto")) == 0
    study = load(env)
    assert study.directions == [optuna.study.StudyDirection.MINIMIZE] * 2
    assert all(len(t.values) == 2 for t in study.trials)
    (parent,) = runs(env, "study")
    client = MlflowClient()
    logged = {Path(f.path).name for f in client.list_artifacts(parent.info.run_id, "report")}
    assert {"pareto.csv", "pareto.png"} <= logged
    front = pd.read_csv(client.download_artifacts(parent.info.run_id, "report/pareto.csv", str(env)))
    assert set(front["number"]) == {t.number for t in study.best_trials}
    for run in runs(env, "trial"):
        t = study.trials[int(run.data.tags["optuna.trial_number"])]
        assert [run.data.metrics["objective/0"], run.data.metrics["objective/1"]] == pytest.approx(t.values)


@pytest.mark.slow
def test_matrices_study_reports_accuracies_with_chance_and_no_empty_rows(env, capsys):
    """A study on configs/raven: the trials record the task's measures and the chance accuracy,
    and the report explains test/acc, val/acc and gap/acc, without the spectra sections."""
    from tests.test_report import empty_rows

    space = write_space(env, {"name": "raven-tiny", "params": {
        "heldout_pair": {"type": "categorical", "choices": ["progression/size", "arithmetic/colour"]},
        "training.model_type": {"type": "categorical", "choices": ["raven_mlp", "raven_wren"]}}})
    argv = ["study", "--n-trials", "3", "--study-name", STUDY, "--storage", str(env / "optuna.log"),
            "--config-dir", str(CONFIGS / "raven"), "--space", str(space), "--seeds", "1,2", "--objective", "gap"]
    for item in ("data.splits.train.n_samples=128", "data.splits.test.n_samples=32", "data.validation.n_samples=32",
                 "training.epochs=1", "training.batch_size=32", "training.hidden_dims=[16,8]"):
        argv += ["--set", item]
    assert cli(argv) == 0
    study = load(env)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3
    assert study.metric_names == ["gap/acc (val/acc - test/acc, mean)"]
    for t in study.trials:
        assert t.user_attrs["chance_acc"] == 0.125 and t.value == pytest.approx(t.user_attrs["gap_acc_mean"])
        assert t.user_attrs["seeds"].startswith("1: test_error ")
    (parent,) = runs(env, "study")
    client = MlflowClient()
    text = Path(client.download_artifacts(parent.info.run_id, "report/report.md", str(env))).read_text()
    from study.main import report_summary

    out = capsys.readouterr().out  # the console holds the report's summary and where the rest is
    assert "\n".join(report_summary(text)) in out and "artifact report/report.md" in out and text not in out
    assert empty_rows(text) == []
    assert "## Measures" in text and "chance accuracy 0.125 (1 / 8 candidates)" in text
    assert "transfer" not in text and "learned every tracked component" not in text
    effects = pd.read_csv(client.download_artifacts(parent.info.run_id, "report/effects.csv", str(env)))
    assert set(effects["target"]) == {"test/acc", "val/acc", "gap/acc"} and effects["mean"].notna().all()
    assert set(effects.loc[effects["target"] != "gap/acc", "chance"]) == {0.125}


# --- bad input: one line, exit code 2, no trial and no run ------------------------------------------
def _space_with(entry: dict, name: str = "training.learning_rate") -> dict:
    return {"name": "bad", "params": {"training.model_type": {"type": "categorical", "choices": ["mlp"]},
                                      name: entry}}


BAD_SPACES = {
    "unknown config path": (_space_with({"type": "float", "low": 0.1, "high": 0.2}, "training.learning_rat"),
                            "unknown config path"),
    "empty range": (_space_with({"type": "float", "low": 1e-3, "high": 1e-3}), "empty range"),
    "inverted range": (_space_with({"type": "float", "low": 1e-2, "high": 1e-3}), "inverted range"),
    "log with zero bound": (_space_with({"type": "float", "low": 0.0, "high": 1e-3, "log": True}), "low > 0"),
    "log with negative bound": (_space_with({"type": "float", "low": -1.0, "high": 1e-3, "log": True}), "low > 0"),
    "log not a boolean": (_space_with({"type": "float", "low": 1e-4, "high": 1e-3, "log": "false"}),
                          "log: must be true or false, got 'false'"),
}


def _assert_refused(env: Path, rc: int, err: str, *words: str) -> None:
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    for word in words:
        assert word in lines[0]
    assert runs(env) == []
    if (env / "optuna.log").exists():
        storage = open_storage(str(env / "optuna.log"))
        assert all(s.n_trials == 0 for s in optuna.get_all_study_summaries(storage))


@pytest.mark.parametrize("case", list(BAD_SPACES))
def test_bad_space_is_refused_in_one_line(env, capsys, case):
    space, words = BAD_SPACES[case]
    path = write_space(env, space)
    rc = cli(study_argv(env, space=path))
    _assert_refused(env, rc, capsys.readouterr().err, str(path), words)
    assert not (env / "optuna.log").exists()


@pytest.mark.parametrize(("flag", "value", "words"), [
    ("--sampler", "grid", ("sampler", "'grid'", "random")),
    ("--pruner", "hyperband", ("pruner", "'hyperband'", "median")),
    ("--threads", "0", ("threads", ">= 1")),
    ("--storage", "postgresql://postgres@127.0.0.1:1/test", ("storage", "cannot open", "127.0.0.1:1")),
])
def test_bad_option_is_refused_in_one_line(env, capsys, flag, value, words):
    rc = cli([*study_argv(env), flag, value])  # the later flag wins
    err = capsys.readouterr().err
    _assert_refused(env, rc, err, *words)
    assert "hunter2" not in err


def test_study_with_other_directions_is_refused(env, capsys):
    optuna.create_study(study_name=STUDY, storage=open_storage(str(env / "optuna.log")),
                        directions=["minimize", "minimize"])
    rc = cli(study_argv(env))  # objective test_mse: one direction
    _assert_refused(env, rc, capsys.readouterr().err, "study_name", repr(STUDY), "directions")
    assert load(env).trials == []


# --- a killed worker's trial -------------------------------------------------------------------------
@pytest.mark.slow
def test_dead_workers_trial_is_failed_and_retried(env, monkeypatch):
    """A RUNNING trial whose worker died (last heartbeat a minute ago) is failed by the next worker,
    re-queued with the same parameters and run; the dead trial's MLflow runs end FAILED."""
    import study.storage

    opened = study.storage.open_storage
    monkeypatch.setattr(study.storage, "open_storage",
                        lambda spec, **kw: opened(spec, **{**kw, "heartbeat_interval": 1, "grace_period": 5}))
    path = write_space(env)
    storage = study.storage.open_storage(str(env / "optuna.log"))
    dead_study = optuna.create_study(study_name=STUDY, storage=storage)
    # the dead worker had opened its trial run and one seed run in MLflow
    client = MlflowClient(f"sqlite:///{env}/mlflow.db")
    exp = client.create_experiment("speccomp-studies")
    trial_run = client.create_run(exp, tags={"speccomp.role": "trial"}).info.run_id
    seed_run = client.create_run(exp, tags={"speccomp.role": "seed", "mlflow.parentRunId": trial_run}).info.run_id
    dead = optuna.trial.create_trial(
        state=TrialState.RUNNING,
        params={"training.model_type": "linear", "training.learning_rate": 1e-3, "combined_fraction": 0.05},
        distributions=DISTRIBUTIONS,
        user_attrs={"mlflow_run_id": trial_run},
        system_attrs={HEARTBEAT_ATTR: time.time() - 60},  # its last beat, a minute ago
    )
    dead.datetime_start = datetime.now() - timedelta(minutes=2)
    storage.create_new_trial(study_id(dead_study), template_trial=dead)
    assert [t.state for t in load(env).trials] == [TrialState.RUNNING]

    assert cli(study_argv(env, space=path, n_trials=2)) == 0
    trials = load(env).trials
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE, TrialState.COMPLETE]
    retried = trials[1]
    assert retried.system_attrs["failed_trial"] == 0
    assert retried.params == trials[0].params
    assert retried.user_attrs["mlflow_run_id"] != trial_run
    for run_id in (trial_run, seed_run):
        run = client.get_run(run_id)
        assert run.info.status == "FAILED"
        assert "stale heartbeat" in run.data.tags["error"]


def test_retried_trial_is_not_stale_before_its_first_beat(env):
    """The WAITING copy of a dead trial carries the dead trial's old beat; once running, it counts
    from its own start until its first beat."""
    storage = open_storage(str(env / "optuna.log"), heartbeat_interval=1, grace_period=5)
    study = optuna.create_study(study_name=STUDY, storage=storage)
    study.add_trial(optuna.create_trial(state=TrialState.WAITING, system_attrs={HEARTBEAT_ATTR: time.time() - 60}))
    running = study.ask()  # pops the waiting trial
    assert running.number == 0
    assert storage.stale_trial_ids(study_id(study)) == []


# --- workers and samplers ----------------------------------------------------------------------------
@pytest.mark.parametrize(("workers", "threads", "omp", "expected"),
                         [(2, None, None, 1), (1, None, None, 1), (1, 3, None, 3), (2, None, "2", 2), (1, 1, "4", 1)])
def test_worker_threads_one_unless_told(monkeypatch, workers, threads, omp, expected):
    """Each worker uses one torch thread unless --threads or OMP_NUM_THREADS says otherwise
    (threads that each want a core collapse when other processes hold the cores)."""
    import torch

    from study.main import Settings, _set_threads

    calls: list[int] = []
    monkeypatch.setattr(torch, "set_num_threads", lambda n: calls.append(n))
    if omp is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", omp)
    settings = Settings(n_trials=1, total_trials=None, seeds=[1], data_seed=0, workers=workers, sampler_seed=0,
                        threads=threads)
    assert _set_threads(settings) == expected
    assert calls == [expected]


def test_spawned_workers_get_the_launchers_settings(monkeypatch, tmp_path):
    """`--workers N` starts N-1 more processes: they read one worker file and must train exactly
    what the launcher trains (the resolved config, the same seeds, objective, sampler, pruner), with
    the storage URL left out of the file (it travels in the environment: it may hold a password)."""
    import study.main as study_main
    from speccomp_cli.main import main as cli

    seen = []
    monkeypatch.setattr(study_main, "main", lambda options: seen.append(options) or 0)
    argv = study_argv(tmp_path, "--preset", "loglinear", "--objective", "gap", "--sampler", "tpe",
                      "--sampler-seed", "3", "--pruner", "median", "--data-seed", "7",
                      "--overrides", "training.epochs=1", "--log-models", space=write_space(tmp_path))
    argv[argv.index("--storage") + 1] = "postgresql://u:hunter2@127.0.0.1/x"
    assert cli(argv) == 0
    launcher = seen[0]
    settings, base, space, _ = study_main._validate(launcher)
    path = study_main.write_worker_file(launcher, settings, "run123", 5, base, tmp_path)
    assert "hunter2" not in path.read_text()
    worker = study_main.read_worker_file(path)
    w_settings, w_base, w_space, _ = study_main._validate(worker)
    assert w_base == base and w_settings.seeds == settings.seeds == [1, 2]
    assert (worker.parent_run_id, worker.no_report, worker.workers, worker.total_trials) == ("run123", True, 1, 5)
    same = ("objective", "sampler", "sampler_seed", "pruner", "data_seed", "log_models", "study_name", "space")
    assert {k: getattr(worker, k) for k in same} == {k: getattr(launcher, k) for k in same}
    assert [p.name for p in w_space.params] == [p.name for p in space.params]


def _worker_file(folder: Path, name: str, **changes) -> Path:
    """A complete worker file (every StudyOptions field), with `changes` applied."""
    import dataclasses
    import json

    from study.main import StudyOptions

    path = folder / name
    path.write_text(json.dumps({**dataclasses.asdict(StudyOptions(seeds=[1, 2], parent_run_id="run123")), **changes}))
    return path


BAD_WORKER_FILES = {  # name -> (contents or a maker, words of the line after the file name)
    "truncated": ('{"n_trials": 3, "study_name": "tin', ("not valid JSON", "Unterminated string", "line 1 column")),
    "wrong_type": (lambda folder: _worker_file(folder, "w.json", n_trials="three"), ("field n_trials", '"three"', "int")),
    "wrong_item": (lambda folder: _worker_file(folder, "w.json", seeds=[1, "2"]), ("field seeds", "list[int] | None")),
    "bool_for_int": (lambda folder: _worker_file(folder, "w.json", workers=True), ("field workers", "true", "int")),
    "not_an_object": ("[1, 2]", ("holds a JSON list", "expected an object")),
    "unknown_field": (lambda folder: _worker_file(folder, "w.json", bogus=1), ("unknown field(s) bogus", "allowed")),
    "missing_field": ('{"n_trials": 3}', ("missing field(s)", "study_name")),
    "bad_config": (lambda folder: _worker_file(folder, "w.json", resolved_config={"training": 5}),
                   ("field resolved_config",)),
    "not_text": (b"\xff\xfe\x00", ("cannot be read", "utf-8")),
}


@pytest.mark.parametrize("case", list(BAD_WORKER_FILES))
def test_corrupt_worker_file_is_refused_in_one_line(env, capsys, case):
    """`study-worker FILE` with a truncated, corrupt or wrong-typed file: one line naming the file
    and what is wrong, exit code 2, no traceback, no trial and no run."""
    contents, words = BAD_WORKER_FILES[case]
    if callable(contents):
        path = contents(env)
    else:
        path = env / "worker.json"
        path.write_bytes(contents if isinstance(contents, bytes) else contents.encode())
    assert cli(["study-worker", str(path)]) == 2
    err = capsys.readouterr().err
    (line,) = err.splitlines()
    assert line.startswith(f"error: worker file {path}: ")
    assert all(w in line for w in words), line
    assert not (env / "optuna.log").exists() and runs(env) == []


def test_corrupt_worker_file_ends_without_traceback_from_the_command_line(env):
    """The same through the real entry point (a spawned worker's own process): stderr is the one line."""
    truncated = env / "worker.json"
    truncated.write_text('{"n_trials": 3, "study_na')
    wrong = _worker_file(env, "wrong.json", data_seed=4.5)
    for path, words in ((truncated, "not valid JSON"), (wrong, "field data_seed: 4.5 is not of type int")):
        proc = subprocess.run([sys.executable, "-m", "speccomp_cli", "study-worker", str(path)],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.splitlines() == [proc.stderr.strip()] and "Traceback" not in proc.stderr
        assert proc.stderr.startswith(f"error: worker file {path}: ") and words in proc.stderr


def test_worker_file_naming_a_run_of_another_store_is_refused(env, capsys):
    """A well-formed file whose study run is not in this tracking store: one line, exit code 2."""
    path = _worker_file(env, "w.json", storage="", resolved_config=None, n_trials=1)
    assert cli(["study-worker", str(path)]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "INFO mlflow" not in line]  # a new store
    assert len(err) == 1 and err[0].startswith("error: parent_run_id: no run run123 in the tracking store")
    assert runs(env) == []


@pytest.mark.slow
def test_workers_opening_a_new_tracking_store_together(tmp_path):
    """Two workers creating a new SQLite store at once: one creates the tables and runs the
    migrations, the other waits and finds them (unserialised, one of them fails)."""
    code = ("import tracking.store; tracking.store.configure(); from tracking.store import tracking_client; "
            "print('experiments', len(tracking_client().search_experiments()))")
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db", "PYTHONPATH": str(REPO)}
    workers = [subprocess.Popen([sys.executable, "-c", code], env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outputs = [w.communicate(timeout=120)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs
    assert all(out.strip().endswith("experiments 1") for out in outputs), outputs


@pytest.mark.slow
def test_two_workers_on_one_machine_run_exactly_the_budget(env):
    assert cli(study_argv(env, "--workers", "2", n_trials=4)) == 0
    study = load(env)
    done = finished(study)
    assert len(done) == 4
    assert len({t.number for t in done}) == 4
    assert len({tuple(sorted(t.params.items())) for t in done}) == 4
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL) for t in study.trials)
    assert all(t.user_attrs.get("surplus") for t in study.trials if t.state == TrialState.FAIL)
    (parent,) = runs(env, "study")
    trial_runs = runs(env, "trial")
    assert {r.data.tags["mlflow.parentRunId"] for r in trial_runs} == {parent.info.run_id}
    assert sorted(r.info.run_id for r in trial_runs) == sorted(t.user_attrs["mlflow_run_id"] for t in done)
    assert all(r.info.status == "FINISHED" for r in trial_runs)


def _suggested(sampler, n: int = 5) -> list[dict]:
    study = optuna.create_study(sampler=sampler)
    return [study.ask(DISTRIBUTIONS).params for _ in range(n)]


@pytest.mark.parametrize("name", ["random", "qmc", "tpe", "nsga2"])
def test_sampler_is_reproducible(name):
    first = _suggested(make_sampler(name, 7, 1))
    assert _suggested(make_sampler(name, 7, 1)) == first
    assert _suggested(make_sampler(name, 8, 1)) != first


def _two_workers(storage, make, rounds: int) -> list[tuple[int, tuple]]:
    """Two workers (each its own sampler, as in two processes) taking turns on one study;
    returns (trial number, params) of every trial."""
    workers = [optuna.create_study(study_name="w", storage=storage, sampler=make(), load_if_exists=True)
               for _ in range(2)]
    drawn = []
    for _ in range(rounds):
        for w in workers:
            trial = w.ask(DISTRIBUTIONS)
            drawn.append((trial.number, tuple(sorted(trial.params.items()))))
            w.tell(trial, math.log(trial.params["training.learning_rate"]))
    return drawn


def test_two_random_workers_never_draw_the_same_params(tmp_path):
    """Two workers with the same sampler seed share one study: each trial number's values are drawn
    once, so no two trials repeat each other (a plain seeded RandomSampler would)."""
    drawn = _two_workers(open_storage(str(tmp_path / "a.log")), lambda: make_sampler("random", 0, 1), 4)
    assert sorted(n for n, _ in drawn) == list(range(8))
    assert len({params for _, params in drawn}) == 8
    # and each trial number gets the values it gets in a fresh study with one worker (reproducible)
    assert [p for _, p in drawn] == [tuple(sorted(p.items())) for p in _suggested(make_sampler("random", 0, 1), 8)]
    plain = _two_workers(open_storage(str(tmp_path / "b.log")), lambda: optuna.samplers.RandomSampler(seed=0), 4)
    assert len({params for _, params in plain}) == 4  # what the trial seeding prevents


@pytest.mark.parametrize("name", ["qmc", "tpe", "nsga2"])
def test_two_workers_never_draw_the_same_params_with_any_sampler(name):
    """Past TPE's random start-up trials too (10)."""
    drawn = _two_workers(optuna.storages.InMemoryStorage(), lambda: make_sampler(name, 0, 1), 8)
    assert len({params for _, params in drawn}) == len(drawn) == 16


def test_importances_rank_the_planted_driver_first():
    """A synthetic study (no training) where the objective depends on the learning rate alone and
    the gap on `combined_fraction` alone: each importance method puts that setting first."""
    from study.report import importances

    study = optuna.create_study(sampler=make_sampler("random", 0, 1))
    for _ in range(24):
        trial = study.ask(DISTRIBUTIONS)
        trial.set_user_attr("skill_val_tracked_mean", 1.0 - 10 * trial.params["combined_fraction"])
        study.tell(trial, math.log(trial.params["training.learning_rate"]))
    imp = importances(study, n_boot=2).dropna(subset=["param"])
    assert {"objective", "skill/val"} <= set(imp["target"])
    for (target, _evaluator), group in imp.groupby(["target", "evaluator"]):
        assert group["importance"].sum() == pytest.approx(1.0)
        top = group.sort_values("importance", ascending=False)["param"].iloc[0]
        assert top == ("training.learning_rate" if target == "objective" else "combined_fraction"), group
