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

What differs between domains (the default space, the reference models, the readings, the derived
model) is asked of the domain's object (`speccomp.nas.domain.SearchDomain`), never tested here.

Every input is validated before the first run is touched; a user error prints one line and exits
with code 2.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from speccomp.core.config import ConfigError, default_config_dir, parse_seed_list
from speccomp.core.task import load_any_config
from speccomp.nas.domain import SearchDomain, domain_for_config
from speccomp.nas.space import NasSpace, load_space

ARCHITECTURE_ARTIFACT = "nas/architecture.yaml"
FLUSH_EVERY_S = 2.0
RETRAIN_OVERRIDES = ("training.checkpoint_ratio=0.25", "training.checkpoint_retention=last")
"""The retrained models (derived, baselines, the best random draw) are judged by their final
metrics: 5 evaluations on the way instead of the config's 20, and only the last checkpoint kept
(evaluation draws no random numbers, so the final metrics are the same; the checkpoint
evaluations were a quarter of the retraining time). A `--set training.checkpoint_*` wins."""
CURVE_POINTS = 200
"""Points per search curve in MLflow: every ceil(T / CURVE_POINTS)-th iteration and the last (the
store writes one row per metric and step: the 38 curves of 1,000 iterations of three searches,
114,000 rows, took 45 s of a 4-minute run; the chart shows a few hundred points anyway). Every
iteration is in the run's `nas/search_history.csv`."""
DEFAULT_SEARCH_SEEDS = 3


@dataclass(frozen=True)
class NasOptions:
    """What `speccomp nas` (and the MLproject `nas` entry point) hands to `run_nas`, typed by the
    front end (`speccomp_cli`); the space, the config and the ranges are checked here."""

    seeds: list[int] | None = None
    """Retraining seeds; None takes `training.seed` of the config (the project's: 123,124,125)."""
    data_seed: int = 42
    space: str | None = None
    """Search-space YAML file (decisions and search settings); None: the domain's (`SearchDomain.default_space`)."""
    architecture_search_iterations: int | None = None
    """Overrides the space file's search.architecture_search_iterations (> 0)."""
    architecture_learning_rate: float | None = None
    """Overrides the space file's search.architecture_learning_rate (> 0)."""
    search_seeds: list[int] | None = None
    """Seeds of the searches (supernet weights, batches, Gumbel noise), one search each; None:
    three, counting up from the first retraining seed."""
    random_draws: int | None = None
    """Architectures random search draws (>= 1); None: as many as the searches' gradient steps buy."""
    random_seed: int | None = None
    """Seed of the random draws; None: the first search seed."""
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
    search_seeds: list[int]
    random_seed: int
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
    if options.space is None and domain.default_space is None:
        raise ConfigError(f"space: none given and the {domain.name} domain has no default; allowed: a search-space YAML")
    space_path = Path(options.space or domain.default_space)
    if options.space is None and not space_path.is_file():  # run from elsewhere: the project's file
        space_path = default_config_dir().parent / space_path
    if not space_path.is_file():
        example = f" such as {domain.default_space}" if domain.default_space else " file"
        raise ConfigError(f"space: {space_path}: file not found; allowed: a search-space YAML{example}")
    space = load_space(space_path).with_search(
        architecture_search_iterations=options.architecture_search_iterations,
        architecture_learning_rate=options.architecture_learning_rate,
    )
    seeds = parse_seed_list(options.seeds if options.seeds is not None else cfg.training.seeds, "seeds")
    data_seed = parse_seed_list([options.data_seed], "data_seed")[0]
    search_seeds = (parse_seed_list(options.search_seeds, "search_seeds") if options.search_seeds is not None
                    else [seeds[0] + k for k in range(DEFAULT_SEARCH_SEEDS)])
    random_seed = parse_seed_list([options.random_seed], "random_seed")[0] if options.random_seed is not None \
        else search_seeds[0]
    if options.random_draws is not None and (isinstance(options.random_draws, bool) or options.random_draws < 1):
        raise ConfigError(f"random_draws: {options.random_draws}; allowed: an integer >= 1 (or auto: the searches' budget)")
    if "val" not in cfg.data.resolved_splits():
        raise ConfigError("data.validation.n_samples: is 0; the search needs the in-distribution validation split (> 0)")
    domain.check(space, domain.features_of(cfg))
    compare = {"default": load_any_config(options.config_dir or None, [*RETRAIN_OVERRIDES, *options.overrides],
                                          presets=presets)}
    for name, (preset, overrides) in domain.reference_models.items():
        compare[name] = load_any_config(options.config_dir or None, [*RETRAIN_OVERRIDES, *options.overrides, *overrides],
                                        presets=[*presets, *([preset] if preset else [])])
    return _Inputs(seeds, data_seed, search_seeds, random_seed, space, cfg, compare, options, domain)


