"""A whole meta run without I/O: validate everything (`plan_meta`), then generate the tasks,
meta-train, run stage two and every baseline on each meta-test pair (`run_meta`). The tracked
entry point (`tracking/meta.py`) passes callbacks that log as the run goes.

The domain is that of `experiment.config_dir`: spectra (a task = a pair of components, the
project's `configs/`) or matrices (a task = one (rule, attribute) pair held out of training,
`configs/raven`; see `speccomp.meta.matrices` and `configs/meta/raven.yaml`)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pandas as pd
import torch

from speccomp.core.config import ConfigError, ExperimentConfig
from speccomp.core.seeding import numpy_generator, torch_generator
from speccomp.core.task import load_any_config
from speccomp.matrices.config import WREN_OVERRIDES
from speccomp.meta.adapt import (
    MethodResult,
    StageTwo,
    oracle,
    preset_training,
    prior_search,
    single_task_nas,
    stage_two,
    with_floor,
)
from speccomp.meta.config import MetaConfig, load_meta_config, project_dir
from speccomp.meta.matrices import all_tasks, build_matrices_bank
from speccomp.meta.metatrain import IterationRecord, MetaHyper, MetaTrainResult, build_posterior, meta_train
from speccomp.meta.settings import ResolvedSettings, check_task_counts, resolve_settings
from speccomp.meta.tasks import Pair, TaskSets, all_pairs, build_bank, draw_tasks, pair_name
from speccomp.nas import NasSpace, load_space
from speccomp.nas.domain import MATRICES, domain_for_config


@dataclass
class MetaPlan:
    """Everything validated before any run is created."""

    settings: ResolvedSettings
    meta: MetaConfig
    meta_path: Path
    cfg: ExperimentConfig
    space: NasSpace
    tasks: TaskSets


def plan_meta(
    flags: dict[str, str | None] | None = None,
    meta_config: str | Path | None = None,
    meta_overrides: list[str] | tuple[str, ...] = (),
    env_file: str | Path | None = ".env",
) -> MetaPlan:
    """Resolve the settings, load the meta config, the experiment config and the search space,
    check the task counts against the pairs, draw the tasks. Raises ConfigError (one line)."""
    meta, meta_path = load_meta_config(meta_config, meta_overrides)
    settings = resolve_settings(flags or {}, env_file=env_file, file_values=meta.settings, file_name=meta_path)
    config_dir = meta.experiment.config_dir
    if config_dir is not None and not Path(config_dir).is_absolute():
        config_dir = project_dir() / config_dir
    cfg = load_any_config(config_dir, list(meta.experiment.overrides))
    domain = domain_for_config(cfg)
    s = settings.values
    held = meta.tasks.held_out_components
    other_domain = {"loglinear": "spectra", "wren": "matrices"}
    for method in meta.baselines.methods:
        if other_domain.get(method, domain.name) != domain.name:
            allowed = [m for m in ("meta-weights", "meta-arch", "default", "loglinear", "wren", "prior", "nas")
                       if other_domain.get(m, domain.name) == domain.name]
            raise ConfigError(f"{meta_path}: baselines.methods: {method} is a {other_domain[method]} model and the "
                              f"experiment is of the {domain.name} domain; allowed: {', '.join(allowed)}")
    if domain is MATRICES:
        if held:
            raise ConfigError(f"{meta_path}: tasks.held_out_components: {held}; allowed: 0 on the matrices domain "
                              "(a task is one held-out (rule, attribute) pair)")
        names = all_tasks(cfg)
        check_task_counts(settings, len(names), len(names), 0, unit="(rule, attribute) tasks")
    else:
        labels = cfg.physics.labels
        if held and not 2 <= held <= len(labels) - 2:
            raise ConfigError(f"{meta_path}: tasks.held_out_components: {held}; allowed: 0, or 2..{len(labels) - 2}")
        check_task_counts(settings, len(all_pairs(labels)), len(labels), held)
    space_path = Path(meta.space)
    if not space_path.is_absolute() and not space_path.is_file():
        space_path = project_dir() / space_path
    space = load_space(space_path)
    domain.check(space, domain.features_of(cfg))
    if domain is MATRICES:
        tasks = draw_named_tasks(names, s.num_meta_training_tasks, s.num_meta_testing_tasks, s.task_generator_seed)
    else:
        tasks = draw_tasks(labels, s.num_meta_training_tasks, s.num_meta_testing_tasks, s.task_generator_seed, held)
    return MetaPlan(settings, meta, meta_path, cfg, space, tasks)


def draw_named_tasks(names: list, n_train: int, n_test: int, seed: int) -> TaskSets:
    """`n_train` meta-training and `n_test` meta-test tasks without overlap from `names`, from the
    stream (seed, "meta", "tasks"); meta-test tasks in the order of `names`."""
    order = numpy_generator(seed, "meta", "tasks").permutation(len(names))
    train = [names[i] for i in order[:n_train]]
    test = [names[i] for i in sorted(order[n_train : n_train + n_test])]
    return TaskSets(meta_train=train, meta_test=test)


def meta_hyper(plan: MetaPlan) -> MetaHyper:
    s, inner, post = plan.settings.values, plan.meta.inner, plan.meta.posterior
    return MetaHyper(
        iterations=s.architecture_search_iterations, meta_learning_rate=s.meta_learning_rate,
        n_tasks=s.num_meta_training_tasks, inner_steps=inner.steps, inner_batch=inner.batch_size,
        query_batch=inner.query_batch_size, inner_learning_rate=inner.learning_rate, meta_step=inner.meta_step,
        tau_max=inner.tau_max, tau_min=inner.tau_min, kl_weight=post.kl_weight,
    )


def stage_two_hyper(plan: MetaPlan) -> StageTwo:
    a = plan.meta.adapt
    return StageTwo(
        candidates=a.candidates, candidate_steps=a.candidate_steps, search_steps=a.search_steps,
        finetune_steps=a.finetune_steps, batch_size=a.batch_size, learning_rate=a.learning_rate,
        architecture_learning_rate=plan.settings.values.architecture_learning_rate, tau=plan.meta.inner.tau_min,
        prior_scale=plan.meta.posterior.prior_scale, nas_iterations=plan.meta.baselines.nas_iterations,
    )


@dataclass
class MetaOutcome:
    plan: MetaPlan
    training: MetaTrainResult
    results: list[MethodResult]
    floors: dict[Pair, dict[str, float]]
    per_pair: pd.DataFrame
    """One row per (pair, method): test_mse, oracle_mse, gap, plus every metric (seed means)."""
    timings: dict[str, float] = field(default_factory=dict)


def build_task_bank(plan: MetaPlan):
    """The task bank of the plan's domain (`TaskBank` for spectra, `MatricesBank` for matrices)."""
    if domain_for_config(plan.cfg) is MATRICES:
        m = plan.meta.matrices_tasks
        return build_matrices_bank(plan.cfg, plan.tasks.meta_train, plan.tasks.meta_test,
                                   plan.meta.experiment.data_seed, m.n_train, m.n_val, m.n_query, m.n_test)
    t = plan.meta.tasks
    return build_bank(plan.cfg, plan.tasks, plan.meta.experiment.data_seed, t.n_single, t.n_empty,
                      t.n_val_single, t.n_query, t.n_test)


