"""What the meta-learner asks a domain: its tasks and their data, how a method is scored, the floor
and the row of the comparison table. The meta-learner never tests which domain it has.

`MetaDomain` extends the search's `SearchDomain` (rows, supernet, loss) with these questions; a
domain package subclasses it and registers an instance (`speccomp.nas.domain.register_search_domain`),
and the meta-learner looks it up from the experiment config:

    dom = meta_domain(cfg)
    dom.check_plan(cfg, meta, settings, meta_path)       # task counts, sections (ConfigError)
    tasks = dom.draw_tasks(cfg, meta, settings)          # TaskSets: disjoint meta-train / meta-test
    bank = dom.build_bank(cfg, meta, tasks)              # every task's data (a `Bank`)
    metrics = dom.score(val_pred, test_pred, data, task) # the readings of one method on one task
    floor = dom.floor(task_cfg, data, task)              # e.g. the oracle's MSE, or chance
    row = dom.row(task, method, dom.with_floor(metrics, floor, task))   # a comparison-table row

The defaults suit a regression domain with an MSE (`val/mse`, `test/mse`) and no floor; the
spectra (`speccomp/spectra/search.py`) and matrices (`speccomp/matrices/search.py`) override them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import numpy as np
import pandas as pd
import torch

from speccomp.core.config import ConfigError
from speccomp.core.seeding import numpy_generator
from speccomp.meta.bank import SplitBank
from speccomp.meta.settings import ResolvedSettings, check_task_counts
from speccomp.meta.tasks import TaskSets, draw_tasks, pair_name
from speccomp.nas.domain import SearchDomain, domain_for_config


@dataclass(frozen=True)
class MetaTestFigure:
    """What `speccomp.meta.compare.plot_meta_test` draws of a domain (`MetaDomain.meta_test_figure`):
    per method one dot per meta-test task and the median as a bar, a reference line (the floor) across."""

    value: Callable[[pd.DataFrame], np.ndarray]
    """A method's rows of the per-task table -> the values drawn, (n_tasks,)."""
    line: Callable[[pd.DataFrame], tuple[float, str]] | None
    """The per-task table -> (height, label) of the reference line; None: no line."""
    ylabel: str
    title: str
    """With `{n}`, the number of meta-test tasks."""
    left_out: str | None = None
    """The floor's own row in the table (`oracle`, `chance`), not drawn as a method."""
    log: bool = False
    ylim: tuple[float, float] | None = None