def run_nas(options: NasOptions) -> int:
    """The whole pipeline; returns the exit code (0, 2 user error, 130/143 interrupted)."""
    from tracking import store
    from tracking.progress import heartbeat
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
        with guarded(tracker), heartbeat("nas"):
            parent = tracker.open_parent(options.run_name or default_run_name(inputs), attached)
            with tempfile.TemporaryDirectory(prefix="speccomp-nas-") as tmp:
                outcome = _run_all(tracker, parent, inputs, Path(tmp))
            tracker.finish(parent)
    except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM: the guard has ended the runs KILLED
        return stopped(exc, f"parent run {parent} and its children ended KILLED")
    _print_outcome(outcome, inputs, client.get_run(parent).info, uri)
    return 0


def default_run_name(inputs: _Inputs) -> str:
    """`nas spectra 1000 it seeds 123-125` (`nas raven ...` on the matrices domain)."""
    from tracking.describe import domain_word, run_name

    return run_name("nas", domain_word(inputs.domain.name),
                    f"{inputs.space.search.architecture_search_iterations} it", seeds=inputs.seeds)


class _BatchedMetrics:
    """Search metrics of every `every`-th iteration and of iteration `last`, sent with log_batch
    every FLUSH_EVERY_S and at the end."""

    def __init__(self, client, run_id: str, every: int = 1, last: int = 0):
        self.client, self.run_id = client, run_id
        self.every, self.final = every, last
        self.pending: list = []
        self.last = time.monotonic()

    def __call__(self, iteration: int, metrics: dict[str, float]) -> None:
        from mlflow.entities import Metric

        if iteration % self.every and iteration != self.final:
            return
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
    searches: list  # _Search per search seed
    compared: Any  # _Compared
    budget: Any  # _Budget
    best_search: int


def _run_all(tracker, parent: str, inputs: _Inputs, work: Path) -> _Outcome:
    import yaml

    from speccomp.core.task import task_for
    from tracking.pipeline import log_dataset_inputs, log_params, set_tags
    from tracking.progress import say

    client, cfg, space = tracker.client, inputs.cfg, inputs.space
    settings = space.search
    client.log_text(parent, yaml.safe_dump(cfg.to_dict(), sort_keys=False), "config.yaml")
    set_tags(client, parent, {"speccomp.role": "nas", "domain": inputs.domain.name,
                              "seeds": ",".join(map(str, inputs.seeds))})  # a tag for the saved view, not a param
    log_params(client, parent, {  # prefixed: `mlflow run` logs its own -P parameters unprefixed
        "nas.data_seed": str(inputs.data_seed),
        "nas.search_seeds": ",".join(map(str, inputs.search_seeds)), "nas.space": str(space.path),
        "nas.random_seed": str(inputs.random_seed),
        **{f"nas.{k}": str(v) for k, v in settings.model_dump().items()},
        "nas.decisions": ",".join(space.decision_names),
    })
    say(f"data seed {inputs.data_seed}: generating ...")
    datasets = task_for(cfg).generate(cfg, inputs.data_seed)
    log_dataset_inputs(client, parent, datasets)
    searches = [_search(tracker, parent, inputs, datasets, seed, work) for seed in inputs.search_seeds]
    budget = _budget(inputs, datasets, searches)
    log_params(client, parent, {"nas.random_draws": str(budget.draws), "nas.budget_measure": "gradient steps"})
    compared = _retrain_and_compare(tracker, parent, inputs, work, datasets, searches, budget)
    best = searches[compared.best_search]
    arch_path = work / ARCHITECTURE_ARTIFACT
    arch_path.parent.mkdir(parents=True, exist_ok=True)
    arch_path.write_text(best.preset_text)
    client.log_artifact(parent, str(arch_path), "nas")
    log_params(client, parent, {f"nas.arch.{k}": v for k, v in best.result.choices.items()}
               | {"nas.arch.layers": _layers_text(best.result.preset), "nas.arch.search_seed": str(best.seed)})
    outcome = _Outcome(searches, compared, budget, compared.best_search)
    _describe(client, parent, outcome, inputs)
    return outcome


