"""Typed configuration of the matrices domain (a folder such as `configs/raven/`).

| section    | file                     | what it holds                                            |
| ---------- | ------------------------ | -------------------------------------------------------- |
| `matrices` | `matrices.yaml`          | the generator: value ranges, rules, candidates, images    |
| `data`     | `data_distribution.yaml` | split sizes and what the test split holds out            |
| `training` | `training.yaml`          | model (a matrices model), optimiser, checkpoints          |

The presence of `matrices.yaml` in a config folder selects this domain. Loading, overrides and
error messages work as for spectra (`speccomp.core.config`): one line naming the file, the dotted
key and what is allowed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from speccomp.core.loading import _deep_merge, config_from_dict, read_yaml, resolve_preset
from speccomp.core.schema import ConfigError, TrainingConfig, ValidationSplit, _AtError, _Strict
from speccomp.matrices.generator import ATTRIBUTES, LEVELS, RULES, SplitSpec, family_feasible

SECTION_FILES: dict[str, str] = {
    "matrices": "matrices.yaml",
    "data": "data_distribution.yaml",
    "training": "training.yaml",
}
MARKER_FILE = SECTION_FILES["matrices"]
REQUIRED_SECTIONS = ("matrices", "data")
IntRange = tuple[int, int]


def _at(loc: str, msg: str) -> _AtError:
    return _AtError(loc, msg)


def _check_attribute(name: str, where: str) -> None:
    if name not in ATTRIBUTES:
        raise _at(where, f"unknown attribute {name!r}; allowed: {', '.join(ATTRIBUTES)}")


class MatricesSection(_Strict):
    """The generator (`matrices.yaml`)."""

    ranges: dict[str, IntRange] = {name: LEVELS[name] for name in ATTRIBUTES}
    """Values each attribute may take, [min, max] inclusive, within its levels: number 1..9 (objects
    per panel), type 0..4 (triangle, square, pentagon, hexagon, circle), size 0..5, colour 0..9.
    At least three values each (distribute-three and the candidates need them)."""
    rules: list[str] = list(RULES)
    """Rules an attribute may follow: constant, progression, arithmetic, distribute_three."""
    n_candidates: int = 8
    """Answer candidates per matrix: 2, 4, 8 or 16 (an I-RAVEN bisection tree of log2 levels)."""
    image_size: int = Field(48, ge=24, le=192)
    """Side in pixels of a rendered panel (figures; a multiple of 3)."""

    @field_validator("ranges", mode="before")
    @classmethod
    def _fill(cls, v: Any) -> Any:
        if isinstance(v, dict):
            for name in v:
                _check_attribute(str(name), f"matrices.ranges.{name}")
            return {**{n: LEVELS[n] for n in ATTRIBUTES}, **v}
        return v

    @model_validator(mode="after")
    def _valid(self) -> MatricesSection:
        for name, (lo, hi) in self.ranges.items():
            where = f"matrices.ranges.{name}"
            lv_lo, lv_hi = LEVELS[name]
            if lo > hi:
                raise _at(where, f"empty value range [{lo}, {hi}]; allowed: [min, max] with min <= max within [{lv_lo}, {lv_hi}]")
            if lo < lv_lo or hi > lv_hi:
                raise _at(where, f"[{lo}, {hi}] leaves the levels of {name}; allowed: within [{lv_lo}, {lv_hi}]")
            if hi - lo < 2:
                raise _at(where, f"[{lo}, {hi}] holds {hi - lo + 1} value(s); allowed: at least 3 values")
        if not self.rules:
            raise _at("matrices.rules", f"must list at least one rule; allowed: {', '.join(RULES)}")
        for i, rule in enumerate(self.rules):
            if rule not in RULES:
                raise _at(f"matrices.rules.{i}", f"unknown rule {rule!r}; allowed: {', '.join(RULES)}")
        if len(set(self.rules)) != len(self.rules):
            raise _at("matrices.rules", "lists a rule twice")
        for name, (lo, hi) in self.ranges.items():
            for rule in self.rules:
                if not family_feasible(RULES.index(rule), lo, hi):
                    raise _at(f"matrices.ranges.{name}", f"[{lo}, {hi}] is too narrow for rule {rule!r}; "
                              "widen it or remove the rule from matrices.rules")
        allowed = [2**k for k in range(1, len(ATTRIBUTES) + 1)]
        if self.n_candidates not in allowed:
            raise _at("matrices.n_candidates", f"is {self.n_candidates}; allowed: {', '.join(map(str, allowed))} "
                      "(at least 2; a power of two, one tree level per modified attribute)")
        if self.image_size % 3:
            raise _at("matrices.image_size", f"is {self.image_size}; allowed: a multiple of 3 (3 × 3 slots)")
        return self

    @property
    def range_array(self) -> np.ndarray:
        """(4, 2) int64 ranges in `ATTRIBUTES` order."""
        return np.array([self.ranges[name] for name in ATTRIBUTES], dtype=np.int64)


class Pair(_Strict):
    rule: str
    """A rule of `matrices.rules`."""
    attribute: str
    """number, type, size or colour."""

    @property
    def label(self) -> str:
        return f"{self.rule}/{self.attribute}"


class MatrixSplitConfig(_Strict):
    n_samples: int = Field(gt=0)
    """Number of matrices in this split."""


class MatricesDataConfig(_Strict):
    """Splits (`data_distribution.yaml`). `train` and every split other than `test` are drawn
    in distribution: no held-out pair, no held-out value on any panel (candidates included).
    Every `test` matrix holds at least one held-out pair or value; with nothing held out the test
    split is drawn like `train` (a neutral split)."""

    splits: dict[str, MatrixSplitConfig]
    heldout_pairs: list[Pair] = []
    """(rule, attribute) pairs never seen in training, e.g. {rule: progression, attribute: size}."""
    heldout_values: dict[str, IntRange] = {}
    """Per attribute, a value range [min, max] never seen in training (extrapolation when it is at
    an end of the attribute's range, interpolation inside it)."""
    validation: ValidationSplit = ValidationSplit(n_samples=1000)
    """An in-distribution validation split `val`, drawn like `source` (0 turns it off)."""

    @model_validator(mode="after")
    def _required(self) -> MatricesDataConfig:
        for name in ("train", "test"):
            if name not in self.splits:
                raise _at("data.splits", f"needs a {name!r} split; defined: {sorted(self.splits)}")
        if self.validation.n_samples > 0:
            if "val" in self.splits:
                raise _at("data.validation.n_samples", "a 'val' split is defined explicitly; set this to 0")
            if self.validation.source not in self.splits or self.validation.source == "test":
                allowed = sorted(set(self.splits) - {"test"})
                raise _at("data.validation.source", f"must be an in-distribution split, one of {allowed}; "
                          f"got {self.validation.source!r}")
        return self

    def resolved_splits(self) -> dict[str, MatrixSplitConfig]:
        splits = dict(self.splits)
        if self.validation.n_samples > 0:
            splits["val"] = MatrixSplitConfig(n_samples=self.validation.n_samples)
        return splits

    @property
    def heldout(self) -> bool:
        return bool(self.heldout_pairs or self.heldout_values)


WREN_OVERRIDES = ("training.model_type=raven_wren", "training.hidden_dims=[64, 128]")
"""The relational reference model wherever the matrices domain compares against one (`nas`,
`meta`): `raven_wren` at the widths measured best in docs/matrices.md's table (panel embedding and pair
function 64, head 128), not the MLP's 256-128."""


class MatricesTrainingConfig(TrainingConfig):
    """`training.yaml` of the matrices domain: the spectra fields, a matrices model and the
    cross-entropy loss over the candidates' scores."""

    DOMAIN: ClassVar[str] = "matrices"
    model_type: str = "raven_mlp"
    """A registered matrices model: `raven_mlp` (candidate scorer), `raven_wren` (relational),
    `raven_candidates` (sees the candidates only: the shortcut probe)."""
    hidden_dims: list[Annotated[int, Field(gt=0, strict=True)]] = [256, 128]
    """Hidden widths: the scorer MLP's layers; for `raven_wren` the panel embedding and pair
    function width, then the scoring head's widths."""
    loss_function: Literal["cross_entropy"] = "cross_entropy"
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(128, ge=1)
    dropout_rate: float = Field(0.0, ge=0.0, lt=1.0)

    @field_validator("model_type")
    @classmethod
    def _registered(cls, v: str) -> str:
        from speccomp.core.registry import known_models

        known = known_models("matrices")
        if v not in known:
            raise ValueError(f"unknown matrices model {v!r}; registered: {', '.join(known)}")
        return v

    @model_validator(mode="after")
    def _matrices_only(self) -> MatricesTrainingConfig:
        if self.input_transform != "none":
            raise _at("training.input_transform", f"is {self.input_transform!r}; allowed: none (panels are encoded already)")
        for name in ("n_bins", "n_components"):
            if getattr(self, name) is not None:
                raise _at(f"training.{name}", "is a spectra field; remove it")
        return self


class MatricesExperimentConfig(_Strict):
    """A whole matrices experiment."""

    DOMAIN: ClassVar[str] = "matrices"
    matrices: MatricesSection = MatricesSection()
    data: MatricesDataConfig
    training: MatricesTrainingConfig = MatricesTrainingConfig()

    @model_validator(mode="after")
    def _cross(self) -> MatricesExperimentConfig:
        rules = self.matrices.rules
        held: dict[str, set[str]] = {a: set() for a in ATTRIBUTES}
        for i, pair in enumerate(self.data.heldout_pairs):
            where = f"data.heldout_pairs.{i}"
            if pair.rule not in RULES:
                raise _at(f"{where}.rule", f"unknown rule {pair.rule!r}; allowed: {', '.join(RULES)}")
            if pair.rule not in rules:
                raise _at(f"{where}.rule", f"rule {pair.rule!r} is not in matrices.rules; allowed: {', '.join(rules)}")
            _check_attribute(pair.attribute, f"{where}.attribute")
            if pair.rule in held[pair.attribute]:
                raise _at(where, f"pair {pair.label} is listed twice")
            held[pair.attribute].add(pair.rule)
        for attribute, rules_held in held.items():
            if rules_held and set(rules) <= rules_held:
                raise _at("data.heldout_pairs", f"holds out every rule of attribute {attribute!r} "
                          f"({', '.join(rules)}), so training could never draw it; keep at least one")
        for attribute, (lo, hi) in self.data.heldout_values.items():
            where = f"data.heldout_values.{attribute}"
            _check_attribute(attribute, where)
            r_lo, r_hi = self.matrices.ranges[attribute]
            if lo > hi:
                raise _at(where, f"empty value range [{lo}, {hi}]; allowed: [min, max] with min <= max within [{r_lo}, {r_hi}]")
            if lo < r_lo or hi > r_hi:
                raise _at(where, f"[{lo}, {hi}] is outside matrices.ranges.{attribute} [{r_lo}, {r_hi}]")
            if (r_hi - r_lo + 1) - (hi - lo + 1) < 3:
                raise _at(where, f"[{lo}, {hi}] leaves fewer than 3 of the values [{r_lo}, {r_hi}] for training; "
                          "allowed: a range that keeps at least 3")
        return self

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @property
    def chance(self) -> float:
        return 1.0 / self.matrices.n_candidates

    @property
    def pair_labels(self) -> list[str]:
        """Every (rule, attribute) pair as `rule/attribute`, rules outer."""
        return [f"{r}/{a}" for r in self.matrices.rules for a in ATTRIBUTES]

    def split_specs(self) -> dict[str, SplitSpec]:
        """What each split (the validation split included) may and must contain."""
        m, d = self.matrices, self.data
        ranges = m.range_array
        every = np.zeros((len(RULES), len(ATTRIBUTES)), bool)
        for rule in m.rules:
            every[RULES.index(rule)] = True
        train_allowed = every.copy()
        for pair in d.heldout_pairs:
            train_allowed[RULES.index(pair.rule), ATTRIBUTES.index(pair.attribute)] = False
        excluded = {ATTRIBUTES.index(a): tuple(range(lo, hi + 1)) for a, (lo, hi) in d.heldout_values.items()}
        in_dist = SplitSpec(ranges, train_allowed, m.n_candidates, excluded=excluded)
        if d.heldout:
            test = SplitSpec(
                ranges, every, m.n_candidates,
                required_pairs=tuple((RULES.index(p.rule), ATTRIBUTES.index(p.attribute)) for p in d.heldout_pairs),
                required_values=excluded,
            )
        else:
            test = in_dist
        return {name: (test if name == "test" else in_dist) for name in d.resolved_splits()}


# ------------------------------------------------------------------------------------------------
# loading
# ------------------------------------------------------------------------------------------------
def is_matrices_dir(folder: str | Path | None) -> bool:
    return folder is not None and (Path(folder) / MARKER_FILE).is_file()


def check_config_dir(folder: Path) -> None:
    allowed = (f"a folder holding {' and '.join(SECTION_FILES[s] for s in REQUIRED_SECTIONS)} "
               f"({SECTION_FILES['training']} optional)")
    if not folder.is_dir():
        raise ConfigError(f"config_dir: {folder}: folder not found; allowed: {allowed}")
    for section in REQUIRED_SECTIONS:
        if not (folder / SECTION_FILES[section]).is_file():
            raise ConfigError(f"config_dir: {folder} has no {SECTION_FILES[section]}; allowed: {allowed}")


def load_matrices_config(
    config_dir: str | Path,
    overrides: list[str] | tuple[str, ...] = (),
    presets: list[str | Path] | tuple[str | Path, ...] = (),
) -> MatricesExperimentConfig:
    """Load `matrices.yaml`, `data_distribution.yaml` and (optional) `training.yaml` from
    `config_dir`, merge presets, apply dotted overrides, validate. Raises ConfigError (one line)."""
    base = Path(config_dir)
    if not base.is_dir():
        raise ConfigError(f"{base}: config folder not found")
    paths = {s: base / f for s, f in SECTION_FILES.items()}
    raw: dict[str, Any] = {}
    for section, path in paths.items():
        raw[section] = read_yaml(path) if path.is_file() or section in REQUIRED_SECTIONS else {}
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
    return matrices_config_from_dict(raw, overrides, paths)


def matrices_config_from_dict(
    raw: dict[str, Any], overrides: list[str] | tuple[str, ...] = (), paths: dict[str, Path] | None = None
) -> MatricesExperimentConfig:
    return config_from_dict(raw, overrides, paths, root=MatricesExperimentConfig)  # type: ignore[return-value]


def is_matrices_raw(raw: dict[str, Any]) -> bool:
    """Whether a resolved config dict (a `config.yaml`) is of this domain."""
    return isinstance(raw, dict) and "matrices" in raw


__all__ = [
    "MatricesExperimentConfig", "MatricesSection", "MatricesDataConfig", "MatricesTrainingConfig",
    "Pair", "SECTION_FILES", "WREN_OVERRIDES", "check_config_dir", "is_matrices_dir", "load_matrices_config",
    "matrices_config_from_dict",
]
