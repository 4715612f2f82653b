"""Meta-training behaviour: a planted preference is found, runs are reproducible, stage two and the
baselines produce the usual metrics on the same data."""

from __future__ import annotations

import pytest
import torch
import yaml

from speccomp.core.seeding import torch_generator
from speccomp.meta.metatrain import MetaHyper, build_posterior, meta_train, posterior_probabilities
from speccomp.meta.tasks import TaskSets
from speccomp.nas import Supernet, space_from_dict
from speccomp.spectra.data import SplitData
from speccomp.spectra.meta_tasks import TaskBank
from tests.conftest import tiny_config

# One decision that matters: the input transform. Targets are linear in the log-spectrum, so the
# path `log` (then the linear head) can fit every task exactly and `none` cannot.
PLANTED_SPACE = {"input_transforms": ["none", "log"], "conv": {"positions": 0},
                 "dense": {"positions": 1, "ops": ["identity"]}}


def _pool(name: str, n: int, n_bins: int, weights: torch.Tensor, gen: torch.Generator, labels) -> SplitData:
    z = torch.randn(n, n_bins, generator=gen)
    y = z @ weights  # (n, C): exactly linear in log x
    # x = exp(z - 1): E[x²] = E[z²] = 1, so neither path's inputs are larger than the other's and
    # the shared read-out is not pulled towards one path by the size of its gradients alone
    return SplitData(name, torch.exp(z - 1.0), y, torch.ones_like(y, dtype=torch.bool), torch.zeros(n, dtype=torch.float64),
                     torch.zeros(n, dtype=torch.float64), list(labels), 0)


def planted_bank(seed: int, n_pairs: int = 4) -> tuple[TaskBank, TaskSets]:
    cfg = tiny_config()
    labels, n_bins = cfg.physics.labels, 16
    gen = torch_generator(seed, "planted")
    weights = torch.randn(n_bins, len(labels), generator=gen) / n_bins**0.5
    pairs = [(labels[i], labels[i + 1]) for i in range(0, 2 * n_pairs, 2)]
    used = sorted({c for p in pairs for c in p}, key=labels.index)
    bank = TaskBank(
        cfg=cfg,
        empty={r: _pool(f"empty-{r}", 32, n_bins, weights, gen, labels) for r in ("train", "val")},
        single={r: {c: _pool(f"{c}-{r}", 32, n_bins, weights, gen, labels) for c in used} for r in ("train", "val")},
        query={p: _pool(f"{p}-q", 64, n_bins, weights, gen, labels) for p in pairs},
        test={},
    )
    return bank, TaskSets(meta_train=pairs, meta_test=[])


def planted_run(seed: int, iterations: int = 80):
    bank, tasks = planted_bank(seed)
    space = space_from_dict(PLANTED_SPACE)
    net = Supernet(space, bank.train_x.shape[1], len(bank.labels), torch_generator(seed, "net"))
    net.fit_inputs(bank.train_x)
    posterior = build_posterior(space, prior_scale=3.0, init_std=0.1)
    hyper = MetaHyper(iterations=iterations, meta_learning_rate=0.1, n_tasks=len(tasks.meta_train), inner_steps=2,
                      inner_batch=32, query_batch=32, inner_learning_rate=0.02, tau_max=1.0, tau_min=0.5)
    return meta_train(net, posterior, bank, tasks.meta_train, hyper, seed), space


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_planted_preference_is_found_at_the_default_settings(seed):
    """The positive control at the project's defaults: the meta config's settings and hyper-parameters
    as a plain `speccomp meta` resolves them (no flags, no environment, no .env), on a planted task
    family where `log` is the best input on every task's combination by construction. The
    posterior's MAP is `log` with probability > 0.6."""
    from speccomp.meta.run import meta_hyper, plan_meta

    plan = plan_meta({}, "default", env_file=None)
    hyper = meta_hyper(plan)
    bank, tasks = planted_bank(seed, n_pairs=8)
    hyper.n_tasks = len(tasks.meta_train)
    space = space_from_dict(PLANTED_SPACE)
    net = Supernet(space, bank.train_x.shape[1], len(bank.labels), torch_generator(seed, "net"))
    net.fit_inputs(bank.train_x)
    posterior = build_posterior(space, plan.meta.posterior.prior_scale, plan.meta.posterior.init_std)
    result = meta_train(net, posterior, bank, tasks.meta_train, hyper, seed)
    assert len(result.records) == plan.settings.values.architecture_search_iterations == 1000
    probs = posterior_probabilities(space, result.posterior)["input"]
    assert int(probs.argmax()) == 1 and probs[1] > 0.6, f"P(log) = {probs[1]:.3f}"
    assert abs(result.records[0].probabilities["input"][1] - 0.5) < 0.05  # learned, not given: uniform at first


