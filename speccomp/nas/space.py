"""The search space: a YAML file (e.g. `configs/nas/spectra.yaml`) validated at load time.

A space is a list of *decisions*, each a categorical choice among named options, in network order:

    input                 the input transform (none, log, standardize, log+standardize)
    conv1, conv1_act, ... per conv position: conv<k> (kernel k, `conv.channels` channels,
                          activation, max-pool) or identity (max-pool only); its activation
    dense1, dense1_act,...per dense position: dense<w> (w units, activation), identity, zero
                          (outputs zeros: the position dropped); its activation

The architecture parameters α are one logit vector per decision (`dict[str, Tensor]`, see
`init_alpha`), or one flat vector in decision order (`flatten_alpha` / `unflatten_alpha`).
Every problem is one line naming the file and the dotted key (`ConfigError`); nothing in the
file is executed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from speccomp.core.config import ConfigError, read_yaml

TRANSFORMS = ("none", "log", "standardize", "log+standardize")
ACTIVATIONS = ("relu", "gelu", "tanh", "silu", "leaky_relu")
_OP = re.compile(r"^(conv|dense)([1-9][0-9]*)$")


@dataclass(frozen=True)
class Op:
    """One candidate operation: `kind` conv (size = kernel), dense (size = units), identity, zero."""

    name: str
    kind: Literal["conv", "dense", "identity", "zero"]
    size: int | None = None


def parse_op(name: str, stage: Literal["conv", "dense"]) -> Op:
    """`conv5` -> Op('conv5', 'conv', 5); a ValueError says what the stage allows."""
    allowed = ("conv<k> (odd kernel k, e.g. conv5) or identity" if stage == "conv"
               else "dense<w> (units w, e.g. dense64), identity or zero")
    if name == "identity" or (name == "zero" and stage == "dense"):
        return Op(name, name)  # type: ignore[arg-type]
    match = _OP.match(str(name))
    if match is None or match.group(1) != stage:
        raise ValueError(f"unknown op {name!r}; allowed at a {stage} position: {allowed}")
    size = int(match.group(2))
    if stage == "conv" and size % 2 == 0:
        raise ValueError(f"conv kernel must be odd ('same' padding keeps the length), got {name!r}")
    return Op(name, stage, size)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _ops_list(value: Any) -> Any:
    if isinstance(value, list) and not value:
        raise ValueError("empty candidate list; give at least one op")
    if isinstance(value, list) and len(set(map(str, value))) != len(value):
        raise ValueError(f"duplicate op in {value}")
    return value


class _Stage(_Strict):
    """A stage's candidate list, checked against what its positions allow (`parse_op`)."""

    STAGE: ClassVar[Literal["conv", "dense"]]

    @field_validator("ops", mode="before", check_fields=False)
    @classmethod
    def _nonempty(cls, v: Any) -> Any:
        return _ops_list(v)

    @field_validator("ops", check_fields=False)
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        for op in v:
            parse_op(op, cls.STAGE)
        return v


class ConvStage(_Stage):
    STAGE: ClassVar[Literal["conv", "dense"]] = "conv"
    positions: int = Field(2, ge=0, strict=True)
    """Number of conv positions (0 = none); they come before the dense positions."""
    channels: int = Field(8, gt=0, strict=True)
    """Output channels of every conv candidate."""
    pool: int = Field(2, ge=1, strict=True)
    """Max-pool factor after each conv position (the CNN's 2); identity pools too, so lengths agree."""
    ops: list[str] = ["conv3", "conv5", "conv7", "identity"]
    """Candidates at each conv position: conv<k> (odd k) and identity."""


class DenseStage(_Stage):
    STAGE: ClassVar[Literal["conv", "dense"]] = "dense"
    positions: int = Field(2, ge=0, strict=True)
    """Number of dense positions (0 = none)."""
    ops: list[str] = ["dense32", "dense64", "dense128", "dense256", "identity", "zero"]
    """Candidates at each dense position: dense<w>, identity, zero."""


PositiveFloat = Field(gt=0, allow_inf_nan=False)


