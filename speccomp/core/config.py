"""Typed experiment configuration, loaded from YAML and validated before any work.

An experiment is four sections, each in its own file with the tutorial's file name:

| section    | file                      | what it holds                                   |
| ---------- | ------------------------- | ----------------------------------------------- |
| `physics`  | `synthetic_spectra.yaml`  | wavelength grid, sampling ranges, spectral lines |
| `data`     | `data_distribution.yaml`  | the splits and how their abundances are drawn    |
| `training` | `training.yaml`           | model, optimiser, checkpoints                    |
| `analysis` | `analysis.yaml`           | which components are tracked                     |

The tutorial's own four files load unchanged. Single values are overridden by dotted path
(`training.epochs=10`, `data.splits.train.n_samples=256`). Every problem is reported as one line
naming the file, the dotted key and what is allowed (`ConfigError`); nothing in a config file is
ever executed.
"""

from __future__ import annotations

import copy
import importlib
import math
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

SECTION_FILES: dict[str, str] = {
    "physics": "synthetic_spectra.yaml",
    "data": "data_distribution.yaml",
    "training": "training.yaml",
    "analysis": "analysis.yaml",
}


class ConfigError(ValueError):
    """A user error in a config file or override; its message is one line, ready to print."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False, validate_assignment=False)


Range = tuple[float, float]


def _check_range(value: Range, what: str) -> Range:
    lo, hi = value
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"{what} range must be finite, got [{lo}, {hi}]")
    if lo > hi:
        raise ValueError(f"{what} range must be [min, max] with min <= max, got [{lo}, {hi}]")
    return value


# --------------------------------------------------------------------------------------------
# physics (synthetic_spectra.yaml)
# --------------------------------------------------------------------------------------------
class TemperatureSampling(_Strict):
    range: Range = (3000.0, 7000.0)
    """Kelvin, [min, max]; both must be > 0."""
    distribution: Literal["uniform", "log_uniform"] = "uniform"

    @field_validator("range")
    @classmethod
    def _positive(cls, v: Range) -> Range:
        _check_range(v, "temperature")
        if v[0] <= 0:
            raise ValueError(f"temperature must be > 0 K, got [{v[0]}, {v[1]}]")
        return v


class NoiseSampling(_Strict):
    range: Range = (0.01, 0.15)
    """Multiplicative noise level sigma, [min, max], each >= 0 (> 0 for log_uniform)."""
    distribution: Literal["uniform", "log_uniform"] = "log_uniform"
    additive: float = Field(0.0, ge=0.0)
    """Standard deviation of an additive Gaussian term, in units of the continuum peak (0 = the tutorial)."""

    @model_validator(mode="after")
    def _valid(self) -> NoiseSampling:
        _check_range(self.range, "noise")
        if self.range[0] < 0:
            raise ValueError(f"noise range must be >= 0, got [{self.range[0]}, {self.range[1]}]")
        if self.distribution == "log_uniform" and self.range[0] <= 0:
            raise ValueError("a log_uniform noise range needs min > 0")
        return self


class AbundanceSampling(_Strict):
    range: Range = (0.0, 1.0)
    """Abundance of an active component, [min, max]."""
    distribution: Literal["uniform"] = "uniform"

    @field_validator("range")
    @classmethod
    def _range(cls, v: Range) -> Range:
        return _check_range(v, "abundance")


class Sampling(_Strict):
    temperature: TemperatureSampling = TemperatureSampling()
    noise: NoiseSampling = NoiseSampling()
    abundance: AbundanceSampling = AbundanceSampling()


class Line(_Strict):
    label: str = Field(min_length=1)
    """Component name used everywhere else (splits, analysis, metric names)."""
    center: float
    """Line centre in nm."""
    width: float = Field(gt=0)
    """Gaussian sigma in nm."""
    strength: float = Field(ge=-1.0, le=1.0)
    """Fixed line strength s in [-1, 1]: negative absorbs, positive emits."""


class PhysicsConfig(_Strict):
    """The world model of `physics.md`."""

    n_bins: int = Field(1024, ge=2)
    """Number of wavelength bins, both ends of the range included."""
    wavelength_min: float = Field(300.0, gt=0)
    """nm."""
    wavelength_max: float = Field(1200.0, gt=0)
    """nm."""
    n_components: int | None = Field(None, ge=1)
    """Number of lines; optional, must equal len(lines) when given."""
    sampling: Sampling = Sampling()
    lines: list[Line] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> PhysicsConfig:
        if self.wavelength_min >= self.wavelength_max:
            raise _at(
                "wavelength_min",
                f"must be < wavelength_max ({self.wavelength_max}), got {self.wavelength_min}",
            )
        if self.n_components is not None and self.n_components != len(self.lines):
            raise _at("n_components", f"is {self.n_components} but {len(self.lines)} lines are defined")
        seen: set[str] = set()
        for i, line in enumerate(self.lines):
            if line.label in seen:
                raise _at(f"lines.{i}.label", f"duplicate label {line.label!r}")
            seen.add(line.label)
        check_modulation_positive(self, self.sampling.abundance.range, "sampling.abundance.range")
        return self

    @property
    def labels(self) -> list[str]:
        return [line.label for line in self.lines]


def check_modulation_positive(physics: PhysicsConfig, abundance_range: Range, where: str) -> None:
    """1 + s*a*g must stay > 0 for every line, abundance in range and g in (0, 1]."""
    lo, hi = abundance_range
    for line in physics.lines:
        worst = min(1 + line.strength * lo, 1 + line.strength * hi)
        if worst <= 0:
            raise _at(
                where,
                f"with line {line.label!r} (strength {line.strength}) abundance range [{lo}, {hi}] "
                f"makes the modulation 1 + s*a reach {worst:g} <= 0; keep |s|*a < 1",
            )


class _AtError(ValueError):
    """A validation error raised from a model validator that knows a more precise location."""

    def __init__(self, loc: str, msg: str):
        super().__init__(msg)
        self.loc = loc
        self.msg = msg


def _at(loc: str, msg: str) -> _AtError:
    return _AtError(loc, msg)


# --------------------------------------------------------------------------------------------
# data (data_distribution.yaml)
# --------------------------------------------------------------------------------------------
class Combination(_Strict):
    weight: float = Field(ge=0.0)
    """Relative probability of this component set (normalised over the list)."""
    components: list[str] = []
    """Active components; [] is the bare continuum."""


class CombinationsDistribution(_Strict):
    type: Literal["component_combinations"]
    combinations: list[Combination] = Field(min_length=1)

    @model_validator(mode="after")
    def _weights(self) -> CombinationsDistribution:
        if sum(c.weight for c in self.combinations) <= 0:
            raise _at("combinations", "weights must not all be zero; give at least one weight > 0")
        return self


class CustomDistribution(_Strict):
    type: Literal["custom"]
    sampler: str
    """Importable `package.module:function` with signature
    `(rng: numpy.random.Generator, n_samples: int, labels: list[str]) -> array (n_samples, n_components)`
    of abundances; code lives in a module, never in the config file."""

    @field_validator("sampler")
    @classmethod
    def _importable(cls, v: str) -> str:
        resolve_sampler(v)
        return v


def resolve_sampler(path: str):
    """Import `package.module:function`; a ValueError names what is wrong."""
    if ":" not in path:
        raise ValueError(f"must be 'package.module:function', got {path!r}")
    module_name, _, func_name = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import module {module_name!r} ({exc})") from None
    func = getattr(module, func_name, None)
    if not callable(func):
        raise ValueError(f"module {module_name!r} has no function {func_name!r}")
    return func


def _check_distribution_type(v: Any) -> Any:
    if isinstance(v, dict):
        kind = v.get("type")
        if kind == "sampling_code":
            raise ValueError(
                "type 'sampling_code' would execute Python from the config file and is refused; "
                "put the sampler in a module and use type: custom with sampler: 'package.module:function'"
            )
        if kind not in ("component_combinations", "custom"):
            raise ValueError(f"type must be 'component_combinations' or 'custom', got {kind!r}")
    return v


class SplitConfig(_Strict):
    n_samples: int = Field(gt=0)
    """Number of spectra in this split."""
    distribution: Annotated[
        CombinationsDistribution | CustomDistribution, Field(discriminator="type")
    ]
    combined_fraction: float = Field(0.0, ge=0.0, le=1.0)
    """Fraction of this split's samples that carry `combined_components` together instead of a
    draw from `distribution` (0 = a strict compositional split)."""
    combined_components: list[str] = []
    """The combination used by `combined_fraction`."""
    abundance_range: Range | None = None
    """Overrides physics sampling.abundance.range for this split."""
    noise_range: Range | None = None
    """Overrides physics sampling.noise.range for this split."""
    temperature_range: Range | None = None
    """Overrides physics sampling.temperature.range for this split."""

    @field_validator("distribution", mode="before")
    @classmethod
    def _no_code(cls, v: Any) -> Any:
        return _check_distribution_type(v)

    @model_validator(mode="after")
    def _checks(self) -> SplitConfig:
        if self.combined_fraction > 0 and not self.combined_components:
            raise _at("combined_components", "must name at least one component when combined_fraction > 0")
        for name in ("abundance_range", "noise_range", "temperature_range"):
            value = getattr(self, name)
            if value is not None:
                try:
                    _check_range(value, name.removesuffix("_range"))
                except ValueError as exc:
                    raise _at(name, str(exc)) from None
        if self.noise_range is not None and self.noise_range[0] < 0:
            raise _at("noise_range", "must be >= 0")
        if self.temperature_range is not None and self.temperature_range[0] <= 0:
            raise _at("temperature_range", "must be > 0 K")
        return self


class ValidationSplit(_Strict):
    n_samples: int = Field(512, ge=0)
    """In-distribution held-out spectra drawn like `source` (0 turns the split off)."""
    source: str = "train"
    """The split whose distribution the validation split copies."""


class DataConfig(_Strict):
    splits: dict[str, SplitConfig]
    validation: ValidationSplit = ValidationSplit()
    """An in-distribution validation split named `val`, on by default (the tutorial had none)."""

    @model_validator(mode="after")
    def _required(self) -> DataConfig:
        for name in ("train", "test"):
            if name not in self.splits:
                raise _at("splits", f"needs a {name!r} split; defined: {sorted(self.splits)}")
        if self.validation.n_samples > 0:
            if "val" in self.splits:
                raise _at("validation.n_samples", "a 'val' split is defined explicitly; set this to 0")
            if self.validation.source not in self.splits or self.validation.source == "test":
                allowed = sorted(set(self.splits) - {"test"})
                raise _at("validation.source", f"must be an in-distribution split, one of {allowed}; "
                          f"got {self.validation.source!r}")
        return self

    def resolved_splits(self) -> dict[str, SplitConfig]:
        """All splits to generate, the validation split included (named `val`)."""
        splits = dict(self.splits)
        if self.validation.n_samples > 0:
            src = self.splits[self.validation.source]
            splits["val"] = src.model_copy(update={"n_samples": self.validation.n_samples})
        return splits


# --------------------------------------------------------------------------------------------
# training (training.yaml)
# --------------------------------------------------------------------------------------------
class CNNConfig(_Strict):
    channels: list[Annotated[int, Field(gt=0)]] = Field([32, 64, 128], min_length=1)
    """Output channels of each convolution."""
    kernel_sizes: list[Annotated[int, Field(gt=0)]] = Field([7, 5, 3], min_length=1)
    """Kernel size of each convolution (odd sizes keep the length)."""
    pool: int = Field(2, ge=1)
    """Max-pool factor after each convolution."""
    head_dim: int = Field(256, gt=0)
    """Hidden units of the MLP head."""

    @model_validator(mode="after")
    def _lengths(self) -> CNNConfig:
        even = [k for k in self.kernel_sizes if k % 2 == 0]
        if even:
            raise _at("kernel_sizes", f"must be odd ('same' padding keeps the length), got {even[0]}")
        if len(self.channels) != len(self.kernel_sizes):
            raise _at("kernel_sizes", f"needs one size per channel entry ({len(self.channels)})")
        return self


Transform = Literal["none", "log", "standardize", "log+standardize"]
Activation = Literal["relu", "gelu", "tanh", "silu", "leaky_relu"]


class TrainingConfig(_Strict):
    n_bins: int | None = None
    """Optional; taken from physics. When given it must equal physics.n_bins."""
    n_components: int | None = None
    """Optional; taken from physics. When given it must equal the number of lines."""
    seed: int = 42
    """The tutorial's field, accepted and recorded; training seeds come from the command line (`seeds`)."""
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    """Where to train; `auto` takes a GPU when one exists."""

    model_type: str = "mlp"
    """A registered model: `mlp`, `cnn`, `linear` or any added with `speccomp.core.models.register_model`."""
    hidden_dims: list[Annotated[int, Field(gt=0, strict=True)]] = [128, 64]
    """Hidden layer widths of the MLP (ignored by `linear`; ints > 0)."""
    dropout_rate: float = Field(0.1, ge=0.0, lt=1.0)
    activation: Activation = "relu"
    input_transform: Transform = "none"
    """Applied inside the model so that a checkpoint is self-contained."""
    cnn: CNNConfig = CNNConfig()
    """Used when model_type is `cnn`."""

    epochs: int = Field(6, ge=1)
    batch_size: int = Field(64, ge=1)
    num_workers: int = Field(0, ge=0)
    """Accepted for the tutorial's files; batches come from memory, so no workers are used."""
    learning_rate: float = Field(1e-3, gt=0, allow_inf_nan=False)
    """Finite and > 0."""
    weight_decay: float = Field(1e-4, ge=0, allow_inf_nan=False)
    """Finite and >= 0."""
    optimizer: Literal["adamw", "adam"] = "adamw"
    loss_function: Literal["mse"] = "mse"

    checkpoint_by: Literal["ratio", "step"] = "ratio"
    checkpoint_ratio: float = Field(0.05, gt=0, le=1)
    """With `ratio`: a checkpoint every this fraction of all steps (0.05 gives 20, plus step 0)."""
    checkpoint_every_n_step: int = Field(100, ge=1)
    """With `step`: a checkpoint every this many steps (and at the last step)."""
    checkpoint_retention: Literal["all", "last", "none"] = "all"
    """Which checkpoints keep weights on disk; optimizer state is kept in the last one only."""
    log_every_n_step: int = Field(1, ge=1)
    """Train loss is logged every this many optimiser steps."""
    test_every: Literal["ckpt"] = "ckpt"
    """Validation and test are evaluated at every checkpoint."""

    @field_validator("model_type")
    @classmethod
    def _registered(cls, v: str) -> str:
        from speccomp.core.models import MODEL_REGISTRY  # late: models imports this module

        if v not in MODEL_REGISTRY:
            raise ValueError(f"unknown model {v!r}; registered: {', '.join(sorted(MODEL_REGISTRY))}")
        return v

    @field_validator("hidden_dims", mode="before")
    @classmethod
    def _dims(cls, v: Any) -> Any:
        if isinstance(v, list) and not v:
            raise ValueError("must list at least one hidden width (e.g. [128, 64])")
        return v