def _describe(client, parent: str, outcome: _Outcome, inputs: _Inputs) -> None:
    """The parent's description (verdict first, the decisions with runner-up and an explicit
    undecided, the comparison) and its headline metrics for the saved view."""
    from tracking.describe import description, headline_metrics, set_description, sig
    from tracking.pipeline import log_metric_dict

    compared, dom, cfg = outcome.compared, inputs.domain, inputs.cfg
    ratio = sum(s.entropy_ratio for s in outcome.searches) / len(outcome.searches)
    paired = compared.paired["val"]
    quartile = int((compared.ranks[f"better/{dom.selection_metric}"] <= 0.25).sum())
    moved = "alpha moved" if ratio <= 0.8 else "alpha did NOT move (undecided)"
    better = "better" if paired["median_difference"] < 0 else "worse"
    verdict = (f"{moved} (entropy {sig(ratio)} x start); the derived architecture validates {better} than the best of "
               f"{outcome.budget.draws} random draws (p = {sig(paired['p'])}), best quartile for {quartile}/"
               f"{len(compared.ranks)} search seeds")
    best = outcome.searches[outcome.best_search]
    rows = [[r["decision"], r["choice"], sig(r["p"]), f"{r['runner_up']} {sig(r['p_runner_up'])}", sig(r["uniform"]),
             "yes" if r["decided"] else "undecided"] for r in best.table]
    columns = [c for c in dom.reading_columns(cfg) if c in compared.table.columns]
    table_rows = "\n".join("| " + " | ".join([str(m)] + [sig(row.get(c)) for c in columns]) + " |"
                           for m, row in compared.table.iterrows())
    notes = [f"Search seed {best.seed} (the best on validation); decided: entropy <= 0.8 log K.",
             "| model | " + " | ".join(columns) + " |\n|" + " --- |" * (len(columns) + 1) + "\n" + table_rows,
             f"Kendall tau, supernet vs retrained validation error, per search seed: "
             f"{', '.join(sig(t) for t in compared.kendall_taus)}. Budget in gradient steps: searches "
             f"{outcome.budget.search_steps}, random search {outcome.budget.draws} x {outcome.budget.steps_per_draw}."]
    set_description(client, parent, description(verdict, ["decision", "choice", "p", "runner-up", "uniform",
                                                           "decided"], rows, notes))
    nas_row = compared.table.loc["nas"].to_dict()
    values = {**nas_row, "headline/ratio_to_default": nas_row.get(dom.test_metric, float("nan"))
              / compared.table.loc["default"].get(dom.test_metric, float("nan"))}
    log_metric_dict(client, parent, headline_metrics(dom.name, values, getattr(cfg, "tracked_labels", ()),
                                                     getattr(cfg, "chance", None)))