class Steps(Protocol):
    """How far a stage has come: `update` once per unit done, `close` at its end
    (`tracking.progress.Progress` is one)."""

    def update(self, n: float = 1, note: str | None = None) -> Any: ...

    def close(self, note: str | None = None) -> None: ...


StepsFactory = Callable[[str, int, str], Steps]
"""(what, total, unit) -> the `Steps` of a stage: `meta-training` (iterations), `meta-weights
ablation` (iterations), `meta-test` (pairs, or tasks on the matrices domain)."""


class _NoSteps:
    def update(self, n: float = 1, note: str | None = None) -> None:
        pass

    def close(self, note: str | None = None) -> None:
        pass


def run_meta(
    plan: MetaPlan,
    on_iteration: Callable[[IterationRecord], None] | None = None,
    on_pair: Callable[[Pair, dict[str, dict[str, float]]], None] | None = None,
    progress: Callable[[str], None] | None = None,
    steps: StepsFactory | None = None,
) -> MetaOutcome:
    """Generate, meta-train, evaluate every method on every meta-test pair. `on_pair(pair, {method:
    metrics})` is called as each pair is done (metrics averaged over the seeds, floor included);
    `progress(line)` as a stage starts; `steps` makes the `Steps` of each stage, updated once per
    meta-iteration and once per meta-test pair."""
    say = progress or (lambda _msg: None)
    stage = steps or (lambda _what, _total, _unit: _NoSteps())
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    bank = build_task_bank(plan)
    timings["generate"] = time.perf_counter() - t0
    seeds = list(plan.meta.experiment.seeds)
    net = bank.search.supernet(plan.space, bank.train_x, bank.train_y, torch_generator(seeds[0], "meta", "supernet", "init"))
    posterior = build_posterior(plan.space, plan.meta.posterior.prior_scale, plan.meta.posterior.init_std)
    iterations = plan.settings.values.architecture_search_iterations
    unit = "task" if bank.search is MATRICES else "pair"
    say(f"meta-training: {iterations} iterations over {len(plan.tasks.meta_train)} {unit}s ...")
    bar = stage("meta-training", iterations, "iteration")
    training = meta_train(net, posterior, bank, plan.tasks.meta_train, meta_hyper(plan), seeds[0],
                          _counting(bar, on_iteration))
    bar.close()
    timings["meta_train"] = training.seconds
    timings["inner_loop"] = training.inner_seconds

    hp = stage_two_hyper(plan)
    methods = plan.meta.baselines.methods
    frozen = None
    if "meta-weights" in methods:  # the weights' share: the same meta-training with q frozen at the prior
        say("meta-training the meta-weights ablation (q frozen at the prior) ...")
        bar = stage("meta-weights ablation", iterations, "iteration")
        frozen = frozen_prior_training(plan, bank, seeds[0], _counting(bar))
        bar.close()
        timings["meta_train_frozen"] = frozen.seconds
    results: list[MethodResult] = []
    floors: dict[Pair, dict[str, float]] = {}
    rows = []
    t1 = time.perf_counter()
    say(f"meta-test: {len(plan.tasks.meta_test)} {unit}s x {len(seeds)} seed{'s' if len(seeds) > 1 else ''}, "
        f"methods meta, {', '.join(methods)} ...")
    bar = stage("meta-test", len(plan.tasks.meta_test), unit)
    for pair in plan.tasks.meta_test:
        data = bank.task_datasets(pair, plan.meta.adapt.n_train, final=True)
        task_cfg = bank.task_config(pair, {name: len(split) for name, split in data.items()})
        floors[pair] = oracle(task_cfg, data, pair)
        pair_results: list[MethodResult] = []
        for seed in seeds:
            pair_results.append(stage_two(net, posterior, data, pair, hp, seed))
            if frozen is not None:
                pair_results.append(stage_two(frozen.net, frozen.posterior, data, pair, hp, seed, "meta-weights",
                                              use_map=False))
            if "meta-arch" in methods:
                pair_results.append(stage_two(net, posterior, data, pair, hp, seed, "meta-arch", fresh_weights=True))
            if "prior" in methods:
                pair_results.append(prior_search(plan.space, data, pair, hp, seed))
            if "nas" in methods:
                pair_results.append(single_task_nas(plan.space, data, pair, hp, seed))
        if "default" in methods:
            pair_results += preset_training(task_cfg, None, data, pair, hp, seeds, "default")
        if "loglinear" in methods:
            pair_results += preset_training(task_cfg, "loglinear", data, pair, hp, seeds, "loglinear")
        if "wren" in methods:
            pair_results += preset_training(task_cfg, None, data, pair, hp, seeds, "wren", WREN_OVERRIDES)
        results += pair_results
        by_method = _mean_by_method(pair_results, floors[pair], pair)
        for method, metrics in by_method.items():
            rows.append(_row(pair, method, metrics))
        if on_pair is not None:
            on_pair(pair, by_method)
        bar.update(1, note=f"last {pair_name(pair)}")
    bar.close()
    timings["meta_test"] = time.perf_counter() - t1
    return MetaOutcome(plan, training, results, floors, pd.DataFrame(rows), timings)


