"""The search: first-order alternating bilevel optimisation of the supernet's weights and α.

Each iteration t (τ annealed from tau_max to tau_min):
  1. weight step: a training batch, one architecture sampled from stopgrad(α), AdamW on the
     supernet's weights (a hard GDAS sample runs one path only);
  2. α step: a validation batch, a sample differentiable in α (straight-through when hard),
     Adam on α.
First order: the α gradient is taken at the current weights (DARTS' first-order approximation),
with no unrolled weight step.

Every random stream comes from the search seed: supernet weights ("nas", "init"), batches
("nas", "batch"), Gumbel noise ("nas", "gumbel"); so a seed gives one α trajectory exactly.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from speccomp.core.optim import FlatAdam
from speccomp.core.seeding import torch_generator
from speccomp.nas.derive import choices_of, preset_of
from speccomp.nas.domain import SearchDomain, domain_of
from speccomp.nas.gumbel import mean_entropy, sample_weights, temperature
from speccomp.nas.space import NasSpace, SearchSettings, flatten_alpha, init_alpha, metric_label
from speccomp.nas.supernet import Supernet

SCALARS = ("nas/tau", "nas/train_loss", "nas/val_loss", "nas/entropy")


def probability_names(space: NasSpace) -> list[str]:
    """`nas/prob/<decision>/<option>` in flat α order."""
    return [f"nas/prob/{d.name}/{metric_label(o)}" for d in space.decisions for o in d.options]


def metric_names(space: NasSpace) -> list[str]:
    """Every per-iteration metric, in the column order of `SearchResult.history`."""
    return [*SCALARS, *probability_names(space)]


@dataclass
class SearchResult:
    space: NasSpace
    seed: int
    alpha: dict[str, torch.Tensor]
    """Final logits per decision (detached)."""
    alpha_trajectory: torch.Tensor
    """(T + 1, n_logits): α before the first and after every iteration, flat (`flatten_alpha`)."""
    history: torch.Tensor
    """(T, len(metric_names(space))) per-iteration metrics, float64."""
    supernet: Supernet
    seconds: float
    domain: SearchDomain | None = None
    """The domain searched (spectra when None)."""

    @property
    def choices(self) -> dict[str, str]:
        return choices_of(self.space, self.alpha)

    @property
    def preset(self) -> dict[str, Any]:
        """The derived architecture as a partial config of the domain's `seq` model."""
        return preset_of(self.space, self.choices, self.domain.model_type if self.domain else "seq")

    def probabilities(self) -> dict[str, dict[str, float]]:
        """Final softmax(α): {decision: {option: probability}}."""
        return {d.name: dict(zip(d.options, torch.softmax(self.alpha[d.name], -1).tolist(), strict=True))
                for d in self.space.decisions}


def run_search(
    space: NasSpace,
    train: Any,
    val: Any,
    seed: int,
    settings: SearchSettings | None = None,
    callback: Callable[[int, dict[str, float]], None] | None = None,
    alpha: dict[str, torch.Tensor] | None = None,
) -> SearchResult:
    """Search `space` on (train, val) — split objects of either domain (`SplitData`, `MatrixSplit`)
    or (inputs, targets) pairs; the domain is that of the splits (`domain.domain_of`) — from `seed`.
    `settings` default to the space file's; `alpha` (leaf tensors) to zeros. `callback(t, metrics)`
    is called after every iteration t = 1..T with the metrics of `metric_names(space)`."""
    settings = settings or space.search
    t0 = time.perf_counter()
    domain = domain_of(train)
    x_train, y_train = domain.tensors(train)
    x_val, y_val = domain.tensors(val)
    domain.check(space, domain.n_features(x_train))
    net = domain.supernet(space, x_train, y_train, torch_generator(seed, "nas", "init"))
    z_train, z_val = domain.prepare(net, x_train), domain.prepare(net, x_val)  # spectra: (K, N, L) each
    alpha = alpha if alpha is not None else init_alpha(space)
    w_opt = FlatAdam(net, lr=settings.weight_learning_rate, weight_decay=settings.weight_decay)
    a_opt = torch.optim.Adam(list(alpha.values()), lr=settings.architecture_learning_rate, betas=(0.5, 0.999),
                             weight_decay=settings.architecture_weight_decay)
    batch_gen, gumbel_gen = torch_generator(seed, "nas", "batch"), torch_generator(seed, "nas", "gumbel")
    n_iter, hard = settings.architecture_search_iterations, settings.hard
    names = metric_names(space)
    trajectory = torch.empty(n_iter + 1, space.n_logits)
    history = torch.empty(n_iter, len(names), dtype=torch.float64)
    trajectory[0] = flatten_alpha(space, alpha).detach()
    net.train()
    for t in range(n_iter):
        tau = temperature(t, n_iter, settings.tau_max, settings.tau_min, settings.tau_schedule)
        # 1. weights, on a training batch, with the architecture sampled from stopgrad(α)
        idx = torch.randint(x_train.shape[0], (settings.batch_size,), generator=batch_gen)
        with torch.no_grad():
            w = sample_weights({k: v.detach() for k, v in alpha.items()}, tau, hard, gumbel_gen)
        train_loss = domain.loss(domain.forward(net, domain.rows(z_train, idx), w), y_train[idx])
        w_opt.zero_grad()
        train_loss.backward()
        w_opt.step()
        # 2. α, on a validation batch (autograd.grad: no weight gradients are computed or kept)
        idx = torch.randint(x_val.shape[0], (settings.batch_size,), generator=batch_gen)
        w = sample_weights(alpha, tau, hard, gumbel_gen)
        val_loss = domain.loss(domain.forward(net, domain.rows(z_val, idx), w), y_val[idx])
        grads = torch.autograd.grad(val_loss, list(alpha.values()))
        for a, g in zip(alpha.values(), grads, strict=True):
            a.grad = g
        a_opt.step()
        with torch.no_grad():
            flat = flatten_alpha(space, alpha)
            trajectory[t + 1] = flat
            probs = torch.cat([torch.softmax(alpha[d.name], -1) for d in space.decisions])
            row = torch.cat([torch.stack([torch.tensor(tau), train_loss.detach(), val_loss.detach(),
                                          mean_entropy(alpha)]).double(), probs.double()])
            history[t] = row
        if callback is not None:
            callback(t + 1, dict(zip(names, row.tolist(), strict=True)))
    final = {k: v.detach().clone() for k, v in alpha.items()}
    return SearchResult(space, seed, final, trajectory, history, net, time.perf_counter() - t0, domain)
