"""Meta-training: a posterior over architectures, learned across compositional tasks.

One meta-iteration (BASE, Shaw et al. 2019; MetaNAS, Elsken et al. 2020; GDAS sampling):

1. draw a meta-training task (a pair) and an architecture: α = μ + σ·ε ~ q(α), then a hard
   Gumbel-softmax sample z(α, τ) (one path per decision, straight-through gradient);
2. inner loop: copy the shared supernet weights θ and take `inner.steps` Adam steps of the path z
   on the task's training split (each component alone and the bare continuum) -> θ';
3. query: score θ' with the path z on the task's **combination** (MSE of the pair's two
   components; on the matrices domain the cross-entropy on matrices holding the held-out
   (rule, attribute) pair) — the quantity compositional generalisation is about;
4. q is updated by Adam at META_LEARNING_RATE on the negative ELBO of one task,
   `query NLL + kl_weight · KL(q‖p) / num_meta_training_tasks`, where the query NLL is the
   negative log-likelihood of the task's whole query set (the bank's `query_nll`: spectra, a
   Gaussian whose variance is profiled out, n/2 · log MSE over its n values; matrices, the summed
   cross-entropy). This is the ELBO of all tasks divided by their number, estimated from one task.
   (A mean MSE in its place, as before, weighs the data n times too little: the KL term then held
   every logit at ~0.01.) First order: θ' is treated as a constant, the gradient reaches α
   through z;
5. REPTILE: θ ← θ + ε (θ' − θ).

Pure: no I/O, no logging; a callback receives each iteration's record.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from speccomp.meta.domain import Bank
from speccomp.meta.posterior import GaussianPosterior
from speccomp.meta.tasks import batch_rows, task_generator
from speccomp.nas import NasSpace, Supernet, sample_weights, temperature, unflatten_alpha
from speccomp.nas.domain import SearchDomain, domain_of


@dataclass
class MetaHyper:
    """Everything meta-training needs besides the data (from the settings and the meta config)."""

    iterations: int
    meta_learning_rate: float
    n_tasks: int
    inner_steps: int = 4
    inner_batch: int = 64
    query_batch: int = 128
    inner_learning_rate: float = 3e-3
    meta_step: float = 0.5
    tau_max: float = 5.0
    tau_min: float = 0.5
    kl_weight: float = 1.0
    learn_posterior: bool = True
    """False: q stays as it is, bit for bit (the `meta-weights` ablation: architectures drawn from
    the prior while REPTILE trains the weights)."""


@dataclass
class IterationRecord:
    """What one meta-iteration logs (`meta/elbo`, `meta/query_loss`, `meta/kl`, probabilities)."""

    iteration: int
    pair: Any
    """The meta-training task drawn (a pair of components, a (rule, attribute) pair, ...)."""
    tau: float
    elbo: float
    query_loss: float
    kl: float
    probabilities: dict[str, torch.Tensor]  # decision -> softmax of the posterior mean, (K,)


@dataclass
class MetaTrainResult:
    posterior: GaussianPosterior
    net: Supernet
    records: list[IterationRecord] = field(default_factory=list)
    seconds: float = 0.0
    inner_seconds: float = 0.0
    """Wall time of the inner loops (weight adaptation), part of `seconds`."""


def posterior_probabilities(space: NasSpace, posterior: GaussianPosterior) -> dict[str, torch.Tensor]:
    """softmax of the posterior mean per decision."""
    return {k: torch.softmax(v, -1) for k, v in unflatten_alpha(space, posterior.mean.detach()).items()}


def build_posterior(space: NasSpace, prior_scale: float, init_std: float) -> GaussianPosterior:
    return GaussianPosterior([len(d.options) for d in space.decisions], prior_scale, init_std)


def adapt_weights(
    net: Supernet,
    path: dict[str, torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    rows: torch.Tensor,
    steps: int,
    batch: int,
    lr: float,
    generator: torch.Generator,
    domain: SearchDomain | None = None,
) -> None:
    """`steps` Adam steps (fresh state) of the weights on the fixed path, batches drawn from `rows`
    of (x (R, ...), y (R, ...)), the domain's rows and targets, with the domain's loss; in place.
    `domain` None: the domain that claims (x, y) (`speccomp.nas.domain.domain_of`)."""
    domain = domain or domain_of((x, y))
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr, foreach=True)
    for _ in range(steps):
        idx = batch_rows(rows, batch, generator)
        loss = domain.loss(domain.forward(net, x[idx], path), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def meta_train(
    net: Supernet,
    posterior: GaussianPosterior,
    bank: Bank,
    pairs: list[Any],
    hyper: MetaHyper,
    seed: int,
    callback: Callable[[IterationRecord], None] | None = None,
) -> MetaTrainResult:
    """Run `hyper.iterations` meta-iterations over the meta-training `pairs` (see module doc).
    Streams: (seed, "meta", purpose) for the task draw, ε, Gumbel noise and batches."""
    space = net.space
    g_task, g_eps = task_generator(seed, "task"), task_generator(seed, "eps")
    g_gumbel, g_batch = task_generator(seed, "gumbel"), task_generator(seed, "batch")
    meta_opt = torch.optim.Adam(posterior.parameters(), lr=hyper.meta_learning_rate)
    rows = {p: bank.train_rows(p) for p in pairs}
    params = list(net.parameters())
    result = MetaTrainResult(posterior=posterior, net=net)
    start = time.perf_counter()
    for it in range(hyper.iterations):
        pair = pairs[int(torch.randint(len(pairs), (1,), generator=g_task))]
        tau = temperature(it, hyper.iterations, hyper.tau_max, hyper.tau_min, "exponential")
        alpha = unflatten_alpha(space, posterior.sample(g_eps))
        path = sample_weights(alpha, tau, True, g_gumbel)  # one-hot forward, straight-through backward
        fixed = {k: v.detach() for k, v in path.items()}

        before = [p.detach().clone() for p in params]
        t0 = time.perf_counter()
        adapt_weights(net, fixed, bank.train_x, bank.train_y, rows[pair], hyper.inner_steps,
                      hyper.inner_batch, hyper.inner_learning_rate, g_batch, bank.search)
        result.inner_seconds += time.perf_counter() - t0

        query = bank.query[pair]
        q_idx = torch.randint(len(query), (min(hyper.query_batch, len(query)),), generator=g_batch)
        for p in params:
            p.requires_grad_(False)
        query_nll, query_loss = bank.query_nll(net, path, pair, q_idx)
        kl = posterior.kl()
        elbo = query_nll + hyper.kl_weight * kl / hyper.n_tasks
        if hyper.learn_posterior:
            meta_opt.zero_grad(set_to_none=True)
            elbo.backward()
            meta_opt.step()
        with torch.no_grad():
            for p, b in zip(params, before, strict=True):
                p.copy_(b + hyper.meta_step * (p - b))
                p.requires_grad_(True)

        record = IterationRecord(it, pair, tau, elbo.item(), query_loss.item(), kl.item(),
                                 posterior_probabilities(space, posterior))
        result.records.append(record)
        if callback is not None:
            callback(record)
    result.seconds = time.perf_counter() - start
    return result
