"""The one-shot supernet: every candidate of every decision, weighted by per-decision weights.

    net = Supernet(space, n_bins, n_outputs, generator)       # weights drawn from `generator`
    net.fit_inputs(train_spectra)                              # statistics of the standardize transforms
    y = net(x, weights)                                        # x (B, L) -> y (B, C)
    y = net.sample_forward(x, alpha, tau, hard, generator)     # Gumbel sample, then forward

`weights` is {decision: (n_options,) weights summing to 1} (from `gumbel.sample_weights`, or
one-hot for a fixed architecture). Shapes inside: the conv stage works on (B, channels, bins) and
pads channel counts with zero channels to the stage's widest candidate; the dense stage pads
feature vectors with zeros to its widest candidate. Every activation maps 0 to 0, so the padding
stays zero and a one-hot `weights` computes exactly the standalone `seq` model of that
architecture (`derive.inherit_weights` copies the weights over).

Cost: the candidates of a position run as one kernel call where shapes allow: all dense widths as
one matmul against their concatenated weights (then sliced), all conv kernels as one convolution
(kernels zero-padded to the largest), one max-pool for all. When the weights do not require grad
(the weight step), candidates whose weight is exactly 0 are skipped, so a hard (GDAS) weight step
costs one path; an α step needs every candidate's output for the straight-through gradient.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from speccomp.core.models import ACTIVATIONS, max_pool
from speccomp.nas.gumbel import sample_weights
from speccomp.nas.inputs import InputStage
from speccomp.nas.space import NasSpace, Op

_RELU_GAIN = math.sqrt(2.0)


def _active(w: torch.Tensor) -> list[int]:
    """Indices whose candidate must run: all when gradients flow to the weights, else the nonzero."""
    if w.requires_grad:
        return list(range(w.shape[0]))
    return torch.nonzero(w).flatten().tolist()


def _mixed_activation(h: torch.Tensor, names: tuple[str, ...], v: torch.Tensor) -> torch.Tensor:
    out = None
    for a in _active(v):
        term = v[a] * ACTIVATIONS[names[a]](h)
        out = term if out is None else out + term
    return out


class ConvPosition(nn.Module):
    """conv<k> candidates (c_in -> channels, same padding, max-pool, activation) and identity
    (max-pool only, channels zero-padded). (B, c_in, L) -> (B, c_out, L // pool)."""

    def __init__(self, ops: tuple[Op, ...], c_in: int, channels: int, pool: int, gen: torch.Generator):
        super().__init__()
        self.ops, self.c_in, self.channels, self.pool = ops, c_in, channels, pool
        self.c_out = max(channels, c_in) if any(o.kind == "identity" for o in ops) else channels
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.param_index: dict[int, int] = {}
        for j, op in enumerate(ops):
            if op.kind == "conv":
                std = _RELU_GAIN / math.sqrt(c_in * op.size)
                self.param_index[j] = len(self.weights)
                self.weights.append(nn.Parameter(torch.randn(channels, c_in, op.size, generator=gen) * std))
                self.biases.append(nn.Parameter(torch.zeros(channels)))

    def forward(self, h: torch.Tensor, w: torch.Tensor, v: torch.Tensor, activations: tuple[str, ...]) -> torch.Tensor:
        active = _active(w)
        convs = [j for j in active if self.ops[j].kind == "conv"]
        out = None
        if convs:
            k_max = max(self.ops[j].size for j in convs)
            kernels = [F.pad(self.weights[self.param_index[j]], ((k_max - self.ops[j].size) // 2,) * 2) for j in convs]
            bias = torch.cat([self.biases[self.param_index[j]] for j in convs])
            y = F.conv1d(h, torch.cat(kernels), bias, padding=k_max // 2)  # (B, n*channels, L)
            y = _mixed_activation(max_pool(y, self.pool), activations, v)
            y = y.view(y.shape[0], len(convs), self.channels, -1)
            out = torch.einsum("n,bncl->bcl", w[convs], y)
            if self.c_out > self.channels:
                out = F.pad(out, (0, 0, 0, self.c_out - self.channels))
        for j in active:
            if self.ops[j].kind == "identity":
                term = w[j] * F.pad(max_pool(h, self.pool), (0, 0, 0, self.c_out - self.c_in))
                out = term if out is None else out + term
        return out


class DensePosition(nn.Module):
    """dense<w> candidates (d_in -> w, activation; one weight matrix each, concatenated into one
    matmul when several run), identity and zero. (B, d_in) -> (B, d_out), zero-padded to d_out."""

    def __init__(self, ops: tuple[Op, ...], d_in: int, gen: torch.Generator):
        super().__init__()
        self.ops, self.d_in = ops, d_in
        widths = [o.size for o in ops if o.kind == "dense"]
        self.d_out = max([*widths, d_in] if any(o.kind == "identity" for o in ops) else widths or [d_in])
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.param_index: dict[int, int] = {}
        for j, op in enumerate(ops):
            if op.kind == "dense":
                self.param_index[j] = len(self.weights)
                self.weights.append(nn.Parameter(torch.randn(d_in, op.size, generator=gen) * (_RELU_GAIN / math.sqrt(d_in))))
                self.biases.append(nn.Parameter(torch.zeros(op.size)))

    def forward(self, h: torch.Tensor, w: torch.Tensor, v: torch.Tensor | None, activations: tuple[str, ...]) -> torch.Tensor:
        active = _active(w)
        dense = [j for j in active if self.ops[j].kind == "dense"]
        out = None
        if dense:
            index = [self.param_index[j] for j in dense]
            if len(index) == 1:
                y = torch.addmm(self.biases[index[0]], h, self.weights[index[0]])
            else:
                y = torch.addmm(torch.cat([self.biases[i] for i in index]), h, torch.cat([self.weights[i] for i in index], 1))
            y = _mixed_activation(y, activations, v)
            start = 0
            for j in dense:
                size = self.ops[j].size
                part = y[:, start : start + size]
                start += size
                term = w[j] * (F.pad(part, (0, self.d_out - size)) if size < self.d_out else part)
                out = term if out is None else out + term
        for j in active:
            kind = self.ops[j].kind
            if kind == "identity":
                term = w[j] * (F.pad(h, (0, self.d_out - self.d_in)) if self.d_in < self.d_out else h)
            else:  # zero adds w_j * 0: nothing to its value, and its gradient to w_j is 0
                continue
            out = term if out is None else out + term
        return out if out is not None else h.new_zeros(h.shape[0], self.d_out)


class Supernet(nn.Module):
    """All architectures of `space` for inputs of `n_bins` and `n_outputs` targets (see module doc)."""

    def __init__(self, space: NasSpace, n_bins: int, n_outputs: int, generator: torch.Generator):
        super().__init__()
        space.check_bins(n_bins)
        self.space = space
        self.n_bins, self.n_outputs = n_bins, n_outputs
        self.inputs = InputStage(space.input_transforms, n_bins)
        self.convs = nn.ModuleList()
        c, length = 1, n_bins
        for _ in range(space.conv_positions):
            pos = ConvPosition(space.conv_ops, c, space.conv_channels, space.pool, generator)
            self.convs.append(pos)
            c, length = pos.c_out, length // space.pool
        self.conv_out = (c, length)
        self.denses = nn.ModuleList()
        d = c * length
        for _ in range(space.dense_positions):
            pos = DensePosition(space.dense_ops, d, generator)
            self.denses.append(pos)
            d = pos.d_out
        self.head = nn.Linear(d, n_outputs)
        with torch.no_grad():
            self.head.weight.copy_(torch.randn(n_outputs, d, generator=generator) * (_RELU_GAIN / math.sqrt(d)))
            self.head.bias.zero_()

    def fit_inputs(self, train_inputs: torch.Tensor) -> None:
        """Fit the standardize statistics on the (N, L) training inputs."""
        self.inputs.fit(train_inputs)

    def forward(self, x: torch.Tensor, weights: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, L) inputs, {decision: (n_options,) weights} -> (B, C) outputs. `x` may also be
        (K, B, L), the K input transforms precomputed by `self.inputs.candidates` (faster when
        the same inputs are seen many times, as in a search)."""
        acts = self.space.activations
        h = self.inputs(x, weights["input"], _active(weights["input"]))
        if self.convs:
            h = h.unsqueeze(1)  # (B, 1, L)
            for i, pos in enumerate(self.convs, start=1):
                h = pos(h, weights[f"conv{i}"], weights.get(f"conv{i}_act"), acts)
            h = h.reshape(h.shape[0], -1)  # channel-major, as the `seq` model flattens
        for i, pos in enumerate(self.denses, start=1):
            h = pos(h, weights[f"dense{i}"], weights.get(f"dense{i}_act"), acts)
        return self.head(h)

    def sample_forward(
        self, x: torch.Tensor, alpha: dict[str, torch.Tensor], tau: float, hard: bool, generator: torch.Generator
    ) -> torch.Tensor:
        """Draw one Gumbel-softmax sample of the architecture from α, then `forward`."""
        return self(x, sample_weights(alpha, tau, hard, generator))