def _counting(bar: Steps, then: Callable[[IterationRecord], None] | None = None) -> Callable[[IterationRecord], None]:
    """A meta-iteration callback: `then(record)`, and one unit on `bar`."""
    def callback(record: IterationRecord) -> None:
        if then is not None:
            then(record)
        bar.update(1, note=f"elbo {record.elbo:.4g}, query loss {record.query_loss:.4g}")

    return callback


def frozen_prior_training(plan: MetaPlan, bank, seed: int,
                          callback: Callable[[IterationRecord], None] | None = None) -> MetaTrainResult:
    """The `meta-weights` ablation's meta-training: the same supernet initialisation, tasks,
    iterations and random streams as `meta`, with q = the prior p(α) = N(0, s²), never updated."""
    net = bank.search.supernet(plan.space, bank.train_x, bank.train_y, torch_generator(seed, "meta", "supernet", "init"))
    s = plan.meta.posterior.prior_scale
    prior = build_posterior(plan.space, s, s)
    hyper = meta_hyper(plan)
    hyper.learn_posterior = False
    return meta_train(net, prior, bank, plan.tasks.meta_train, hyper, seed, callback)


def _mean_by_method(results: list[MethodResult], floor: dict[str, float], pair: Pair) -> dict[str, dict[str, float]]:
    """Seed means per method, the floor metrics added; and the oracle itself as a method."""
    out: dict[str, dict[str, float]] = {}
    for method in dict.fromkeys(r.method for r in results):
        runs = [r.metrics for r in results if r.method == method]
        keys = [k for k in runs[0] if all(k in m for m in runs)]
        mean = {k: sum(m[k] for m in runs) / len(runs) for k in keys}
        out[method] = with_floor(mean, floor, pair)
    if "chance/acc" in floor:  # matrices: chance as the floor's row
        chance = floor["chance/acc"]
        out["chance"] = {"val/acc": chance, "test/acc": chance, "test/error": 1.0 - chance, "chance/acc": chance}
        return out
    oracle_metrics = {f"test/mse/{c}": floor[f"oracle/mse/{c}"] for c in pair}
    oracle_metrics["test/mse/pair"] = floor["oracle/mse/pair"]
    out["oracle"] = with_floor(oracle_metrics, floor, pair)
    return out


def _row(pair: Pair, method: str, metrics: dict[str, float]) -> dict[str, float | str]:
    if "chance/acc" in metrics:  # matrices: the held-out error is the measure compared
        return {"pair": pair_name(pair), "method": method, "test_error": metrics["test/error"],
                "test_acc": metrics["test/acc"], "chance_acc": metrics["chance/acc"],
                "gap": metrics.get("gap/acc", math.nan), **metrics}
    gaps = [metrics.get(f"gap/{c}", math.nan) for c in pair]
    return {"pair": pair_name(pair), "method": method, "test_mse": metrics["test/mse/pair"],
            "oracle_mse": metrics["oracle/mse/pair"], "gap": sum(gaps) / 2, **metrics}


def posterior_history(training: MetaTrainResult) -> dict[str, torch.Tensor]:
    """{decision: (T, K)} posterior-mean probabilities over the meta-iterations."""
    names = list(training.records[0].probabilities)
    return {n: torch.stack([r.probabilities[n] for r in training.records]) for n in names}
