"""`speccomp meta-eval`'s bad inputs: each one line on stderr naming the option or setting and what
is allowed, exit code 2, before any run is created (and a run `mlflow run` made already ends
FAILED with the line). A tracked evaluation itself runs in `tests/test_console.py`."""

from __future__ import annotations

import pytest

from speccomp.meta.settings import ENV_NAMES
from speccomp_cli.main import main as cli
from tests.conftest import isolated_store
from tests.test_tracking import all_runs

THREADS_ALLOWED = "allowed: comma-separated distinct integers >= 1, e.g. 1,2"
BAD = [
    # (argv, environment, .env text, the line's start)
    (["--repetitions", "0"], {}, None, "--repetitions: 0 is too small; allowed: an integer >= 1"),
    (["--repetitions", "-1"], {}, None, "--repetitions: -1 is too small; allowed: an integer >= 1"),
    (["--repetitions", "abc"], {}, None, "--repetitions: 'abc' is not an integer; allowed: an integer >= 1"),
    (["--repetitions", "1.5"], {}, None, "--repetitions: '1.5' is not an integer"),
    (["--threads", "0"], {}, None, f"--threads: 0 is too small; {THREADS_ALLOWED}"),
    (["--threads", "-2"], {}, None, f"--threads: -2 is too small; {THREADS_ALLOWED}"),
    (["--threads", "1,,2"], {}, None, f"--threads: empty item in '1,,2'; {THREADS_ALLOWED}"),
    (["--threads", "a"], {}, None, f"--threads: 'a' is not an integer; {THREADS_ALLOWED}"),
    (["--threads", "1,1"], {}, None, f"--threads: 1 appears twice; {THREADS_ALLOWED}"),  # refused, not deduplicated
    (["--threads", "2,1,2"], {}, None, f"--threads: 2 appears twice; {THREADS_ALLOWED}"),
    (["--num_meta_training_tasks", "0"], {}, None,
     "NUM_META_TRAINING_TASKS=0 (set by flag --num_meta_training_tasks): zero tasks"),
    ([], {"META_LEARNING_RATE": "abc"}, None,
     "META_LEARNING_RATE=abc (set by environment META_LEARNING_RATE): not a number"),
    ([], {"TASK_GENERATOR_SEED": "-1"}, None,
     "TASK_GENERATOR_SEED=-1 (set by environment TASK_GENERATOR_SEED): negative"),
    ([], {"ARCHITECTURE_SEARCH_ITERATIONS": "ten"}, None, "ARCHITECTURE_SEARCH_ITERATIONS=ten (set by environment"),
    ([], {}, "NUM_META_TESTING_TASKS=500\n",
     "NUM_META_TESTING_TASKS=500 (set by .env file .env NUM_META_TESTING_TASKS): more tasks"),
    ([], {}, "NUM_META_TESTING_TASKS 5\n", ".env: line 1: malformed line"),
    (["--env-file", "nowhere.env"], {}, None, "--env-file: nowhere.env: no such file"),
    (["--config", "nope"], {}, None, "meta config: nope: no such file or name"),
]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    with isolated_store(tmp_path_factory.mktemp("mlflow-meta-eval"), unset=ENV_NAMES.values()) as store:
        yield store.client


def _refused(store, monkeypatch, tmp_path, capsys, argv, env, dotenv) -> tuple[int, str]:
    monkeypatch.chdir(tmp_path)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    if dotenv is not None:
        (tmp_path / ".env").write_text(dotenv)
    capsys.readouterr()
    code = cli(["meta-eval", "--config", "smoke", *argv])
    return code, capsys.readouterr().err


@pytest.mark.parametrize(("argv", "env", "dotenv", "expected"), BAD, ids=[e.split(":")[0][:40] + f"-{i}"
                                                                          for i, (_, _, _, e) in enumerate(BAD)])
def test_bad_value_is_one_line_exit_2_and_no_run(store, monkeypatch, tmp_path, capsys, argv, env, dotenv, expected):
    before = {r.info.run_id for r in all_runs(store)}
    code, err = _refused(store, monkeypatch, tmp_path, capsys, argv, env, dotenv)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith(f"error: {expected}"), err
    assert "allowed" in err, err  # it says what would do
    runs = all_runs(store)
    assert {r.info.run_id for r in runs} == before and not any(r.info.status == "RUNNING" for r in runs)


