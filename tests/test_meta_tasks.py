"""Task generator and task data: disjoint pairs determined by TASK_GENERATOR_SEED, the `pair`
split setting's distributions, shared pools, and the posterior's closed-form KL."""

from __future__ import annotations

import math

import pytest
import torch

from speccomp.meta.posterior import GaussianPosterior
from speccomp.meta.tasks import TaskSets
from speccomp.spectra.meta_tasks import all_pairs, build_bank, draw_pairs
from tests.conftest import tiny_config

LABELS = [f"comp{i}" for i in range(1, 21)]


def test_190_pairs_of_20_components():
    pairs = all_pairs(LABELS)
    assert len(pairs) == 190 == len(set(pairs))
    assert all(a != b for a, b in pairs)


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_meta_train_and_meta_test_are_disjoint_and_seed_determined(seed):
    tasks = draw_pairs(LABELS, 100, 20, seed)
    assert len(tasks.meta_train) == 100 == len(set(tasks.meta_train))
    assert len(tasks.meta_test) == 20 == len(set(tasks.meta_test))
    assert not set(tasks.meta_train) & set(tasks.meta_test)
    assert draw_pairs(LABELS, 100, 20, seed) == tasks
    other = draw_pairs(LABELS, 100, 20, seed + 1)
    assert other.meta_test != tasks.meta_test and other.meta_train != tasks.meta_train


def test_all_190_pairs_can_be_used():
    tasks = draw_pairs(LABELS, 170, 20, 0)
    assert set(tasks.meta_train) | set(tasks.meta_test) == set(all_pairs(LABELS))


@pytest.mark.parametrize("seed", [0, 3])
def test_held_out_components_never_meta_trained_on(seed):
    tasks = draw_pairs(LABELS, 50, 10, seed, held_out_components=5)
    assert len(tasks.held_out) == 5
    trained = {c for p in tasks.meta_train for c in p}
    assert not trained & set(tasks.held_out)
    assert all(a in tasks.held_out and b in tasks.held_out for a, b in tasks.meta_test)


def test_too_many_tasks_refused():
    with pytest.raises(ValueError, match="only 190 pairs"):
        draw_pairs(LABELS, 191, 1, 0)
    with pytest.raises(ValueError, match="only 10 pairs left"):
        draw_pairs(LABELS, 180, 11, 0)


@pytest.fixture(scope="module")
def bank():
    cfg = tiny_config()
    c = cfg.physics.labels
    tasks = TaskSets(meta_train=[(c[0], c[1]), (c[0], c[2]), (c[3], c[4])], meta_test=[(c[5], c[6]), (c[1], c[7])])
    return tasks, build_bank(cfg, tasks, data_seed=42, n_single=30, n_empty=30, n_val_single=8, n_query=16, n_test=24)


def test_task_splits_follow_the_pair_setting(bank):
    tasks, bank = bank
    pair = tasks.meta_test[0]
    data = bank.task_datasets(pair, final=True)
    ia, ib = (bank.labels.index(c) for c in pair)
    others = [i for i in range(len(bank.labels)) if i not in (ia, ib)]
    train = data["train"]
    assert len(train) == 90 and len(data["val"]) == 24 and len(data["test"]) == 24
    # training: never both components together, never any other component; empties, a alone, b alone
    present = train.present
    assert not (present[:, ia] & present[:, ib]).any() and not present[:, others].any()
    assert present[:, ia].sum() == 30 and present[:, ib].sum() == 30 and (~present.any(1)).sum() == 30
    # test: the combination, always both
    assert data["test"].present[:, [ia, ib]].all() and not data["test"].present[:, others].any()
    # the task's config is the pair setting: its test split holds exactly the pair
    cfg = bank.task_config(pair, {"train": 90, "val": 24, "test": 24})
    assert cfg.tracked_labels == list(pair)
    assert cfg.data.splits["test"].distribution.combinations[0].components == list(pair)


