"""The experiment configuration's schema: typed, validated, frozen once loaded.

An experiment is four sections, each in its own file with the tutorial's file name:

| section    | file                      | what it holds                                   |
| ---------- | ------------------------- | ----------------------------------------------- |
| `physics`  | `synthetic_spectra.yaml`  | wavelength grid, sampling ranges, spectral lines |
| `data`     | `data_distribution.yaml`  | the splits and how their abundances are drawn    |
| `training` | `training.yaml`           | model, optimiser, checkpoints                    |
| `analysis` | `analysis.yaml`           | which components are tracked                     |

Every field is read somewhere (a test walks the schema); the tutorial's keys that have no meaning
here are handled by the loader (`loading.TUTORIAL_ONLY_KEYS`), never kept as dead fields. This
module imports neither torch nor the models: model names are checked against `registry`.
"""

from __future__ import annotations

import importlib
import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from speccomp.core.registry import VALIDATION_FITTED, known_models

SECTION_FILES: dict[str, str] = {
    "physics": "synthetic_spectra.yaml",
    "data": "data_distribution.yaml",
    "training": "training.yaml",
    "analysis": "analysis.yaml",
}


class ConfigError(ValueError):
    """A user error in a config file or override; its message is one line, ready to print."""


class _Strict(BaseModel):
    # Frozen: a loaded config is a value; derive a changed one with `model_copy(update=...)` or by
    # loading again with overrides.
    model_config = ConfigDict(extra="forbid", frozen=True)


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


PROBE_SAMPLES = 2
"""A custom sampler is called once at load with this many samples, so that one that cannot be
called as documented (or fails) is refused before any run exists."""


def call_sampler(path: str, rng: Any, n_samples: int, labels: list[str], where: str) -> Any:
    """`path`'s function called as the data generator calls it, its result checked: an array of
    shape (n_samples, n_components). A sampler that raises, or returns something else, is the
    ConfigError `<where>: <path> ...` in one line, naming its own exception."""
    import numpy as np

    func = resolve_sampler(path)
    try:
        out = np.array(func(rng, n_samples, list(labels)), dtype=np.float64)  # a copy: edited by the caller
    except Exception as exc:  # the user's code: any failure is the sampler's, reported as one line
        text = " ".join(str(exc).split())[:300]
        raise ConfigError(f"{where}: {path}(rng, n_samples={n_samples}, labels) raised {type(exc).__name__}"
                          f"{': ' + text if text else ''}; allowed: a function (rng, n_samples, labels) -> array "
                          "of shape (n_samples, n_components)") from None
    if out.shape != (n_samples, len(labels)):
        raise ConfigError(f"{where}: {path} returned shape {out.shape}; allowed: an array of shape "
                          f"(n_samples, n_components) = {(n_samples, len(labels))}")
    return out


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


# ---- nas (issue #10): the general sequential model `seq` (what architecture search derives) ----
class SeqLayer(_Strict):
    """One layer of `model_type: seq`. Convolution-stage layers (`conv`, `pool`) come first and
    work on (channels, bins); the first dense-stage layer flattens. `identity` passes its input
    on; `zero` outputs zeros of its input's shape (the position dropped, as in DARTS)."""

    op: Literal["conv", "pool", "dense", "identity", "zero"]
    """`conv` (same-padded 1-D convolution, max-pool by `seq.pool`, activation), `pool` (max-pool
    only), `dense` (linear, activation, dropout), `identity` or `zero`."""
    width: int | None = Field(None, gt=0)
    """Units of a `dense` layer, output channels of a `conv` layer (required for both)."""
    kernel: int | None = Field(None, gt=0)
    """Kernel size of a `conv` layer (odd, required)."""
    activation: Literal["relu", "gelu", "tanh", "silu", "leaky_relu"] | None = None
    """Activation after a `conv` or `dense` layer; default `training.activation`."""

    @model_validator(mode="after")
    def _fields(self) -> SeqLayer:
        if self.op in ("conv", "dense") and self.width is None:
            raise _at("width", f"a {self.op} layer needs width (units or channels, an integer > 0)")
        if self.op == "conv" and (self.kernel is None or self.kernel % 2 == 0):
            raise _at("kernel", f"a conv layer needs an odd kernel size (same padding), got {self.kernel}")
        if self.op not in ("conv", "dense") and (self.width, self.kernel, self.activation) != (None, None, None):
            raise _at("op", f"a {self.op} layer takes no width, kernel or activation")
        return self


class SeqConfig(_Strict):
    layers: list[SeqLayer] = []
    """Hidden layers in order (conv-stage first, then dense-stage); a linear output layer to the
    components always follows. [] is the linear model."""
    pool: int = Field(2, ge=1)
    """Max-pool factor of `conv` and `pool` layers (the CNN's 2)."""

    @model_validator(mode="after")
    def _order(self) -> SeqConfig:
        conv_stage = ("conv", "pool")
        seen_dense = False
        for i, layer in enumerate(self.layers):
            if layer.op == "dense":
                seen_dense = True
            elif layer.op in conv_stage and seen_dense:
                raise _at(f"layers.{i}.op", f"{layer.op} after a dense layer; conv and pool layers come first")
        return self

    def pooled_length(self, n_bins: int) -> int:
        """Bins left after the conv stage."""
        for layer in self.layers:
            if layer.op in ("conv", "pool"):
                n_bins //= self.pool
        return n_bins
