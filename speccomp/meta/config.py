"""The meta-learner's own hyper-parameters: a YAML file (`configs/meta/default.yaml`), validated
like every config (unknown keys and bad values are one line naming the file and dotted key).

The six settings of the source document live in `settings.py` (flags, environment, `.env`); the
file's optional `settings:` section is their lowest layer above the defaults.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from speccomp.core.config import ConfigError, default_config_dir, read_yaml
from speccomp.core.loading import known_names, named_file


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ExperimentSection(_Strict):
    config_dir: str | None = None
    """The experiment config the tasks are built on (default: the project's `configs/`)."""
    overrides: list[str] = []
    """Dotted overrides of that config (e.g. `physics.n_bins=256` for a cheaper run)."""
    data_seed: int = Field(42, ge=0)
    """Seed of every spectrum of every task (each pool has its own named stream)."""
    seeds: list[int] = Field([123], min_length=1)
    """Training seeds of stage two and of every baseline (the same for every method)."""


class TasksSection(_Strict):
    n_single: int = Field(256, ge=3)
    """Training spectra per component alone, shared by every task holding that component."""
    n_empty: int = Field(256, ge=1)
    """Training spectra of the bare continuum, shared by every task."""
    n_val_single: int = Field(64, ge=1)
    """In-distribution validation spectra per component alone (and of the bare continuum)."""
    n_query: int = Field(128, ge=1)
    """Combination spectra per meta-training pair (the query set of the meta-learner)."""
    n_test: int = Field(512, ge=1)
    """Combination spectra per meta-test pair, seen only by the final evaluation."""
    held_out_components: int = Field(0, ge=0)
    """> 0: meta-test pairs are drawn among this many components that never occur in a
    meta-training pair (0: meta-test pairs are any pairs not drawn for meta-training)."""


class MatricesTasksSection(_Strict):
    """Task sizes on the matrices domain (`experiment.config_dir: configs/raven`): a task is one
    (rule, attribute) pair held out of training; ignored on the spectra domain."""

    n_train: int = Field(2000, ge=8)
    """Training matrices per task (the pair never occurs in them)."""
    n_val: int = Field(500, ge=1)
    """In-distribution validation matrices per task (without the pair)."""
    n_query: int = Field(256, ge=1)
    """Matrices holding the pair per meta-training task (the meta-learner's query set)."""
    n_test: int = Field(1000, ge=1)
    """Matrices holding the pair per meta-test task, seen only by the final evaluation."""


class PosteriorSection(_Strict):
    prior_scale: float = Field(1.0, gt=0, allow_inf_nan=False)
    """Standard deviation s of the prior p(α) = N(0, s²) over every architecture logit."""
    init_std: float = Field(0.1, gt=0, allow_inf_nan=False)
    """Initial standard deviation of q(α) (its mean starts at 0: uniform probabilities)."""
    kl_weight: float = Field(1.0, ge=0, allow_inf_nan=False)
    """Multiplier of KL(q‖p)/num_tasks in the ELBO (1 = the ELBO)."""


class InnerSection(_Strict):
    steps: int = Field(3, ge=1)
    """Adam steps of the shared supernet weights on a task's training split per meta-iteration."""
    batch_size: int = Field(32, ge=1)
    """Training spectra per inner step."""
    query_batch_size: int = Field(64, ge=1)
    """Combination spectra scored per meta-iteration."""
    learning_rate: float = Field(3e-3, gt=0, allow_inf_nan=False)
    """Adam learning rate of the inner loop."""
    meta_step: float = Field(0.5, gt=0, le=1, allow_inf_nan=False)
    """REPTILE step ε: shared weights move ε of the way towards the adapted ones."""
    tau_max: float = Field(5.0, gt=0, allow_inf_nan=False)
    """Gumbel-softmax temperature at the first meta-iteration."""
    tau_min: float = Field(0.5, gt=0, allow_inf_nan=False)
    """Temperature at the last meta-iteration (annealed geometrically)."""

    @model_validator(mode="after")
    def _tau(self) -> InnerSection:
        if self.tau_min > self.tau_max:
            raise ValueError(f"tau_min {self.tau_min} must be <= tau_max {self.tau_max}")
        return self


class AdaptSection(_Strict):
    n_train: int | None = Field(None, ge=3)
    """Small-data option: training spectra of a meta-test pair (e.g. 64, 256, 1024; split evenly
    between the bare continuum and the two components alone); null = all."""
    candidates: int = Field(2, ge=0)
    """Posterior samples judged beside the MAP architecture on the in-distribution validation split."""
    candidate_steps: int = Field(40, ge=1)
    """Weight steps each candidate gets before it is judged."""
    search_steps: int = Field(60, ge=0)
    """Alternating steps adapting α (at ARCHITECTURE_LEARNING_RATE, on validation) and the weights."""
    finetune_steps: int = Field(200, ge=1)
    """Weight steps of the final architecture on the pair's training split."""
    batch_size: int = Field(32, ge=1)
    learning_rate: float = Field(1e-3, gt=0, allow_inf_nan=False)
    """Adam learning rate of the weights in stage two (and of the supernet baselines)."""


class BaselinesSection(_Strict):
    methods: list[Literal["meta-weights", "meta-arch", "default", "loglinear", "wren", "prior", "nas"]] = [
        "meta-weights", "meta-arch", "default", "loglinear", "prior", "nas"]
    """Baselines run on the same meta-test pairs, data and seeds (the oracle floor always).
    `meta-weights` and `meta-arch` are the ablations of `meta` (see `speccomp.meta.adapt.stage_two`;
    `meta-weights` meta-trains a second supernet with q frozen at the prior). `loglinear` is a
    spectra model, `wren` (`raven_wren`, relational) a matrices one."""
    nas_iterations: int | None = Field(None, ge=1)
    """Search iterations of single-task NAS per pair (default: the stage-two budget)."""


class MetaConfig(_Strict):
    settings: dict[str, Any] = {}
    """Optional values of the six settings (snake_case); flags, environment and `.env` win."""
    space: str = "configs/nas/spectra.yaml"
    """The architecture search-space file (the NAS issue's), relative to the project folder."""
    experiment: ExperimentSection = ExperimentSection()
    tasks: TasksSection = TasksSection()
    matrices_tasks: MatricesTasksSection = MatricesTasksSection()
    posterior: PosteriorSection = PosteriorSection()
    inner: InnerSection = InnerSection()
    adapt: AdaptSection = AdaptSection()
    baselines: BaselinesSection = BaselinesSection()
    log_every: int = Field(10, ge=1)
    """Meta-iterations per batch of logged metrics (every iteration is logged, in batches)."""


def project_dir() -> Path:
    return default_config_dir().parent


def default_meta_config() -> Path:
    return default_config_dir() / "meta" / "default.yaml"


def resolve_meta_config(name: str | Path | None) -> Path:
    """A file, or a name under `configs/meta/` (`default`, `smoke`, `raven`)."""
    if name is None or str(name).strip() == "":
        return default_meta_config()
    path = named_file(name, "meta")
    if path is None:
        raise ConfigError(f"meta config: {name}: no such file or name; allowed: a meta config file, or one of {', '.join(known_names('meta'))}")
    return path


def load_meta_config(name: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> tuple[MetaConfig, Path]:
    """Read and validate a meta config; `overrides` are dotted `key=value` (e.g. `inner.steps=2`)."""
    import yaml

    path = resolve_meta_config(name)
    raw = read_yaml(path)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"meta override {item!r}: must be key=value, e.g. inner.steps=2")
        node = raw
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"meta override {key}: {part} is a value, not a section")
        try:
            node[parts[-1]] = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            where = f" (line {exc.problem_mark.line + 1}, column {exc.problem_mark.column + 1})" \
                if getattr(exc, "problem_mark", None) else ""
            raise ConfigError(f"meta override {key.strip()}: {text!r} is not a YAML value{where}; quote an item "
                              "holding ':' or '=', e.g. experiment.overrides=['matrices.rules=[constant]']") from None
    try:
        return MetaConfig.model_validate(raw), path
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif "input" in err and not isinstance(err["input"], dict) and len(repr(err["input"])) <= 60:
            msg += f" (got {err['input']!r})"
        raise ConfigError(f"{path}: {loc}: {msg}" if loc else f"{path}: {msg}") from None
