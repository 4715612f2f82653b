"""`speccomp <command>`: every command line of the project, one typed front end (typer).

    speccomp run --seeds 123,124,125                 data, training, figures: tracked in MLflow
    speccomp study --n-trials 20 --space configs/spaces/quick.yaml     an Optuna sensitivity study
    speccomp meta --num-meta-training-tasks 50       the Bayesian meta-learner (settings also from env / .env)
    speccomp nas --seeds 123,124,125                 architecture search, retrained and compared
    speccomp readback table RUN_ID                   a tracked run read back (also: trajectory)
    speccomp redraw RUN_ID --out figs                its nine figures, from MLflow alone
    speccomp config --set training.epochs=3          the resolved configuration
    speccomp generate --out data/                    the splits, to files (no MLflow)
    speccomp train --out runs/exp1                   data, training, figures to a folder (no MLflow)
    speccomp plot runs/exp1                          redraw a `train` folder's figures

Options are parsed and checked here by type: a bad value ends in one line naming the option and
what is allowed, exit code 2, before any work. Config values are set the same way everywhere:
`--set KEY=VALUE` (repeatable) or `--overrides "KEY=VALUE KEY=VALUE"` (one string, the MLflow
parameter form); a value may hold spaces and brackets (`--set "training.hidden_dims=[32, 16]"`).
An empty value and the words "none" and "auto" (the MLproject defaults of optional parameters:
`mlflow run` records every parameter, and an empty one shows as '' in the UI) mean "not given".
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Literal

import typer

from speccomp.core.config import ConfigError, parse_seed_list, split_overrides

USER_ERROR = 2
INTERRUPTED, TERMINATED = 130, 143  # 128 + SIGINT / SIGTERM (tracking.runs, not imported here: it imports MLflow)

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help="speccomp: compositional generalisation on synthetic spectra, tracked in MLflow, swept with Optuna.",
)
readback_app = typer.Typer(no_args_is_help=True, help="Read a tracked `run` back out of MLflow.")
app.add_typer(readback_app, name="readback")


# ------------------------------------------------------------------------------------------------
# value parsers: "", "none", "auto" (an unset MLflow parameter) mean "not given"
# ------------------------------------------------------------------------------------------------
NOT_GIVEN = ("", "none", "auto")


def _given(text: str) -> bool:
    return str(text).strip().lower() not in NOT_GIVEN

class IntList(tuple):
    """Comma-separated integers on the command line (a tuple subclass: typer would read a list
    annotation as a repeatable option)."""


def _seeds(name: str) -> Callable[[str], IntList | None]:
    def parse(text: str) -> IntList | None:
        if isinstance(text, IntList):
            return text
        if not str(text).strip():
            return None
        try:
            return IntList(parse_seed_list(text, name))
        except ConfigError as exc:
            raise typer.BadParameter(str(exc).removeprefix(f"{name}: ")) from None

    return parse


def _search_seeds(text: str) -> IntList | None:
    """auto/none: the default; anything else must be a seed list (an empty one is refused, unlike
    --seeds, where empty means "not given")."""
    if isinstance(text, IntList):
        return text
    if str(text).strip().lower() in ("auto", "none"):
        return None
    try:
        return IntList(parse_seed_list(text, "search-seeds"))
    except ConfigError as exc:
        raise typer.BadParameter(str(exc).removeprefix("search-seeds: ")) from None


THREAD_COUNTS = "comma-separated distinct integers >= 1, e.g. 1,2"


def _thread_counts(text: str) -> IntList | None:
    """`--threads` of meta-eval: distinct thread counts >= 1 (empty, auto, none: not given, one
    thread); a duplicate is refused (it would run every repetition twice at the same count)."""
    if isinstance(text, IntList):
        return text
    if not _given(text):
        return None
    counts: list[int] = []
    for item in str(text).split(","):
        item = item.strip()
        if not item:
            raise typer.BadParameter(f"empty item in {text!r}; allowed: {THREAD_COUNTS}")
        try:
            value = int(item)
        except ValueError:
            raise typer.BadParameter(f"{item!r} is not an integer; allowed: {THREAD_COUNTS}") from None
        if value < 1:
            raise typer.BadParameter(f"{value} is too small; allowed: {THREAD_COUNTS}")
        if value in counts:
            raise typer.BadParameter(f"{value} appears twice; allowed: {THREAD_COUNTS}")
        counts.append(value)
    return IntList(counts)


def _int(minimum: int, optional: bool = False) -> Callable[[str], int | None]:
    def parse(text: str) -> int | None:
        text = str(text).strip()
        if not _given(text) and optional:
            return None
        allowed = f"an integer >= {minimum}" + (" (or auto for the default)" if optional else "")
        try:
            value = int(text)
        except ValueError:
            raise typer.BadParameter(f"{text!r} is not an integer; allowed: {allowed}") from None
        if value < minimum:
            raise typer.BadParameter(f"{value} is too small; allowed: {allowed}")
        return value

    return parse


def _list(values: IntList | None) -> list[int] | None:
    return None if values is None else list(values)


def _optional_text(text: str) -> str | None:
    return str(text).strip() or None


def _optional_choice(text: str) -> str | None:
    """Text, or None for an unset value ('', none, auto: what `mlflow run` passes by default)."""
    return str(text).strip() if _given(text) else None


def _config_inputs(config_dir: str | None, presets: list[str], sets: list[str], overrides: str) -> dict:
    return {
        "config_dir": config_dir,
        "presets": [p for p in presets if _given(p)],
        "overrides": [*sets, *(split_overrides(overrides) if _given(overrides) else [])],
    }


# Shared option declarations (typer reads them from the annotations).
Seeds = Annotated[IntList | None, typer.Option(
    "--seeds", parser=_seeds("seeds"), metavar="A,B,...",
    help="comma-separated training seeds (default: training.seed of the config, 123,124,125)")]
ConfigDir = Annotated[str | None, typer.Option(
    "--config-dir", parser=_optional_text, metavar="DIR",
    help="folder with synthetic_spectra.yaml and data_distribution.yaml (training.yaml, analysis.yaml "
    "optional); default: the project's configs/")]
Presets = Annotated[list[str], typer.Option(
    "--preset", metavar="NAME", help="merge a partial config: a file, or a name under configs/presets/ "
    "(e.g. loglinear); repeatable")]
Sets = Annotated[list[str], typer.Option(
    "--set", metavar="KEY=VALUE", help="override one value by dotted path, e.g. --set training.epochs=10 "
    "(repeatable)")]
Overrides = Annotated[str, typer.Option(
    "--overrides", metavar="'K=V K=V'", help="several KEY=VALUE overrides in one string (the MLflow "
    "parameter form), e.g. 'training.epochs=2 training.hidden_dims=[32, 16]'")]
Threads = Annotated[int | None, typer.Option(
    "--threads", parser=_int(1, optional=True), metavar="N",
    help="torch intra-op threads (default: 1, or OMP_NUM_THREADS; one thread is never much slower, every core "
    "can be several times slower on a busy machine, see docs/reliability.md)")]


# ------------------------------------------------------------------------------------------------
# tracked commands
# ------------------------------------------------------------------------------------------------
@app.command("run")
def run_cmd(
    seeds: Seeds = None,
    data_seeds: Annotated[IntList | None, typer.Option(
        "--data-seeds", parser=_seeds("data_seeds"), metavar="A,B,...", help="comma-separated data seeds")] = "42",
    config_dir: ConfigDir = None,
    preset: Presets = [],  # noqa: B006 (typer reads, never mutates, the default)
    set_: Sets = [],  # noqa: B006
    overrides: Overrides = "",
    threads: Threads = None,
    experiment_name: Annotated[str | None, typer.Option(
        parser=_optional_text, help="MLflow experiment (default 'speccomp', or MLFLOW_EXPERIMENT_NAME, or the one "
        "`mlflow run` chose)")] = None,
    run_name: Annotated[str | None, typer.Option(parser=_optional_text, help="name of the parent run")] = None,
    work_dir: Annotated[str | None, typer.Option(
        parser=_optional_text, help="where files are staged before upload (default: a temporary folder)")] = None,
    no_models: Annotated[bool, typer.Option("--no-models", help="skip logging the final models the MLflow way")] = False,
    no_figures: Annotated[bool, typer.Option("--no-figures", help="skip the nine figures (draw them later with `speccomp redraw`)")] = False,
    model_format: Annotated[Literal["pickle", "pt2"], typer.Option(
        "--model-format", help="how the final models are logged: pickle (torch.save; the default) or pt2 "
        "(torch.export, a traced graph that loads without running pickled code; about a second more per run)")] = "pickle",
) -> int:
    """Generate the data, train every seed, analyse and draw the figures; all tracked in MLflow."""
    from speccomp.core import import_phase
    from speccomp.core.figure_worker import FigureWorker

    # No cyclic garbage collection (about 0.8 s of collections) and no pyarrow (35-45 MB) while torch,
    # MLflow and its store are imported; the run ends that once its store is open (speccomp.core.import_phase).
    with import_phase.during_imports():
        # The figures' process starts first, so that its imports overlap this one's (torch, MLflow).
        worker = None if no_figures else FigureWorker.start()
        try:
            from tracking.main import RunOptions, run

            options = RunOptions(
                seeds=_list(seeds), data_seeds=_list(data_seeds) or [42], threads=threads,
                experiment_name=experiment_name, run_name=run_name, work_dir=work_dir, no_models=no_models,
                no_figures=no_figures, model_format=model_format,
                **_config_inputs(config_dir, preset, set_, overrides),
            )
        except BaseException:  # refused here, or Ctrl-C during the imports: the worker goes too
            if worker is not None:
                worker.close()
            raise
        return run(options, figure_worker=worker)  # which ends the worker, whatever happens


SAMPLER = Literal["random", "qmc", "tpe", "nsga2"]
PRUNER = Literal["none", "median", "successive_halving", "wilcoxon"]


@app.command("study")
def study_cmd(
    n_trials: Annotated[int, typer.Option(parser=_int(1), help="trials this invocation runs (per worker budget)")] = 10,
    total_trials: Annotated[int | None, typer.Option(
        parser=_int(1, optional=True), help="study-wide budget: stop when the study holds this many trials "
        "(complete, pruned or running), whoever ran them")] = None,
    study_name: Annotated[str, typer.Option(help="re-using a name continues that study")] = "speccomp-sensitivity",
    storage: Annotated[str, typer.Option(
        help="journal file path (default optuna.log), sqlite:///PATH or postgresql://USER@HOST:PORT/DB; "
        "empty: the environment variable SPECCOMP_STORAGE (keeps a password off the command line)")] = "",
    space: Annotated[str, typer.Option(help="search-space YAML")] = "configs/spaces/quick.yaml",
    seeds: Seeds = None,
    data_seed: Annotated[int, typer.Option(parser=_int(0), help="data seed of every trial")] = 42,
    objective: Annotated[str, typer.Option(help="what each trial returns: test_mse, transfer, gap, pareto; "
                                            "test (the matrices domain: 1 - test accuracy) (see docs/studies.md)")] = "test_mse",
    sampler: Annotated[SAMPLER, typer.Option(help="Optuna sampler")] = "random",
    sampler_seed: Annotated[int | None, typer.Option(
        parser=_int(0, optional=True), help="seed of the sampler; auto (the default): derived from the study name, "
        "so that studies of other names draw other trials")] = None,
    pruner: Annotated[PRUNER, typer.Option(help="stop hopeless trials after the first seed")] = "none",
    workers: Annotated[int, typer.Option(parser=_int(1), help="worker processes on this machine")] = 1,
    threads: Annotated[int | None, typer.Option(
        parser=_int(1, optional=True), help="torch threads of each worker (default: 1, or OMP_NUM_THREADS)")] = None,
    config_dir: ConfigDir = None,
    preset: Presets = [],  # noqa: B006
    set_: Sets = [],  # noqa: B006
    overrides: Overrides = "",
    experiment_name: Annotated[str | None, typer.Option(
        parser=_optional_text, help="MLflow experiment (default 'speccomp', or MLFLOW_EXPERIMENT_NAME, or the one "
        "`mlflow run` chose)")] = None,
    log_models: Annotated[bool, typer.Option("--log-models", help="log every seed's final model the MLflow way")] = False,
    no_report: Annotated[bool, typer.Option("--no-report", help="skip the sensitivity report (another worker writes it)")] = False,
    record_writer: Annotated[bool, typer.Option(
        "--record-writer/--no-record-writer",
        help="write each trial's MLflow records in a second process while the next trial trains (default); "
        "--no-record-writer: in this process, before the trial ends")] = True,
) -> int:
    """An Optuna study of how the compositional gap depends on architecture and split settings."""
    from speccomp.core import import_phase

    with import_phase.during_imports():  # torch, Optuna, MLflow and its store; the study ends it before the first trial
        from study.main import StudyOptions, main

        return main(StudyOptions(
            n_trials=n_trials, total_trials=total_trials, study_name=study_name, storage=storage, space=space,
            seeds=_list(seeds), data_seed=data_seed, objective=objective, sampler=sampler, sampler_seed=sampler_seed,
            pruner=pruner, workers=workers, threads=threads, experiment_name=experiment_name, log_models=log_models,
            no_report=no_report, record_writer=record_writer,
            **_config_inputs(config_dir, preset, set_, overrides),
        ))


def _positive_float(optional: bool = False) -> Callable[[str], float | None]:
    def parse(text: str) -> float | None:
        text = str(text).strip()
        if not _given(text) and optional:
            return None
        allowed = "a number > 0, e.g. 0.001" + (" (or auto for the default)" if optional else "")
        try:
            value = float(text)
        except ValueError:
            raise typer.BadParameter(f"{text!r} is not a number; allowed: {allowed}") from None
        if not math.isfinite(value) or value <= 0:
            raise typer.BadParameter(f"{text!r} is out of range; allowed: {allowed}")
        return value

    return parse


@app.command("nas")
def nas_cmd(
    seeds: Seeds = None,
    data_seed: Annotated[int, typer.Option(parser=_int(0), help="data seed of the search and the retraining")] = 42,
    space: Annotated[str | None, typer.Option(parser=_optional_choice, help=(
        "search-space YAML (decisions and search settings); default: the domain's, configs/nas/spectra.yaml "
        "or, for a matrices config folder, configs/nas/raven.yaml"))] = None,
    architecture_search_iterations: Annotated[int | None, typer.Option(
        parser=_int(1, optional=True), help="search iterations (default: the space file's, 1000)")] = None,
    architecture_learning_rate: Annotated[float | None, typer.Option(
        parser=_positive_float(optional=True), help="Adam step size of α (default: the space file's, 0.1)")] = None,
    search_seeds: Annotated[IntList | None, typer.Option(
        parser=_search_seeds, metavar="A,B,...", help="seeds of the searches, one search each (default auto: "
        "three, counting up from the first retraining seed)")] = None,
    random_draws: Annotated[int | None, typer.Option(
        parser=_int(1, optional=True), help="architectures random search draws and trains on the first seed "
        "(default auto: as many as the searches' gradient steps buy)")] = None,
    random_seed: Annotated[int | None, typer.Option(
        parser=_int(0, optional=True), help="seed of the random draws (default: the first search seed)")] = None,
    config_dir: ConfigDir = None,
    preset: Presets = [],  # noqa: B006
    set_: Sets = [],  # noqa: B006
    overrides: Overrides = "",
    threads: Threads = None,
    experiment_name: Annotated[str | None, typer.Option(
        parser=_optional_text, help="MLflow experiment (default 'speccomp', or MLFLOW_EXPERIMENT_NAME, or the one "
        "`mlflow run` chose)")] = None,
    run_name: Annotated[str | None, typer.Option(parser=_optional_text, help="name of the parent run")] = None,
    log_models: Annotated[bool, typer.Option("--log-models", help="log every retrained model the MLflow way")] = False,
) -> int:
    """Differentiable architecture search (Gumbel-softmax) from several search seeds, random search at
    the same budget, then the derived architectures, the best random draw and the domain's reference
    models (spectra: the default and the log-linear preset; matrices: raven_mlp and raven_wren)
    retrained over the seeds and compared; all tracked in MLflow."""
    from tracking.nas import NasOptions, run_nas

    return run_nas(NasOptions(
        seeds=_list(seeds), data_seed=data_seed, space=space,
        architecture_search_iterations=architecture_search_iterations,
        architecture_learning_rate=architecture_learning_rate, threads=threads,
        search_seeds=_list(search_seeds), random_draws=random_draws, random_seed=random_seed,
        experiment_name=experiment_name, run_name=run_name, log_models=log_models,
        **_config_inputs(config_dir, preset, set_, overrides),
    ))


def _setting(name: str, help_text: str):
    """A meta setting's option under both spellings; validated by `speccomp.meta.settings`, which
    names where a bad value was set (so it stays text here; empty = not given)."""
    return typer.Option(f"--{name}", f"--{name.replace('_', '-')}", help=help_text)


def _meta_settings(env_file: str, **given: str) -> tuple[dict[str, str], str]:
    """The meta settings given as flags (empty or MLproject's "auto": not given) and the env file
    to read (a named one must exist and be text; only the default .env is optional). Refuses a bad
    flag, environment variable or `.env` value here, before torch and MLflow are imported, with the
    message the full resolution gives (`speccomp.meta.settings.resolve_settings`); the meta config
    file's own values are checked when the config is read."""
    from speccomp.meta.settings import check_named_env_file, resolve_settings

    flags = {k: v if _given(v) else "" for k, v in given.items()}
    if _given(env_file):
        check_named_env_file(env_file)
    else:
        env_file = ".env"
    resolve_settings(flags, env_file)
    return flags, env_file


@app.command("meta")
def meta_cmd(
    task_generator_seed: Annotated[str, _setting("task_generator_seed", "overrides $TASK_GENERATOR_SEED (default 0)")] = "",
    meta_learning_rate: Annotated[str, _setting("meta_learning_rate", "overrides $META_LEARNING_RATE (default 0.001; "
                                                "the project's meta configs set 0.003)")] = "",
    architecture_learning_rate: Annotated[str, _setting(
        "architecture_learning_rate", "overrides $ARCHITECTURE_LEARNING_RATE (default 0.001; the project's meta "
        "configs set 0.1)")] = "",
    num_meta_training_tasks: Annotated[str, _setting(
        "num_meta_training_tasks", "overrides $NUM_META_TRAINING_TASKS (default 100)")] = "",
    num_meta_testing_tasks: Annotated[str, _setting(
        "num_meta_testing_tasks", "overrides $NUM_META_TESTING_TASKS (default 20)")] = "",
    architecture_search_iterations: Annotated[str, _setting(
        "architecture_search_iterations", "overrides $ARCHITECTURE_SEARCH_ITERATIONS (default 1000)")] = "",
    config: Annotated[str, typer.Option(help="meta config file or name under configs/meta/ (default, smoke, raven)")] = "",
    overrides: Annotated[str, typer.Option(help="space-separated KEY=VALUE overrides of the meta config")] = "",
    env_file: Annotated[str, typer.Option(help="an env file of NAME=VALUE lines, read below the environment; it must "
                                          "exist (default: .env in the working directory, if present)")] = "",
    threads: Annotated[str, typer.Option(help="torch intra-op threads (empty: one, or OMP_NUM_THREADS)")] = "",
    experiment_name: Annotated[str | None, typer.Option(
        parser=_optional_text, help="MLflow experiment (default 'speccomp', or MLFLOW_EXPERIMENT_NAME, or the one "
        "`mlflow run` chose)")] = None,
    run_name: Annotated[str | None, typer.Option(parser=_optional_text, help="name of the parent run")] = None,
) -> int:
    """The Bayesian meta-learner: a posterior over architectures across compositional tasks, adapted
    to unseen pairs and compared with the baselines; tracked in MLflow. Settings: flag > environment
    > .env > config file > default."""
    flags, env_file = _meta_settings(
        env_file, task_generator_seed=task_generator_seed, meta_learning_rate=meta_learning_rate,
        architecture_learning_rate=architecture_learning_rate, num_meta_training_tasks=num_meta_training_tasks,
        num_meta_testing_tasks=num_meta_testing_tasks, architecture_search_iterations=architecture_search_iterations)
    from tracking.meta import MetaOptions, run_meta

    return run_meta(MetaOptions(flags=flags, config=config if _given(config) else "",
                                overrides=split_overrides(overrides) if _given(overrides) else [], env_file=env_file,
                                threads=threads if _given(threads) else "", experiment_name=experiment_name,
                                run_name=run_name))


@app.command("meta-eval")
def meta_eval_cmd(
    repetitions: Annotated[int, typer.Option(parser=_int(1), help="meta runs, each with its own task draw and meta "
                                             "seed (TASK_GENERATOR_SEED + r, meta seed + r)")] = 3,
    threads: Annotated[IntList | None, typer.Option(
        parser=_thread_counts, metavar="A,B", help="torch thread counts, distinct, each >= 1 (default 1); every "
        "repetition runs at each (e.g. 1,2: does the conclusion survive the float reduction order?)")] = None,
    task_generator_seed: Annotated[str, _setting("task_generator_seed", "base of $TASK_GENERATOR_SEED")] = "",
    meta_learning_rate: Annotated[str, _setting("meta_learning_rate", "overrides $META_LEARNING_RATE")] = "",
    architecture_learning_rate: Annotated[str, _setting("architecture_learning_rate",
                                                        "overrides $ARCHITECTURE_LEARNING_RATE")] = "",
    num_meta_training_tasks: Annotated[str, _setting("num_meta_training_tasks", "overrides $NUM_META_TRAINING_TASKS")] = "",
    num_meta_testing_tasks: Annotated[str, _setting("num_meta_testing_tasks", "overrides $NUM_META_TESTING_TASKS")] = "",
    architecture_search_iterations: Annotated[str, _setting("architecture_search_iterations",
                                                            "overrides $ARCHITECTURE_SEARCH_ITERATIONS")] = "",
    config: Annotated[str, typer.Option(help="meta config file or name under configs/meta/ (default, smoke, raven)")] = "",
    overrides: Annotated[str, typer.Option(help="space-separated KEY=VALUE overrides of the meta config")] = "",
    env_file: Annotated[str, typer.Option(help="an env file of NAME=VALUE lines (default: .env, if present)")] = "",
    experiment_name: Annotated[str | None, typer.Option(parser=_optional_text, help="MLflow experiment")] = None,
    run_name: Annotated[str | None, typer.Option(parser=_optional_text, help="name of the parent run")] = None,
) -> int:
    """The meta-learner's powered evaluation: repeated meta-training and meta-testing, every method
    and ablation against `meta` with bootstrap intervals and Holm-corrected paired tests; tracked."""
    flags, env_file = _meta_settings(
        env_file, task_generator_seed=task_generator_seed, meta_learning_rate=meta_learning_rate,
        architecture_learning_rate=architecture_learning_rate, num_meta_training_tasks=num_meta_training_tasks,
        num_meta_testing_tasks=num_meta_testing_tasks, architecture_search_iterations=architecture_search_iterations)
    from tracking.meta_eval import MetaEvalOptions, run_meta_eval

    return run_meta_eval(MetaEvalOptions(
        flags=flags, config=config if _given(config) else "",
        overrides=split_overrides(overrides) if _given(overrides) else [], env_file=env_file,
        repetitions=repetitions, threads=_list(threads) or [1], experiment_name=experiment_name, run_name=run_name))


@app.command("study-worker", hidden=True)
def study_worker_cmd(settings: Annotated[Path, typer.Argument(help="worker file written by `study --workers N`")]) -> int:
    """One more worker of a running study (started by `study --workers N`)."""
    from speccomp.core import import_phase

    with import_phase.during_imports():  # as `study`
        from study.main import main, read_worker_file

        return main(read_worker_file(settings))


RunId = Annotated[str, typer.Argument(help="the parent run of a `run` invocation")]
Csv = Annotated[str | None, typer.Option(parser=_optional_text, help="write a CSV file instead of printing")]


@readback_app.command("table")
def table_cmd(run_id: RunId, csv: Csv = None) -> int:
    """One row per seed run: ids, seeds, status, main params, final metrics."""
    from tracking import readback

    return readback.main("table", run_id, csv=csv)


@readback_app.command("trajectory")
def trajectory_cmd(run_id: RunId, csv: Csv = None) -> int:
    """trajectory_data.csv rebuilt from the metric histories."""
    from tracking import readback

    return readback.main("trajectory", run_id, csv=csv)


@app.command("redraw")
def redraw_cmd(run_id: RunId, out: Annotated[str, typer.Option(help="folder for the figures")] = "redrawn") -> int:
    """Re-draw the nine figures of a tracked run from MLflow alone."""
    from tracking import readback

    return readback.main("redraw", run_id, out=out)


@app.command("redraw-docs")
def redraw_docs_cmd(
    main_run: Annotated[str | None, typer.Option("--main", parser=_optional_text, help="parent run of a `run` "
                                                 "whose figure goes to the README and docs/metrics.md (default: the latest)")] = None,
    study_run: Annotated[str | None, typer.Option("--study", parser=_optional_text, help="study run whose report "
                                                  "goes to docs/ (default: the latest)")] = None,
    compare: Annotated[list[str], typer.Option(help="`run` parent runs for the results table (repeatable; "
                                               "default: the latest per model)")] = [],  # noqa: B006
    out: Annotated[str, typer.Option(help="folder to write")] = "docs",
) -> int:
    """Redraw the figures, results table and study report under docs/ from the tracked runs."""
    from tracking import redraw_docs

    return redraw_docs.main(main_run, study_run, list(compare), out)


@app.command("meta-study")
def meta_study_cmd(
    space: Annotated[str, typer.Option(help="the meta-learner's search space")] = "configs/meta/study.yaml",
    n_trials: Annotated[int, typer.Option(parser=_int(1), help="trials to run")] = 8,
    config: Annotated[str, typer.Option(help="meta config the trials start from")] = "smoke",
    overrides: Annotated[str, typer.Option(help="meta-config overrides for every trial")] = "",
    study_name: Annotated[str, typer.Option(help="re-using a name continues that study")] = "speccomp-meta-hyper",
    storage: Annotated[str, typer.Option(help="Optuna storage (default: journal file optuna.log)")] = "",
    sampler: Annotated[Literal["random", "qmc", "tpe"], typer.Option(help="Optuna sampler")] = "random",
    sampler_seed: Annotated[int, typer.Option(parser=_int(0), help="seed of the sampler")] = 0,
    threads: Annotated[int, typer.Option(parser=_int(1), help="torch threads")] = 1,
) -> int:
    """An Optuna study of the meta-learner's own hyper-parameters (learning rates, prior scale, inner steps)."""
    from study import meta

    return meta.main(space, str(n_trials), config, overrides, study_name, storage, sampler, str(sampler_seed),
                     str(threads))


# ------------------------------------------------------------------------------------------------
# untracked commands (no MLflow)
# ------------------------------------------------------------------------------------------------
def _load(config_dir: str | None, presets: list[str], sets: list[str], overrides: str):
    from speccomp.core.task import load_any_config  # a folder holding matrices.yaml is the matrices domain

    inputs = _config_inputs(config_dir, presets, sets, overrides)
    return load_any_config(inputs["config_dir"], inputs["overrides"], presets=inputs["presets"])


Out = Annotated[Path, typer.Option("--out", help="output folder")]
DataSeeds = Annotated[IntList | None, typer.Option(
    "--data-seeds", parser=_seeds("data_seeds"), metavar="A,B,...", help="comma-separated data seeds")]


@app.command("config")
def config_cmd(config_dir: ConfigDir = None, preset: Presets = [], set_: Sets = [],  # noqa: B006
               overrides: Overrides = "") -> int:
    """Print the resolved configuration as YAML."""
    import yaml

    print(yaml.safe_dump(_load(config_dir, preset, set_, overrides).to_dict(), sort_keys=False), end="")
    return 0


def _per_data_seed(out: Path, data_seeds: list[int]) -> list[tuple[int, Path]]:
    return [(d, out / f"data_seed-{d}" if len(data_seeds) > 1 else out) for d in data_seeds]


@app.command("generate")
def generate_cmd(out: Out, data_seeds: DataSeeds = "42", config_dir: ConfigDir = None,
                 preset: Presets = [], set_: Sets = [], overrides: Overrides = "") -> int:  # noqa: B006
    """Generate every split to a folder (tensors, loadable with weights_only=True)."""
    from speccomp.core.task import task_for

    cfg = _load(config_dir, preset, set_, overrides)
    task = task_for(cfg)
    for data_seed, folder in _per_data_seed(out, data_seeds or [42]):
        datasets = task.generate(cfg, data_seed)
        task.save_datasets(datasets, folder)
        print(f"data seed {data_seed}: {', '.join(f'{n}={len(d)}' for n, d in datasets.items())} -> {folder}")
    return 0


@app.command("train")
def train_cmd(out: Out, seeds: Seeds = None, data_seeds: DataSeeds = "42", config_dir: ConfigDir = None,
              preset: Presets = [], set_: Sets = [], overrides: Overrides = "") -> int:  # noqa: B006
    """Generate, train every seed, write tables, checkpoints and figures to a folder (no MLflow)."""
    from speccomp.core.experiment import run_experiment
    from speccomp.core.threads import apply_threads

    cfg = _load(config_dir, preset, set_, overrides)
    apply_threads(None)  # one thread unless OMP_NUM_THREADS says otherwise (speccomp.core.threads)
    for data_seed, folder in _per_data_seed(out, data_seeds or [42]):
        exp = run_experiment(cfg, data_seed, _list(seeds) or cfg.training.seeds, folder, progress=sys.stderr.isatty())
        cols = ["seed"] + [c for c in exp.summary.columns if c.startswith(("test/mse/", "skill/val/", "transfer/", "gap/"))
                           or c in ("val/acc", "test/acc", "chance/acc")]
        print(f"data seed {data_seed} -> {folder}")
        print(exp.summary[cols].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    return 0


@app.command("plot")
def plot_cmd(folder: Annotated[Path, typer.Argument(help="a folder written by `speccomp train`")]) -> int:
    """Redraw the figures of a finished `train` folder from its files."""
    from speccomp.core.experiment import redraw

    try:
        paths = redraw(folder)
    except FileNotFoundError as exc:  # the folder is not an experiment folder (checked before drawing)
        raise ConfigError(str(exc)) from None
    print(f"{len(paths)} figures -> {folder / 'plots'}")
    return 0


# ------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    """Run one command; returns its exit code. A usage error or a bad config value prints one line
    (`error: <option or key>: <what is wrong>; allowed: ...`) and returns 2."""
    command = typer.main.get_command(app)
    try:
        code = command.main(args=argv, prog_name="speccomp", standalone_mode=False)
    except typer.TyperException as exc:  # usage errors: unknown option, bad value, missing argument
        return _refuse(_usage_message(exc))
    except ConfigError as exc:
        return _refuse(str(exc))
    except typer.Exit as exc:
        return exc.exit_code
    return code if isinstance(code, int) else 0


def _refuse(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    if os.environ.get("MLFLOW_RUN_ID"):  # `mlflow run` made a run: it ends FAILED with the reason
        from tracking.runs import fail_attached_run

        fail_attached_run(message)
    return USER_ERROR


def _usage_message(exc: typer.TyperException) -> str:
    param = getattr(exc, "param", None)
    message = (getattr(exc, "message", None) or str(exc)).replace("Value error, ", "")
    if param is not None and getattr(param, "opts", None):
        return f"{param.opts[0]}: {message}"
    return exc.format_message() if hasattr(exc, "format_message") else message


def entry() -> None:
    exit_now(main())


def exit_now(code: int) -> None:
    """End the process with `code` without the interpreter's teardown. A command has closed what it
    opened by now (runs ended, stores committed, files written, worker processes joined); what
    Python's own shutdown would add is freeing the modules of torch, MLflow, SQLAlchemy and pandas
    one object at a time: about 1 s of a 3-seed `run` on the idle 2-core machine, several on a
    loaded one, during which the command has printed its last line yet not returned (a supervisor's
    grace period after SIGTERM goes to it too). What the normal shutdown does that matters is kept
    (`speccomp_compat.finish_like_the_interpreter`): thread pools stopped and non-daemon threads
    joined, the atexit handlers run (logging's flush, multiprocessing's join of its children,
    MLflow's end of a fluent run), and stdout/stderr flushed (a closed pipe is not an error here).
    After Ctrl-C or SIGTERM (130, 143) only the flush: the runs are closed and the message printed,
    and a supervisor's grace period must not wait on a thread or handler. Under a profiler or a
    tracer (`python -m cProfile`, coverage) the process exits normally, so that they write their
    results."""
    if sys.getprofile() is not None or sys.gettrace() is not None:
        sys.exit(code)
    import contextlib

    from speccomp_compat import finish_like_the_interpreter

    try:
        if code not in (INTERRUPTED, TERMINATED):  # stopped: its runs are closed, nothing may hold the exit up
            finish_like_the_interpreter()
    except KeyboardInterrupt:  # a signal while threads were joined: exit now, as a stopped command does
        code = code or INTERRUPTED
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a closed pipe (`speccomp ... | head -1`) must not stop the exit
            stream.flush()
    os._exit(code)
