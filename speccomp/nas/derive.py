"""From α to an ordinary config: the argmax architecture as a preset (`training.model_type: seq`
with its layers), and the supernet's weights copied into the standalone model built from it.

Position by position, the chosen op becomes `seq` layers:

    input  <t>        -> training.input_transform: t
    conv<i> conv<k>   -> {op: conv, width: conv.channels, kernel: k, activation: <conv<i>_act>}
    conv<i> identity  -> {op: pool}          (the supernet pools on its identity path too)
    dense<i> dense<w> -> {op: dense, width: w, activation: <dense<i>_act>}
    dense<i> identity -> {op: identity}
    dense<i> zero     -> {op: zero}      (`preset_of` only: `derive` leaves zero out, as DARTS)
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import yaml

from speccomp.core.models import EnsembleModel
from speccomp.nas.gumbel import argmax_choices
from speccomp.nas.space import NasSpace, parse_op
from speccomp.nas.supernet import Supernet


def choices_of(space: NasSpace, alpha: dict[str, torch.Tensor]) -> dict[str, str]:
    """{decision: argmax option} for every decision of the space. As in DARTS, `zero` is left out
    of the argmax (unless it is a decision's only option): in a chain a zero position makes the
    whole network a constant, and early in a search, while the candidates' weights are still
    random, dropping a position lowers the loss, so first-order searches drift towards it; its
    probability is still logged and shown."""
    options = {d.name: d.options for d in space.decisions}
    masked = {}
    for name, logits in alpha.items():
        logits = logits.detach().clone()
        if "zero" in options[name] and len(options[name]) > 1:
            logits[options[name].index("zero")] = -math.inf
        masked[name] = logits
    return argmax_choices(masked, options)


def layers_of(space: NasSpace, choices: dict[str, str]) -> list[dict[str, Any]]:
    """The `training.seq.layers` of an architecture given as {decision: option}."""
    layers: list[dict[str, Any]] = []
    for stage, count in (("conv", space.conv_positions), ("dense", space.dense_positions)):
        for i in range(1, count + 1):
            op = parse_op(choices[f"{stage}{i}"], stage)  # type: ignore[arg-type]
            if op.kind == "conv":
                layers.append({"op": "conv", "width": space.conv_channels, "kernel": op.size,
                               "activation": choices[f"conv{i}_act"]})
            elif op.kind == "dense":
                layers.append({"op": "dense", "width": op.size, "activation": choices[f"dense{i}_act"]})
            elif stage == "conv":
                layers.append({"op": "pool"})
            else:
                layers.append({"op": op.kind})
    return layers


def preset_of(space: NasSpace, choices: dict[str, str], model_type: str = "seq") -> dict[str, Any]:
    """A valid partial config (merge it like `configs/presets/*.yaml`); `model_type` is the
    domain's `seq` model (`seq` for spectra, `raven_seq` for matrices)."""
    return {"training": {
        "model_type": model_type,
        "input_transform": choices["input"],
        "seq": {"pool": space.pool, "layers": layers_of(space, choices)},
    }}


def derive(space: NasSpace, alpha: dict[str, torch.Tensor], model_type: str = "seq") -> dict[str, Any]:
    """The argmax architecture of α as a preset dict."""
    return preset_of(space, choices_of(space, alpha), model_type)


def preset_yaml(preset: dict[str, Any], header: str = "") -> str:
    """The preset as YAML text, with `header` as comment lines on top."""
    comments = "".join(f"# {line}\n" if line else "#\n" for line in header.splitlines())
    return comments + yaml.safe_dump(preset, sort_keys=False, default_flow_style=None)


def write_preset(preset: dict[str, Any], path: str | Path, header: str = "") -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(preset_yaml(preset, header))
    return path


@torch.no_grad()
def inherit_weights(supernet: Supernet, choices: dict[str, str], model: EnsembleModel, member: int = 0) -> None:
    """Copy the supernet's weights of the architecture `choices` into member `member` of a `seq`
    model built from `preset_of(space, choices)` (and the input statistics into its transform).
    With one-hot weights for `choices` and the model in eval mode, the two compute the same."""
    space = supernet.space
    stats = supernet.inputs.statistics_for(choices["input"])
    if stats is not None:
        model.transform.mean[member].copy_(stats[0])
        model.transform.std[member].copy_(stats[1])
    blocks = iter(model.blocks)
    channels = 1
    for i, pos in enumerate(supernet.convs, start=1):
        j = space.decision(f"conv{i}").options.index(choices[f"conv{i}"])
        if pos.ops[j].kind == "conv":
            block = next(blocks)
            block.weight[member].copy_(pos.weights[pos.param_index[j]][:, :channels, :])
            block.bias[member].copy_(pos.biases[pos.param_index[j]])
            channels = pos.channels
    features = channels * supernet.conv_out[1] if supernet.convs else supernet.n_bins
    for i, pos in enumerate(supernet.denses, start=1):
        j = space.decision(f"dense{i}").options.index(choices[f"dense{i}"])
        if pos.ops[j].kind == "dense":
            block = next(blocks)
            block.weight[member].copy_(pos.weights[pos.param_index[j]][:features, :])
            block.bias[member, 0].copy_(pos.biases[pos.param_index[j]])
            features = pos.ops[j].size
    model.out.weight[member].copy_(supernet.head.weight.T[:features, :])
    model.out.bias[member, 0].copy_(supernet.head.bias)


def one_hot_weights(space: NasSpace, choices: dict[str, str]) -> dict[str, torch.Tensor]:
    """Exactly one-hot weights selecting `choices` (for `Supernet.forward`)."""
    out = {}
    for d in space.decisions:
        w = torch.zeros(len(d.options))
        w[d.options.index(choices[d.name])] = 1.0
        out[d.name] = w
    return out
