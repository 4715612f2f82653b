"""Model registry. Every model is an *ensemble* of S independent members (one per training seed)
that are trained together: every parameter and buffer has a leading member dimension, inputs are
(S, B, L) and outputs (S, B, C). A member's weights are drawn from its own generator and its
dropout masks from another, so member s of an ensemble computes exactly what an ensemble of one
with the same seed computes. `Member` wraps one member as a plain (B, L) -> (B, C) module for
checkpoints, MLflow and anyone downstream.

New architectures register with `@register_model("name")` on an `EnsembleModel` subclass; the
model section of the training config reaches them as a `ModelSpec`.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from speccomp.core.registry import DEFAULT_DOMAIN, MODEL_DOMAINS, MODEL_MODULES
from speccomp.core.schema import TrainingConfig

LOG_FLOOR = 1e-6  # spectra are positive in expectation; rare noisy bins <= 0 are clamped before log

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": F.relu,
    "gelu": F.gelu,
    "tanh": torch.tanh,
    "silu": F.silu,
    "leaky_relu": F.leaky_relu,
}
_GAIN_NAME = {"relu": "relu", "gelu": "relu", "silu": "relu", "tanh": "tanh", "leaky_relu": "leaky_relu"}


@dataclass
class ModelSpec:
    """Everything needed to rebuild a model: stored in every checkpoint (plain types only)."""

    model_type: str
    n_bins: int
    n_outputs: int
    hidden_dims: list[int] = field(default_factory=lambda: [128, 64])
    dropout_rate: float = 0.1
    activation: str = "relu"
    input_transform: str = "none"
    cnn: dict[str, Any] = field(default_factory=dict)
    seq: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_training(cls, training: TrainingConfig, n_bins: int, n_outputs: int) -> ModelSpec:
        return cls(
            model_type=training.model_type,
            n_bins=n_bins,
            n_outputs=n_outputs,
            hidden_dims=list(training.hidden_dims),
            dropout_rate=training.dropout_rate,
            activation=training.activation,
            input_transform=training.input_transform,
            cnn=training.cnn.model_dump(),
            seq=training.seq.model_dump(),
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


MODEL_REGISTRY: dict[str, type[EnsembleModel]] = {}


def register_model(name: str, domain: str = DEFAULT_DOMAIN) -> Callable[[type[EnsembleModel]], type[EnsembleModel]]:
    """Class decorator: make an `EnsembleModel` subclass selectable as `training.model_type` in
    the configs of `domain`."""

    def wrap(cls: type[EnsembleModel]) -> type[EnsembleModel]:
        MODEL_REGISTRY[name] = cls
        MODEL_MODULES.setdefault(name, cls.__module__)
        MODEL_DOMAINS.setdefault(name, domain)
        return cls

    return wrap


# ------------------------------------------------------------------------------------------------
# building blocks
# ------------------------------------------------------------------------------------------------
class InputTransform(nn.Module):
    """`none`, `log`, `standardize` or `log+standardize`, with the statistics as buffers so that a
    checkpoint carries them. Statistics are per wavelength bin, fitted on the training spectra."""

    def __init__(self, kind: str, n_members: int, n_bins: int):
        super().__init__()
        self.kind = kind
        self.register_buffer("mean", torch.zeros(n_members, 1, n_bins))
        self.register_buffer("std", torch.ones(n_members, 1, n_bins))

    def _log(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log(x.clamp_min(LOG_FLOOR)) if self.kind.startswith("log") else x

    @torch.no_grad()
    def fit(self, train_spectra: torch.Tensor) -> None:
        """Set mean/std from (N, L) training spectra (only for the standardize kinds)."""
        if "standardize" not in self.kind:
            return
        z = self._log(train_spectra.to(torch.float64))
        self.mean.copy_(z.mean(0).to(self.mean.dtype).expand_as(self.mean))
        self.std.copy_(z.std(0).clamp_min(1e-6).to(self.std.dtype).expand_as(self.std))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._log(x)
        if "standardize" in self.kind:
            x = (x - self.mean) / self.std
        return x

    def for_member(self, x: torch.Tensor, s: int = 0) -> torch.Tensor:
        """(N, L) spectra -> (N, L) transformed with member s's statistics."""
        x = self._log(x)
        if "standardize" in self.kind:
            x = (x - self.mean[s]) / self.std[s]
        return x