def test_frozen_posterior_stays_the_prior_bit_for_bit():
    """The meta-weights ablation: q frozen at the prior is not touched by meta-training (its weights are)."""
    bank, tasks = planted_bank(0)
    space = space_from_dict(PLANTED_SPACE)
    net = Supernet(space, bank.train_x.shape[1], len(bank.labels), torch_generator(0, "net"))
    net.fit_inputs(bank.train_x)
    prior = build_posterior(space, 1.0, 1.0)
    before = {k: v.detach().clone() for k, v in prior.state_dict().items()}
    weights = [p.detach().clone() for p in net.parameters()]
    hyper = MetaHyper(iterations=10, meta_learning_rate=0.1, n_tasks=4, inner_steps=2, inner_batch=16, query_batch=16,
                      learn_posterior=False)
    meta_train(net, prior, bank, tasks.meta_train, hyper, 0)
    assert all(torch.equal(before[k], v) for k, v in prior.state_dict().items())
    assert torch.equal(prior.mean, torch.zeros_like(prior.mean)) and torch.allclose(prior.std, torch.ones_like(prior.std))
    assert any(not torch.equal(a, b) for a, b in zip(weights, net.parameters(), strict=True))


def test_meta_training_is_reproducible_and_seed_dependent():
    a, _ = planted_run(0, iterations=15)
    b, _ = planted_run(0, iterations=15)
    c, _ = planted_run(5, iterations=15)
    assert [r.elbo for r in a.records] == [r.elbo for r in b.records]
    assert torch.equal(a.posterior.mean, b.posterior.mean)
    assert [r.elbo for r in a.records] != [r.elbo for r in c.records]


def test_elbo_is_the_query_log_likelihood_plus_scaled_kl():
    """One task's share of the ELBO: the Gaussian NLL of its whole query set (64 spectra x 2
    components, variance profiled out: n/2 log MSE) plus KL / number of tasks."""
    import math

    result, _ = planted_run(0, iterations=5)
    n = 64 * 2
    for r in result.records:
        assert r.elbo == pytest.approx(0.5 * n * math.log(r.query_loss) + r.kl / 4, rel=1e-5)


@pytest.mark.slow
def test_stage_two_and_baselines_score_the_same_pair_reproducibly():
    from speccomp.meta.adapt import StageTwo, preset_training, prior_search, single_task_nas, stage_two
    from speccomp.nas import load_space
    from speccomp.spectra.meta_tasks import build_bank, draw_pairs
    from speccomp.spectra.search import SPECTRA

    cfg = tiny_config()
    tasks = draw_pairs(cfg.physics.labels, 2, 1, 0)
    bank = build_bank(cfg, tasks, 42, n_single=12, n_empty=12, n_val_single=6, n_query=8, n_test=16)
    space = load_space("configs/nas/spectra.yaml")
    net = Supernet(space, cfg.physics.n_bins, len(cfg.physics.labels), torch_generator(0, "net"))
    net.fit_inputs(bank.train_x)
    posterior = build_posterior(space, 1.0, 0.1)
    hp = StageTwo(candidates=1, candidate_steps=2, search_steps=2, finetune_steps=3, batch_size=8)
    assert hp.budget == 2 * 2 + 2 + 3
    pair = tasks.meta_test[0]
    data = bank.task_datasets(pair, final=True)
    first = stage_two(net, posterior, data, pair, hp, 123)
    again = stage_two(net, posterior, data, pair, hp, 123)
    assert first.metrics == again.metrics and first.choices == again.choices
    results = [first, prior_search(space, data, pair, hp, 123), single_task_nas(space, data, pair, hp, 123),
               *preset_training(bank.task_config(pair, {k: len(v) for k, v in data.items()}), "loglinear", data, pair,
                                hp, [123], "loglinear")]
    floor = SPECTRA.floor(bank.task_config(pair, {k: len(v) for k, v in data.items()}), data, pair)
    for r in results:
        m = SPECTRA.with_floor(r.metrics, floor, pair)
        for label in pair:
            assert {f"test/mse/{label}", f"gap/{label}", f"oracle/efficiency/{label}"} <= set(m)
        assert m["oracle/ratio"] == pytest.approx(m["test/mse/pair"] / floor["oracle/mse/pair"])
    assert results[-1].extra["steps"] >= hp.budget * 0.5  # the preset model trains about B steps


ABLATIONS = ("meta", "meta-weights", "meta-arch")