@pytest.mark.parametrize("argv", [["--threads", "1,1"], ["--repetitions", "0"], ["--num_meta_testing_tasks", "0"]])
def test_refusal_ends_the_attached_run_failed(store, monkeypatch, tmp_path, capsys, argv):
    """Under `mlflow run -e meta-eval` the run exists before the program starts: it ends FAILED
    with the line, and nothing else is created."""
    experiment = store.get_experiment_by_name("speccomp") or store.get_experiment(store.create_experiment("speccomp"))
    run = store.create_run(experiment.experiment_id)
    monkeypatch.setenv("MLFLOW_RUN_ID", run.info.run_id)
    before = {r.info.run_id for r in all_runs(store)}
    code, err = _refused(store, monkeypatch, tmp_path, capsys, argv, {}, None)
    assert code == 2 and err.count("\n") == 1, err
    done = store.get_run(run.info.run_id)
    assert done.info.status == "FAILED" and err.removeprefix("error: ").startswith(done.data.tags["error"][:40])
    runs = all_runs(store)
    assert {r.info.run_id for r in runs} == before and not any(r.info.status == "RUNNING" for r in runs)


def test_threads_not_given_mean_one_and_a_list_is_kept_in_order():
    from speccomp_cli.main import _thread_counts

    assert _thread_counts("") is None and _thread_counts("auto") is None  # MLproject's default: one thread
    assert list(_thread_counts("2,1")) == [2, 1] and list(_thread_counts(" 1 , 2 ")) == [1, 2]


@pytest.mark.slow
def test_the_evaluation_runs_on_the_matrices_domain(store, monkeypatch, tmp_path, capsys):
    """`speccomp meta-eval --config raven` at a tiny size: exit 0; one parent (role meta-eval) with a
    child per repetition; its table names the ablations, random search and the matrices' own
    baseline `wren`, each with an interval and a Holm-corrected p; no run left RUNNING."""
    from tests.test_meta_matrices import FLAGS, TINY

    monkeypatch.chdir(tmp_path)
    before = {r.info.run_id for r in all_runs(store)}
    code = cli(["meta-eval", "--config", "raven", "--repetitions", "2", "--threads", "1", "--run-name", "raven-eval",
                *[a for k, v in FLAGS.items() for a in (f"--{k}", v)], "--overrides", " ".join(TINY)])
    out, err = capsys.readouterr()
    assert code == 0, err[-3000:]
    new = [r for r in all_runs(store) if r.info.run_id not in before]
    (parent,) = [r for r in new if r.info.run_name == "raven-eval"]
    assert parent.data.tags["speccomp.role"] == "meta-eval" and parent.info.status == "FINISHED"
    kids = [r for r in new if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(k.data.tags["repetition"] for k in kids if k.data.tags.get("speccomp.role") == "meta-eval-rep") \
        == ["1", "2"]
    import pandas as pd

    table = pd.read_csv(store.download_artifacts(parent.info.run_id, "meta_eval/evaluation.csv", str(tmp_path)))
    assert {"meta-weights", "meta-arch", "prior", "wren"} <= set(table["method"])
    assert table[["ci_low", "ci_high", "holm_p"]].notna().all().all()
    assert "meta-weights" in out and "Holm" in out
    assert not [r for r in all_runs(store) if r.info.status == "RUNNING"]


def test_each_repetition_draws_its_own_tasks_and_none_tests_on_what_it_trained_on(monkeypatch, tmp_path):
    """Repetition r plans with TASK_GENERATOR_SEED = base + r and meta seed = base + r (as
    `evaluate` does): within a repetition no meta-test pair is a meta-training pair; across
    repetitions the draws differ."""
    from speccomp.meta.evaluate import repetitions
    from speccomp.meta.run import plan_meta

    monkeypatch.chdir(tmp_path)
    for name in ENV_NAMES.values():
        monkeypatch.delenv(name, raising=False)
    reps = repetitions(0, 123, 3)
    assert reps == [(0, 123), (1, 124), (2, 125)]
    plans = [plan_meta({"task_generator_seed": str(t)}, "smoke", [f"experiment.seeds=[{m}]"], None) for t, m in reps]
    for plan in plans:
        assert plan.tasks.meta_test and not set(plan.tasks.meta_test) & set(plan.tasks.meta_train)
    assert len({tuple(p.tasks.meta_test) for p in plans}) == 3
    assert [p.meta.experiment.seeds for p in plans] == [[123], [124], [125]]
