"""The `nas` entry point: differentiable architecture search, tracked, retrained and compared.

    mlflow run . --env-manager local -e nas -P seeds=123,124,125
    mlflow run . --env-manager local -e nas -P config_dir=configs/raven   (the matrices domain)
    speccomp nas --seeds 123,124,125                      (the same, without `mlflow run`)

One parent run: the search (metrics `nas/tau`, `nas/train_loss`, `nas/val_loss`, `nas/entropy`,
`nas/prob/<decision>/<option>` per iteration, logged in batches), the derived architecture as
params (`nas.arch.<decision>`) and as the preset artifact `nas/architecture.yaml`, the figure
`plots/nas_probabilities.png`; then the derived architecture and the domain's reference models
retrained from scratch over the seeds on the same data, one nested child per (model, seed) tagged
`model`, compared side by side with the seed spread in `nas/comparison.csv`, as parent metrics
`compare/<model>/<metric>` and on the console:

- spectra (`configs/`): `nas`, `default` (the config's model) and the `loglinear` preset; test MSE
  per tracked component, gap, oracle efficiency;
- matrices (`configs/raven`, space `configs/nas/raven.yaml`): `nas` (model `raven_seq`), `default`
  (`raven_mlp`) and `wren` (`raven_wren`, `WREN_OVERRIDES`); in-distribution and held-out accuracy, `gap/acc`, chance.

Every input is validated before the first run is touched; a user error prints one line and exits
with code 2.
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from speccomp.core.config import ConfigError, default_config_dir, parse_seed_list
from speccomp.core.task import load_any_config
from speccomp.matrices.config import WREN_OVERRIDES
from speccomp.nas.domain import SearchDomain, domain_for_config
from speccomp.nas.space import NasSpace, load_space

DEFAULT_SPACE = "configs/nas/spectra.yaml"
DEFAULT_SPACES = {"spectra": DEFAULT_SPACE, "matrices": "configs/nas/raven.yaml"}
ARCHITECTURE_ARTIFACT = "nas/architecture.yaml"
REFERENCES: dict[str, dict[str, dict[str, list[str]]]] = {
    "spectra": {"loglinear": {"presets": ["loglinear"], "overrides": []}},
    "matrices": {"wren": {"presets": [], "overrides": list(WREN_OVERRIDES)}},
}
"""The models retrained beside `nas` and `default` per domain: name -> presets and overrides added
to the run's own."""
FLUSH_EVERY_S = 2.0


@dataclass(frozen=True)
class NasOptions:
    """What `speccomp nas` (and the MLproject `nas` entry point) hands to `run_nas`, typed by the
    front end (`speccomp_cli`); the space, the config and the ranges are checked here."""

    seeds: list[int] | None = None
    """Retraining seeds; None takes `training.seed` of the config (the project's: 123,124,125)."""
    data_seed: int = 42
    space: str | None = None
    """Search-space YAML file (decisions and search settings); None: the domain's (`DEFAULT_SPACES`)."""
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
    cfg: Any
    compare_cfgs: dict[str, Any]
    """Validated configs of the compared models other than `nas`."""
    options: NasOptions
    domain: SearchDomain

    @property
    def compared(self) -> tuple[str, ...]:
        return ("nas", *self.compare_cfgs)


def resolve(options: NasOptions) -> _Inputs:
    """Validate every input (ConfigError, one line) before any work."""
    presets = [p for p in options.presets if p]
    cfg = load_any_config(options.config_dir or None, options.overrides, presets=presets)
    domain = domain_for_config(cfg)
    space_path = Path(options.space or DEFAULT_SPACES[domain.name])
    if options.space is None and not space_path.is_file():  # run from elsewhere: the project's file
        space_path = default_config_dir().parent / space_path
    if not space_path.is_file():
        raise ConfigError(f"space: {space_path}: file not found; allowed: a search-space YAML such as "
                          f"{DEFAULT_SPACES[domain.name]}")
    space = load_space(space_path).with_search(
        architecture_search_iterations=options.architecture_search_iterations,
        architecture_learning_rate=options.architecture_learning_rate,
    )
    seeds = parse_seed_list(options.seeds if options.seeds is not None else cfg.training.seeds, "seeds")
    data_seed = parse_seed_list([options.data_seed], "data_seed")[0]
    search_seed = parse_seed_list([options.search_seed], "search_seed")[0] if options.search_seed is not None else seeds[0]
    if "val" not in cfg.data.resolved_splits():
        raise ConfigError("data.validation.n_samples: is 0; the search needs the in-distribution validation split (> 0)")
    domain.check(space, domain.features_of(cfg))
    compare = {"default": cfg}
    for name, extra in REFERENCES[domain.name].items():
        compare[name] = load_any_config(options.config_dir or None, [*options.overrides, *extra["overrides"]],
                                        presets=[*presets, *extra["presets"]])
    return _Inputs(seeds, data_seed, search_seed, space, cfg, compare, options, domain)


