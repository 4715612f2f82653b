"""Loading a configuration: the section files, presets and dotted overrides, merged and validated
into a frozen `ExperimentConfig`; every problem is one line naming the file (or the override), the
dotted key and what is allowed (`ConfigError`). Nothing in a config file is ever executed.

Overrides are `dotted.key=value`, the value parsed as YAML (`10` an int, `[32, 16]` a list, spaces
allowed inside brackets and quotes). This module does not import torch.
"""

from __future__ import annotations

import copy
import re
import sys
import types
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from speccomp.core.schema import SECTION_FILES, ConfigError, ExperimentConfig, _AtError

# The tutorial's training.yaml keys that mean nothing here: accepted in a file (so that the
# tutorial's own files load unchanged), dropped with a one-line note, refused as overrides.
REQUIRED_SECTIONS = ("physics", "data")  # training.yaml and analysis.yaml fall back to defaults

TUTORIAL_ONLY_KEYS: dict[str, str] = {
    "num_workers": "batches come from memory, no loader workers are used",
    "test_every": "validation and test are evaluated at every checkpoint",
}


def default_config_dir() -> Path:
    """The project's `configs/` folder (the tutorial's defaults plus the validation split)."""
    return Path(__file__).resolve().parents[2] / "configs"


def read_yaml(path: Path) -> dict[str, Any]:
    """Parse a YAML mapping with the safe loader; errors name the file."""
    if not path.is_file():
        raise ConfigError(f"{path}: file not found")
    try:
        with path.open() as fh:
            raw = yaml.safe_load(fh)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}:{where} is not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: must hold a mapping of keys, got {type(raw).__name__}")
    return raw


def load_config(
    config_dir: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    files: dict[str, str | Path] | None = None,
    presets: list[str | Path] | tuple[str | Path, ...] = (),
) -> ExperimentConfig:
    """Load the four section files from `config_dir` (default: the project's `configs/`), merge
    the presets (partial configs, e.g. `configs/presets/loglinear.yaml`), apply dotted overrides,
    validate. `files` maps a section to a file that replaces its default.

    Raises ConfigError with one line naming the file and dotted key.
    """
    base = Path(config_dir) if config_dir is not None else default_config_dir()
    required = " and ".join(SECTION_FILES[s] for s in REQUIRED_SECTIONS)
    if config_dir is not None and not base.is_dir():
        raise ConfigError(f"config_dir: {base}: folder not found; allowed: a folder holding {required}")
    paths: dict[str, Path] = {s: base / f for s, f in SECTION_FILES.items()}
    for section, path in (files or {}).items():
        if section not in SECTION_FILES:
            raise ConfigError(f"unknown config section {section!r}; allowed: {', '.join(SECTION_FILES)}")
        paths[section] = Path(path)
    raw: dict[str, Any] = {}
    for section, path in paths.items():
        if section in ("training", "analysis") and not path.is_file() and section not in (files or {}):
            raw[section] = {}  # optional sections fall back to defaults
            continue
        if section in REQUIRED_SECTIONS and section not in (files or {}) and not path.is_file():
            raise ConfigError(f"config_dir: {base} has no {path.name}; allowed: a folder holding {required}")
        raw[section] = read_yaml(path)
    _drop_tutorial_only_keys(raw, paths["training"])
    for preset in presets:
        preset_path = resolve_preset(preset)
        layer = read_yaml(preset_path)
        for section, values in layer.items():
            if section not in SECTION_FILES:
                raise ConfigError(f"{preset_path}: unknown section {section!r}; allowed: {', '.join(SECTION_FILES)}")
            if not isinstance(values, dict):
                raise ConfigError(f"{preset_path}: {section}: must be a mapping of keys")
            _deep_merge(raw[section], values)
            paths[section] = Path(f"{paths[section]} + {preset_path}")
    return config_from_dict(raw, overrides, paths)


def _drop_tutorial_only_keys(raw: dict[str, Any], path: Path) -> None:
    training = raw.get("training")
    if not isinstance(training, dict):
        return
    for key, why in TUTORIAL_ONLY_KEYS.items():
        if key in training:
            value = training.pop(key)
            if key == "test_every" and value != "ckpt":
                raise ConfigError(f"{path}: training.test_every: only 'ckpt' is supported ({why}), got {value!r}")
            if value in ("ckpt", 0):  # states what happens anyway
                continue
            print(f"note: {path}: training.{key}={value} has no effect ({why})", file=sys.stderr)