# --------------------------------------------------------------------------------------------
# analysis (analysis.yaml)
# --------------------------------------------------------------------------------------------
class PlotConfig(_Strict):
    x_component: int | str = 10
    """Component on the x axis: 1-based index (the tutorial's form) or label."""
    y_component: int | str = 4
    """Component on the y axis."""


class AnalysisConfig(_Strict):
    plot_config: PlotConfig = PlotConfig()
    tracked: list[str] | None = None
    """Labels to track (metrics `test/mse/<label>` etc.); defaults to the x and y components."""
    oracle: Literal["split", "all", "off"] = "split"
    """The physical floor (`oracle/mse/<label>`): fit the known physics to every test spectrum,
    with the components the test split can contain (`split`) or all components (`all`)."""


# --------------------------------------------------------------------------------------------
# the whole experiment
# --------------------------------------------------------------------------------------------
class ExperimentConfig(_Strict):
    physics: PhysicsConfig
    data: DataConfig
    training: TrainingConfig = TrainingConfig()
    analysis: AnalysisConfig = AnalysisConfig()

    @model_validator(mode="after")
    def _cross(self) -> ExperimentConfig:
        labels = self.physics.labels
        known = set(labels)
        for name, split in self.data.splits.items():
            dist = split.distribution
            if isinstance(dist, CombinationsDistribution):
                for i, combo in enumerate(dist.combinations):
                    for label in combo.components:
                        if label not in known:
                            raise _at(
                                f"data.splits.{name}.distribution.combinations.{i}.components",
                                f"unknown component {label!r}; known: {_preview(labels)}",
                            )
            for label in split.combined_components:
                if label not in known:
                    raise _at(
                        f"data.splits.{name}.combined_components",
                        f"unknown component {label!r}; known: {_preview(labels)}",
                    )
            if split.abundance_range is not None:
                check_modulation_positive(self.physics, split.abundance_range, f"data.splits.{name}.abundance_range")
            noise = self.physics.sampling.noise
            if split.noise_range is not None and noise.distribution == "log_uniform" and split.noise_range[0] <= 0:
                raise _at(
                    f"data.splits.{name}.noise_range",
                    f"must start above 0 with the log_uniform noise distribution, got {list(split.noise_range)}",
                )
        if self.training.n_bins is not None and self.training.n_bins != self.physics.n_bins:
            raise _at(
                "training.n_bins",
                f"is {self.training.n_bins} but physics.n_bins is {self.physics.n_bins}; "
                "remove it (it is taken from physics) or make them equal",
            )
        if self.training.n_components is not None and self.training.n_components != len(labels):
            raise _at(
                "training.n_components",
                f"is {self.training.n_components} but physics defines {len(labels)} lines; remove it or make them equal",
            )
        if self.training.model_type == "cnn":
            cnn, length = self.training.cnn, self.physics.n_bins
            for _ in cnn.channels:
                length //= cnn.pool
            if length < 1:
                raise _at(
                    "training.cnn.channels",
                    f"{len(cnn.channels)} pooling stages of {cnn.pool} leave no bins of physics.n_bins={self.physics.n_bins}; "
                    "use fewer stages, a smaller pool or more bins",
                )
        n_train = self.data.splits["train"].n_samples
        if self.training.batch_size > n_train:
            raise _at("training.batch_size", f"is {self.training.batch_size}, larger than the training split "
                      f"(data.splits.train.n_samples = {n_train}); allowed: 1 to {n_train}")
        tracked = self.tracked_labels  # validates
        test = self.data.splits["test"]
        if isinstance(test.distribution, CombinationsDistribution):
            reachable = {c for combo in test.distribution.combinations if combo.weight > 0 for c in combo.components}
            reachable |= set(test.combined_components) if test.combined_fraction > 0 else set()
            for label in tracked:
                if label not in reachable:
                    raise _at(
                        "analysis.tracked",
                        f"component {label!r} never occurs in the test split; it contains {sorted(reachable)}",
                    )
        return self

    @property
    def tracked_labels(self) -> list[str]:
        """Tracked component labels, validated against the physics lines."""
        labels = self.physics.labels
        if self.analysis.tracked is not None:
            if not self.analysis.tracked:
                raise _at("analysis.tracked", "must list at least one component")
            for label in self.analysis.tracked:
                if label not in labels:
                    raise _at("analysis.tracked", f"unknown component {label!r}; known: {_preview(labels)}")
            return list(dict.fromkeys(self.analysis.tracked))
        out = []
        for key in ("x_component", "y_component"):
            ref = getattr(self.analysis.plot_config, key)
            out.append(_component_label(ref, labels, f"analysis.plot_config.{key}"))
        return list(dict.fromkeys(out))

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def _component_label(ref: int | str, labels: list[str], where: str) -> str:
    if isinstance(ref, bool):
        raise _at(where, "must be a 1-based component index or a label")
    if isinstance(ref, int):
        if not 1 <= ref <= len(labels):
            raise _at(where, f"index {ref} is out of range 1..{len(labels)}")
        return labels[ref - 1]
    if ref in labels:
        return ref
    raise _at(where, f"unknown component {ref!r}; known: {_preview(labels)}")


