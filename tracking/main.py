"""The `main` entry point: the whole study for every seed, tracked in MLflow.

    mlflow run . --env-manager local -P seeds=123,124,125
    mlflow run . --env-manager local -P config_dir=configs/raven   (the matrices domain)
    speccomp run --seeds 123,124,125                     (the same, without `mlflow run`)

One parent run per invocation (the run `mlflow run` created, when there is one), one child run per
(data seed, training seed). Everything is validated before the first run is touched; a user error
prints one line and exits with code 2 (a run `mlflow run` already created ends FAILED with that
line recorded, and nothing else logged).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from speccomp.core.config import ConfigError, ExperimentConfig, parse_seed_list
from speccomp.core.task import task_for_dir


@dataclass(frozen=True)
class RunOptions:
    """What `speccomp run` (and the MLproject `main` entry point) hands to `run`, parsed and typed by
    the front end (`speccomp_cli`); the config itself is loaded and checked here, before any run."""

    seeds: list[int] | None = None
    """Training seeds; None takes `training.seed` from the config (the project's: 123,124,125)."""
    data_seeds: list[int] = field(default_factory=lambda: [42])
    config_dir: str | None = None
    presets: list[str] = field(default_factory=list)
    overrides: list[str] = field(default_factory=list)
    """Dotted KEY=VALUE items, already split (see `speccomp.core.config.split_overrides`)."""
    experiment_name: str | None = None
    run_name: str | None = None
    work_dir: str | None = None
    no_models: bool = False
    model_format: str = "pickle"
    """How the final models are serialised: "pickle" or "pt2" (`tracking.pipeline.MODEL_FORMATS`)."""
    threads: int | None = None
    no_figures: bool = False


class _Inputs:
    """Everything validated up front."""

    def __init__(self, args: RunOptions):
        config_dir = args.config_dir or None
        self.task = task_for_dir(config_dir)  # a folder holding matrices.yaml selects the matrices domain
        if config_dir is not None:
            self.task.check_config_dir(Path(config_dir))
        self.presets = [p for p in args.presets if p]
        self.cfg: ExperimentConfig = self.task.load_config(config_dir, args.overrides, self.presets)
        self.seeds = parse_seed_list(args.seeds if args.seeds is not None else self.cfg.training.seeds, "seeds")
        self.data_seeds = parse_seed_list(args.data_seeds, "data_seeds")
        self.threads = args.threads
        from tracking.store import check_work_dir

        self.work_dir = check_work_dir(args.work_dir, "--work-dir")


def run(args: RunOptions, figure_worker=None) -> int:
    """The whole run; `figure_worker` (a `FigureWorker` the caller started early, ended here
    whatever happens) draws the figures, or one is started here."""
    try:
        return _run(args, figure_worker)
    finally:
        if figure_worker is not None:
            figure_worker.close()


def _run(args: RunOptions, early_worker) -> int:
    # (the `tracking` package, imported with this module, has set the MLflow environment already)

    from speccomp.core.figure_worker import FigureWorker
    from speccomp.core.threads import apply_threads
    from tracking import store

    uri = store.tracking_uri()
    attached = os.environ.get("MLFLOW_RUN_ID") or None
    try:
        store.check_store(uri)
        inputs = _Inputs(args)
    except ConfigError as exc:
        from tracking.runs import refused

        return refused(str(exc))  # `mlflow run` made a run already: it ends FAILED with the reason

    threads = apply_threads(inputs.threads)  # one unless told (speccomp.core.threads: measured under contention)
    # The figures' process (unless the caller started it already) starts now, so that its imports
    # overlap with the store's set-up and training; told the config now, before this process
    # imports MLflow, it generates the data, fits the oracle and draws the data's figures meanwhile,
    # and has the second core free for the training.
    worker = None if args.no_figures else early_worker or FigureWorker.start()
    try:
        if worker is not None:
            worker.prepare(inputs.cfg, inputs.data_seeds[0], threads=threads)
        store.configure()  # imports MLflow
        return _tracked(args, inputs, uri, attached, worker)
    finally:
        if worker is not None:
            worker.close()


def _tracked(args: RunOptions, inputs: _Inputs, uri: str, attached: str | None, worker) -> int:
    from tracking import store, ui
    from tracking.progress import heartbeat
    from tracking.runs import RunTracker, guarded, parent_experiment, stopped

    client = store.tracking_client()
    from speccomp.core import import_phase

    import_phase.end()  # the libraries are in (begun by the command line: speccomp.core.import_phase)
    experiment_id = parent_experiment(client, uri, args.experiment_name, attached)
    tracker = RunTracker(client, experiment_id)
    run_name = args.run_name or ui.main_run_name(inputs.seeds, inputs.data_seeds, inputs.presets, inputs.task.name)
    parent = None
    try:
        with guarded(tracker), heartbeat("main"):
            parent = tracker.open_parent(run_name, attached)
            if inputs.work_dir:
                summary = _run_all(tracker, parent, inputs, inputs.work_dir, args, worker)
            else:
                with tempfile.TemporaryDirectory(prefix="speccomp-") as tmp:
                    summary = _run_all(tracker, parent, inputs, Path(tmp), args, worker)
            tracker.finish(parent)
    except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM: the guard has ended the runs KILLED
        return stopped(exc, f"parent run {parent} and its children ended KILLED")
    _print_summary(summary, inputs, client.get_run(parent).info, uri)
    return 0


def _run_all(tracker, parent: str, inputs: _Inputs, work: Path, args: RunOptions, worker=None):
    import pandas as pd
    import yaml

    from speccomp.core.experiment import CONFIG_FILE
    from tracking import ui
    from tracking.pipeline import (
        log_dataset_inputs,
        log_params,
        log_parent_artifacts,
        log_parent_summary,
        run_tracked_experiment,
        set_tags,
    )
    from tracking.progress import say, training_progress

    client = tracker.client
    cfg = inputs.cfg
    params = ui.run_params(cfg)
    # The resolved config goes up first, so that a run stopped early still says what it was.
    client.log_text(parent, yaml.safe_dump(cfg.to_dict(), sort_keys=False), CONFIG_FILE)
    set_tags(client, parent, {
        "speccomp.role": "main",
        "seeds": ui.seed_list(inputs.seeds),
        "data_seeds": ui.seed_list(inputs.data_seeds),
        **inputs.task.tags(cfg),
    })
    log_params(client, parent, params)
    several = len(inputs.data_seeds) > 1
    summaries, trajectories = [], []
    for data_seed in inputs.data_seeds:
        sub = f"data_seed-{data_seed}" if several else None
        folder = work / sub if sub else work
        say(f"data seed {data_seed}: training seeds {ui.seed_list(inputs.seeds, ', ')} ...")
        tracked = run_tracked_experiment(
            tracker, parent, cfg, data_seed, inputs.seeds, folder, params,
            log_models=not args.no_models, model_format=args.model_format, figures=not args.no_figures,
            progress=training_progress(after="measuring the floor, logging the seed runs and models, drawing figures"),
            run_name=(lambda s, d=data_seed: f"seed-{s}-data-{d}") if several else (lambda s: f"seed-{s}"),
            figure_worker=worker if data_seed == inputs.data_seeds[0] else None,  # later data seeds start their own
        )
        if data_seed == inputs.data_seeds[0]:  # the parent shows the data of its first data seed
            log_dataset_inputs(client, parent, tracked.experiment.datasets)
        log_parent_artifacts(client, parent, folder, sub)
        summaries.append(tracked.experiment.summary)
        trajectories.append(tracked.experiment.result.trajectory)
    summary = pd.concat(summaries, ignore_index=True)
    log_parent_summary(client, parent, summary, pd.concat(trajectories, ignore_index=True))
    ui.set_description(client, parent, ui.main_description(inputs.seeds, inputs.data_seeds, inputs.presets, cfg,
                                                           summary))
    return summary


def _print_summary(summary, inputs: _Inputs, info, uri: str) -> None:
    from tracking.describe import closing_lines

    print("\n".join(inputs.task.console_summary(inputs.cfg, summary)))  # the domain says what its results are
    print()
    print("\n".join(closing_lines(uri, info)))