def split_overrides(text: str) -> list[str]:
    """Overrides given as one string (an MLflow parameter): `KEY=VALUE` items separated by white
    space; a value may itself hold spaces (`training.hidden_dims=[32, 16]`), since a new item starts
    only where white space is followed by `dotted.key=`."""
    text = text.strip()
    if not text:
        return []
    return [item for item in re.split(r"\s+(?=[A-Za-z_][\w.]*\s*=)", text) if item.strip()]


def named_file(name: str | Path, folder: str) -> Path | None:
    """`name` as a file path, else `<name>.yaml` under the project's `configs/<folder>/`, else None."""
    path = Path(name)
    if path.is_file():
        return path
    candidate = default_config_dir() / folder / f"{name}.yaml"
    return candidate if candidate.is_file() else None


def known_names(folder: str) -> list[str]:
    """The names `named_file` finds under `configs/<folder>/`."""
    return sorted(p.stem for p in (default_config_dir() / folder).glob("*.yaml"))


def resolve_preset(name: str | Path) -> Path:
    """A preset file path, or the name of one under the project's `configs/presets/`."""
    path = named_file(name, "presets")
    if path is None:
        raise ConfigError(f"preset: {name}: no such file or preset; presets: {', '.join(known_names('presets')) or 'none'}")
    return path


def _deep_merge(base: dict[str, Any], layer: dict[str, Any]) -> None:
    for key, value in layer.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _deep_merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value)


def config_from_dict(
    raw: dict[str, Any],
    overrides: list[str] | tuple[str, ...] = (),
    paths: dict[str, Path] | None = None,
    root: type[BaseModel] | None = None,
) -> ExperimentConfig:
    """Validate a raw nested dict (after applying overrides); errors name file and dotted key.
    `root` is the schema: the spectra `ExperimentConfig` unless another domain passes its own."""
    root = root or ExperimentConfig
    raw = copy.deepcopy(raw)
    for item in overrides:
        apply_override(raw, item, root)
    try:
        return root.model_validate(raw)
    except ValidationError as exc:
        message = _format_validation_error(exc, paths or {}, root)
    except _AtError as exc:  # raised outside pydantic's wrapping (properties)
        message = _locate(exc.loc, exc.msg, paths or {})
    raise ConfigError(_blame_override(message, overrides, paths or {}))


def _blame_override(message: str, overrides: list[str] | tuple[str, ...], paths: dict[str, Path]) -> str:
    """When the offending key was set by an override, say so instead of naming the file."""
    for path in set(map(str, paths.values())):
        if message.startswith(f"{path}: "):
            rest = message[len(path) + 2 :]
            break
    else:
        return message
    loc = rest.split(": ", 1)[0]
    for item in reversed(overrides):
        key = item.partition("=")[0].strip()
        if loc == key or loc.startswith(key + ".") or key.startswith(loc + "."):
            return f"override {item.strip()}: {rest}"
    return message


def parse_value(text: str) -> Any:
    """Parse an override's value as YAML (so `10` is an int, `[1,2]` a list, `a` a string)."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_override(raw: dict[str, Any], item: str, root: type[BaseModel] | None = None) -> None:
    """Apply `a.b.c=value` to a nested dict in place. The key must name an existing field of
    `root` (default the spectra `ExperimentConfig`)."""
    sections = list((root or ExperimentConfig).model_fields)
    if "=" not in item:
        raise ConfigError(f"override {item!r}: must be key=value, e.g. training.epochs=10")
    key, _, text = item.partition("=")
    key = key.strip()
    parts = key.split(".")
    if not key or any(not p for p in parts):
        raise ConfigError(f"override {item!r}: key must be a dotted path such as training.epochs")
    if parts[0] not in sections:
        raise ConfigError(f"override {key}: unknown section {parts[0]!r}; allowed: {', '.join(sections)}")
    check_override_key(parts, root)
    node: Any = raw
    for i, part in enumerate(parts[:-1]):
        if isinstance(node, list):
            idx = _list_index(node, part, parts[: i + 1])
            node = node[idx]
            continue
        if part not in node or node[part] is None:
            node[part] = {}
        node = node[part]
        if not isinstance(node, (dict, list)):
            raise ConfigError(f"override {key}: {'.'.join(parts[: i + 1])} is a value, not a section")
    last = parts[-1]
    if isinstance(node, list):
        node[_list_index(node, last, parts)] = parse_value(text)
    else:
        node[last] = parse_value(text)


def _list_index(node: list, part: str, parts: list[str]) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise ConfigError(f"override {'.'.join(parts)}: index must be 0..{len(node) - 1}")
    return int(part)


def _models_in(annotation: Any) -> list[Any]:
    """The schema types an annotation can hold, unwrapped from Annotated/Optional/unions."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _models_in(typing.get_args(annotation)[0])
    if origin is typing.Union or origin is types.UnionType:
        return [m for arg in typing.get_args(annotation) if arg is not type(None) for m in _models_in(arg)]
    return [annotation]


