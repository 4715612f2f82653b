"""The task (domain) interface: what the shared training loop, experiment, tracking and study code
need from a domain, and the registry that picks the domain of a config.

A domain provides its config schema (a pydantic model with sections, loaded from a folder), its
splits (`generate`, one seeded generator per split), the loss, the per-checkpoint and final
metrics (the gap definition among them), the optional floor, its figures and what the console and
a study report. A split object has `inputs` (N, ...) and `targets` (N, ...) tensors, `name`,
`data_seed`, `digest` and `len()`; a model maps (S, B, ...) inputs to (S, B, ...) outputs, one
member per training seed (`speccomp.core.models`).

    task = task_for_dir("configs/raven")          # the folder's files pick the domain
    cfg = task.load_config("configs/raven", ["training.epochs=2"])
    data = task.generate(cfg, data_seed=42)
    loss = task.loss_fn(cfg)(model(x), y)         # (S,) one loss per member

The core knows no domain: a domain registers its task (`register_task`) when its task module is
imported, and the domain list `speccomp/domains.py` declares which module that is
(`speccomp.core.registry.declare_domain`), so the lookups below import a declared domain the first
time they need it. The project's domains are the spectra (regression, MSE, oracle floor) and the
matrices (multiple choice, accuracy, chance floor); docs/layout.md walks through adding one.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd
import torch
from pydantic import BaseModel

from speccomp.core import registry
from speccomp.core.models import ModelSpec


@dataclass
class FloorResult:
    """What a domain's floor adds after training: per-seed final metrics (e.g. the oracle's MSE or
    the chance accuracy) and the value drawn as the floor line in the figures."""

    per_seed: dict[int, dict[str, float]] = field(default_factory=dict)
    figure_floor: Any = None


class Task(ABC):
    """One domain. Subclasses are stateless; the config object carries everything."""

    name: ClassVar[str]
    section_files: ClassVar[dict[str, str]]
    """Section -> file name in a config folder."""

    # --- configuration -------------------------------------------------------------------
    @abstractmethod
    def owns_dir(self, folder: Path) -> bool:
        """Whether a config folder is of this domain (by the files it holds)."""

    @abstractmethod
    def owns_raw(self, raw: dict[str, Any]) -> bool:
        """Whether a resolved config dict (a `config.yaml` read back) is of this domain."""

    @abstractmethod
    def schema(self) -> type[BaseModel]:
        """The root config model (dotted override paths and study spaces are checked against it)."""

    @abstractmethod
    def check_config_dir(self, folder: Path) -> None:
        """Raise ConfigError (one line, key `config_dir`) if required files are missing."""

    @abstractmethod
    def load_config(self, config_dir: str | Path | None, overrides=(), presets=()) -> Any:
        """The validated config; raises ConfigError (one line naming file and key)."""

    @abstractmethod
    def config_from_dict(self, raw: dict[str, Any], overrides=(), paths=None) -> Any:
        """Validate a raw dict (after dotted overrides)."""

    # --- data -----------------------------------------------------------------------------
    @abstractmethod
    def generate(self, cfg: Any, data_seed: int) -> dict[str, Any]:
        """Every split (`train`, `test`, `val` when enabled), each from its own seeded generator."""

    # --- model and training --------------------------------------------------------------
    @abstractmethod
    def model_spec(self, cfg: Any, train: Any) -> ModelSpec:
        """The model to build for these inputs."""

    @abstractmethod
    def loss_fn(self, cfg: Any) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """The training loss: (S, B, ...) outputs and (S, B, ...) targets -> (S,) mean loss of
        each member (members are independent: the loop sums them before backward)."""

    @abstractmethod
    def split_metrics(self, cfg: Any, split_name: str, pred: torch.Tensor, split: Any) -> list[dict[str, float]]:
        """Per-checkpoint metrics of one split for every member; pred (S, N, ...)."""

    @abstractmethod
    def final_metrics(self, cfg: Any, preds: dict[str, torch.Tensor], datasets: dict[str, Any]) -> list[dict[str, float]]:
        """End-of-training metrics for every member (the gap among them); preds: split -> (S, N, ...)."""

    @abstractmethod
    def trajectory_columns(self, cfg: Any, metrics: dict[str, float]) -> dict[str, float]:
        """The domain's columns of one trajectory row (after data_seed, seed, step, ... train_loss)."""

    # --- after training -------------------------------------------------------------------
    def floor(self, cfg: Any, datasets: dict[str, Any], seeds: list[int], finals: dict[int, dict[str, float]],
              of_data: Any = None) -> FloorResult:
        """Optional: a floor to report beside the results (default: none). `of_data`, when given,
        is what `floor_of_data` returned for these data, to use instead of computing it again."""
        return FloorResult()

    def floor_of_data(self, cfg: Any, datasets: dict[str, Any]) -> Any:
        """Optional: the part of `floor` that depends on the data alone and takes time (spectra:
        the oracle's fits), or None, the default: nothing worth computing ahead. A figure worker
        prepared for these data computes it in its own process, from data it generated itself,
        while the caller sets up and trains, and the caller passes it to `floor` as `of_data`:
        so it must be a function of the config and the data alone (and of the torch thread
        count, which the worker takes from the caller), and picklable. A domain that defines it
        takes `of_data` in `floor` (`register_task` checks)."""
        return None

    @property
    def has_floor_of_data(self) -> bool:
        """Whether the domain defines `floor_of_data` (else nobody waits for one)."""
        return type(self).floor_of_data is not Task.floor_of_data

    def recorded_floor(self, cfg: Any, finals: list[dict[str, float]]) -> Any:
        """Optional: the floor line of the figures from the seeds' final metrics as recorded (a run
        read back from the tracking store draws its figures with it); default none."""
        return None

    def save_datasets(self, datasets: dict[str, Any], folder: Path) -> None:
        """Optional: write the splits to a folder (`speccomp generate`)."""
        raise NotImplementedError(f"{self.name}: its splits have no on-disk form")

    @abstractmethod
    def figures(self, cfg: Any, datasets: dict[str, Any], trajectory: pd.DataFrame,
                predictions: dict[int, Any], plots_dir: Path, floor: Any = None) -> dict[str, Path]:
        """Draw the domain's figures into `plots_dir`; returns name -> path."""

    def data_figures(self, cfg: Any, datasets: dict[str, Any], plots_dir: Path) -> dict[str, Path]:
        """Optional: the figures that show the data alone, drawn before training ends (by the
        figure worker, while the caller trains); `run_figures` then draws the rest. Together the
        two write what `figures` writes. Default: none."""
        return {}

    run_figure_names: tuple[str, ...] = ()
    floor_free_figures: tuple[str, ...] = ()
    """Optional: the file names of the figures `run_figures` draws, and those of them that draw no
    floor. The figure worker draws the latter while the floor is measured
    (`run_figures(..., names=floor_free_figures)`), the others once it is known."""

    def run_figures(self, cfg: Any, datasets: dict[str, Any], trajectory: pd.DataFrame,
                    predictions: dict[int, Any], plots_dir: Path, floor: Any = None,
                    names: Collection[str] | None = None) -> dict[str, Path]:
        """The figures `data_figures` did not draw, or those of them in `names` (a task that names
        `floor_free_figures` draws a subset). Default: all of `figures`, for a task that draws no
        data figures (one that does must say what is left)."""
        if type(self).data_figures is not Task.data_figures:
            raise NotImplementedError(f"{self.name}: a task with data_figures draws the rest in run_figures")
        if names is not None:
            raise NotImplementedError(f"{self.name}: a task with floor_free_figures draws a subset in run_figures")
        return self.figures(cfg, datasets, trajectory, predictions, plots_dir, floor)

    # --- reporting ------------------------------------------------------------------------
    @abstractmethod
    def tags(self, cfg: Any) -> dict[str, str]:
        """Run tags that say what the experiment is (domain, what is held out); never a value that is
        already a param of the run (the model type is `training.model_type`)."""

    def console_summary(self, cfg: Any, summary: pd.DataFrame) -> list[str]:
        """Lines of the console table at the end of `main` (per seed, mean ± std, floor) from the
        table of the seeds' final metrics (one row per seed); default: that table as it is."""
        return [summary.to_string(index=False, float_format=lambda v: f"{v:.4f}")]

    # --- studies ---------------------------------------------------------------------------
    study_objectives: ClassVar[dict[str, tuple[str, ...]]] = {}
    """Study objective (`speccomp study --objective`) -> the keys of `seed_measures` it optimises,
    one per objective (two for `pareto`); an objective not listed is refused for this domain."""

    def seed_measures(self, cfg: Any, final: dict[str, float]) -> dict[str, float]:
        """Measures of one seed a study compares across trials (each trial stores their across-seed
        mean and std); from the seed's final metrics."""
        raise NotImplementedError(f"{self.name}: no study measures")

    def study_trial_attrs(self, cfg: Any) -> dict[str, Any]:
        """Settings a study's report reads beside the measures (stored on every trial); default none."""
        return {}

    def study_no_value(self, cfg: Any, objective: str) -> str:
        """Why a trial has no value for `objective` (its measure is NaN), for the console."""
        return f"no {objective} value (NaN)"