def _preview(labels: list[str], n: int = 6) -> str:
    shown = ", ".join(labels[:n])
    return shown + (f", ... ({len(labels)} in all)" if len(labels) > n else "")


# --------------------------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------------------------
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
    if config_dir is not None and not base.is_dir():
        raise ConfigError(f"{base}: config folder not found")
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
        raw[section] = read_yaml(path)
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


def resolve_preset(name: str | Path) -> Path:
    """A preset file path, or the name of one under the project's `configs/presets/`."""
    path = Path(name)
    if path.is_file():
        return path
    candidate = default_config_dir() / "presets" / f"{name}.yaml"
    if candidate.is_file():
        return candidate
    known = sorted(p.stem for p in (default_config_dir() / "presets").glob("*.yaml"))
    raise ConfigError(f"preset: {name}: no such file or preset; presets: {', '.join(known) or 'none'}")


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
) -> ExperimentConfig:
    """Validate a raw nested dict (after applying overrides); errors name file and dotted key."""
    raw = copy.deepcopy(raw)
    for item in overrides:
        apply_override(raw, item)
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as exc:
        message = _format_validation_error(exc, paths or {})
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


def apply_override(raw: dict[str, Any], item: str) -> None:
    """Apply `a.b.c=value` to a nested dict in place. The key must name an existing field."""
    if "=" not in item:
        raise ConfigError(f"override {item!r}: must be key=value, e.g. training.epochs=10")
    key, _, text = item.partition("=")
    key = key.strip()
    parts = key.split(".")
    if not key or any(not p for p in parts):
        raise ConfigError(f"override {item!r}: key must be a dotted path such as training.epochs")
    if parts[0] not in SECTION_FILES:
        raise ConfigError(f"override {key}: unknown section {parts[0]!r}; allowed: {', '.join(SECTION_FILES)}")
    _check_known_path(parts)
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