def _step(annotation: Any, part: str) -> Any:
    """The annotation one level down `part` (a field, a dict key or a list index); None if none."""
    for option in _models_in(annotation):
        if isinstance(option, type) and issubclass(option, BaseModel):
            if part in option.model_fields:
                return option.model_fields[part].annotation
        elif typing.get_origin(option) is dict:
            return typing.get_args(option)[1]
        elif typing.get_origin(option) in (list, tuple) and part.isdigit():
            args = typing.get_args(option)
            return args[0] if args else Any
        elif option is Any:
            return Any
    return None


def check_override_key(parts: list[str], root: type[BaseModel] | None = None) -> None:
    """Refuse a dotted key that names no field of the schema (typos must not pass silently)."""
    annotation: Any = root or ExperimentConfig
    for i, part in enumerate(parts):
        below = _step(annotation, part)
        if below is None:
            where = ".".join(parts[: i + 1])
            fields = _fields_of(annotation)
            allowed = f"; allowed there: {', '.join(fields)}" if fields else " (a value, not a section)"
            raise ConfigError(f"override {'.'.join(parts)}: unknown key {where!r}{allowed}")
        if below is Any:
            return
        annotation = below


def _fields_of(annotation: Any) -> list[str]:
    return [name for m in _models_in(annotation) if isinstance(m, type) and issubclass(m, BaseModel)
            for name in m.model_fields]


def _format_validation_error(exc: ValidationError, paths: dict[str, Path], root: type[BaseModel] | None = None) -> str:
    sections = (root or ExperimentConfig).model_fields
    err = exc.errors(include_url=False)[0]
    loc = [str(p) for p in err["loc"] if not _is_tag(p)]
    msg = err["msg"]
    ctx_error = (err.get("ctx") or {}).get("error")
    if isinstance(ctx_error, _AtError):
        loc = loc + ctx_error.loc.split(".")
        msg = ctx_error.msg
        if loc and loc[0] in sections and ctx_error.loc.split(".")[0] in sections:
            loc = ctx_error.loc.split(".")
    else:
        msg = msg.removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
            fields = _fields_at(loc[:-1], root)
            if fields:
                msg += f"; allowed: {', '.join(fields)}"
        elif err["type"] == "missing":
            msg = "is required"
        elif "input" in err and not isinstance(err["input"], dict):
            shown = repr(err["input"])
            if len(shown) <= 60 and shown not in msg:
                msg += f" (got {shown})"
    return _locate(".".join(loc), msg, paths)


def _is_tag(part: Any) -> bool:
    return part in ("component_combinations", "custom") or (isinstance(part, str) and part.startswith("function-"))


def _fields_at(loc: list[str], root: type[BaseModel] | None = None) -> list[str]:
    annotation: Any = root or ExperimentConfig
    for part in loc:
        annotation = _step(annotation, part)
        if annotation in (None, Any):
            return []
    return _fields_of(annotation)


def _locate(loc: str, msg: str, paths: dict[str, Path]) -> str:
    section = loc.split(".")[0]
    where = f"{paths[section]}: " if section in paths else ""
    return f"{where}{loc}: {msg}"


def parse_seed_list(text: str | int | list[int], name: str = "seeds") -> list[int]:
    """'123,124,125' -> [123, 124, 125]; refuses empty items, non-integers, negatives and duplicates."""
    allowed = "comma-separated non-negative integers without duplicates, e.g. 123,124,125"
    if isinstance(text, int) and not isinstance(text, bool):
        items = [str(text)]
    elif isinstance(text, list):
        items = [str(t) for t in text]
    else:
        items = str(text).split(",")
    if not str(text).strip() or (isinstance(text, list) and not text):
        raise ConfigError(f"{name}: empty; allowed: {allowed}")
    seeds = []
    for item in items:
        item = item.strip()
        if not item:
            raise ConfigError(f"{name}: empty item in {text!r}; allowed: {allowed}")
        if not item.lstrip("-").isdigit():
            raise ConfigError(f"{name}: {item!r} is not an integer; allowed: {allowed}")
        value = int(item)
        if value < 0 or value >= 2**63:
            raise ConfigError(f"{name}: {value} is out of range; allowed: {allowed}")
        if value in seeds:
            raise ConfigError(f"{name}: {value} appears twice; allowed: {allowed}")
        seeds.append(value)
    return seeds