# ---- end nas (issue #10) ----

Transform = Literal["none", "log", "standardize", "log+standardize"]
Activation = Literal["relu", "gelu", "tanh", "silu", "leaky_relu"]


class TrainingConfig(_Strict):
    n_bins: int | None = None
    """Optional; taken from physics. When given it must equal physics.n_bins."""
    n_components: int | None = None
    """Optional; taken from physics. When given it must equal the number of lines."""
    seed: int | list[int] = 42
    """The training seed(s) used when the command line names none (`--seeds`, `-P seeds`, which
    override it); the tutorial's single `seed: 42` trains one seed. Non-negative, no duplicates."""
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
    seq: SeqConfig = SeqConfig()
    """Used when model_type is `seq` (nas, issue #10): the layers an architecture search derives."""

    epochs: int = Field(6, ge=1)
    batch_size: int = Field(64, ge=1)
    learning_rate: float = Field(1e-3, gt=0, allow_inf_nan=False)
    """Finite and > 0."""
    weight_decay: float = Field(1e-4, ge=0, allow_inf_nan=False)
    """Finite and >= 0."""
    optimizer: Literal["adamw", "adam"] = "adamw"
    loss_function: Literal["mse", "mae", "huber"] = "mse"
    """Training loss on the abundances: `mse` (the tutorial's), `mae` (L1) or `huber` (delta 0.1,
    quadratic for errors below a tenth of the abundance range). Metrics are MSE whatever the loss."""

    checkpoint_by: Literal["ratio", "step"] = "ratio"
    checkpoint_ratio: float = Field(0.05, gt=0, le=1)
    """With `ratio`: a checkpoint every this fraction of all steps (0.05 gives 20, plus step 0)."""
    checkpoint_every_n_step: int = Field(100, ge=1)
    """With `step`: a checkpoint every this many steps (and at the last step)."""
    checkpoint_retention: Literal["all", "last", "none"] = "all"
    """Which checkpoints keep weights on disk; optimizer state is kept in the last one only."""
    log_every_n_step: int = Field(1, ge=1)
    """Train loss is logged every this many optimiser steps."""
    @field_validator("model_type")
    @classmethod
    def _registered(cls, v: str) -> str:
        if v not in known_models():
            raise ValueError(f"unknown model {v!r}; registered: {', '.join(known_models())}")
        return v

    @field_validator("seed")
    @classmethod
    def _seeds(cls, v: int | list[int]) -> int | list[int]:
        seeds = [v] if isinstance(v, int) else v
        if not seeds:
            raise ValueError("must name at least one seed, e.g. 42 or [123, 124, 125]")
        if any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds must be non-negative and distinct, got {v}")
        return v

    @property
    def seeds(self) -> list[int]:
        """`seed` as a list."""
        return [self.seed] if isinstance(self.seed, int) else list(self.seed)

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
    with the components the test split can contain (`split`) or all components (`all`); `off`:
    none."""
    learned_skill: float = Field(0.5, gt=0.0, lt=1.0)
    """In-distribution skill (R² where present on the validation split) below which a component
    counts as *not learned*: it gets the tag `not_learned` and no `transfer/<label>` value."""

    @field_validator("oracle", mode="before")
    @classmethod
    def _off_as_yaml_reads_it(cls, value: Any) -> Any:
        # YAML reads an unquoted `off` (and `no`, `false`) as false: `oracle: off` and the override
        # `analysis.oracle=off` mean "off", not a refused boolean.
        return "off" if value is False else value


# --------------------------------------------------------------------------------------------
# the whole experiment
# --------------------------------------------------------------------------------------------
class ExperimentConfig(_Strict):
    physics: PhysicsConfig
    _tracked: list[str] = PrivateAttr(default_factory=list)
    data: DataConfig
    training: TrainingConfig = TrainingConfig()
    analysis: AnalysisConfig = AnalysisConfig()

    @model_validator(mode="after")
    def _cross(self) -> ExperimentConfig:
        labels = self.physics.labels
        known = set(labels)
        for name, split in self.data.splits.items():
            dist = split.distribution
            if isinstance(dist, CustomDistribution):
                import numpy as np

                try:
                    call_sampler(dist.sampler, np.random.default_rng(0), PROBE_SAMPLES, labels, "")
                except ConfigError as exc:
                    raise _at(f"data.splits.{name}.distribution.sampler", str(exc).removeprefix(": ")) from None
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
        if self.training.model_type == "seq" and self.training.seq.pooled_length(self.physics.n_bins) < 1:  # nas
            raise _at("training.seq.layers", f"the conv and pool layers leave no bins of physics.n_bins={self.physics.n_bins}")
        if self.training.model_type in VALIDATION_FITTED and "val" not in self.data.resolved_splits():
            raise _at("training.model_type", f"{self.training.model_type} chooses its regularisation on the "
                      "validation split; set data.validation.n_samples > 0")
        tracked = self._resolve_tracked()
        self._tracked = tracked
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
        """Tracked component labels (resolved and validated once, at load)."""
        return list(self._tracked)

    def _resolve_tracked(self) -> list[str]:
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