class EnsembleLinear(nn.Module):
    """S independent linear layers: (S, B, in) -> (S, B, out) in one batched matmul."""

    def __init__(self, n_members: int, n_in: int, n_out: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_members, n_in, n_out))
        self.bias = nn.Parameter(torch.zeros(n_members, 1, n_out))

    def reset_member(self, s: int, gen: torch.Generator, gain: float) -> None:
        # Kaiming-normal (fan-in), as in the tutorial; zero bias.
        n_in = self.weight.shape[1]
        std = gain / math.sqrt(n_in)
        with torch.no_grad():
            self.weight[s].copy_(torch.randn(self.weight.shape[1:], generator=gen) * std)
            self.bias[s].zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias, x, self.weight)


class EnsembleConv1d(nn.Module):
    """S independent 'same'-padded 1-D convolutions as one grouped convolution.
    Input (S, B, C_in, L) -> (S, B, C_out, L)."""

    def __init__(self, n_members: int, c_in: int, c_out: int, kernel: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_members, c_out, c_in, kernel))
        self.bias = nn.Parameter(torch.zeros(n_members, c_out))
        self.padding = kernel // 2

    def reset_member(self, s: int, gen: torch.Generator, gain: float) -> None:
        _, _, c_in, k = self.weight.shape
        std = gain / math.sqrt(c_in * k)
        with torch.no_grad():
            self.weight[s].copy_(torch.randn(self.weight.shape[1:], generator=gen) * std)
            self.bias[s].zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n_members, batch, c_in, length = x.shape
        c_out = self.weight.shape[1]
        # (S, B, C, L) -> (B, S*C, L): member s uses channel group s only.
        xg = x.transpose(0, 1).reshape(batch, n_members * c_in, length)
        w = self.weight.reshape(n_members * c_out, c_in, -1)
        y = F.conv1d(xg, w, self.bias.reshape(-1), padding=self.padding, groups=n_members)
        return y.reshape(batch, n_members, c_out, -1).transpose(0, 1)


def ensemble_dropout(x: torch.Tensor, p: float, generators: list[torch.Generator] | None) -> torch.Tensor:
    """Inverted dropout with member s's mask drawn from generators[s] (shape of one member's
    activation), so a member sees the same masks alone or in an ensemble."""
    if generators is None or p == 0.0:
        return x
    keep = 1.0 - p
    if len(generators) == 1:
        draws = torch.rand(x.shape[1:], generator=generators[0]).unsqueeze(0)
    else:
        draws = torch.stack([torch.rand(x.shape[1:], generator=g) for g in generators])
    # 1/keep where the draw is below keep, else 0: one fused pass instead of compare, cast, scale
    mask = torch.where(draws < keep, 1.0 / keep, 0.0).to(device=x.device, dtype=x.dtype)
    return x * mask


