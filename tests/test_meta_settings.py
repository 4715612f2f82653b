"""The meta-learner's settings: precedence flag > environment > .env > config file > default, case
by case, the source recorded for each, and every bad value refused with one line naming it."""

from __future__ import annotations

import pytest

from speccomp.meta.config import load_meta_config
from speccomp.meta.settings import ENV_NAMES, FIELDS, MetaSettings, SettingsError, check_task_counts, resolve_settings

NAME = "num_meta_training_tasks"
ENV = ENV_NAMES[NAME]


@pytest.fixture
def clean(monkeypatch, tmp_path):
    """No meta variable in the environment; the working directory is an empty folder."""
    for env in ENV_NAMES.values():
        monkeypatch.delenv(env, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def layers(clean, monkeypatch, *, flag=None, env=None, dotenv=None, file=None):
    if env is not None:
        monkeypatch.setenv(ENV, env)
    if dotenv is not None:
        (clean / ".env").write_text(f"# meta settings\n{ENV}={dotenv}\nOTHER_TOOL=x\n")
    return resolve_settings({NAME: flag}, file_values={} if file is None else {NAME: file}, file_name="meta.yaml")


@pytest.mark.parametrize(
    ("given", "value", "source"),
    [
        (dict(flag="11", env="12", dotenv="13", file=14), 11, "flag --num_meta_training_tasks"),
        (dict(env="12", dotenv="13", file=14), 12, f"environment {ENV}"),
        (dict(dotenv="13", file=14), 13, f".env file .env {ENV}"),
        (dict(file=14), 14, "config file meta.yaml settings.num_meta_training_tasks"),
        (dict(), 100, "default"),
        (dict(flag="", env="12"), 12, f"environment {ENV}"),  # an empty flag (mlflow's default) is "not given"
    ],
)
def test_precedence_case_by_case(clean, monkeypatch, given, value, source):
    resolved = layers(clean, monkeypatch, **given)
    assert resolved.values.num_meta_training_tasks == value
    assert resolved.sources[NAME] == source
    assert all(resolved.sources[f] == "default" for f in FIELDS if f != NAME)


def test_defaults_are_the_source_documents(clean):
    s = resolve_settings({}).values
    assert (s.task_generator_seed, s.meta_learning_rate, s.architecture_learning_rate) == (0, 0.001, 0.001)
    assert (s.num_meta_training_tasks, s.num_meta_testing_tasks, s.architecture_search_iterations) == (100, 20, 1000)


def test_environment_and_dotenv_agree_with_pydantic_settings_itself(clean, monkeypatch):
    monkeypatch.setenv("META_LEARNING_RATE", "0.02")
    (clean / ".env").write_text("META_LEARNING_RATE=0.5\nTASK_GENERATOR_SEED=7\n")
    ours = resolve_settings({}).values
    theirs = MetaSettings()
    assert ours.model_dump() == theirs.model_dump()
    assert ours.meta_learning_rate == 0.02 and ours.task_generator_seed == 7


def test_params_carry_value_and_source(clean, monkeypatch):
    monkeypatch.setenv("TASK_GENERATOR_SEED", "5")
    params = resolve_settings({"meta_learning_rate": "0.01"}).as_params()
    assert params["meta.task_generator_seed"] == "5"
    assert params["meta.task_generator_seed.source"] == "environment TASK_GENERATOR_SEED"
    assert params["meta.meta_learning_rate.source"] == "flag --meta_learning_rate"
    assert params["meta.architecture_search_iterations.source"] == "default"


@pytest.mark.parametrize(
    ("where", "name", "value", "expected"),
    [
        ("flag", "task_generator_seed", "abc", "TASK_GENERATOR_SEED=abc (set by flag --task_generator_seed): not an integer"),
        ("env", "meta_learning_rate", "fast", "META_LEARNING_RATE=fast (set by environment META_LEARNING_RATE): not a number"),
        ("env", "task_generator_seed", "-3", "TASK_GENERATOR_SEED=-3 (set by environment TASK_GENERATOR_SEED): negative"),
        ("dotenv", "architecture_learning_rate", "-0.1", "ARCHITECTURE_LEARNING_RATE=-0.1 (set by .env file .env "
         "ARCHITECTURE_LEARNING_RATE): negative"),
        ("dotenv", "num_meta_testing_tasks", "0", "NUM_META_TESTING_TASKS=0 (set by .env file .env NUM_META_TESTING_TASKS): "
         "zero tasks"),
        ("flag", "num_meta_training_tasks", "0", "NUM_META_TRAINING_TASKS=0 (set by flag --num_meta_training_tasks): zero tasks"),
        ("flag", "architecture_search_iterations", "2.5", "ARCHITECTURE_SEARCH_ITERATIONS=2.5 (set by flag "
         "--architecture_search_iterations): not an integer"),
        ("file", "meta_learning_rate", "nan", "META_LEARNING_RATE=nan (set by config file meta.yaml "
         "settings.meta_learning_rate): not a finite number"),
        ("env", "meta_learning_rate", "0", "META_LEARNING_RATE=0 (set by environment META_LEARNING_RATE): zero"),
    ],
)
def test_every_bad_value_is_one_line_naming_variable_and_source(clean, monkeypatch, where, name, value, expected):
    flags, file_values = {}, {}
    if where == "flag":
        flags[name] = value
    elif where == "env":
        monkeypatch.setenv(ENV_NAMES[name], value)
    elif where == "dotenv":
        (clean / ".env").write_text(f"{ENV_NAMES[name]}={value}\n")
    else:
        file_values[name] = value
    with pytest.raises(SettingsError) as err:
        resolve_settings(flags, file_values=file_values, file_name="meta.yaml")
    message = str(err.value)
    assert message.startswith(expected), message
    assert "allowed:" in message and "\n" not in message


def test_malformed_dotenv_line_names_file_and_line(clean):
    (clean / ".env").write_text("TASK_GENERATOR_SEED=1\nthis line is not an assignment\n")
    with pytest.raises(SettingsError, match=r"^\.env: line 2: malformed line 'this line is not an assignment'"):
        resolve_settings({})


def test_unknown_setting_in_config_file(clean):
    with pytest.raises(SettingsError, match=r"meta.yaml: settings.num_tasks: unknown setting"):
        resolve_settings({}, file_values={"num_tasks": 3}, file_name="meta.yaml")


@pytest.mark.parametrize(
    ("flags", "held_out", "expected"),
    [
        ({"num_meta_training_tasks": "191"}, 0, "NUM_META_TRAINING_TASKS=191 (set by flag --num_meta_training_tasks): "
         "more tasks than the 190 pairs"),
        ({"num_meta_testing_tasks": "200"}, 0, "NUM_META_TESTING_TASKS=200 (set by flag --num_meta_testing_tasks): more tasks"),
        ({"num_meta_training_tasks": "180", "num_meta_testing_tasks": "11"}, 0,
         "NUM_META_TRAINING_TASKS=180 (set by flag --num_meta_training_tasks) + NUM_META_TESTING_TASKS=11 (set by flag "
         "--num_meta_testing_tasks) = 191: more than the 190 pairs of 20 components"),
        ({"num_meta_testing_tasks": "11"}, 5, "NUM_META_TESTING_TASKS=11 (set by flag --num_meta_testing_tasks): more "
         "tasks than the 10 pairs available for meta-testing"),
    ],
)
def test_task_counts_against_the_pairs(clean, flags, held_out, expected):
    resolved = resolve_settings(flags)
    with pytest.raises(SettingsError) as err:
        check_task_counts(resolved, n_pairs=190, n_components=20, held_out=held_out)
    assert str(err.value).startswith(expected), str(err.value)


def test_task_counts_at_the_limit_pass(clean):
    check_task_counts(resolve_settings({"num_meta_training_tasks": "170", "num_meta_testing_tasks": "20"}), 190, 20)


def test_meta_config_files_load_and_bad_keys_are_named(tmp_path):
    for name in ("default", "smoke"):
        cfg, path = load_meta_config(name)
        assert path.name == f"{name}.yaml"
    bad = tmp_path / "m.yaml"
    bad.write_text("inner: {steps: 0}\n")
    with pytest.raises(Exception, match=r"m.yaml: inner.steps: Input should be greater than or equal to 1"):
        load_meta_config(bad)
    bad.write_text("inner: {stepz: 2}\n")
    with pytest.raises(Exception, match=r"m.yaml: inner.stepz: unknown key"):
        load_meta_config(bad)
    bad.write_text("inner: {tau_min: 3, tau_max: 1}\n")
    with pytest.raises(Exception, match=r"m.yaml: inner: tau_min 3.0 must be <= tau_max 1.0"):
        load_meta_config(bad)


def test_meta_study_space_loads_and_splits_settings_from_config_values(tmp_path):
    from study.meta import load_meta_space

    space = load_meta_space("configs/meta/study.yaml")
    assert {p.name for p in space.params} == {"meta_learning_rate", "architecture_learning_rate",
                                              "posterior.prior_scale", "inner.steps"}
    flags, overrides = space.split({"meta_learning_rate": 0.01, "inner.steps": 2})
    assert flags == {"task_generator_seed": "1000", "meta_learning_rate": "0.01"}
    assert overrides == ["inner.steps=2"]
    bad = tmp_path / "s.yaml"
    bad.write_text("params:\n  inner.stepz: {type: int, low: 1, high: 3}\n")
    with pytest.raises(Exception, match=r"s.yaml: params.inner.stepz: unknown parameter"):
        load_meta_space(bad)
    bad.write_text("params:\n  inner.steps: {type: int, low: 0, high: 3}\n")
    with pytest.raises(Exception, match=r"params.inner.steps: value 0 is refused"):
        load_meta_space(bad)
    bad.write_text("params:\n  meta_learning_rate: {type: float, low: -1, high: 0.1}\n")
    with pytest.raises(Exception, match=r"params.meta_learning_rate: value -1.0 is refused: META_LEARNING_RATE=-1.0"):
        load_meta_space(bad)
    bad.write_text("params:\n  meta_learning_rate: {type: float, low: 0.001, high: 0.1, log: 'no'}\n")
    with pytest.raises(Exception, match=r"params.meta_learning_rate: log: must be true or false, got 'no'"):
        load_meta_space(bad)