def test_pools_are_shared_and_rows_index_them(bank):
    tasks, bank = bank
    pair = tasks.meta_train[0]
    rows = bank.train_rows(pair)
    data = bank.task_datasets(pair)
    assert torch.equal(bank.train_x[rows], data["train"].spectra)
    assert torch.equal(bank.train_y[rows], data["train"].abundances)
    small = bank.task_datasets(pair, n_train=12)
    assert len(small["train"]) == 12 and torch.equal(bank.train_x[bank.train_rows(pair, 12)], small["train"].spectra)
    # a component's spectra alone are the same rows in every task holding it
    a = pair[0]
    other = next(p for p in tasks.meta_train + tasks.meta_test if p != pair and a in p)
    sel = lambda p: bank.train_rows(p)[bank.train_y[bank.train_rows(p), bank.labels.index(a)] > 0]  # noqa: E731
    assert torch.equal(sel(pair), sel(other))


def test_bank_is_reproducible_and_pools_independent_of_the_draw():
    cfg = tiny_config()
    t1 = draw_pairs(cfg.physics.labels, 3, 2, 0)
    b1 = build_bank(cfg, t1, 42, 10, 10, 4, 8, 8)
    b2 = build_bank(cfg, t1, 42, 10, 10, 4, 8, 8)
    assert torch.equal(b1.train_x, b2.train_x)
    b3 = build_bank(cfg, t1, 43, 10, 10, 4, 8, 8)
    assert not torch.equal(b1.empty["train"].spectra, b3.empty["train"].spectra)
    t2 = draw_pairs(cfg.physics.labels, 3, 2, 5)
    b4 = build_bank(cfg, t2, 42, 10, 10, 4, 8, 8)
    assert torch.equal(b1.empty["train"].spectra, b4.empty["train"].spectra)
    shared = set(b1.single["train"]) & set(b4.single["train"])
    assert all(torch.equal(b1.single["train"][c].spectra, b4.single["train"][c].spectra) for c in shared)


# --- posterior -----------------------------------------------------------------------------------
def test_kl_equals_closed_form_and_torch_distributions():
    gen = torch.Generator().manual_seed(0)
    post = GaussianPosterior([4, 3, 5], prior_scale=0.7, init_std=0.3)
    with torch.no_grad():
        post.mean.copy_(torch.randn(12, generator=gen))
        post.rho.copy_(torch.randn(12, generator=gen))
    q = torch.distributions.Normal(post.mean.detach(), post.std.detach())
    p = torch.distributions.Normal(torch.zeros(12), torch.full((12,), 0.7))
    expected = torch.distributions.kl_divergence(q, p).sum()
    assert torch.allclose(post.kl().detach(), expected, atol=1e-5)
    by_hand = sum(math.log(0.7 / s) + (s**2 + m**2) / (2 * 0.49) - 0.5
                  for m, s in zip(post.mean.tolist(), post.std.tolist(), strict=True))
    assert post.kl().item() == pytest.approx(by_hand, rel=1e-5)
    # Monte-Carlo estimate of E_q[log q - log p] agrees within its standard error
    draws = q.sample(torch.Size([200_000]))
    mc = (q.log_prob(draws) - p.log_prob(draws)).sum(-1)
    assert abs(mc.mean() - expected) < 5 * mc.std() / math.sqrt(len(mc))


def test_kl_is_zero_at_the_prior_and_gradients_reach_mean_and_scale():
    post = GaussianPosterior([3], prior_scale=0.5, init_std=0.5)
    assert post.kl().item() == pytest.approx(0.0, abs=1e-6)
    alpha = post.sample(torch.Generator().manual_seed(1))
    (alpha.sum() + post.kl()).backward()
    assert post.mean.grad is not None and post.rho.grad is not None and post.rho.grad.abs().sum() > 0


def test_posterior_state_round_trips_with_weights_only(tmp_path):
    post = GaussianPosterior([2, 4], prior_scale=2.0, init_std=0.2)
    with torch.no_grad():
        post.mean.copy_(torch.arange(6.0))
    torch.save(post.state(), tmp_path / "p.pt")
    back = GaussianPosterior.from_state(torch.load(tmp_path / "p.pt", weights_only=True))
    assert torch.equal(back.mean, post.mean) and torch.allclose(back.std, post.std)
    assert back.sizes == [2, 4] and back.map_choice() == [1, 3]