def _check_known_path(parts: list[str]) -> None:
    """Refuse an override whose key names no field of the schema (typos must not pass silently)."""
    model: Any = ExperimentConfig
    walked: list[str] = []
    for part in parts:
        walked.append(part)
        model = _unwrap(model)
        if isinstance(model, type) and issubclass(model, BaseModel):
            if part not in model.model_fields:
                allowed = ", ".join(model.model_fields)
                raise ConfigError(f"override {'.'.join(parts)}: unknown key {'.'.join(walked)!r}; allowed there: {allowed}")
            model = model.model_fields[part].annotation
            continue
        origin = getattr(model, "__origin__", None)
        args = getattr(model, "__args__", ())
        if origin is dict:
            model = args[1]
        elif origin in (list, tuple):
            if not part.isdigit():
                raise ConfigError(f"override {'.'.join(parts)}: {'.'.join(walked[:-1])} is a list; use an index")
            model = args[0] if args else Any
        elif model is Any:
            return
        elif _is_union_of_models(model):
            options = [m for m in _union_args(model) if isinstance(m, type) and issubclass(m, BaseModel)]
            hit = [m for m in options if part in m.model_fields]
            if not hit:
                raise ConfigError(f"override {'.'.join(parts)}: unknown key {'.'.join(walked)!r}")
            model = hit[0].model_fields[part].annotation
        else:
            raise ConfigError(f"override {'.'.join(parts)}: {'.'.join(walked[:-1])} is a value, not a section")