TASKS: dict[str, Task] = {}
"""Domain name -> its task, filled by `register_task`."""


def register_task(task: Task) -> Task:
    early, names = set(task.floor_free_figures), set(task.run_figure_names)
    if early and not early < names:
        raise ValueError(f"{task.name}: floor_free_figures {sorted(early - names) or sorted(early)} must be some, "
                         f"not all, of run_figure_names {sorted(names)}")
    if task.has_floor_of_data and not any(p.name == "of_data" or p.kind is p.VAR_KEYWORD
                                          for p in inspect.signature(task.floor).parameters.values()):
        raise ValueError(f"{task.name}: floor_of_data is defined, so floor must take of_data (what it returned)")
    TASKS[task.name] = task
    return task


def _load() -> None:
    """Import every declared domain not registered yet (each registers itself on import)."""
    registry.import_declared(TASKS, registry.DOMAIN_MODULES)


def get_task(name: str) -> Task:
    return registry.lookup(TASKS, registry.DOMAIN_MODULES, name, "task")


def task_for(cfg: Any) -> Task:
    """The task of a validated config (its class's DOMAIN; the default domain's for the core's schema)."""
    return get_task(getattr(type(cfg), "DOMAIN", registry.DEFAULT_DOMAIN))


def _claimed(owns: Callable[[Task], bool]) -> Task:
    """The first registered domain other than the default one that claims a folder or dict, else the default."""
    _load()
    for task in TASKS.values():
        if task.name != registry.DEFAULT_DOMAIN and owns(task):
            return task
    return get_task(registry.DEFAULT_DOMAIN)


def task_for_dir(folder: str | Path | None) -> Task:
    """The domain a config folder selects (e.g. matrices when it holds `matrices.yaml`), else the default."""
    if folder is None:
        return get_task(registry.DEFAULT_DOMAIN)
    return _claimed(lambda task: task.owns_dir(Path(folder)))


def task_for_raw(raw: dict[str, Any]) -> Task:
    """The domain of a resolved config dict (a `config.yaml` read back)."""
    return _claimed(lambda task: task.owns_raw(raw))


def load_any_config(config_dir: str | Path | None, overrides=(), presets=()) -> Any:
    """Load a config folder of any domain (the domain chosen by the folder's files)."""
    return task_for_dir(config_dir).load_config(config_dir, overrides, presets)


def config_from_any_dict(raw: dict[str, Any], overrides=(), paths=None) -> Any:
    """Validate a resolved config dict of any domain."""
    return task_for_raw(raw).config_from_dict(raw, overrides, paths)