class SearchSettings(_Strict):
    """How the search runs (the command line's parameters override these)."""

    architecture_search_iterations: int = Field(1000, gt=0, strict=True)
    """Alternating iterations: one weight step on train, one α step on val each."""
    architecture_learning_rate: float = Field(0.1, gt=0, allow_inf_nan=False)
    """Adam step size of α (the meta-learner's ARCHITECTURE_LEARNING_RATE). Adam moves a logit by
    about lr · SNR per step, and the α gradient's per-step signal-to-noise ratio is ~0.02-0.2 here:
    the source document's 0.001 moves a logit ~0.1 in 1000 steps, 0.1 moves it several units."""
    architecture_weight_decay: float = Field(0.0, ge=0, allow_inf_nan=False)
    """L2 on α, pulling unused logits back to 0 (DARTS/GDAS: 1e-3, with a cross-entropy loss whose
    α gradient is far larger; against an MSE's ~1e-4 it holds every logit at ~0)."""
    weight_learning_rate: float = Field(1e-3, gt=0, allow_inf_nan=False)
    """AdamW step size of the supernet's weights."""
    weight_decay: float = Field(1e-4, ge=0, allow_inf_nan=False)
    """AdamW weight decay of the supernet's weights."""
    batch_size: int = Field(64, gt=0, strict=True)
    """Spectra per weight step and per α step."""
    tau_max: float = Field(10.0, gt=0, allow_inf_nan=False)
    """Gumbel-softmax temperature at the first iteration (GDAS: 10)."""
    tau_min: float = Field(0.1, gt=0, allow_inf_nan=False)
    """Temperature at the last iteration (GDAS: 0.1); must be <= tau_max."""
    tau_schedule: Literal["linear", "exponential"] = "linear"
    """Annealing from tau_max to tau_min: linear (GDAS) or geometric."""
    sampling: Literal["gdas", "snas"] = "gdas"
    """gdas: one path per position, hard one-hot with straight-through gradients; snas: the soft
    Gumbel-softmax mixture of all paths."""
    alpha_gradient: Literal["gumbel", "softmax"] = "gumbel"
    """With gdas sampling, the Jacobian the straight-through α gradient takes: `gumbel`, the soft
    Gumbel sample's (GDAS; its noise and its 1/τ scale swamp the signal at low τ), or `softmax`,
    that of softmax(α) (no sampling noise in the gradient)."""
    warmup_fraction: float = Field(0.3, ge=0, lt=1, allow_inf_nan=False)
    """Fraction of the iterations that train the weights only (architectures drawn from softmax(α),
    uniform at the start) before α takes its first step; τ anneals over the iterations after it.
    DARTS-style warm-up: the α gradient compares trained candidates, not random ones."""
    alpha_samples: int = Field(1, gt=0, strict=True)
    """Gumbel samples averaged per α step (each on its own validation batch): the α gradient's
    noise falls as 1/sqrt(alpha_samples), its cost rises in proportion."""

    @model_validator(mode="after")
    def _taus(self) -> SearchSettings:
        if self.tau_min > self.tau_max:
            raise _LocatedError("tau_min", f"must be <= tau_max ({self.tau_max}), got {self.tau_min}")
        return self

    @property
    def hard(self) -> bool:
        return self.sampling == "gdas"


class SpaceFile(_Strict):
    input_transforms: list[Literal["none", "log", "standardize", "log+standardize"]] = list(TRANSFORMS)
    """Candidate input transforms (the `input` decision)."""
    activations: list[Literal["relu", "gelu", "tanh", "silu", "leaky_relu"]] = ["relu", "gelu", "tanh"]
    """Candidate activations, one decision per position."""
    conv: ConvStage = ConvStage()
    dense: DenseStage = DenseStage()
    search: SearchSettings = SearchSettings()

    @field_validator("input_transforms", "activations", mode="before")
    @classmethod
    def _nonempty(cls, v: Any) -> Any:
        return _ops_list(v)

    @model_validator(mode="after")
    def _some_layer(self) -> SpaceFile:
        if self.conv.positions + self.dense.positions < 1:
            raise _LocatedError(
                "dense.positions", "conv.positions + dense.positions is 0, which leaves no layer; give at least one position"
            )
        return self


class _LocatedError(ValueError):
    def __init__(self, loc: str, msg: str):
        super().__init__(msg)
        self.loc, self.msg = loc, msg


@dataclass(frozen=True)
class Decision:
    """One categorical choice: `name` (e.g. `dense1`), its `options` (op names), its `kind`
    (`input`, `conv`, `dense` or `activation`) and, for activations, the position it belongs to."""

    name: str
    options: tuple[str, ...]
    kind: Literal["input", "conv", "dense", "activation"]
    position: str | None = None