@dataclass
class _Search:
    seed: int
    run_id: str
    result: Any  # SearchResult
    table: list[dict]
    """`decision_table` rows."""
    preset_path: Path
    preset_text: str

    @property
    def entropy_ratio(self) -> float:
        """Mean entropy of the decisions over its starting value (mean log K)."""
        return sum(r["entropy"] for r in self.table) / sum(r["log_k"] for r in self.table)

    @property
    def decided(self) -> int:
        return sum(r["decided"] for r in self.table)


def _search(tracker, parent: str, inputs: _Inputs, datasets, seed: int, work: Path) -> _Search:
    """One search, tracked as the nested run `search-seed-<seed>`: its per-iteration curves, the
    derived preset, the decision table (`nas/decisions.csv`) and the probabilities figure."""
    from speccomp.nas import decision_table, preset_yaml, run_search
    from speccomp.nas.figures import PROBABILITIES_FIGURE, draw_probabilities
    from tracking.pipeline import log_metric_dict, log_params
    from tracking.progress import Progress, say

    client, space, settings = tracker.client, inputs.space, inputs.space.search
    run_id = tracker.start(f"search-seed-{seed}", parent_id=parent, tags={
        "speccomp.role": "nas-search", "search_seed": str(seed), "data_seed": str(inputs.data_seed)})
    log_params(client, run_id, {"search_seed": str(seed), **{f"nas.{k}": str(v) for k, v in settings.model_dump().items()}})
    say(f"search seed {seed}: {settings.architecture_search_iterations} {settings.sampling} iterations on "
        f"{space.path} (the first {round(settings.warmup_fraction * 100)} % weights only) ...")
    n_iter = settings.architecture_search_iterations
    logger = _BatchedMetrics(client, run_id, every=math.ceil(n_iter / CURVE_POINTS), last=n_iter)
    bar = Progress(f"search seed {seed}", total=settings.architecture_search_iterations, unit="iteration",
                   after=f"logging search seed {seed}")

    def callback(iteration: int, metrics: dict[str, float]) -> None:
        logger(iteration, metrics)
        val = metrics["nas/val_loss"]
        bar.update(1, note=f"tau {metrics['nas/tau']:.2f}, train {metrics['nas/train_loss']:.4g}, "
                           f"val {'-' if math.isnan(val) else f'{val:.4g}'}, entropy {metrics['nas/entropy']:.3f}")

    result = run_search(space, datasets["train"], datasets["val"], seed, callback=callback, domain=inputs.domain)
    bar.close()
    logger.flush()
    table = decision_table(space, result.alpha, result.alpha_gradients)
    header = (f"Architecture derived by `nas` search seed {seed}: argmax of softmax(alpha) (zero left out, as in "
              f"DARTS) after {settings.architecture_search_iterations} {settings.sampling} iterations on {space.path}, "
              f"data seed {inputs.data_seed}.\nA partial config: "
              f"mlflow run . --env-manager local{_config_dir_flag(inputs)} -P preset=<this file>\n\n"
              "probabilities at the end (decided: entropy <= 0.8 log K):\n"
              + "\n".join(f"  {r['decision']}: {r['choice']} {r['p']:.2f}, next {r['runner_up']} {r['p_runner_up']:.2f}"
                          f"{'' if r['decided'] else '  (undecided)'}" for r in table))
    text = preset_yaml(result.preset, header)
    preset_path = work / "search" / str(seed) / ARCHITECTURE_ARTIFACT
    preset_path.parent.mkdir(parents=True, exist_ok=True)
    preset_path.write_text(text)
    client.log_artifact(run_id, str(preset_path), "nas")
    _log_history(client, run_id, result, preset_path.parent.parent)
    import pandas as pd

    decisions_csv = preset_path.parent / "decisions.csv"
    pd.DataFrame(table).to_csv(decisions_csv, index=False)
    client.log_artifact(run_id, str(decisions_csv), "nas")
    figure = draw_probabilities(space, result.alpha_trajectory, preset_path.parent / "plots" / PROBABILITIES_FIGURE,
                                result.choices)
    client.log_artifact(run_id, str(figure), "plots")
    found = _Search(seed, run_id, result, table, preset_path, text)
    log_metric_dict(client, run_id, {
        "nas/search_seconds": result.seconds, "nas/gradient_steps": float(result.gradient_steps),
        "nas/entropy_ratio": found.entropy_ratio, "nas/decided": float(found.decided),
        **{f"nas/grad_snr/{r['decision']}": r["grad_snr"] for r in table if math.isfinite(r["grad_snr"])},
        **{f"nas/max_prob/{r['decision']}": r["p"] for r in table},
    })
    log_params(client, run_id, {f"nas.arch.{k}": v for k, v in result.choices.items()}
               | {"nas.arch.layers": _layers_text(result.preset)})
    tracker.finish(run_id)
    say(f"  search seed {seed}: mean entropy {found.entropy_ratio:.2f} x its start, {found.decided}/{len(table)} "
        f"decisions decided, {result.seconds:.1f} s")
    return found