def run_nas(options: NasOptions) -> int:
    """The whole pipeline; returns the exit code (0, 2 user error, 130/143 interrupted)."""
    from tracking import store
    from tracking.runs import RunTracker, guarded, parent_experiment, refused, stopped

    uri = store.configure()
    attached = os.environ.get("MLFLOW_RUN_ID") or None
    try:
        store.check_store(uri)
        inputs = resolve(options)
    except ConfigError as exc:
        return refused(str(exc))  # `mlflow run` made a run already: it ends FAILED with the reason

    from speccomp.core.threads import apply_threads

    apply_threads(options.threads)  # one unless told, as every command (speccomp.core.threads)
    client = store.tracking_client()
    experiment_id = parent_experiment(client, uri, options.experiment_name, attached)
    tracker = RunTracker(client, experiment_id)
    parent = None
    try:
        with guarded(tracker):
            parent = tracker.open_parent(options.run_name or f"nas-{time.strftime('%Y%m%d-%H%M%S')}", attached)
            with tempfile.TemporaryDirectory(prefix="speccomp-nas-") as tmp:
                outcome = _run_all(tracker, parent, inputs, Path(tmp))
            tracker.finish(parent)
    except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM: the guard has ended the runs KILLED
        return stopped(exc, f"parent run {parent} and its children ended KILLED")
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

    from speccomp.core.task import task_for
    from speccomp.nas import preset_yaml, run_search
    from speccomp.nas.figures import PROBABILITIES_FIGURE, draw_probabilities
    from tracking.pipeline import log_dataset_inputs, log_params, set_tags

    client, cfg, space = tracker.client, inputs.cfg, inputs.space
    settings = space.search
    client.log_text(parent, yaml.safe_dump(cfg.to_dict(), sort_keys=False), "config.yaml")
    set_tags(client, parent, {
        "speccomp.role": "nas", "seeds": ",".join(map(str, inputs.seeds)), "data_seed": inputs.data_seed,
        "search_seed": inputs.search_seed, "space": str(space.path), "sampling": settings.sampling,
        "domain": inputs.domain.name,
    })
    log_params(client, parent, {  # prefixed: `mlflow run` logs its own -P parameters unprefixed
        "nas.seeds": ",".join(map(str, inputs.seeds)), "nas.data_seed": str(inputs.data_seed),
        "nas.search_seed": str(inputs.search_seed), "nas.space": str(space.path),
        **{f"nas.{k}": str(v) for k, v in settings.model_dump().items()},
        "nas.decisions": ",".join(space.decision_names),
    })
    print(f"data seed {inputs.data_seed}: generating ...", file=sys.stderr, flush=True)
    datasets = task_for(cfg).generate(cfg, inputs.data_seed)
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
              f"mlflow run . --env-manager local{_config_dir_flag(inputs)} -P preset=<this file>\n\nprobabilities at the end:\n"
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


def _config_dir_flag(inputs: _Inputs) -> str:
    """` -P config_dir=<dir>` when the run's config folder is not the project's default."""
    return f" -P config_dir={inputs.options.config_dir}" if inputs.options.config_dir not in (None, "configs") else ""


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
        "nas": load_any_config(options.config_dir or None, options.overrides,
                               presets=[*[p for p in options.presets if p], arch_path]),
        **inputs.compare_cfgs,
    }
    data_sections = {k: v for k, v in inputs.cfg.to_dict().items() if k != "training"}
    rows = []
    for model in inputs.compared:
        cfg = configs[model]
        same_data = {k: v for k, v in cfg.to_dict().items() if k != "training"} == data_sections
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
    table = comparison_table(per_seed, compared_columns(inputs.cfg))
    path = work / "nas" / "comparison.csv"
    table.to_csv(path)
    per_seed.to_csv(work / "nas" / "comparison_per_seed.csv", index=False)
    client.log_artifact(parent, str(path), "nas")
    client.log_artifact(parent, str(work / "nas" / "comparison_per_seed.csv"), "nas")
    metrics = {f"compare/{model}/{col}": float(v) for model, row in table.iterrows() for col, v in row.items()}
    log_metric_dict(client, parent, metrics)
    log_params(client, parent, {"compared_models": ",".join(inputs.compared)})
    return table


