"""The search: first-order alternating bilevel optimisation of the supernet's weights and α.

Each iteration t:
  1. weight step: a training batch, one architecture sampled from stopgrad(α), AdamW on the
     supernet's weights (a hard GDAS sample runs one path only);
  2. α step (after the warm-up, `warmup_fraction` of the iterations): `alpha_samples` validation
     batches, each with its own sample differentiable in α (straight-through when hard), their
     gradients averaged, Adam on α. τ anneals from tau_max to tau_min over the α steps.
First order: the α gradient is taken at the current weights (DARTS' first-order approximation),
with no unrolled weight step. Every α gradient is kept (`SearchResult.alpha_gradients`) so that
its signal-to-noise ratio per decision can be read (`decision_table`).

Every random stream comes from the search seed: supernet weights ("nas", "init"), batches
("nas", "batch"), Gumbel noise ("nas", "gumbel"); so a seed gives one α trajectory exactly.
"""

from __future__ import annotations

import math
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
    """The domain searched (when None, derived architectures are `seq` models)."""
    alpha_gradients: torch.Tensor | None = None
    """(T, n_logits) averaged α gradient of every iteration, flat; NaN rows in the warm-up."""
    warmup_iterations: int = 0

    @property
    def gradient_steps(self) -> int:
        """Forward-backward passes on a batch: one per weight step, `alpha_samples` per α step
        (the measure random search's budget is matched on)."""
        settings = self.space.search
        n_iter = settings.architecture_search_iterations
        return n_iter + (n_iter - self.warmup_iterations) * settings.alpha_samples

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
    domain: SearchDomain | None = None,
) -> SearchResult:
    """Search `space` on (train, val) — split objects of any domain or (inputs, targets) pairs —
    from `seed`. `domain` asks the rows, the supernet and the loss (`speccomp.nas.domain`); None:
    the domain that claims the splits (`domain_of`).
    `settings` default to the space file's; `alpha` (leaf tensors) to zeros. `callback(t, metrics)`
    is called after every iteration t = 1..T with the metrics of `metric_names(space)`."""
    settings = settings or space.search
    t0 = time.perf_counter()
    domain = domain or domain_of(train)
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
    n_warm = warmup_iterations(settings)
    names = metric_names(space)
    trajectory = torch.empty(n_iter + 1, space.n_logits)
    history = torch.empty(n_iter, len(names), dtype=torch.float64)
    gradients = torch.full((n_iter, space.n_logits), math.nan)
    trajectory[0] = flatten_alpha(space, alpha).detach()
    net.train()
    for t in range(n_iter):
        warm = t < n_warm
        tau = settings.tau_max if warm else temperature(t - n_warm, n_iter - n_warm, settings.tau_max,
                                                        settings.tau_min, settings.tau_schedule)
        # 1. weights, on a training batch, with the architecture sampled from stopgrad(α)
        idx = torch.randint(x_train.shape[0], (settings.batch_size,), generator=batch_gen)
        with torch.no_grad():
            w = sample_weights({k: v.detach() for k, v in alpha.items()}, tau, hard, gumbel_gen)
        train_loss = domain.loss(domain.forward(net, domain.rows(z_train, idx), w), y_train[idx])
        w_opt.zero_grad()
        train_loss.backward()
        w_opt.step()
        # 2. α, on validation batches (autograd.grad: no weight gradients are computed or kept)
        val_loss = torch.tensor(math.nan)
        if not warm:
            val_loss, grads = _alpha_gradient(domain, net, alpha, z_val, y_val, settings, tau, batch_gen, gumbel_gen)
            for a, g in zip(alpha.values(), grads, strict=True):
                a.grad = g
            a_opt.step()
            gradients[t] = torch.cat([g.reshape(-1) for g in grads])
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
    return SearchResult(space, seed, final, trajectory, history, net, time.perf_counter() - t0, domain,
                        gradients, n_warm)


def warmup_iterations(settings: SearchSettings) -> int:
    """Iterations of the weight-only warm-up: round(warmup_fraction · T), leaving at least one α step."""
    n_iter = settings.architecture_search_iterations
    return min(n_iter - 1, round(settings.warmup_fraction * n_iter))


def _alpha_gradient(domain, net, alpha, z_val, y_val, settings, tau, batch_gen, gumbel_gen):
    """Mean validation loss and mean α gradient over `alpha_samples` (batch, Gumbel sample) draws;
    with one sample the draws are those of the plain first-order step."""
    total_loss, total = None, None
    for _ in range(settings.alpha_samples):
        idx = torch.randint(y_val.shape[0], (settings.batch_size,), generator=batch_gen)
        w = sample_weights(alpha, tau, settings.hard, gumbel_gen, settings.alpha_gradient)
        loss = domain.loss(domain.forward(net, domain.rows(z_val, idx), w), y_val[idx])
        grads = torch.autograd.grad(loss, list(alpha.values()))
        total_loss = loss.detach() if total_loss is None else total_loss + loss.detach()
        total = list(grads) if total is None else [a + b for a, b in zip(total, grads, strict=True)]
    k = settings.alpha_samples
    return total_loss / k, [g / k for g in total]


DECIDED_ENTROPY_RATIO = 0.8
"""A decision counts as decided when the entropy of softmax(α) is at most this fraction of log K
(the uniform choice's); the headline criterion of the search holds the mean to the same bound."""


def gradient_snr(gradients: torch.Tensor) -> torch.Tensor:
    """(T, n) α gradients (NaN rows skipped) -> (n,) |mean| / std over the iterations: how much of
    a logit's gradient is signal. Adam's step is about lr · mean / rms, so a logit with SNR r
    moves about lr · T · r / sqrt(1 + r²) in T steps (and a random walk of lr · sqrt(T) besides)."""
    rows = gradients[~torch.isnan(gradients).any(1)]
    if rows.shape[0] < 2:
        return torch.full((gradients.shape[1],), math.nan)
    return rows.mean(0).abs() / rows.std(0).clamp_min(1e-30)


def decision_table(space: NasSpace, alpha: dict[str, torch.Tensor],
                   gradients: torch.Tensor | None = None) -> list[dict[str, Any]]:
    """One row per decision: the chosen option (`choices_of`: zero left out), its probability, the
    runner-up and its probability, the margin, the entropy against log K, whether it is decided
    (`DECIDED_ENTROPY_RATIO`) and, given the α gradients, the largest per-option gradient SNR."""
    choices = choices_of(space, alpha)
    snr = gradient_snr(gradients) if gradients is not None else None
    rows, start = [], 0
    for d in space.decisions:
        probs = torch.softmax(alpha[d.name].detach(), -1)
        k = len(d.options)
        chosen = choices[d.name]
        p_chosen = float(probs[d.options.index(chosen)])
        others = [(o, float(p)) for o, p in zip(d.options, probs, strict=True) if o != chosen]
        runner, p_runner = max(others, key=lambda item: item[1]) if others else ("", 0.0)
        entropy = float(-(probs * probs.clamp_min(1e-30).log()).sum())
        ratio = entropy / math.log(k) if k > 1 else 0.0
        rows.append({
            "decision": d.name, "choice": chosen, "p": p_chosen, "runner_up": runner, "p_runner_up": p_runner,
            "margin": p_chosen - p_runner, "uniform": 1 / k, "entropy": entropy, "log_k": math.log(k),
            "entropy_ratio": ratio, "decided": k == 1 or ratio <= DECIDED_ENTROPY_RATIO,
            "grad_snr": float(snr[start:start + k].max()) if snr is not None else math.nan,
        })
        start += k
    return rows