@dataclass(frozen=True)
class _Budget:
    search_steps: int
    """Gradient steps of every search together."""
    steps_per_draw: int
    """Gradient steps of one random draw's training (one seed)."""
    draws: int
    search_seconds: float


def _budget(inputs: _Inputs, datasets, searches: list[_Search]) -> _Budget:
    from speccomp.nas.random_search import equal_budget_draws, training_steps

    search_steps = sum(s.result.gradient_steps for s in searches)
    per_draw = training_steps(inputs.cfg, len(datasets["train"]))
    draws = inputs.options.random_draws or equal_budget_draws(search_steps, per_draw)
    return _Budget(search_steps, per_draw, draws, sum(s.result.seconds for s in searches))


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


@dataclass
class _Compared:
    per_seed: Any  # pandas DataFrame: one row per retrained (model, seed) run
    table: Any  # comparison_table
    ranks: Any  # per search seed, the derived architecture's rank among the random draws
    paired: dict[str, dict[str, float]]  # {"val": paired_test, "test": paired_test}
    best_search: int  # index of the search seed whose derived model validated best
    best_draw: int
    draw_seconds: float
    kendall_taus: list[float]
    """Per search seed: Kendall's τ between the supernet's validation loss of each random draw
    and that draw's retrained validation error (can weight sharing rank architectures?)."""


def _retrain(tracker, parent: str, inputs: _Inputs, work: Path, datasets, cfg, model: str, seeds: list[int],
             name: str, tags: dict[str, str]):
    """Train `cfg` over `seeds` as nested runs `<name>-seed-<s>` tagged `model` and `tags`; the per-seed summary."""
    from tracking.pipeline import flatten, run_tracked_experiment
    from tracking.progress import training_progress

    data_sections = {k: v for k, v in inputs.cfg.to_dict().items() if k != "training"}
    same_data = {k: v for k, v in cfg.to_dict().items() if k != "training"} == data_sections
    tracked = run_tracked_experiment(
        tracker, parent, cfg, inputs.data_seed, seeds, work / "retrain" / name,
        {**flatten(cfg.to_dict()), "model": model}, tags={"model": model, "speccomp.role": "nas-retrain", **tags},
        log_models=inputs.options.log_models, figures=False, run_name=lambda s: f"{name}-seed-{s}",
        datasets=datasets if same_data else None, progress=training_progress(f"retraining {name}", after=f"logging {name}"),
    )
    summary = tracked.experiment.summary
    summary.insert(0, "model", model)
    summary["run_id"] = [tracked.child_run_ids[int(seed)] for seed in summary["seed"]]
    for key, value in tags.items():
        summary[key] = value
    return summary


def _preset_config(inputs: _Inputs, path: Path, extra: list[str] | None = None):
    options = inputs.options
    return load_any_config(options.config_dir or None, [*RETRAIN_OVERRIDES, *options.overrides, *(extra or [])],
                           presets=[*[p for p in options.presets if p], path])