def compared_columns(cfg) -> list[str]:
    """The per-seed measures the comparison reports: spectra, per tracked component, the test MSE,
    the gap and the oracle efficiency; matrices the in-distribution and held-out accuracy and
    `gap/acc`."""
    if domain_for_config(cfg).name == "matrices":
        return ["val/acc", "test/acc", "gap/acc"]
    return [f"{kind}/{label}" for label in cfg.tracked_labels for kind in ("test/mse", "gap", "oracle/efficiency")]


def comparison_table(per_seed, columns: list[str]):
    """One row per model: across-seed mean and std (the seed spread) of each of `columns` (e.g.
    `compared_columns(cfg)`)."""
    import pandas as pd

    out = {}
    for model, group in per_seed.groupby("model", sort=False):
        row = {}
        for name in columns:
            if name in group:
                values = pd.to_numeric(group[name], errors="coerce").dropna()
                row[name] = float(values.mean())
                row[f"std/{name}"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
        out[model] = row
    return pd.DataFrame.from_dict(out, orient="index")


def _print_outcome(outcome: _Outcome, inputs: _Inputs, info, uri: str) -> None:
    from tracking.store import ui_command

    lines = [f"derived architecture ({outcome.iterations} iterations, {outcome.search_seconds:.1f} s; "
             f"artifact {ARCHITECTURE_ARTIFACT}):"]
    for decision, option in outcome.choices.items():
        probs = outcome.probabilities[decision]
        runner_up = max((p for o, p in probs.items() if o != option), default=0.0)
        lines.append(f"  {decision:<12} {option:<16} p = {probs[option]:.2f} (uniform {1 / len(probs):.2f}, "
                     f"next best {runner_up:.2f})")
    lines.append("")
    lines.append(f"retrained over seeds {','.join(map(str, inputs.seeds))} (mean ± std across seeds):")
    if inputs.domain.name == "matrices":
        lines += _matrices_lines(outcome.table, inputs)
    else:
        lines += _spectra_lines(outcome.table, inputs.cfg.tracked_labels)
    print("\n".join(lines))
    print(f"\nparent run {info.run_id} ({info.run_name}) in experiment {info.experiment_id}")
    print(f"open the UI: {ui_command(uri)}")


def _aligned(header: list[str], body: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in [header, *body]]


def _matrices_lines(table, inputs: _Inputs) -> list[str]:
    cfg = inputs.cfg
    models = {name: c.training.model_type for name, c in inputs.compare_cfgs.items()}
    header = ["model", "in-distribution acc", "held-out acc", "gap/acc"]
    body = []
    for model, row in table.iterrows():
        name = f"{model} ({models.get(str(model), 'raven_seq')})"
        body.append([name, *(f"{row.get(c, math.nan):.3f} ± {row.get('std/' + c, math.nan):.3f}"
                             for c in ("val/acc", "test/acc", "gap/acc"))])
    held = ", ".join(p.label for p in cfg.data.heldout_pairs) or "none"
    return [*_aligned(header, body),
            f"chance accuracy {cfg.chance:.3f} ({cfg.matrices.n_candidates} candidates); in-distribution = val, "
            f"held out = test ({held}); gap/acc = in-distribution - held-out accuracy"]


def _spectra_lines(table, labels: list[str]) -> list[str]:
    header = ["model"] + [f"test MSE {label}" for label in labels] + [f"gap {label}" for label in labels] \
        + [f"efficiency {label}" for label in labels]
    body = []
    for model, row in table.iterrows():
        cells = [str(model)]
        for name in [*(f"test/mse/{x}" for x in labels), *(f"gap/{x}" for x in labels)]:
            cells.append(f"{row.get(name, math.nan):.4g} ± {row.get('std/' + name, math.nan):.2g}")
        for x in labels:
            cells.append(f"{row.get(f'oracle/efficiency/{x}', math.nan):.3f}")
        body.append(cells)
    return [*_aligned(header, body),
            "gap = test MSE on the novel combination / in-distribution MSE; efficiency = oracle MSE / test MSE "
            "(1 = the physical floor)"]