def test_the_ablations_share_tasks_data_seeds_and_budget_with_meta(monkeypatch, tmp_path):
    """`meta-weights` (q frozen at the prior, REPTILE weights) and `meta-arch` (the learned q,
    weights from scratch) differ from `meta` by the one ingredient they replace: a tiny `run_meta`
    (two meta-test pairs, two seeds) watched from outside. Meta-training of the frozen-q ablation
    draws the same meta-training pair at every iteration from the same supernet initialisation,
    with the same hyper-parameters and seed, and takes as many weight steps (counted at the
    optimiser); on each (pair, seed) the three stage-two runs get the same data (one object), the
    same stage-two settings and seed, and take exactly B = (candidates + 1) · candidate_steps +
    search_steps + finetune_steps weight steps each, as they record."""
    import dataclasses

    from torch.optim.optimizer import register_optimizer_step_post_hook

    import speccomp.meta.run as run
    from tests.test_nas_tracking import TINY_SPACE

    steps = [0]  # optimiser steps on network weights (α and the posterior are vectors; weights are not)

    def count(optimizer, args, kwargs) -> None:
        steps[0] += any(p.ndim >= 2 for group in optimizer.param_groups for p in group["params"])

    trainings, stage_twos = [], []
    real_meta_train, real_stage_two = run.meta_train, run.stage_two

    def meta_train(net, posterior, bank, pairs, hyper, seed, callback=None):
        start, initial = steps[0], [p.detach().clone() for p in net.parameters()]
        result = real_meta_train(net, posterior, bank, pairs, hyper, seed, callback)
        trainings.append({"hyper": dataclasses.replace(hyper), "seed": seed, "pairs": list(pairs), "initial": initial,
                          "drawn": [r.pair for r in result.records], "weight_steps": steps[0] - start})
        return result

    def stage_two(net, posterior, data, pair, hp, seed, method="meta", **kw):
        start = steps[0]
        result = real_stage_two(net, posterior, data, pair, hp, seed, method, **kw)
        stage_twos.append({"method": method, "pair": pair, "seed": seed, "data": data, "hp": hp,
                           "weight_steps": steps[0] - start, "recorded": result.extra["weight_steps"]})
        return result

    monkeypatch.setattr(run, "meta_train", meta_train)
    monkeypatch.setattr(run, "stage_two", stage_two)
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(TINY_SPACE))
    plan = run.plan_meta(
        {"num_meta_training_tasks": "3", "num_meta_testing_tasks": "2", "architecture_search_iterations": "7"},
        "smoke", [f"space={space}", "experiment.overrides=[physics.n_bins=64]", "experiment.seeds=[5,6]",
                  "tasks.n_single=12", "tasks.n_empty=12", "tasks.n_val_single=6", "tasks.n_query=8", "tasks.n_test=16",
                  "inner.batch_size=8", "inner.query_batch_size=8", "adapt.batch_size=8", "adapt.candidates=2",
                  "adapt.candidate_steps=2", "adapt.search_steps=3", "adapt.finetune_steps=4",
                  "baselines.methods=[meta-weights,meta-arch]"], env_file=None)
    handle, threads = register_optimizer_step_post_hook(count), torch.get_num_threads()
    torch.set_num_threads(1)  # as every command runs (speccomp.core.threads); several times faster on a busy machine
    try:
        outcome = run.run_meta(plan)
    finally:
        handle.remove()
        torch.set_num_threads(threads)

    # meta-training: meta, then the frozen-q ablation, alike but for learning q
    learned, frozen = trainings
    assert (learned["hyper"].learn_posterior, frozen["hyper"].learn_posterior) == (True, False)
    assert dataclasses.replace(frozen["hyper"], learn_posterior=True) == learned["hyper"]
    assert frozen["seed"] == learned["seed"] == plan.meta.experiment.seeds[0]
    assert frozen["pairs"] == learned["pairs"] == plan.tasks.meta_train
    assert frozen["drawn"] == learned["drawn"] and len(learned["drawn"]) == 7
    assert len(set(learned["drawn"])) > 1  # the draw is a real sequence, not one pair repeated
    assert all(torch.equal(a, b) for a, b in zip(frozen["initial"], learned["initial"], strict=True))
    assert frozen["weight_steps"] == learned["weight_steps"] == 7 * plan.meta.inner.steps

    # stage two: per (pair, seed) one run of each, on one data object, with the same settings and budget
    hp = run.stage_two_hyper(plan)
    assert hp.budget == 3 * 2 + 3 + 4
    cells = {}
    for call in stage_twos:
        cells.setdefault((call["pair"], call["seed"]), {})[call["method"]] = call
    assert set(cells) == {(p, s) for p in plan.tasks.meta_test for s in (5, 6)}
    for key, by_method in cells.items():
        assert sorted(by_method) == sorted(ABLATIONS), key
        calls = list(by_method.values())
        assert all(c["data"] is calls[0]["data"] for c in calls), key
        assert all(c["hp"] == hp for c in calls), key
        assert [c["weight_steps"] for c in calls] == [hp.budget] * 3, (key, [c["weight_steps"] for c in calls])
        assert [c["recorded"] for c in calls] == [hp.budget] * 3
    data_of_pair = {p: {id(c["data"]) for (q, _), m in cells.items() if q == p for c in m.values()}
                    for p in plan.tasks.meta_test}
    assert all(len(ids) == 1 for ids in data_of_pair.values())  # the seeds of a pair share its data too
    assert set(outcome.per_pair["method"]) >= set(ABLATIONS)