def _retrain_and_compare(tracker, parent: str, inputs: _Inputs, work: Path, datasets, searches: list[_Search],
                         budget: _Budget) -> _Compared:
    import pandas as pd

    from speccomp.nas import preset_of, preset_yaml
    from speccomp.nas.compare import comparison_table, kendall_tau, paired_test, ranks, supernet_losses
    from speccomp.nas.random_search import random_architectures
    from tracking.pipeline import log_metric_dict, log_params, set_tags
    from tracking.progress import Progress, say

    client, domain, seeds = tracker.client, inputs.domain, inputs.seeds
    parts = []
    for search in searches:
        say(f"retraining the architecture of search seed {search.seed} for seeds {_seed_text(seeds)} ...")
        parts.append(_retrain(tracker, parent, inputs, work, datasets, _preset_config(inputs, search.preset_path),
                              "nas", seeds, f"nas-s{search.seed}", {"search_seed": str(search.seed)}))
    for model, cfg in inputs.compare_cfgs.items():
        say(f"retraining {model} ({cfg.training.model_type}) for seeds {_seed_text(seeds)} ...")
        parts.append(_retrain(tracker, parent, inputs, work, datasets, cfg, model, seeds, model, {}))
    draws = random_architectures(inputs.space, budget.draws, inputs.random_seed)
    say(f"random search: {len(draws)} architectures drawn uniformly (seed {inputs.random_seed}), each trained on "
        f"seed {seeds[0]}: the searches' budget of {budget.search_steps} gradient steps ...")
    t0 = time.perf_counter()
    bar = Progress("random search", total=len(draws), unit="draw", after="scoring the random draws on the supernets")
    draw_parts, draw_cfgs = [], []
    for i, choices in enumerate(draws, start=1):
        path = work / "random" / f"draw-{i}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(preset_yaml(preset_of(inputs.space, choices, domain.model_type),
                                    f"random draw {i} of {len(draws)} (seed {inputs.random_seed})"))
        # a draw is judged by its final metrics: no checkpoints, and no evaluation on the way
        draw_cfgs.append(_preset_config(inputs, path, ["training.checkpoint_retention=none",
                                                       "training.checkpoint_ratio=1.0"]))
        draw_parts.append(_retrain(tracker, parent, inputs, work, datasets, draw_cfgs[-1], "random", seeds[:1],
                                   f"random-{i}", {"draw": str(i)}))
        bar.update(1, note=f"draw {i}: {domain.selection_metric} {float(draw_parts[-1][domain.selection_metric].iloc[0]):.4g}")
    bar.close()
    draw_seconds = time.perf_counter() - t0
    errors = [float(p[domain.selection_metric].iloc[0]) for p in draw_parts]
    taus = [kendall_tau(supernet_losses(s.result, datasets["val"], draws), errors) for s in searches]
    best_draw = min(range(len(errors)), key=lambda i: (errors[i], i))
    set_tags(client, draw_parts[best_draw]["run_id"].iloc[0], {"random.best": "true"})
    draw_parts[best_draw]["best"] = True
    if len(seeds) > 1:
        say(f"retraining the best random draw ({best_draw + 1}) for seeds {_seed_text(seeds[1:])} ...")
        rest = _retrain(tracker, parent, inputs, work, datasets, draw_cfgs[best_draw], "random", seeds[1:],
                        f"random-{best_draw + 1}", {"draw": str(best_draw + 1), "random.best": "true"})
        rest["best"] = True
        draw_parts.append(rest)
    per_seed = pd.concat([*parts, *draw_parts], ignore_index=True)
    if "best" not in per_seed:
        per_seed["best"] = False
    per_seed["best"] = per_seed["best"].fillna(False).astype(bool)
    columns = [*domain.reading_columns(inputs.cfg), *domain.floor_columns(inputs.cfg), domain.selection_metric,
               domain.test_metric]
    table = comparison_table(per_seed, list(dict.fromkeys(columns)))
    rank_table = ranks(per_seed, seeds[0], [domain.selection_metric, domain.test_metric])
    paired = {"val": paired_test(per_seed, domain.selection_metric), "test": paired_test(per_seed, domain.test_metric)}
    nas_rows = per_seed[per_seed["model"] == "nas"]
    by_search = nas_rows.groupby("search_seed")[domain.selection_metric].mean()
    best_seed = int(min(by_search.index, key=lambda k: (by_search[k], int(k))))
    best_search = [s.seed for s in searches].index(best_seed)

    out = work / "nas"
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "comparison.csv")
    per_seed.to_csv(out / "comparison_per_seed.csv", index=False)
    rank_table.to_csv(out / "ranks.csv", index=False)
    pd.DataFrame(paired).T.to_csv(out / "paired_test.csv")
    for name in ("comparison.csv", "comparison_per_seed.csv", "ranks.csv", "paired_test.csv"):
        client.log_artifact(parent, str(out / name), "nas")
    metrics = {f"compare/{model}/{col}": float(v) for model, row in table.iterrows() for col, v in row.items()
               if isinstance(v, (int, float)) and math.isfinite(float(v))}
    for m, kind in ((domain.selection_metric, "val"), (domain.test_metric, "test")):
        metrics[f"nas/rank/{kind}"] = float(rank_table[f"rank/{m}"].median())
        metrics[f"nas/better_fraction/{kind}"] = float(rank_table[f"better/{m}"].median())
        metrics |= {f"nas/paired/{kind}/{k}": v for k, v in paired[kind].items() if math.isfinite(v)}
    metrics |= {"nas/random_draws": float(len(draws)), "nas/search_gradient_steps": float(budget.search_steps),
                "nas/random_gradient_steps": float(len(draws) * budget.steps_per_draw),
                "nas/search_seconds": budget.search_seconds, "nas/random_seconds": draw_seconds,
                "nas/entropy_ratio": sum(s.entropy_ratio for s in searches) / len(searches)}
    finite = [t for t in taus if math.isfinite(t)]
    if finite:
        metrics["nas/kendall_tau"] = sum(finite) / len(finite)
    log_metric_dict(client, parent, metrics)
    log_params(client, parent, {"compared_models": ",".join(["nas", *inputs.compare_cfgs, "random"])})
    return _Compared(per_seed, table, rank_table, paired, best_search, best_draw, draw_seconds, taus)