@dataclass(frozen=True)
class NasSpace:
    """A validated search space. `decisions` are in network order; `search` holds the settings."""

    path: Path | None
    input_transforms: tuple[str, ...]
    activations: tuple[str, ...]
    conv_positions: int
    conv_channels: int
    pool: int
    conv_ops: tuple[Op, ...]
    dense_positions: int
    dense_ops: tuple[Op, ...]
    search: SearchSettings
    decisions: tuple[Decision, ...] = field(default=())

    @property
    def decision_names(self) -> list[str]:
        return [d.name for d in self.decisions]

    def decision(self, name: str) -> Decision:
        return next(d for d in self.decisions if d.name == name)

    @property
    def n_logits(self) -> int:
        """Length of the flat α vector."""
        return sum(len(d.options) for d in self.decisions)

    def with_search(self, **updates: Any) -> NasSpace:
        """A copy whose search settings are updated (validated; a ConfigError names the key)."""
        merged = {**self.search.model_dump(), **{k: v for k, v in updates.items() if v is not None}}
        try:
            settings = SearchSettings.model_validate(merged)
        except ValidationError as exc:
            raise ConfigError(_one_line(exc, None, prefix=())) from None
        return _with(self, search=settings)

    def check_bins(self, n_bins: int) -> None:
        """The conv positions' pooling must leave at least one bin of `n_bins`."""
        if n_bins // (self.pool**self.conv_positions) < 1:
            raise ConfigError(
                f"{self.path}: conv.positions: {self.conv_positions} pooling stages of {self.pool} leave no bins "
                f"of physics.n_bins={n_bins}; use fewer conv positions or a smaller pool"
            )


def _with(space: NasSpace, **changes: Any) -> NasSpace:
    from dataclasses import replace

    return replace(space, **changes)


def _decisions(f: SpaceFile) -> tuple[Decision, ...]:
    out = [Decision("input", tuple(f.input_transforms), "input")]
    for stage, count, ops in (("conv", f.conv.positions, f.conv.ops), ("dense", f.dense.positions, f.dense.ops)):
        for i in range(1, count + 1):
            name = f"{stage}{i}"
            out.append(Decision(name, tuple(ops), stage))  # type: ignore[arg-type]
            if any(parse_op(op, stage).kind == stage for op in ops):  # type: ignore[arg-type]
                out.append(Decision(f"{name}_act", tuple(f.activations), "activation", name))
    return tuple(out)


def space_from_dict(raw: dict[str, Any], path: Path | None = None) -> NasSpace:
    """Validate a parsed space file; ConfigError names the file and the dotted key."""
    try:
        f = SpaceFile.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_one_line(exc, path)) from None
    return NasSpace(
        path=path,
        input_transforms=tuple(f.input_transforms),
        activations=tuple(f.activations),
        conv_positions=f.conv.positions,
        conv_channels=f.conv.channels,
        pool=f.conv.pool,
        conv_ops=tuple(parse_op(o, "conv") for o in f.conv.ops),
        dense_positions=f.dense.positions,
        dense_ops=tuple(parse_op(o, "dense") for o in f.dense.ops),
        search=f.search,
        decisions=_decisions(f),
    )


def load_space(path: str | Path) -> NasSpace:
    """Read and validate a search-space YAML file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"space: {path}: file not found")
    return space_from_dict(read_yaml(path), path)


def _one_line(exc: ValidationError, path: Path | None, prefix: tuple[str, ...] = ()) -> str:
    err = exc.errors(include_url=False)[0]
    loc = [*prefix, *(str(p) for p in err["loc"])]
    msg = err["msg"].removeprefix("Value error, ")
    located = (err.get("ctx") or {}).get("error")
    if isinstance(located, _LocatedError):
        loc, msg = [*loc, *located.loc.split(".")], located.msg
    elif err["type"] == "extra_forbidden":
        msg = "unknown key"
    elif "input" in err and not isinstance(err["input"], (dict, list)):
        shown = repr(err["input"])
        if len(shown) <= 60 and shown not in msg:
            msg += f" (got {shown})"
    where = f"{path}: " if path is not None else ""
    return f"{where}{'.'.join(loc) or '(top level)'}: {msg}"


# ---- α ----------------------------------------------------------------------------------------
def init_alpha(space: NasSpace, requires_grad: bool = True) -> dict[str, torch.Tensor]:
    """Zero logits (uniform choice) per decision, as leaf tensors."""
    return {d.name: torch.zeros(len(d.options), requires_grad=requires_grad) for d in space.decisions}


def flatten_alpha(space: NasSpace, alpha: dict[str, torch.Tensor]) -> torch.Tensor:
    """dict -> one (n_logits,) vector in decision order."""
    return torch.cat([alpha[d.name].reshape(-1) for d in space.decisions])


def unflatten_alpha(space: NasSpace, vector: torch.Tensor) -> dict[str, torch.Tensor]:
    """(n_logits,) vector -> dict of views, in decision order (the inverse of `flatten_alpha`)."""
    if vector.shape != (space.n_logits,):
        raise ValueError(f"alpha vector of shape {tuple(vector.shape)}; the space needs ({space.n_logits},)")
    sizes = [len(d.options) for d in space.decisions]
    return dict(zip(space.decision_names, torch.split(vector, sizes), strict=True))


def metric_label(option: str) -> str:
    """An option name usable in an MLflow metric name (`log+standardize` -> `log_standardize`)."""
    return option.replace("+", "_")
