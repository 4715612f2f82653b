"""The `nas` entry point: differentiable architecture search, tracked, retrained and compared.

    mlflow run . --env-manager local -e nas -P seeds=123,124,125
    speccomp nas --seeds 123,124,125                      (the same, without `mlflow run`)

One parent run: the search (metrics `nas/tau`, `nas/train_loss`, `nas/val_loss`, `nas/entropy`,
`nas/prob/<decision>/<option>` per iteration, logged in batches), the derived architecture as
params (`nas.arch.<decision>`) and as the preset artifact `nas/architecture.yaml`, the figure
`plots/nas_probabilities.png`; then the derived architecture, the default config and the
`loglinear` preset retrained from scratch over the seeds on the same data, one nested child per
(model, seed) tagged `model` (`nas`, `default`, `loglinear`), compared side by side (test MSE per
tracked component, gap, oracle efficiency, seed spread) in `nas/comparison.csv`, as parent metrics
`compare/<model>/<metric>` and on the console. Every input is validated before the first run is
touched; a user error prints one line and exits with code 2.
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from speccomp.core.config import ConfigError, ExperimentConfig, load_config, parse_seed_list
from speccomp.nas.space import NasSpace, load_space
from tracking.main import DEFAULT_EXPERIMENT, INTERRUPTED, TERMINATED, USER_ERROR

DEFAULT_SPACE = "configs/nas/spectra.yaml"
ARCHITECTURE_ARTIFACT = "nas/architecture.yaml"
COMPARED = ("nas", "default", "loglinear")
FLUSH_EVERY_S = 2.0


@dataclass(frozen=True)
class NasOptions:
    """What `speccomp nas` (and the MLproject `nas` entry point) hands to `run_nas`, typed by the
    front end (`speccomp_cli`); the space, the config and the ranges are checked here."""

    seeds: list[int] | None = None
    """Retraining seeds; None takes `training.seed` of the config (the project's: 123,124,125)."""
    data_seed: int = 42
    space: str = DEFAULT_SPACE
    """Search-space YAML file (decisions and search settings)."""
    architecture_search_iterations: int | None = None
    """Overrides the space file's search.architecture_search_iterations (> 0)."""
    architecture_learning_rate: float | None = None
    """Overrides the space file's search.architecture_learning_rate (> 0)."""
    search_seed: int | None = None
    """Seed of the search (supernet weights, batches, Gumbel noise); default: the first retraining seed."""
    config_dir: str | None = None
    presets: list[str] = field(default_factory=list)
    """Partial configs merged under every compared model (e.g. smoke)."""
    overrides: list[str] = field(default_factory=list)
    """Dotted KEY=VALUE items, already split, applied to every compared model."""
    threads: int | None = None
    experiment_name: str | None = None
    run_name: str | None = None
    log_models: bool = False
    """Log every retrained model the MLflow way (off by default: nine models take long)."""


@dataclass
class _Inputs:
    seeds: list[int]
    data_seed: int
    search_seed: int
    space: NasSpace
    cfg: ExperimentConfig
    compare_cfgs: dict[str, ExperimentConfig]
    """Validated configs of the compared models other than `nas`."""
    options: NasOptions


def resolve(options: NasOptions) -> _Inputs:
    """Validate every input (ConfigError, one line) before any work."""
    space_path = Path(options.space or DEFAULT_SPACE)
    if not space_path.is_file():
        raise ConfigError(f"space: {space_path}: file not found; allowed: a search-space YAML such as {DEFAULT_SPACE}")
    space = load_space(space_path).with_search(
        architecture_search_iterations=options.architecture_search_iterations,
        architecture_learning_rate=options.architecture_learning_rate,
    )
    presets = [p for p in options.presets if p]
    cfg = load_config(options.config_dir or None, options.overrides, presets=presets)
    seeds = parse_seed_list(options.seeds if options.seeds is not None else cfg.training.seeds, "seeds")
    data_seed = parse_seed_list([options.data_seed], "data_seed")[0]
    search_seed = parse_seed_list([options.search_seed], "search_seed")[0] if options.search_seed is not None else seeds[0]
    if "val" not in cfg.data.resolved_splits():
        raise ConfigError("data.validation.n_samples: is 0; the search needs the in-distribution validation split (> 0)")
    space.check_bins(cfg.physics.n_bins)
    compare = {"default": cfg,
               "loglinear": load_config(options.config_dir or None, options.overrides, presets=[*presets, "loglinear"])}
    return _Inputs(seeds, data_seed, search_seed, space, cfg, compare, options)


def run_nas(options: NasOptions) -> int:
    """The whole pipeline; returns the exit code (0, 2 user error, 130/143 interrupted)."""
    from tracking import store
    from tracking.runs import RunTracker, Terminated, fail_attached_run, guarded

    uri = store.configure()
    attached = os.environ.get("MLFLOW_RUN_ID") or None
    try:
        store.check_store(uri)
        inputs = resolve(options)
    except ConfigError as exc:
        message = str(exc)
        print(f"error: {message}", file=sys.stderr)
        fail_attached_run(message)  # `mlflow run` made a run already: it ends FAILED with the reason
        return USER_ERROR

    if options.threads is not None:
        import torch

        torch.set_num_threads(options.threads)
    client = store.tracking_client()
    if attached:
        experiment_id = client.get_run(attached).info.experiment_id
    else:
        name = options.experiment_name or os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT
        experiment_id = store.experiment_id(client, name)
    tracker = RunTracker(client, experiment_id)
    parent = None
    try:
        with guarded(tracker):
            parent = tracker.adopt(attached) if attached else tracker.start(options.run_name or f"nas-{time.strftime('%Y%m%d-%H%M%S')}")
            with tempfile.TemporaryDirectory(prefix="speccomp-nas-") as tmp:
                outcome = _run_all(tracker, parent, inputs, Path(tmp))
            tracker.finish(parent)
    except KeyboardInterrupt as exc:
        what = "terminated" if isinstance(exc, Terminated) else "interrupted"
        print(f"{what}: parent run {parent} and its children ended KILLED; what was logged is kept", file=sys.stderr)
        return TERMINATED if isinstance(exc, Terminated) else INTERRUPTED
    _print_outcome(outcome, inputs, client.get_run(parent).info, uri)
    return 0


class _BatchedMetrics:
    """Per-iteration search metrics, sent with log_batch every FLUSH_EVERY_S and at the end."""

    def __init__(self, client, run_id: str):
        self.client, self.run_id = client, run_id
        self.pending: list = []
        self.last = time.monotonic()

    def __call__(self, iteration: int, metrics: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.pending.extend(Metric(k, v, now, iteration) for k, v in metrics.items() if math.isfinite(v))
        if time.monotonic() - self.last >= FLUSH_EVERY_S:
            self.flush()

    def flush(self) -> None:
        for start in range(0, len(self.pending), 1000):
            self.client.log_batch(self.run_id, metrics=self.pending[start : start + 1000])
        self.pending.clear()
        self.last = time.monotonic()


@dataclass
class _Outcome:
    choices: dict[str, str]
    probabilities: dict[str, dict[str, float]]
    preset_text: str
    table: object  # pandas DataFrame, one row per compared model
    search_seconds: float
    iterations: int


def _run_all(tracker, parent: str, inputs: _Inputs, work: Path) -> _Outcome:
    import yaml

    from speccomp.core.data import generate_datasets
    from speccomp.nas import preset_yaml, run_search
    from speccomp.nas.figures import PROBABILITIES_FIGURE, draw_probabilities
    from tracking.pipeline import log_dataset_inputs, log_params, set_tags

    client, cfg, space = tracker.client, inputs.cfg, inputs.space
    settings = space.search
    client.log_text(parent, yaml.safe_dump(cfg.to_dict(), sort_keys=False), "config.yaml")
    set_tags(client, parent, {
        "speccomp.role": "nas", "seeds": ",".join(map(str, inputs.seeds)), "data_seed": inputs.data_seed,
        "search_seed": inputs.search_seed, "space": str(space.path), "sampling": settings.sampling,
    })
    log_params(client, parent, {  # prefixed: `mlflow run` logs its own -P parameters unprefixed
        "nas.seeds": ",".join(map(str, inputs.seeds)), "nas.data_seed": str(inputs.data_seed),
        "nas.search_seed": str(inputs.search_seed), "nas.space": str(space.path),
        **{f"nas.{k}": str(v) for k, v in settings.model_dump().items()},
        "nas.decisions": ",".join(space.decision_names),
    })
    print(f"data seed {inputs.data_seed}: generating ...", file=sys.stderr, flush=True)
    datasets = generate_datasets(cfg, inputs.data_seed)
    log_dataset_inputs(client, parent, datasets)
    print(f"searching {space.path} ({settings.architecture_search_iterations} iterations, {settings.sampling}, "
          f"seed {inputs.search_seed}) ...", file=sys.stderr, flush=True)
    logger = _BatchedMetrics(client, parent)
    step = max(1, settings.architecture_search_iterations // 10)

    def callback(iteration: int, metrics: dict[str, float]) -> None:
        logger(iteration, metrics)
        if iteration % step == 0:
            print(f"  iteration {iteration}: tau {metrics['nas/tau']:.2f}  train {metrics['nas/train_loss']:.4f}  "
                  f"val {metrics['nas/val_loss']:.4f}  entropy {metrics['nas/entropy']:.3f}", file=sys.stderr, flush=True)

    result = run_search(space, datasets["train"], datasets["val"], inputs.search_seed, callback=callback)
    logger.flush()

    header = (f"Architecture derived by `nas` (parent run {parent}): argmax of softmax(alpha) (zero left out, as in "
              f"DARTS) after "
              f"{settings.architecture_search_iterations} {settings.sampling} iterations on {space.path}, search seed "
              f"{inputs.search_seed}, data seed {inputs.data_seed}.\nA partial config: "
              f"mlflow run . --env-manager local -P preset=<this file>\n\nprobabilities at the end:\n"
              + "\n".join(f"  {d}: " + ", ".join(f"{o} {p:.2f}" for o, p in probs.items())
                          for d, probs in result.probabilities().items()))
    text = preset_yaml(result.preset, header)
    arch_path = work / ARCHITECTURE_ARTIFACT
    arch_path.parent.mkdir(parents=True, exist_ok=True)
    arch_path.write_text(text)
    client.log_artifact(parent, str(arch_path), "nas")
    _log_history(client, parent, result, work)
    log_params(client, parent, {f"nas.arch.{k}": v for k, v in result.choices.items()}
               | {"nas.arch.layers": _layers_text(result.preset)})
    figure = draw_probabilities(space, result.alpha_trajectory, work / "plots" / PROBABILITIES_FIGURE, result.choices)
    client.log_artifact(parent, str(figure), "plots")
    client.log_metric(parent, "nas/search_seconds", result.seconds)

    table = _retrain_and_compare(tracker, parent, inputs, work, datasets, arch_path)
    return _Outcome(result.choices, result.probabilities(), text, table, result.seconds,
                    settings.architecture_search_iterations)


def _layers_text(preset: dict) -> str:
    training = preset["training"]
    parts = [f"input {training['input_transform']}"]
    for layer in training["seq"]["layers"]:
        op = layer["op"]
        if op == "conv":
            parts.append(f"conv{layer['kernel']}x{layer['width']} {layer['activation']}")
        elif op == "dense":
            parts.append(f"dense{layer['width']} {layer['activation']}")
        else:
            parts.append(op)
    return " -> ".join([*parts, "linear"])


def _log_history(client, run_id: str, result, work: Path) -> None:
    import pandas as pd

    from speccomp.nas import metric_names

    frame = pd.DataFrame(result.history.numpy(), columns=metric_names(result.space))
    frame.insert(0, "iteration", range(1, len(frame) + 1))
    path = work / "nas" / "search_history.csv"
    frame.to_csv(path, index=False)
    client.log_artifact(run_id, str(path), "nas")


def _retrain_and_compare(tracker, parent: str, inputs: _Inputs, work: Path, datasets, arch_path: Path):
    import pandas as pd

    from tracking.pipeline import flatten, log_metric_dict, log_params, run_tracked_experiment

    client = tracker.client
    options = inputs.options
    configs = {
        "nas": load_config(options.config_dir or None, options.overrides,
                           presets=[*[p for p in options.presets if p], arch_path]),
        **inputs.compare_cfgs,
    }
    rows = []
    for model in COMPARED:
        cfg = configs[model]
        same_data = cfg.physics == inputs.cfg.physics and cfg.data == inputs.cfg.data
        print(f"retraining {model} ({cfg.training.model_type}) for seeds {', '.join(map(str, inputs.seeds))} ...",
              file=sys.stderr, flush=True)
        tracked = run_tracked_experiment(
            tracker, parent, cfg, inputs.data_seed, inputs.seeds, work / "retrain" / model,
            {**flatten(cfg.to_dict()), "model": model}, tags={"model": model, "speccomp.role": "nas-retrain"},
            log_models=options.log_models, figures=False, run_name=lambda s, m=model: f"{m}-seed-{s}",
            datasets=datasets if same_data else None,
        )
        summary = tracked.experiment.summary
        summary.insert(0, "model", model)
        rows.append(summary)
    per_seed = pd.concat(rows, ignore_index=True)
    table = comparison_table(per_seed, inputs.cfg.tracked_labels)
    path = work / "nas" / "comparison.csv"
    table.to_csv(path)
    per_seed.to_csv(work / "nas" / "comparison_per_seed.csv", index=False)
    client.log_artifact(parent, str(path), "nas")
    client.log_artifact(parent, str(work / "nas" / "comparison_per_seed.csv"), "nas")
    metrics = {f"compare/{model}/{col}": float(v) for model, row in table.iterrows() for col, v in row.items()}
    log_metric_dict(client, parent, metrics)
    log_params(client, parent, {"compared_models": ",".join(COMPARED)})
    return table


def comparison_table(per_seed, labels: list[str]):
    """One row per model: across-seed mean and std (the seed spread) of the test MSE and the gap
    per tracked component, and the mean oracle efficiency (oracle MSE / test MSE)."""
    import pandas as pd

    out = {}
    for model, group in per_seed.groupby("model", sort=False):
        row = {}
        for label in labels:
            for name in (f"test/mse/{label}", f"gap/{label}", f"oracle/efficiency/{label}"):
                if name in group:
                    values = pd.to_numeric(group[name], errors="coerce").dropna()
                    row[name] = float(values.mean())
                    row[f"std/{name}"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
        out[model] = row
    return pd.DataFrame.from_dict(out, orient="index")


def _print_outcome(outcome: _Outcome, inputs: _Inputs, info, uri: str) -> None:
    from tracking.store import ui_command

    labels = inputs.cfg.tracked_labels
    lines = [f"derived architecture ({outcome.iterations} iterations, {outcome.search_seconds:.1f} s; "
             f"artifact {ARCHITECTURE_ARTIFACT}):"]
    for decision, option in outcome.choices.items():
        probs = outcome.probabilities[decision]
        runner_up = max((p for o, p in probs.items() if o != option), default=0.0)
        lines.append(f"  {decision:<12} {option:<16} p = {probs[option]:.2f} (uniform {1 / len(probs):.2f}, "
                     f"next best {runner_up:.2f})")
    lines.append("")
    lines.append(f"retrained over seeds {','.join(map(str, inputs.seeds))} (mean ± std across seeds):")
    header = ["model"] + [f"test MSE {label}" for label in labels] + [f"gap {label}" for label in labels] \
        + [f"efficiency {label}" for label in labels]
    table = outcome.table
    body = []
    for model, row in table.iterrows():
        cells = [str(model)]
        for name in [*(f"test/mse/{x}" for x in labels), *(f"gap/{x}" for x in labels)]:
            cells.append(f"{row.get(name, math.nan):.4g} ± {row.get('std/' + name, math.nan):.2g}")
        for x in labels:
            cells.append(f"{row.get(f'oracle/efficiency/{x}', math.nan):.3f}")
        body.append(cells)
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    for r in [header, *body]:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))
    lines.append("gap = test MSE on the novel combination / in-distribution MSE; efficiency = oracle MSE / test MSE "
                 "(1 = the physical floor)")
    print("\n".join(lines))
    print(f"\nparent run {info.run_id} ({info.run_name}) in experiment {info.experiment_id}")
    print(f"open the UI: {ui_command(uri)}")