def _seed_text(seeds: list[int]) -> str:
    return ", ".join(map(str, seeds))


def _print_outcome(outcome: _Outcome, inputs: _Inputs, info, uri: str) -> None:
    from tracking.describe import closing_lines

    print("\n".join([*outcome_lines(outcome, inputs), "", *closing_lines(uri, info)]))


def outcome_lines(outcome: _Outcome, inputs: _Inputs) -> list[str]:
    """The console summary: per search seed how far α moved; the chosen seed's decisions with their
    runner-up and an explicit `undecided`; the agreement of the search seeds; the comparison table
    in the domain's readings; the ranks among random draws and the paired test."""
    from speccomp.nas.compare import agreement

    searches, compared, budget = outcome.searches, outcome.compared, outcome.budget
    best = searches[outcome.best_search]
    n_dec = len(best.table)
    lines = [f"searches ({inputs.space.search.architecture_search_iterations} iterations each, "
             f"{budget.search_seconds:.0f} s in all):"]
    for s in searches:
        lines.append(f"  search seed {s.seed}: mean entropy {s.entropy_ratio:.2f} x its start (uniform); "
                     f"{s.decided}/{n_dec} decisions decided (entropy <= 0.8 log K)")
    verdict = sum(s.entropy_ratio for s in searches) / len(searches)
    lines.append(f"  mean over search seeds: {verdict:.2f} ({'moved' if verdict <= 0.8 else 'NOT moved: close to uniform'})")
    lines.append("")
    lines.append(f"derived architecture (search seed {best.seed}, the best on in-distribution validation; "
                 f"artifact {ARCHITECTURE_ARTIFACT}):")
    agree = agreement([s.result.choices for s in searches])
    body = []
    for r in best.table:
        option, count = agree[r["decision"]]
        body.append([r["decision"], r["choice"], f"{r['p']:.2f}", f"{r['runner_up']} {r['p_runner_up']:.2f}",
                     f"{r['uniform']:.2f}", f"{r['entropy_ratio']:.2f}", "yes" if r["decided"] else "undecided",
                     f"{option} {count}/{len(searches)}"])
    lines += ["  " + x for x in _aligned(["decision", "choice", "p", "runner-up", "uniform", "H/logK", "decided",
                                          "search seeds agree"], body)]
    lines.append("")
    lines.append(f"retrained over seeds {_seed_text(inputs.seeds)} (mean ± std over runs; nas: all search seeds x seeds; "
                 f"random: the best of {budget.draws} draws on validation):")
    lines += comparison_lines(compared, inputs)
    lines.append("")
    dom = inputs.domain
    for kind, metric in (("validation", dom.selection_metric), ("test", dom.test_metric)):
        ranks = compared.ranks
        cells = ", ".join(f"seed {int(r['search_seed'])}: {int(r[f'rank/{metric}'])}/{int(r['n_draws']) + 1}"
                          for _, r in ranks.iterrows())
        quartile = int((ranks[f"better/{metric}"] <= 0.25).sum())
        lines.append(f"rank of the derived architecture among the random draws on {kind} ({metric}, seed "
                     f"{inputs.seeds[0]}): {cells}; in the best quartile for {quartile}/{len(ranks)} search seeds")
    for kind, metric in (("val", dom.selection_metric), ("test", dom.test_metric)):
        t = compared.paired[kind]
        lines.append(f"paired test nas vs best random on {metric} over {int(t['pairs'])} (search seed, seed) pairs: "
                     f"median difference {_sig(t['median_difference'])}, nas better in {int(t['wins'])}, "
                     f"Wilcoxon p = {_sig(t['p'])}")
    taus = ", ".join(_sig(t) for t in compared.kendall_taus)
    lines.append(f"can the supernet rank architectures? Kendall's tau between its validation loss of each random draw "
                 f"and the draw's retrained validation error, per search seed: {taus} (1: the same order, 0: unrelated)")
    lines.append(f"budget (gradient steps, forward-backward passes of a batch): searches {budget.search_steps}, random "
                 f"search {budget.draws} x {budget.steps_per_draw} = {budget.draws * budget.steps_per_draw}; wall time "
                 f"{budget.search_seconds:.0f} s against {compared.draw_seconds:.0f} s. Both select on in-distribution "
                 f"validation: neither sees the novel combination.")
    return lines


def _sig(x: float) -> str:
    """3 significant digits (NaN as 'n/a')."""
    return "n/a" if not math.isfinite(x) else f"{x:.3g}"


def comparison_lines(compared, inputs: _Inputs) -> list[str]:
    """The comparison table in the domain's readings, and per model the seeds that learned nothing."""
    cfg, dom, table = inputs.cfg, inputs.domain, compared.table
    columns = [c for c in dom.reading_columns(cfg) if c in table.columns]
    body = []
    rows = compared.per_seed
    from speccomp.nas.compare import compared_rows

    kept = compared_rows(rows)
    for model, row in table.iterrows():
        cells = [str(model)]
        for c in columns:
            value, spread = row.get(c, math.nan), row.get(f"std/{c}", math.nan)
            cells.append("-" if not math.isfinite(value) else f"{_sig(value)} ± {_sig(spread)}")
        missing = dom.not_learned(kept[kept["model"] == model], cfg)
        n = int(row["n"])
        cells.append(", ".join(f"{label} {k}/{n}" for label, k in missing.items() if k) or "-")
        body.append(cells)
    return [*_aligned(["model", *columns, "not learned"], body), dom.not_learned_note(cfg)]


def _aligned(header: list[str], body: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in [header, *body]]