def _unwrap(model: Any) -> Any:
    # Annotated[X, ...] -> X ; Optional[X] -> X
    while True:
        meta = getattr(model, "__metadata__", None)
        if meta is not None:
            model = model.__origin__
            continue
        args = _union_args(model)
        if args:
            non_none = [a for a in args if a is not type(None)]
            if len(non_none) == 1:
                model = non_none[0]
                continue
        return model


def _union_args(model: Any) -> tuple:
    import types
    import typing

    origin = getattr(model, "__origin__", None)
    if origin is typing.Union or isinstance(model, types.UnionType):
        return model.__args__
    return ()


def _is_union_of_models(model: Any) -> bool:
    return bool(_union_args(model))


def _format_validation_error(exc: ValidationError, paths: dict[str, Path]) -> str:
    err = exc.errors(include_url=False)[0]
    loc = [str(p) for p in err["loc"] if not _is_tag(p)]
    msg = err["msg"]
    ctx_error = (err.get("ctx") or {}).get("error")
    if isinstance(ctx_error, _AtError):
        loc = loc + ctx_error.loc.split(".")
        msg = ctx_error.msg
        if loc and loc[0] in SECTION_FILES and ctx_error.loc.split(".")[0] in SECTION_FILES:
            loc = ctx_error.loc.split(".")
    else:
        msg = msg.removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
            parent = _model_at(loc[:-1])
            if parent is not None:
                msg += f"; allowed: {', '.join(parent.model_fields)}"
        elif err["type"] == "missing":
            msg = "is required"
        elif "input" in err and not isinstance(err["input"], dict):
            shown = repr(err["input"])
            if len(shown) <= 60 and shown not in msg:
                msg += f" (got {shown})"
    return _locate(".".join(loc), msg, paths)


def _is_tag(part: Any) -> bool:
    return part in ("component_combinations", "custom") or (isinstance(part, str) and part.startswith("function-"))


def _model_at(loc: list[str]) -> type[BaseModel] | None:
    try:
        model: Any = ExperimentConfig
        for part in loc:
            model = _unwrap(model)
            if isinstance(model, type) and issubclass(model, BaseModel):
                model = model.model_fields[part].annotation
            elif getattr(model, "__origin__", None) is dict:
                model = model.__args__[1]
            elif getattr(model, "__origin__", None) in (list, tuple):
                model = model.__args__[0]
            elif _union_args(model):
                return None
        model = _unwrap(model)
        return model if isinstance(model, type) and issubclass(model, BaseModel) else None
    except (KeyError, AttributeError, IndexError):
        return None


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