class Bank(Protocol):
    """Every task's data, generated once (`MetaDomain.build_bank`). `train_x` (R, ...) / `train_y`
    (R, ...) stack every training row once; `train_rows(task)` gives a task's rows in them."""

    search: SearchDomain
    train_x: torch.Tensor
    train_y: torch.Tensor
    query: dict[Any, Any]
    """Meta-training task -> its query split (the data holding what the task holds out)."""

    def train_rows(self, task: Any, n_train: int | None = None) -> torch.Tensor: ...

    def query_nll(self, net: Any, path: dict[str, torch.Tensor], task: Any,
                  idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(NLL of the task's whole query set estimated from the rows `idx`, the batch's mean loss)."""
        ...

    def task_datasets(self, task: Any, n_train: int | None = None, final: bool = False) -> dict[str, Any]:
        """`train`, `val` and `test` splits of a task (`test`: the query set, or the test set when `final`)."""
        ...

    def task_config(self, task: Any, sizes: dict[str, int] | None = None) -> Any:
        """The experiment config of a task (what it holds out, the split sizes given)."""
        ...


class MetaDomain(SearchDomain):
    """One domain as the meta-learner sees it (see module doc); subclasses override what differs."""

    unit: ClassVar[str] = "task"
    """What one task is called on the console (`pair` on the spectra)."""
    tasks_word: ClassVar[str] = "tasks"
    """The tasks as named in a refused task count."""
    task_note: ClassVar[str] = ""
    """What a task is, said where `tasks.held_out_components` is refused."""
    measure: ClassVar[str] = "test_mse"
    """The comparison table's column compared across methods (lower is better)."""
    floor_method: ClassVar[str | None] = None
    """The floor's own row of the comparison (`floor_methods`; e.g. `oracle`), no method to compare."""
    study_objective: ClassVar[tuple[str, str] | None] = None
    """(parent-run metric, what it is) a study of the meta-learner minimises (`study/meta.py`);
    None: the meta-learner's median measure."""

    # --- tasks -------------------------------------------------------------------------------------
    def all_tasks(self, cfg: Any) -> list[Any]:
        """Every task of the config, in a fixed order (each has a `name`, or is a pair of names)."""
        raise NotImplementedError(f"{self.name}: all_tasks")

    def check_plan(self, cfg: Any, meta: Any, settings: ResolvedSettings, where: Any) -> None:
        """Refuse what the domain cannot run (ConfigError, one line): by default held-out
        components (a spectra notion) and more tasks than there are."""
        held = meta.tasks.held_out_components
        if held:
            raise ConfigError(f"{where}: tasks.held_out_components: {held}; allowed: 0 on the {self.name} domain"
                              f"{self.task_note}")
        n = len(self.all_tasks(cfg))
        check_task_counts(settings, n, n, 0, unit=self.tasks_word)

    def draw_tasks(self, cfg: Any, meta: Any, settings: ResolvedSettings) -> TaskSets:
        """Disjoint meta-training and meta-test tasks from TASK_GENERATOR_SEED alone (meta-test ones
        the first after the meta-training ones in one permutation, `meta.tasks.draw_tasks`)."""
        s = settings.values
        rng = numpy_generator(s.task_generator_seed, "meta", "tasks")
        train, test = draw_tasks(self.all_tasks(cfg), s.num_meta_training_tasks, s.num_meta_testing_tasks, rng,
                                 reshuffle=False, unit=self.tasks_word)
        return TaskSets(meta_train=train, meta_test=test)

    def build_bank(self, cfg: Any, meta: Any, tasks: TaskSets) -> Bank:
        """Generate every task's data once: by default each task's own splits (`task_splits`), in a
        `SplitBank` (meta-training tasks first)."""
        train, val, query, test = {}, {}, {}, {}
        for task in [*tasks.meta_train, *tasks.meta_test]:
            final = task in tasks.meta_test
            splits = self.task_splits(cfg, meta, task, final)
            train[task], val[task] = splits["train"], splits["val"]
            (test if final else query)[task] = splits["test"]
        return SplitBank(cfg, train, val, query, test)

    def task_splits(self, cfg: Any, meta: Any, task: Any, final: bool) -> dict[str, Any]:
        """`train` and `val` (in distribution: without what the task holds out) and `test` (all of
        it: the query set of a meta-training task, the test set of a meta-test task when `final`)
        of one task, from a random stream of its own (so they never depend on the other tasks)."""
        raise NotImplementedError(f"{self.name}: task_splits (or build_bank)")

    def take(self, split: Any, name: str, n: int | None = None) -> Any:
        """A split as the task's split `name` (its first `n` rows when given); default: itself."""
        if n is not None and n < len(split):
            raise NotImplementedError(f"{self.name}: take (adapt.n_train below a task's training split)")
        return split

    def task_config(self, cfg: Any, task: Any, sizes: dict[str, int]) -> Any:
        """The experiment config of a task (what it holds out, the split sizes given); default `cfg`."""
        return cfg

    # --- scores and the floor ----------------------------------------------------------------------
    def score(self, val_pred: torch.Tensor, test_pred: torch.Tensor, data: dict[str, Any], task: Any) -> dict[str, float]:
        """The readings of predictions (N, ...) of a task's val and test splits (default: the loss of
        each, as `val/mse` and `test/mse`)."""
        return {self.selection_metric: float(self.loss(val_pred, self.tensors(data["val"])[1])),
                self.test_metric: float(self.loss(test_pred, self.tensors(data["test"])[1]))}

    def selection_loss(self, pred: torch.Tensor, data: dict[str, Any], task: Any) -> float:
        """How stage two judges a candidate: its loss on the task's in-distribution validation split."""
        return float(self.loss(pred, self.tensors(data["val"])[1]))

    def floor(self, task_cfg: Any, data: dict[str, Any], task: Any) -> dict[str, float]:
        """The floor of a meta-test task (e.g. the oracle's MSE, chance); default none."""
        return {}

    def with_floor(self, metrics: dict[str, float], floor: dict[str, float], task: Any) -> dict[str, float]:
        """A method's metrics with the floor beside them (and what is read against it)."""
        return {**metrics, **floor}

    def floor_methods(self, floor: dict[str, float], task: Any) -> dict[str, dict[str, float]]:
        """The floor as rows of the comparison table (method -> metrics); default none."""
        return {}

    def row(self, task: Any, method: str, metrics: dict[str, float]) -> dict[str, Any]:
        """One row of the per-task table: `pair`, `method`, the measure compared, `gap`, every metric."""
        return {"pair": pair_name(task), "method": method, self.measure: metrics[self.test_metric],
                "gap": metrics.get("gap", math.nan), **metrics}

    def objective(self) -> tuple[str, str]:
        """(metric, description) of the meta run's parent a study minimises (`study_objective`)."""
        return self.study_objective or (f"comparison/meta/median_{self.measure}", f"median meta {self.measure}")

    def headline(self, meta_row: Any, cfg: Any) -> dict[str, float]:
        """The meta run's headline metrics from the meta-learner's row of the comparison table
        (`speccomp.meta.compare.comparison_table`): default, its median measure."""
        return {f"headline/median_{self.measure}": float(meta_row[f"median_{self.measure}"])}

    def meta_test_figure(self) -> MetaTestFigure:
        """What `plots/meta_test.png` draws per method over the meta-test tasks (default: the measure)."""
        return MetaTestFigure(value=lambda rows: rows[self.measure].to_numpy(), line=None, ylabel=self.measure,
                              title=f"Meta-test {self.unit}s (n = {{n}}), never trained on")

    def header(self, cfg: Any) -> str:
        """The console line above the comparison table: what is compared."""
        return (f"{self.test_metric} on each meta-test {self.unit}'s test split; ratios are per {self.unit}, medians "
                f"over {self.unit}s; p: two-sided Wilcoxon signed-rank, meta vs method")


def meta_domain(cfg: Any) -> MetaDomain:
    """The meta-learner's domain object of a validated experiment config."""
    domain = domain_for_config(cfg)
    if not isinstance(domain, MetaDomain):
        raise ConfigError(f"experiment: the {domain.name} domain has no meta-learner domain object; allowed: a "
                          "domain whose search object is a speccomp.meta.domain.MetaDomain")
    return domain
