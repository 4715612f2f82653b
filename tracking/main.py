"""The `main` entry point: the whole study for every seed, tracked in MLflow.

    mlflow run . --env-manager local -P seeds=123,124,125
    python -m tracking.main --seeds 123,124,125          (the same, without `mlflow run`)

One parent run per invocation (the run `mlflow run` created, when there is one), one child run per
(data seed, training seed). Everything is validated before the first run is touched; a user error
prints one line and exits with code 2 (a run `mlflow run` already created ends FAILED with that
line recorded, and nothing else logged).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from speccomp.cli import add_config_arguments, split_overrides
from speccomp.core.config import SECTION_FILES, ConfigError, ExperimentConfig, load_config, parse_seed_list

USER_ERROR = 2
INTERRUPTED = 130  # 128 + SIGINT, the shell's convention
TERMINATED = 143  # 128 + SIGTERM
REQUIRED_SECTIONS = ("physics", "data")  # training.yaml and analysis.yaml fall back to defaults
DEFAULT_EXPERIMENT = "speccomp"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tracking.main",
        description="Generate the data, train every seed, analyse and draw the figures; all tracked in MLflow.",
    )
    parser.add_argument("--seeds", default="123,124,125", help="comma-separated training seeds (default 123,124,125)")
    parser.add_argument("--data-seeds", default="42", help="comma-separated data seeds (default 42)")
    add_config_arguments(parser)
    parser.add_argument(
        "--overrides",
        default="",
        help="space-separated KEY=VALUE overrides in one string (the MLflow parameter form), e.g. "
        "'training.epochs=2 data.splits.train.n_samples=512'",
    )
    parser.add_argument("--experiment-name", default=None, help=f"MLflow experiment (default {DEFAULT_EXPERIMENT!r}, "
                        "or the one `mlflow run` chose)")
    parser.add_argument("--run-name", default=None, help="name of the parent run")
    parser.add_argument("--work-dir", default=None, help="where files are staged before upload (default: a temporary folder)")
    parser.add_argument("--no-models", action="store_true", help="skip logging the final models the MLflow way")
    parser.add_argument("--threads", default="", help="torch intra-op threads (default: torch's choice, every core; "
                        "use 1 on a shared or loaded machine)")
    parser.add_argument("--no-figures", action="store_true", help="skip drawing the nine figures (they can be drawn "
                        "later from the runs: python -m tracking.readback redraw RUN_ID --out DIR)")
    return parser


class _Inputs:
    """Everything validated up front."""

    def __init__(self, args: argparse.Namespace):
        self.seeds = parse_seed_list(args.seeds, "seeds")
        self.data_seeds = parse_seed_list(args.data_seeds, "data_seeds")
        self.threads = _threads(args.threads)
        overrides = [*args.set_overrides, *split_overrides(args.overrides)]
        config_dir = args.config_dir or None
        if config_dir is not None:
            _check_config_dir(Path(config_dir))
        presets = [p for p in getattr(args, "presets", []) if p]
        self.cfg: ExperimentConfig = load_config(config_dir, overrides, presets=presets)


def _threads(text: str) -> int | None:
    if not str(text).strip():
        return None
    if not str(text).strip().isdigit() or int(text) < 1:
        raise ConfigError(f"threads: {text!r}; allowed: an integer >= 1 (or empty for torch's default)")
    return int(text)


def _check_config_dir(folder: Path) -> None:
    allowed = (f"a folder holding {' and '.join(SECTION_FILES[s] for s in REQUIRED_SECTIONS)} "
               f"({', '.join(f for s, f in SECTION_FILES.items() if s not in REQUIRED_SECTIONS)} optional)")
    if not folder.is_dir():
        raise ConfigError(f"config_dir: {folder}: folder not found; allowed: {allowed}")
    for section in REQUIRED_SECTIONS:
        if not (folder / SECTION_FILES[section]).is_file():
            raise ConfigError(f"config_dir: {folder} has no {SECTION_FILES[section]}; allowed: {allowed}")


def main(argv: list[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


def run(args: argparse.Namespace) -> int:
    # (the `tracking` package, imported with this module, has set the MLflow environment already)
    from mlflow import MlflowClient

    from tracking import store
    from tracking.runs import RunTracker, Terminated, guarded, record_error
    from tracking.stale import tidy

    uri = store.configure()
    attached = os.environ.get("MLFLOW_RUN_ID") or None
    try:
        store.check_store(uri)
        inputs = _Inputs(args)
    except ConfigError as exc:
        message = str(exc)
        print(f"error: {message}", file=sys.stderr)
        if attached:  # `mlflow run` made a run already: it ends FAILED with the reason on it
            client = MlflowClient()
            record_error(client, attached, message)
            client.set_terminated(attached, status="FAILED")
        return USER_ERROR

    if inputs.threads is not None:
        import torch

        torch.set_num_threads(inputs.threads)
    client = store.tracking_client()
    note = tidy(client, uri, keep={attached} if attached else set())
    if note:
        print(note, file=sys.stderr)
    if attached:
        experiment_id = client.get_run(attached).info.experiment_id
    else:
        name = args.experiment_name or os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT
        experiment_id = store.experiment_id(client, name)
    tracker = RunTracker(client, experiment_id)
    parent = None
    try:
        with guarded(tracker):
            if attached:
                parent = tracker.adopt(attached)
            else:
                parent = tracker.start(args.run_name or f"main-{time.strftime('%Y%m%d-%H%M%S')}")
            if args.work_dir:
                summary = _run_all(tracker, parent, inputs, Path(args.work_dir), args)
            else:
                with tempfile.TemporaryDirectory(prefix="speccomp-") as tmp:
                    summary = _run_all(tracker, parent, inputs, Path(tmp), args)
            tracker.finish(parent)
    except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM: the guard has ended the runs KILLED
        what = "terminated" if isinstance(exc, Terminated) else "interrupted"
        print(f"{what}: parent run {parent} and its children ended KILLED; what was logged is kept",
              file=sys.stderr)
        return TERMINATED if isinstance(exc, Terminated) else INTERRUPTED
    _print_summary(summary, inputs, client.get_run(parent).info, uri)
    return 0


def _run_all(tracker, parent: str, inputs: _Inputs, work: Path, args: argparse.Namespace):
    import pandas as pd
    import yaml

    from speccomp.core.experiment import CONFIG_FILE
    from tracking.pipeline import (
        aggregate_finals,
        flatten,
        log_dataset_inputs,
        log_mean_curves,
        log_metric_dict,
        log_params,
        log_parent_artifacts,
        run_tracked_experiment,
        set_tags,
    )

    client = tracker.client
    cfg = inputs.cfg
    params = flatten(cfg.to_dict())
    # The resolved config goes up first, so that a run stopped early still says what it was.
    client.log_text(parent, yaml.safe_dump(cfg.to_dict(), sort_keys=False), CONFIG_FILE)
    set_tags(client, parent, {
        "speccomp.role": "main",
        "seeds": ",".join(map(str, inputs.seeds)),
        "data_seeds": ",".join(map(str, inputs.data_seeds)),
        "tracked": ",".join(cfg.tracked_labels),
        "model_type": cfg.training.model_type,
    })
    log_params(client, parent, params)
    several = len(inputs.data_seeds) > 1
    summaries, trajectories = [], []
    for data_seed in inputs.data_seeds:
        sub = f"data_seed-{data_seed}" if several else None
        folder = work / sub if sub else work
        print(f"data seed {data_seed}: training seeds {', '.join(map(str, inputs.seeds))} ...", file=sys.stderr, flush=True)
        tracked = run_tracked_experiment(
            tracker, parent, cfg, data_seed, inputs.seeds, folder, params,
            log_models=not args.no_models, figures=not args.no_figures, progress=sys.stderr.isatty(),
            run_name=(lambda s, d=data_seed: f"seed-{s}-data-{d}") if several else (lambda s: f"seed-{s}"),
        )
        if data_seed == inputs.data_seeds[0]:  # the parent shows the data of its first data seed
            log_dataset_inputs(client, parent, tracked.experiment.datasets)
        log_parent_artifacts(client, parent, folder, sub)
        summaries.append(tracked.experiment.summary)
        trajectories.append(tracked.experiment.result.trajectory)
    summary = pd.concat(summaries, ignore_index=True)
    last_step = tracked.experiment.result.total_steps
    # Final means and stds at the last step; the mean curves supply every earlier step.
    log_metric_dict(client, parent, aggregate_finals(summary), step=last_step)
    log_mean_curves(client, parent, pd.concat(trajectories, ignore_index=True), skip_step=last_step)
    return summary


def _print_summary(summary, inputs: _Inputs, info, uri: str) -> None:
    from tracking.store import ui_command

    tracked = inputs.cfg.tracked_labels
    cols = [f"test/mse/{t}" for t in tracked] + [f"gap/{t}" for t in tracked if f"gap/{t}" in summary]
    table = summary[["data_seed", "seed", *cols]].copy()
    mean = table[cols].mean()
    std = table[cols].std(ddof=1) if len(table) > 1 else table[cols].std(ddof=0)
    lines = [table.to_string(index=False, float_format=lambda v: f"{v:.4f}")]
    lines.append("mean ± std: " + "   ".join(f"{c} {mean[c]:.4f} ± {std[c]:.4f}" for c in cols))
    floors = [(t, summary[f"oracle/mse/{t}"].mean()) for t in tracked if f"oracle/mse/{t}" in summary]
    if floors:
        lines.append("physical floor (oracle MSE on the test split): "
                     + "   ".join(f"{t} {v:.2g} (test MSE {mean[f'test/mse/{t}'] / v:.0f}x that)" for t, v in floors))
    print("\n".join(lines))
    print(f"\nparent run {info.run_id} ({info.run_name}) in experiment {info.experiment_id}")
    print(f"open the UI: {ui_command(uri)}")


def entry() -> None:
    sys.exit(leave(main()))


def leave(code: int) -> int:
    """After Ctrl-C or SIGTERM the runs are closed and the message printed: exit at once. The
    interpreter's own shutdown (freeing torch, MLflow, SQLAlchemy: about 1 s of CPU, 7-12 s of
    wall time measured on a loaded machine) would otherwise eat the grace period a supervisor
    gives between SIGTERM and SIGKILL. Other codes return for a normal exit."""
    if code in (INTERRUPTED, TERMINATED):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


if __name__ == "__main__":
    entry()