def max_pool(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Max over non-overlapping windows of `factor` along the last axis (a trailing remainder is
    dropped): the values of `F.max_pool1d(x, factor)` for any leading shape, as one reduction
    (faster than max_pool1d on CPU, forward and backward, where gradients flow; without them
    max_pool1d is, as it keeps no indices)."""
    length = x.shape[-1] // factor * factor
    if not (x.requires_grad and torch.is_grad_enabled()):  # evaluation: max_pool1d is 10x faster without indices
        flat = x.reshape(-1, 1, x.shape[-1]) if x.dim() != 3 else x
        return F.max_pool1d(flat, factor).reshape(*x.shape[:-1], length // factor)
    return x[..., :length].unflatten(-1, (-1, factor)).max(-1).values


class EnsembleModel(nn.Module):
    """Base class. Subclasses build layers in `__init__(spec, n_members)` and implement
    `reset_member(s, gen)` (draw member s's weights) and `features(x)`; dropout masks come from
    `self.dropout_generators` (set by the training loop, None in evaluation)."""

    def __init__(self, spec: ModelSpec, n_members: int):
        super().__init__()
        self.spec = spec
        self.n_members = n_members
        self.transform = InputTransform(spec.input_transform, n_members, spec.n_bins)
        self.dropout_generators: list[torch.Generator] | None = None

    def reset_member(self, s: int, gen: torch.Generator) -> None:
        raise NotImplementedError

    def body(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(S, B, L) spectra -> (S, B, C) abundances."""
        return self.body(self.transform(x))

    def _dropout(self, x: torch.Tensor) -> torch.Tensor:
        gens = self.dropout_generators if self.training else None
        return ensemble_dropout(x, self.spec.dropout_rate, gens)

    def _gain(self) -> float:
        return nn.init.calculate_gain(_GAIN_NAME[self.spec.activation])


@register_model("mlp")
class MLP(EnsembleModel):
    """The tutorial's MLP: L -> hidden_dims... -> C, activation and dropout after each hidden layer."""

    def __init__(self, spec: ModelSpec, n_members: int):
        super().__init__(spec, n_members)
        dims = [spec.n_bins, *spec.hidden_dims, spec.n_outputs]
        self.layers = nn.ModuleList(EnsembleLinear(n_members, a, b) for a, b in zip(dims[:-1], dims[1:], strict=True))
        self.act = ACTIVATIONS[spec.activation]

    def reset_member(self, s: int, gen: torch.Generator) -> None:
        for layer in self.layers:
            layer.reset_member(s, gen, self._gain())

    def body(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers[:-1]:
            x = self._dropout(self.act(layer(x)))
        return self.layers[-1](x)


@register_model("linear")
class Linear(EnsembleModel):
    """One linear map L -> C. With the `log` transform it is the log-linear reference: the
    simplest model whose inductive bias matches the physics (components add in log space)."""

    def __init__(self, spec: ModelSpec, n_members: int):
        super().__init__(spec, n_members)
        self.layer = EnsembleLinear(n_members, spec.n_bins, spec.n_outputs)

    def reset_member(self, s: int, gen: torch.Generator) -> None:
        self.layer.reset_member(s, gen, 1.0)

    def body(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


RIDGE_GRID = torch.logspace(-9.0, 3.0, 49, dtype=torch.float64)
"""Regularisation strengths tried by `ridge`, relative to the mean eigenvalue of the centred
training Gram matrix (so the grid follows the scale of the input transform)."""


@register_model("ridge")
class Ridge(Linear):
    """Closed-form ridge regression on the input transform: the linear reference, limited by
    nothing but the model class and the data. Fitted in one solve (float64, eigendecomposition of
    the centred training Gram matrix), with the regularisation chosen per output on the
    in-distribution validation split from `RIDGE_GRID`. Deterministic: every member (seed) gets
    the same weights. The training loop calls `fit_closed_form` instead of taking optimiser steps."""

    closed_form = True

    def reset_member(self, s: int, gen: torch.Generator) -> None:
        with torch.no_grad():  # the initialisation (checkpoint 0) predicts 0 everywhere
            self.layer.weight[s].zero_()
            self.layer.bias[s].zero_()

    @torch.no_grad()
    def fit_closed_form(
        self, train_x: torch.Tensor, train_y: torch.Tensor, val_x: torch.Tensor, val_y: torch.Tensor
    ) -> torch.Tensor:
        """Fit every member from (N, L) spectra and (N, C) targets; returns the (C,) chosen
        regularisation strengths (absolute, in the units of the transformed inputs squared)."""
        z = self.transform.for_member(train_x).to(torch.float64)  # members share the statistics
        zv = self.transform.for_member(val_x).to(torch.float64)
        y, yv = train_y.to(torch.float64), val_y.to(torch.float64)
        z_mean, y_mean = z.mean(0), y.mean(0)
        zc = z - z_mean
        evals, evecs = torch.linalg.eigh(zc.T @ zc)  # (L,), (L, L)
        evals = evals.clamp_min(0.0)
        proj = evecs.T @ (zc.T @ (y - y_mean))  # (L, C)
        val_basis = (zv - z_mean) @ evecs  # (Nv, L)
        lambdas = RIDGE_GRID * evals.mean().clamp_min(1e-30)  # (K,)
        coef = proj.unsqueeze(0) / (evals.unsqueeze(0) + lambdas.unsqueeze(1)).unsqueeze(-1)  # (K, L, C)
        val_mse = ((val_basis @ coef + y_mean - yv) ** 2).mean(dim=1)  # (K, C)
        best = val_mse.argmin(dim=0)  # (C,)
        chosen = lambdas[best]
        weight = evecs @ (proj / (evals.unsqueeze(1) + chosen.unsqueeze(0)))  # (L, C)
        bias = y_mean - z_mean @ weight
        self.layer.weight.copy_(weight.to(self.layer.weight.dtype).expand_as(self.layer.weight))
        self.layer.bias.copy_(bias.to(self.layer.bias.dtype).expand_as(self.layer.bias))
        return chosen


@register_model("cnn")
class CNN(EnsembleModel):
    """The tutorial's 1-D CNN: conv (channels, kernels) + activation + max-pool per stage, then an
    MLP head (head_dim units, dropout) to C outputs."""

    def __init__(self, spec: ModelSpec, n_members: int):
        super().__init__(spec, n_members)
        cnn = spec.cnn
        channels, kernels, self.pool = list(cnn["channels"]), list(cnn["kernel_sizes"]), int(cnn["pool"])
        c_in = [1, *channels[:-1]]
        self.convs = nn.ModuleList(
            EnsembleConv1d(n_members, a, b, k) for a, b, k in zip(c_in, channels, kernels, strict=True)
        )
        length = spec.n_bins
        for _ in channels:
            length //= self.pool
        if length < 1:
            raise ValueError(
                f"training.cnn: {len(channels)} pooling stages of {self.pool} leave no bins of {spec.n_bins}"
            )
        self.head = EnsembleLinear(n_members, channels[-1] * length, int(cnn["head_dim"]))
        self.out = EnsembleLinear(n_members, int(cnn["head_dim"]), spec.n_outputs)
        self.act = ACTIVATIONS[spec.activation]

    def reset_member(self, s: int, gen: torch.Generator) -> None:
        for layer in [*self.convs, self.head, self.out]:
            layer.reset_member(s, gen, self._gain())

    def body(self, x: torch.Tensor) -> torch.Tensor:
        n_members, batch, _ = x.shape
        h = x.unsqueeze(2)  # (S, B, 1, L)
        for conv in self.convs:
            h = self.act(conv(h))
            h = F.max_pool1d(h.reshape(n_members * batch, h.shape[2], -1), self.pool)
            h = h.reshape(n_members, batch, h.shape[1], -1)
        h = h.reshape(n_members, batch, -1)
        h = self._dropout(self.act(self.head(h)))
        return self.out(h)


@register_model("seq")
class Seq(EnsembleModel):
    """A general sequence of layers (`training.seq`, what architecture search derives): a conv
    stage on (channels, bins) (`conv`: same-padded convolution, max-pool, activation; `pool`),
    flattened channel-major, then a dense stage (`dense`: linear, activation, dropout), `identity`
    and `zero` anywhere, and always a linear output layer to the C components."""

    def __init__(self, spec: ModelSpec, n_members: int):
        super().__init__(spec, n_members)
        seq = {"layers": [], "pool": 2, **(spec.seq or {})}
        self.pool = int(seq["pool"])
        self.plan: list[tuple[str, int, str]] = []  # (op, index into self.blocks or -1, activation)
        self.blocks = nn.ModuleList()
        self.gains: list[float] = []
        channels, length, features = 1, spec.n_bins, None
        for layer in seq["layers"]:
            op, act = layer["op"], layer.get("activation") or spec.activation
            index = -1
            if op == "conv":
                index = self._add(EnsembleConv1d(n_members, channels, int(layer["width"]), int(layer["kernel"])), act)
                channels, length = int(layer["width"]), length // self.pool
            elif op == "pool":
                length //= self.pool
            elif op == "dense":
                index = self._add(EnsembleLinear(n_members, features or channels * length, int(layer["width"])), act)
                features = int(layer["width"])
            self.plan.append((op, index, act))
        if length < 1:
            raise ValueError(f"training.seq.layers: the conv and pool layers leave no bins of {spec.n_bins}")
        self.out = EnsembleLinear(n_members, features or channels * length, spec.n_outputs)

    def _add(self, block: nn.Module, activation: str) -> int:
        self.blocks.append(block)
        self.gains.append(nn.init.calculate_gain(_GAIN_NAME[activation]))
        return len(self.blocks) - 1

    def reset_member(self, s: int, gen: torch.Generator) -> None:
        for block, gain in zip(self.blocks, self.gains, strict=True):
            block.reset_member(s, gen, gain)
        self.out.reset_member(s, gen, self._gain())

    def body(self, x: torch.Tensor) -> torch.Tensor:
        n_members, batch, _ = x.shape
        h = x.unsqueeze(2)  # (S, B, 1, L): the conv stage works on (channels, bins)
        flat = False
        for op, index, act in self.plan:
            if op in ("conv", "pool"):
                h = max_pool(self.blocks[index](h) if op == "conv" else h, self.pool)
                if op == "conv":  # pool before the activation: the same for monotone ones, half the work
                    h = ACTIVATIONS[act](h)
                continue
            if op == "dense":
                if not flat:
                    h, flat = h.reshape(n_members, batch, -1), True
                h = self._dropout(ACTIVATIONS[act](self.blocks[index](h)))
            elif op == "zero":
                h = torch.zeros_like(h)
        if not flat:
            h = h.reshape(n_members, batch, -1)
        return self.out(h)


# ------------------------------------------------------------------------------------------------
# construction, members, checkpoints
# ------------------------------------------------------------------------------------------------
def model_class(name: str) -> type[EnsembleModel]:
    """The registered class of `name`, importing the module that defines it on first use."""
    if name not in MODEL_REGISTRY and name in MODEL_MODULES:
        importlib.import_module(MODEL_MODULES[name])  # registers the class
    if name not in MODEL_REGISTRY:
        raise ValueError(f"training.model_type: unknown model {name!r}; registered: {', '.join(sorted(MODEL_MODULES))}")
    return MODEL_REGISTRY[name]


def build_model(
    spec: ModelSpec,
    init_generators: list[torch.Generator],
    train_spectra: torch.Tensor | None = None,
) -> EnsembleModel:
    """An ensemble with one member per generator; member s's weights come from init_generators[s]."""
    model = model_class(spec.model_type)(spec, len(init_generators))
    for s, gen in enumerate(init_generators):
        model.reset_member(s, gen)
    if train_spectra is not None:
        model.transform.fit(train_spectra)
    return model


class Member(nn.Module):
    """One trained member as an ordinary model: (B, L) spectra -> (B, C) abundances."""

    def __init__(self, net: EnsembleModel):
        super().__init__()
        if net.n_members != 1:
            raise ValueError("Member wraps an ensemble of exactly one")
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.unsqueeze(0)).squeeze(0)


def extract_member(model: EnsembleModel, s: int) -> Member:
    """A standalone copy of member s (weights and transform statistics)."""
    single = model_class(model.spec.model_type)(model.spec, 1)
    single.load_state_dict({k: v[s : s + 1].detach().clone() for k, v in model.state_dict().items()})
    return Member(single).eval()


CHECKPOINT_FORMAT = "speccomp.checkpoint/1"


def checkpoint_payload(model: EnsembleModel, s: int, **extra: Any) -> dict[str, Any]:
    """Member s as a dict of tensors and plain values (loadable with weights_only=True)."""
    state = {k: v[s : s + 1].detach().clone() for k, v in model.state_dict().items()}
    return {"format": CHECKPOINT_FORMAT, "spec": model.spec.to_dict(), "state_dict": state, **extra}


def load_member(path_or_payload: Any) -> Member:
    """Rebuild a `Member` from a checkpoint file (loaded with weights_only=True) or its payload."""
    payload = path_or_payload
    if not isinstance(payload, dict):
        payload = torch.load(path_or_payload, map_location="cpu", weights_only=True)
    if payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"not a speccomp checkpoint (format {payload.get('format')!r})")
    spec = ModelSpec(**payload["spec"])
    net = model_class(spec.model_type)(spec, 1)
    net.load_state_dict(payload["state_dict"])
    return Member(net).eval()

