"""Stage two and the baselines, per meta-test pair, on the same data, seeds and weight-step budget.

Every method ends with a fixed architecture whose weights are trained on the pair's training split
(each component alone and the bare continuum, optionally only `n_train` spectra) and is scored on
the pair's in-distribution validation split and on its combination (the test split, never seen
before). The budget B = (candidates + 1)·candidate_steps + search_steps + finetune_steps weight
steps is the same for every method:

- `meta`: the posterior's architectures (MAP = argmax of the posterior mean, plus `candidates`
  posterior samples), each fine-tuned from the meta-learned weights for `candidate_steps` and
  judged on the in-distribution validation split only; the best one's α is then adapted at
  ARCHITECTURE_LEARNING_RATE on validation while its weights train (`search_steps`, alternating),
  and the argmax architecture is fine-tuned for `finetune_steps`;
- `prior`: random search at equal budget: `candidates + 1` architectures drawn from the prior,
  trained from a fresh initialisation, the best on validation trained on for the rest of B;
- `nas`: single-task Gumbel-softmax search on the pair (the NAS issue's `run_search`,
  B − finetune_steps iterations of one weight step each), its argmax fine-tuned for the rest;
- `default`, `loglinear`: the project's MLP and the log-linear preset through the ordinary
  training loop, with the epochs that give about B steps;
- `oracle`: the physical floor (fit of the known physics to every test spectrum).

The methods are the same on every domain: each asks the domain object of its data
(`speccomp.meta.domain.MetaDomain`, looked up by `domain_of`) for the rows, the loss, how a
candidate is judged (`selection_loss`) and how the final architecture is scored (`score`). On the
matrices domain (a task = one held-out (rule, attribute) pair) that is the candidates'
cross-entropy and the held-out accuracy, the reference model is `wren` instead of `loglinear`
(`reference_models`) and the floor is chance (`MetaDomain.floor`).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

import torch

from speccomp.core.config import read_yaml, resolve_preset
from speccomp.core.seeding import derive_seed, torch_generator
from speccomp.core.training import train
from speccomp.meta.domain import MetaDomain
from speccomp.meta.metatrain import adapt_weights
from speccomp.meta.posterior import GaussianPosterior, prior_sample
from speccomp.meta.tasks import pair_name
from speccomp.nas import (
    NasSpace,
    Supernet,
    choices_of,
    one_hot_weights,
    run_search,
    sample_weights,
    unflatten_alpha,
)
from speccomp.nas.domain import SearchDomain, domain_of

EVAL_CHUNK = 1024
Task = Any
"""A task of the domain (a pair of components, a (rule, attribute) pair, ...)."""


@dataclass
class StageTwo:
    """Stage-two hyper-parameters (the meta config's `adapt` section plus the settings)."""

    candidates: int = 3
    candidate_steps: int = 60
    search_steps: int = 100
    finetune_steps: int = 300
    batch_size: int = 64
    learning_rate: float = 1e-3
    architecture_learning_rate: float = 1e-3
    tau: float = 0.5
    prior_scale: float = 1.0
    nas_iterations: int | None = None

    @property
    def budget(self) -> int:
        """Weight steps every method gets."""
        return (self.candidates + 1) * self.candidate_steps + self.search_steps + self.finetune_steps


@dataclass
class MethodResult:
    """One method on one pair for one seed."""

    method: str
    pair: Task
    seed: int
    metrics: dict[str, float]
    choices: dict[str, str] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------
# evaluation
# ------------------------------------------------------------------------------------------------
@torch.no_grad()
def predict_path(net: Supernet, path: dict[str, torch.Tensor], x: torch.Tensor,
                 domain: SearchDomain | None = None) -> torch.Tensor:
    """(N, L) -> (N, C) predictions of a fixed path (matrices: (N, 8 + C, D) -> (N, C) scores)."""
    domain = domain or domain_of((x, None))
    return torch.cat([domain.forward(net, x[i : i + EVAL_CHUNK], path) for i in range(0, len(x), EVAL_CHUNK)])


def data_domain(data: dict[str, Any]) -> MetaDomain:
    """The domain object of a task's splits (the domain that claims its training split)."""
    return domain_of(data["train"])


def evaluate_path(net: Supernet, path: dict[str, torch.Tensor], data: dict[str, Any], pair: Task) -> dict[str, float]:
    """The domain's scores (`MetaDomain.score`) of a fixed path on the task's val and test splits."""
    domain = data_domain(data)
    net.eval()
    val_pred = predict_path(net, path, domain.tensors(data["val"])[0], domain)
    out = domain.score(val_pred, predict_path(net, path, domain.tensors(data["test"])[0], domain), data, pair)
    net.train()
    return out


def _val_loss(net: Supernet, path: dict[str, torch.Tensor], data: dict[str, Any], pair: Task) -> float:
    """How candidates are judged: the domain's loss on the in-distribution validation split
    (`MetaDomain.selection_loss`)."""
    domain = data_domain(data)
    return domain.selection_loss(predict_path(net, path, domain.tensors(data["val"])[0], domain), data, pair)


def _train_all(net, path, data, steps, hp: StageTwo, gen) -> None:
    domain = data_domain(data)
    x, y = domain.tensors(data["train"])
    adapt_weights(net, path, x, y, torch.arange(len(x)), steps, hp.batch_size, hp.learning_rate, gen, domain)


def _path_of(space: NasSpace, alpha_flat: torch.Tensor) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    choices = choices_of(space, unflatten_alpha(space, alpha_flat.detach()))
    return choices, one_hot_weights(space, choices)


def _best_candidate(nets_alphas, space, data, pair, steps, hp, gen):
    """Fine-tune each (net, α) on its argmax path for `steps`; the lowest validation loss wins."""
    best = None
    for net, alpha in nets_alphas:
        _, path = _path_of(space, alpha)
        _train_all(net, path, data, steps, hp, gen)
        loss = _val_loss(net, path, data, pair)
        if best is None or loss < best[0]:
            best = (loss, net, alpha)
    return best


# ------------------------------------------------------------------------------------------------
# methods
# ------------------------------------------------------------------------------------------------
def stage_two(meta_net: Supernet, posterior: GaussianPosterior, data: dict[str, Any], pair: Task,
              hp: StageTwo, seed: int, method: str = "meta", fresh_weights: bool = False,
              use_map: bool = True) -> MethodResult:
    """The meta-learner on a meta-test pair (see module doc), and its two ablations, which run the
    same procedure on the same data, seed and budget with one ingredient replaced:

    - `meta`: the learned q and the meta-learned (REPTILE) weights;
    - `meta-arch` (`fresh_weights`): the learned q, weights from a fresh initialisation: what the
      posterior alone carries;
    - `meta-weights` (q = the prior, `use_map` False since the prior's mean prefers nothing, and
      weights meta-learned with q frozen at the prior): what the meta-learned weights alone carry.

    The random stream is the same for all three ((seed, "meta", "stage2", pair)): posterior samples,
    batches and Gumbel noise are drawn alike, so the ablations differ only by what they replace."""
    space = meta_net.space
    gen = torch_generator(seed, "meta", "stage2", pair_name(pair))
    alphas = ([posterior.mean.detach().clone()] if use_map else [])
    alphas += [posterior.sample(gen).detach() for _ in range(hp.candidates + (0 if use_map else 1))]
    start = fresh_supernet(space, data, seed, "stage2") if fresh_weights else meta_net
    _, net, alpha0 = _best_candidate([(copy.deepcopy(start), a) for a in alphas], space, data, pair,
                                     hp.candidate_steps, hp, gen)
    alpha = {k: v.clone().requires_grad_(True) for k, v in unflatten_alpha(space, alpha0).items()}
    _adapt_alpha(net, alpha, data, hp, gen)
    choices = choices_of(space, alpha)
    path = one_hot_weights(space, choices)
    _train_all(net, path, data, hp.finetune_steps, hp, gen)
    picked = "map" if use_map and torch.equal(alpha0, alphas[0]) else "sample"
    return MethodResult(method, pair, seed, evaluate_path(net, path, data, pair), choices,
                        {"candidate": picked, "weight_steps": hp.budget})


def _adapt_alpha(net: Supernet, alpha: dict[str, torch.Tensor], data, hp: StageTwo, gen) -> None:
    """Alternating first-order steps: weights on a training batch (path sampled from stopgrad α),
    α on a validation batch (straight-through) with Adam at ARCHITECTURE_LEARNING_RATE."""
    if hp.search_steps == 0:
        return
    domain = data_domain(data)
    x, y = domain.tensors(data["train"])
    xv, yv = domain.tensors(data["val"])
    opt = torch.optim.Adam(list(alpha.values()), lr=hp.architecture_learning_rate)
    w_opt = torch.optim.Adam([p for p in net.parameters()], lr=hp.learning_rate, foreach=True)
    for _ in range(hp.search_steps):
        idx = torch.randint(len(x), (hp.batch_size,), generator=gen)
        with torch.no_grad():
            path = sample_weights({k: v.detach() for k, v in alpha.items()}, hp.tau, True, gen)
        loss = domain.loss(domain.forward(net, x[idx], path), y[idx])
        w_opt.zero_grad(set_to_none=True)
        loss.backward()
        w_opt.step()
        idx = torch.randint(len(xv), (hp.batch_size,), generator=gen)
        val = domain.loss(domain.forward(net, xv[idx], sample_weights(alpha, hp.tau, True, gen)), yv[idx])
        grads = torch.autograd.grad(val, list(alpha.values()))
        for a, g in zip(alpha.values(), grads, strict=True):
            a.grad = g
        opt.step()


def fresh_supernet(space: NasSpace, data: dict[str, Any], seed: int, purpose: str) -> Supernet:
    domain = data_domain(data)
    x, y = domain.tensors(data["train"])
    return domain.supernet(space, x, y, torch_generator(seed, "meta", purpose, "init"))


def prior_search(space: NasSpace, data: dict[str, Any], pair: Task, hp: StageTwo, seed: int) -> MethodResult:
    """Random search at equal budget: candidates + 1 architectures from the prior p(α)."""
    gen = torch_generator(seed, "meta", "prior", pair_name(pair))
    sizes = [len(d.options) for d in space.decisions]
    alphas = [prior_sample(sizes, hp.prior_scale, gen) for _ in range(hp.candidates + 1)]
    nets = [(fresh_supernet(space, data, seed, "prior"), a) for a in alphas]
    _, net, alpha = _best_candidate(nets, space, data, pair, hp.candidate_steps, hp, gen)
    choices, path = _path_of(space, alpha)
    _train_all(net, path, data, hp.search_steps + hp.finetune_steps, hp, gen)
    return MethodResult("prior", pair, seed, evaluate_path(net, path, data, pair), choices)


def single_task_nas(space: NasSpace, data: dict[str, Any], pair: Task, hp: StageTwo, seed: int) -> MethodResult:
    """The NAS issue's search on this pair alone (its in-distribution validation split guides α),
    then its argmax architecture fine-tuned from the searched weights."""
    iterations = hp.nas_iterations or (hp.budget - hp.finetune_steps)
    settings = space.search.model_copy(update={
        "architecture_search_iterations": iterations,
        "architecture_learning_rate": hp.architecture_learning_rate,
        "batch_size": hp.batch_size,
    })
    search_seed = derive_seed(seed, "meta", "nas", pair_name(pair)) % 2**31
    result = run_search(space, data["train"], data["val"], search_seed, settings, domain=data_domain(data))
    net = result.supernet
    choices = result.choices
    path = one_hot_weights(space, choices)
    gen = torch_generator(seed, "meta", "nas-finetune", pair_name(pair))
    _train_all(net, path, data, hp.budget - iterations, hp, gen)
    return MethodResult("nas", pair, seed, evaluate_path(net, path, data, pair), choices)


def preset_training(task_cfg: Any, preset: str | None, data: dict[str, Any], pair: Task,
                    hp: StageTwo, seeds: list[int], method: str, overrides: tuple[str, ...] = ()) -> list[MethodResult]:
    """The project's own model (`preset` None = the default MLP; matrices: `raven_mlp`, or
    `raven_wren` through `overrides`) trained by the ordinary loop, with the epochs that give about
    B steps, every seed at once."""
    from speccomp.core.task import config_from_any_dict

    raw = task_cfg.to_dict()
    if preset:
        layer = read_yaml(resolve_preset(preset))
        for section, values in layer.items():
            raw.setdefault(section, {}).update(values)
    steps_per_epoch = math.ceil(len(data["train"]) / raw["training"]["batch_size"])
    epochs = max(1, round(hp.budget / steps_per_epoch))
    cfg = config_from_any_dict(raw, [*overrides, f"training.epochs={epochs}", "training.checkpoint_retention=none",
                                     "training.checkpoint_ratio=1.0"])
    result = train(cfg, data, seeds)
    out = []
    for seed_result in result.seeds:
        test_pred = torch.from_numpy(seed_result.test_predictions)
        val_pred = _member_predict(seed_result.model, data_domain(data).tensors(data["val"])[0])
        out.append(MethodResult(method, pair, seed_result.seed, data_domain(data).score(val_pred, test_pred, data, pair),
                                extra={"epochs": epochs, "steps": result.total_steps}))
    return out


@torch.no_grad()
def _member_predict(member: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    member.eval()
    return torch.cat([member(x[i : i + EVAL_CHUNK]) for i in range(0, len(x), EVAL_CHUNK)])
