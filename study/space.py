"""Search-space files: each entry maps a dotted config path or a named split setting to an
Optuna distribution; `suggest(trial)` turns a trial into config overrides.

    name: quick
    fixed:                                  # overrides applied to every trial (e.g. the trial size)
      - training.epochs=8
    params:
      pair: {type: categorical, choices: ["comp10+comp4", "comp4+comp8"]}
      combined_fraction: {type: float, low: 0.0, high: 0.2}
      training.model_type: {type: categorical, choices: [mlp, cnn, linear]}
      training.learning_rate: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
      training.cnn.head_dim: {type: int, low: 32, high: 256, log: true, when: {training.model_type: cnn}}

A parameter with `when` is suggested only when the named earlier parameter took one of the given
values (conditional parameters). Everything is checked at load time: unknown paths, empty or
inverted ranges, log ranges with a non-positive bound, choices the config would refuse.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import yaml

from speccomp.core.config import ConfigError, ExperimentConfig, check_override_key, read_yaml
from speccomp.core.pairs import pair_overrides, parse_pair
from speccomp.core.task import task_for


class SpaceError(ValueError):
    """A bad search-space file; the message is one line naming the file and entry."""


# --- named split settings: one value -> a few config overrides -------------------------------
_pair = pair_overrides
_split_pair = parse_pair


def _heldout_pair(value: str) -> list[str]:
    """Matrices: 'rule/attribute' held out of training (every test matrix holds it); 'none' = neutral."""
    if str(value).strip() == "none":
        return ["data.heldout_pairs=[]"]
    parts = [p.strip() for p in str(value).split("/")]
    if len(parts) != 2 or not all(parts):
        raise ValueError(f"a held-out pair is 'rule/attribute', e.g. 'progression/size', or 'none'; got {value!r}")
    return [f"data.heldout_pairs=[{{rule: {parts[0]}, attribute: {parts[1]}}}]"]


def _heldout_values(value: str) -> list[str]:
    """Matrices: 'attribute=min..max' values held out of training (extrapolation); 'none' = none."""
    if str(value).strip() == "none":
        return ["data.heldout_values={}"]
    name, _, span = str(value).partition("=")
    lo, _, hi = span.partition("..")
    if not name.strip() or not lo.strip().isdigit() or not hi.strip().isdigit():
        raise ValueError(f"held-out values are 'attribute=min..max', e.g. 'size=4..5', or 'none'; got {value!r}")
    return [f"data.heldout_values={{{name.strip()}: [{int(lo)}, {int(hi)}]}}"]


def _depth_width(depth: int, width: int) -> list[str]:
    dims = [max(1, int(width) // 2**i) for i in range(int(depth))]
    return [f"training.hidden_dims={dims}"]


NAMED_SETTINGS: dict[str, tuple[str, Callable[..., list[str]]]] = {
    "pair": ("the component pair under test: train on each alone, test on both ('a+b')", _pair),
    "combined_fraction": (
        "fraction of training samples that carry the pair together (0 = strict split)",
        lambda v: [f"data.splits.train.combined_fraction={float(v)}"],
    ),
    "n_train": ("training-set size", lambda v: [f"data.splits.train.n_samples={int(v)}"]),
    "noise_max": (
        "upper bound of the multiplicative noise level (lower bound min(0.01, value))",
        lambda v: [f"physics.sampling.noise.range=[{min(0.01, float(v))}, {float(v)}]"],
    ),
    "heldout_pair": ("matrices: the (rule, attribute) pair held out of training, 'rule/attribute' or 'none'",
                     _heldout_pair),
    "heldout_values": ("matrices: attribute values held out of training, 'attribute=min..max' or 'none'",
                       _heldout_values),
    "depth": ("number of hidden layers of the MLP (widths halve from `width`)", None),  # paired below
    "width": ("width of the first hidden layer of the MLP", None),
}


@dataclass
class ParamSpec:
    name: str
    distribution: optuna.distributions.BaseDistribution
    when: dict[str, list[Any]] = field(default_factory=dict)


@dataclass
class SearchSpace:
    name: str
    path: Path
    params: list[ParamSpec]
    fixed: list[str]

    def suggest(self, trial: optuna.Trial) -> tuple[dict[str, Any], list[str]]:
        """Suggest every active parameter; returns (values, config overrides)."""
        values: dict[str, Any] = {}
        for p in self.params:
            if any(values.get(k, _MISSING) not in allowed for k, allowed in p.when.items()):
                continue
            values[p.name] = _suggest(trial, p.name, p.distribution)
        return values, self.fixed + overrides_for(values)

    def distributions(self) -> dict[str, optuna.distributions.BaseDistribution]:
        return {p.name: p.distribution for p in self.params}


_MISSING = object()


def _suggest(trial: optuna.Trial, name: str, dist: optuna.distributions.BaseDistribution) -> Any:
    if isinstance(dist, optuna.distributions.CategoricalDistribution):
        return trial.suggest_categorical(name, dist.choices)
    if isinstance(dist, optuna.distributions.IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
    return trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)


def overrides_for(values: dict[str, Any]) -> list[str]:
    """Config overrides for a set of suggested values (named settings expanded)."""
    out: list[str] = []
    if "depth" in values or "width" in values:
        out += _depth_width(values.get("depth", 2), values.get("width", 128))
    for name, value in values.items():
        if name in ("depth", "width"):
            continue
        if name in NAMED_SETTINGS:
            out += NAMED_SETTINGS[name][1](value)
        else:
            out.append(f"{name}={_yaml_scalar(value)}")
    return out


def _yaml_scalar(value: Any) -> str:
    if isinstance(value, str):
        return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()
    return repr(value) if isinstance(value, float) else str(value)


def load_space(path: str | Path, base: ExperimentConfig) -> SearchSpace:
    """Read and check a space file against the base config. Raises SpaceError (one line)."""
    path = Path(path)
    try:
        raw = read_yaml(path)
    except ConfigError as exc:
        raise SpaceError(str(exc)) from None
    unknown = set(raw) - {"name", "params", "fixed", "description"}
    if unknown:
        raise SpaceError(f"{path}: unknown key {sorted(unknown)[0]!r}; allowed: name, description, params, fixed")
    fixed = raw.get("fixed") or []
    if not isinstance(fixed, list) or not all(isinstance(f, str) and "=" in f for f in fixed):
        raise SpaceError(f"{path}: fixed: must be a list of KEY=VALUE overrides")
    params_raw = raw.get("params")
    if not isinstance(params_raw, dict) or not params_raw:
        raise SpaceError(f"{path}: params: must map at least one parameter to a distribution")
    params: list[ParamSpec] = []
    root = task_for(base).schema()
    for name, entry in params_raw.items():
        params.append(_param(path, str(name), entry, params, root))
    space = SearchSpace(str(raw.get("name") or path.stem), path, params, list(fixed))
    _check_against_config(space, base)
    return space


def _param(path: Path, name: str, entry: Any, earlier: list[ParamSpec], root: Any = ExperimentConfig) -> ParamSpec:
    where = f"{path}: params.{name}"
    if name not in NAMED_SETTINGS:
        if name.split(".")[0] not in root.model_fields:
            raise SpaceError(
                f"{where}: unknown parameter; use a dotted config path (training.learning_rate, ...) "
                f"or a named setting: {', '.join(NAMED_SETTINGS)}"
            )
        try:
            check_override_key(name.split("."), root)
        except ConfigError as exc:
            raise SpaceError(f"{where}: unknown config path ({str(exc).split(': ', 1)[-1]})") from None
    if not isinstance(entry, dict):
        raise SpaceError(f"{where}: must be a mapping with a type (categorical, int, float)")
    kind = entry.get("type")
    allowed_keys = {"type", "when", "choices"} if kind == "categorical" else {"type", "when", "low", "high", "log", "step"}
    extra = set(entry) - allowed_keys
    if extra:
        raise SpaceError(f"{where}: unknown key {sorted(extra)[0]!r}; allowed: {', '.join(sorted(allowed_keys))}")
    when = _when(where, entry.get("when"), earlier)
    if kind == "categorical":
        choices = entry.get("choices")
        if not isinstance(choices, list) or not choices:
            raise SpaceError(f"{where}: choices: must be a non-empty list")
        if any(not isinstance(c, (str, int, float, bool)) or c is None for c in choices):
            raise SpaceError(f"{where}: choices: must be strings or numbers (lists are not allowed; use depth/width)")
        return ParamSpec(name, optuna.distributions.CategoricalDistribution(choices), when)
    if kind in ("int", "float"):
        low, high = entry.get("low"), entry.get("high")
        for key, v in (("low", low), ("high", high)):
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
                raise SpaceError(f"{where}: {key}: must be a finite number, got {v!r}")
        if low > high:
            raise SpaceError(f"{where}: inverted range: low {low} > high {high}")
        if low == high:
            raise SpaceError(f"{where}: empty range: low == high == {low}; use a fixed override instead")
        log = entry.get("log", False)
        if not isinstance(log, bool):  # bool("false") would be a log scale
            raise SpaceError(f"{where}: log: must be true or false, got {log!r}")
        if log and low <= 0:
            raise SpaceError(f"{where}: a log distribution needs low > 0, got {low}")
        step = entry.get("step")
        if log and step is not None:
            raise SpaceError(f"{where}: step and log cannot be combined")
        if kind == "int":
            if int(low) != low or int(high) != high:
                raise SpaceError(f"{where}: an int distribution needs integer bounds, got [{low}, {high}]")
            dist = optuna.distributions.IntDistribution(int(low), int(high), log=log, step=int(step or 1))
        else:
            dist = optuna.distributions.FloatDistribution(float(low), float(high), log=log, step=step)
        return ParamSpec(name, dist, when)
    raise SpaceError(f"{where}: type must be categorical, int or float, got {kind!r}")


def _when(where: str, raw: Any, earlier: list[ParamSpec]) -> dict[str, list[Any]]:
    if raw is None:
        return {}
    if not isinstance(raw, dict) or not raw:
        raise SpaceError(f"{where}: when: must map an earlier parameter to a value or list of values")
    names = {p.name: p for p in earlier}
    out = {}
    for key, value in raw.items():
        if key not in names:
            raise SpaceError(f"{where}: when: {key!r} is not a parameter defined above it")
        out[key] = value if isinstance(value, list) else [value]
    return out


def _check_against_config(space: SearchSpace, base: ExperimentConfig) -> None:
    """Every categorical choice and both ends of every range must give a valid config."""
    raw = base.to_dict()
    config_from_dict = task_for(base).config_from_dict
    try:
        config_from_dict(raw, space.fixed)
    except ConfigError as exc:
        raise SpaceError(f"{space.path}: fixed: {exc}") from None
    for p in space.params:
        dist = p.distribution
        if isinstance(dist, optuna.distributions.CategoricalDistribution):
            values = list(dist.choices)
        else:
            values = [dist.low, dist.high]
        for value in values:
            try:
                overrides = overrides_for({p.name: value})
            except ValueError as exc:
                raise SpaceError(f"{space.path}: params.{p.name}: {exc}") from None
            try:
                config_from_dict(raw, space.fixed + _context_overrides(space, p) + overrides)
            except ConfigError as exc:
                raise SpaceError(f"{space.path}: params.{p.name}: value {value!r} is refused by the config: {exc}") from None


def _context_overrides(space: SearchSpace, p: ParamSpec) -> list[str]:
    """Overrides that make a conditional parameter active (its `when` values), for checking it."""
    values = {k: v[0] for k, v in p.when.items()}
    # a fraction of combined samples needs the pair it refers to
    if p.name == "combined_fraction" and "pair" not in values:
        pair_param = next((q for q in space.params if q.name == "pair"), None)
        if pair_param is not None:
            values["pair"] = pair_param.distribution.choices[0]
    return overrides_for(values) if values else []
