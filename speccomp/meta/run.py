"""A whole meta run without I/O: validate everything (`plan_meta`), then generate the tasks,
meta-train, run stage two and every baseline on each meta-test pair (`run_meta`). The tracked
entry point (`tracking/meta.py`) passes callbacks that log as the run goes.

The domain is that of `experiment.config_dir` (e.g. the spectra, a task = a pair of components,
the project's `configs/`; the matrices, a task = one (rule, attribute) pair held out of training,
`configs/raven` and `configs/meta/raven.yaml`). Everything that differs between domains is asked
of the domain's object (`speccomp.meta.domain.MetaDomain`): the tasks and their draw, the data, the
reference models, the scores, the floor and the rows of the comparison."""

from __future__ import annotations

import time
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pandas as pd
import torch

from speccomp.core.config import ConfigError
from speccomp.core.seeding import torch_generator
from speccomp.core.task import load_any_config
from speccomp.meta.adapt import MethodResult, StageTwo, preset_training, prior_search, single_task_nas, stage_two
from speccomp.meta.config import BaselinesSection, MetaConfig, load_meta_config, project_dir
from speccomp.meta.domain import Bank, MetaDomain, meta_domain
from speccomp.meta.metatrain import IterationRecord, MetaHyper, MetaTrainResult, build_posterior, meta_train
from speccomp.meta.settings import ResolvedSettings, resolve_settings
from speccomp.meta.tasks import TaskSets, pair_name
from speccomp.nas import NasSpace, load_space
from speccomp.nas.domain import all_search_domains

SUPERNET_METHODS = ("meta-weights", "meta-arch", "prior", "nas")
"""Baselines that run on every domain (the supernet's); the others are the domain's own models:
`default` and its `reference_models`."""


@dataclass
class MetaPlan:
    """Everything validated before any run is created."""

    settings: ResolvedSettings
    meta: MetaConfig
    meta_path: Path
    cfg: Any
    space: NasSpace
    tasks: TaskSets

    @property
    def domain(self) -> MetaDomain:
        return meta_domain(self.cfg)


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
    cfg = experiment_config(meta)
    domain = meta_domain(cfg)
    check_methods(domain, meta.baselines.methods, meta_path)
    domain.check_plan(cfg, meta, settings, meta_path)
    space_path = Path(meta.space)
    if not space_path.is_absolute() and not space_path.is_file():
        space_path = project_dir() / space_path
    space = load_space(space_path)
    domain.check(space, domain.features_of(cfg))
    return MetaPlan(settings, meta, meta_path, cfg, space, domain.draw_tasks(cfg, meta, settings))


def experiment_config(meta: MetaConfig) -> Any:
    """The experiment config the tasks are built on (`experiment.config_dir`, relative to the
    project folder, with `experiment.overrides`); ConfigError (one line) if it is bad."""
    config_dir = meta.experiment.config_dir
    if config_dir is not None and not Path(config_dir).is_absolute():
        config_dir = project_dir() / config_dir
    return load_any_config(config_dir, list(meta.experiment.overrides))


def domain_methods(domain: MetaDomain) -> list[str]:
    """The baselines a domain can run: the supernet's, `default` and its reference models."""
    return [*SUPERNET_METHODS, "default", *domain.reference_models]


def check_methods(domain: MetaDomain, methods: list[str], where: Path) -> None:
    """A baseline that is another domain's model is one line naming whose it is."""
    own = domain_methods(domain)
    for method in methods:
        if method not in own:
            owners = [d.name for d in all_search_domains() if method in getattr(d, "reference_models", {})]
            listed = typing.get_args(typing.get_args(BaselinesSection.model_fields["methods"].annotation)[0])
            allowed = [m for m in listed if m in own]
            raise ConfigError(f"{where}: baselines.methods: {method} is a {' or '.join(owners) or 'foreign'} model and "
                              f"the experiment is of the {domain.name} domain; allowed: {', '.join(allowed)}")


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
    floors: dict[Any, dict[str, float]]
    per_pair: pd.DataFrame
    """One row per (pair, method): test_mse, oracle_mse, gap, plus every metric (seed means)."""
    timings: dict[str, float] = field(default_factory=dict)


def build_task_bank(plan: MetaPlan) -> Bank:
    """The task bank of the plan's domain (`MetaDomain.build_bank`)."""
    return plan.domain.build_bank(plan.cfg, plan.meta, plan.tasks)


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
    on_pair: Callable[[Any, dict[str, dict[str, float]]], None] | None = None,
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
    domain = plan.domain
    unit = domain.unit
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
    floors: dict[Any, dict[str, float]] = {}
    rows = []
    t1 = time.perf_counter()
    say(f"meta-test: {len(plan.tasks.meta_test)} {unit}s x {len(seeds)} seed{'s' if len(seeds) > 1 else ''}, "
        f"methods meta, {', '.join(methods)} ...")
    bar = stage("meta-test", len(plan.tasks.meta_test), unit)
    for pair in plan.tasks.meta_test:
        data = bank.task_datasets(pair, plan.meta.adapt.n_train, final=True)
        task_cfg = bank.task_config(pair, {name: len(split) for name, split in data.items()})
        floors[pair] = domain.floor(task_cfg, data, pair)
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
        for method, (preset, overrides) in {"default": (None, ()), **domain.reference_models}.items():
            if method in methods:
                pair_results += preset_training(task_cfg, preset, data, pair, hp, seeds, method, overrides)
        results += pair_results
        by_method = _mean_by_method(domain, pair_results, floors[pair], pair)
        for method, metrics in by_method.items():
            rows.append(domain.row(pair, method, metrics))
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


def _mean_by_method(domain: MetaDomain, results: list[MethodResult], floor: dict[str, float],
                    pair: Any) -> dict[str, dict[str, float]]:
    """Seed means per method, the floor metrics added; and the floor itself as a method (the
    oracle, chance: `MetaDomain.floor_methods`)."""
    out: dict[str, dict[str, float]] = {}
    for method in dict.fromkeys(r.method for r in results):
        runs = [r.metrics for r in results if r.method == method]
        keys = [k for k in runs[0] if all(k in m for m in runs)]
        mean = {k: sum(m[k] for m in runs) / len(runs) for k in keys}
        out[method] = domain.with_floor(mean, floor, pair)
    return {**out, **domain.floor_methods(floor, pair)}


def posterior_history(training: MetaTrainResult) -> dict[str, torch.Tensor]:
    """{decision: (T, K)} posterior-mean probabilities over the meta-iterations."""
    names = list(training.records[0].probabilities)
    return {n: torch.stack([r.probabilities[n] for r in training.records]) for n in names}
