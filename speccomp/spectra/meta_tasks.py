"""The meta-learner's tasks on the spectra: a task is a pair of spectral components (train on each
alone and on the bare continuum, validate in-distribution, test on the two together), built with
the `pair` split setting (`speccomp.core.pairs`).

The task draw takes disjoint meta-training and meta-test pairs from the C·(C−1)/2 pairs of the C
components, determined by `TASK_GENERATOR_SEED` alone (`draw_pairs`). The spectra are generated
once into shared pools (`TaskBank`): every task containing component c uses the same spectra of c
alone and every task the same bare continua, so 120 tasks cost 2·(C+1) single-component pools plus
one combination pool per pair instead of 3·120 full splits. Each pool has its own named random
stream (`data_seed`, "split", pool name), so a pool never depends on which other tasks were drawn.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch

from speccomp.core.config import ExperimentConfig, SplitConfig, config_from_dict
from speccomp.core.pairs import pair_overrides
from speccomp.core.seeding import numpy_generator
from speccomp.meta.bank import StackedTrain
from speccomp.meta.tasks import Pair, TaskSets, draw_tasks, pair_name
from speccomp.nas.domain import SearchDomain, domain_for_config
from speccomp.spectra.data import SplitData, generate_split
from speccomp.spectra.physics import ForwardModel


def all_pairs(labels: list[str]) -> list[Pair]:
    """Every unordered pair of distinct components, in label order: C·(C−1)/2 of them."""
    return list(itertools.combinations(labels, 2))


def draw_pairs(labels: list[str], n_train: int, n_test: int, seed: int, held_out_components: int = 0) -> TaskSets:
    """Draw `n_train` meta-training and `n_test` meta-test pairs without overlap, from the stream
    (seed, "meta", "tasks"). With `held_out_components` = k > 0, k components are drawn first; the
    meta-test pairs are pairs of those, the meta-training pairs pairs of the others.
    Raises ValueError when there are not enough pairs."""
    rng = numpy_generator(seed, "meta", "tasks")
    pairs = all_pairs(labels)
    held, test_pool = [], None
    if held_out_components:
        held_idx = sorted(rng.choice(len(labels), size=held_out_components, replace=False).tolist())
        held = [labels[i] for i in held_idx]
        test_pool = [p for p in pairs if p[0] in held and p[1] in held]
        pairs = [p for p in pairs if p[0] not in held and p[1] not in held]
    meta_train, meta_test = draw_tasks(pairs, n_train, n_test, rng, test_pool, reshuffle=True, unit="pairs")
    return TaskSets(meta_train=meta_train, meta_test=meta_test, held_out=held)


def pair_mse(pred: torch.Tensor, target: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """MSE over the rows and the pair's two components: (B, C), (B, C) -> ()."""
    return ((pred[:, cols] - target[:, cols]) ** 2).mean()


def _split_config(n: int, components: list[str]) -> SplitConfig:
    return SplitConfig.model_validate({
        "n_samples": n,
        "distribution": {"type": "component_combinations", "combinations": [{"weight": 1.0, "components": components}]},
    })


def concat_splits(name: str, parts: list[SplitData]) -> SplitData:
    """One split made of several pools (rows in the given order)."""
    return SplitData(
        name=name,
        spectra=torch.cat([p.spectra for p in parts]),
        abundances=torch.cat([p.abundances for p in parts]),
        present=torch.cat([p.present for p in parts]),
        temperature_k=torch.cat([p.temperature_k for p in parts]),
        noise_sigma=torch.cat([p.noise_sigma for p in parts]),
        labels=list(parts[0].labels),
        data_seed=parts[0].data_seed,
    )


def take(split: SplitData, n: int) -> SplitData:
    """The first `n` rows of a split."""
    return SplitData(split.name, split.spectra[:n], split.abundances[:n], split.present[:n],
                     split.temperature_k[:n], split.noise_sigma[:n], list(split.labels), split.data_seed)


@dataclass
class TaskBank(StackedTrain):
    """Every spectrum the meta-learner and its baselines see, generated once.

    Pools: `empty[role]` (bare continuum) and `single[role][c]` (component c alone) for role
    `train` and `val`, shared by all tasks; `query[pair]` (meta-training pairs' combinations) and
    `test[pair]` (meta-test pairs' combinations, touched only by the final evaluation).
    The stacked training tensors `train_x` (R, L) / `train_y` (R, C) hold every training row once;
    `train_rows(pair)` gives a task's rows in them.
    """

    cfg: ExperimentConfig
    empty: dict[str, SplitData]
    single: dict[str, dict[str, SplitData]]
    query: dict[Pair, SplitData]
    test: dict[Pair, SplitData]

    def __post_init__(self) -> None:
        parts = [self.empty["train"], *self.single["train"].values()]
        self.train_x = torch.cat([p.spectra for p in parts])
        self.train_y = torch.cat([p.abundances for p in parts])
        offset = len(self.empty["train"])
        for label, pool in self.single["train"].items():
            self._offsets[label] = offset
            offset += len(pool)

    @property
    def search(self) -> SearchDomain:
        """The domain object of the supernet's rows (`speccomp.spectra.search`)."""
        return domain_for_config(self.cfg)

    @property
    def labels(self) -> list[str]:
        return self.cfg.physics.labels

    def query_loss(self, net, path: dict[str, torch.Tensor], pair: Pair, idx: torch.Tensor) -> torch.Tensor:
        """MSE of the supernet path on query spectra `idx` of the pair's combination, over the
        pair's two components."""
        query = self.query[pair]
        cols = torch.tensor([self.labels.index(c) for c in pair])
        return ((net(query.spectra[idx], path)[:, cols] - query.abundances[idx][:, cols]) ** 2).mean()

    def query_nll(self, net, path: dict[str, torch.Tensor], pair: Pair, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(NLL, MSE): the negative log-likelihood of the pair's whole query set (n = spectra × 2
        components) under a Gaussian whose variance is profiled out, n/2 · log MSE (up to a
        constant), estimated from the batch `idx`; and the batch's MSE itself."""
        mse = self.query_loss(net, path, pair, idx)
        return 0.5 * len(self.query[pair]) * len(pair) * torch.log(mse), mse

    def train_rows(self, pair: Pair, n_train: int | None = None) -> torch.Tensor:
        """Row indices into `train_x` of a task's training split: the bare continuum and each
        component alone, in equal thirds (`n_train` rows in all; None = every row)."""
        n_empty, n_single = len(self.empty["train"]), len(self.single["train"][pair[0]])
        k_empty, k_single = (n_empty, n_single) if n_train is None else _thirds(n_train, n_empty, n_single)
        rows = [torch.arange(k_empty)]
        rows += [torch.arange(k_single) + self._offsets[c] for c in pair]
        return torch.cat(rows)

    def task_datasets(self, pair: Pair, n_train: int | None = None, final: bool = False) -> dict[str, SplitData]:
        """`train`, `val` (in-distribution) and `test` splits of a task as ordinary `SplitData`.
        `test` is the pair's query pool for meta-training pairs, its test pool when `final`."""
        n_empty, n_single = len(self.empty["train"]), len(self.single["train"][pair[0]])
        k_empty, k_single = (n_empty, n_single) if n_train is None else _thirds(n_train, n_empty, n_single)
        train = concat_splits("train", [take(self.empty["train"], k_empty),
                                        *(take(self.single["train"][c], k_single) for c in pair)])
        val = concat_splits("val", [self.empty["val"], *(self.single["val"][c] for c in pair)])
        test = (self.test if final else self.query)[pair]
        test = SplitData("test", test.spectra, test.abundances, test.present, test.temperature_k,
                         test.noise_sigma, list(test.labels), test.data_seed)
        return {"train": train, "val": val, "test": test}

    def task_config(self, pair: Pair, sizes: dict[str, int] | None = None) -> ExperimentConfig:
        """The experiment config of a task: the base config with the `pair` split setting applied
        (and the split sizes of `task_datasets`)."""
        overrides = pair_overrides(pair_name(pair))
        for split, n in (sizes or {}).items():
            key = "data.validation.n_samples" if split == "val" else f"data.splits.{split}.n_samples"
            overrides.append(f"{key}={n}")
        n_train = (sizes or {}).get("train")
        if n_train is not None and n_train < self.cfg.training.batch_size:  # a batch cannot exceed the data
            overrides.append(f"training.batch_size={n_train}")
        return config_from_dict(self.cfg.to_dict(), overrides)


def _thirds(n_train: int, n_empty: int, n_single: int) -> tuple[int, int]:
    k_single = min(n_train // 3, n_single)
    return min(n_train - 2 * k_single, n_empty), k_single


def build_bank(
    cfg: ExperimentConfig,
    tasks: TaskSets,
    data_seed: int,
    n_single: int,
    n_empty: int,
    n_val_single: int,
    n_query: int,
    n_test: int,
) -> TaskBank:
    """Generate every pool once (one batched `generate_split` call per pool)."""
    forward = ForwardModel.from_config(cfg.physics)
    used = sorted({c for p in tasks.meta_train + tasks.meta_test for c in p}, key=cfg.physics.labels.index)

    def pool(name: str, n: int, components: list[str]) -> SplitData:
        return generate_split(cfg.physics, _split_config(n, components), f"meta/{name}", data_seed, forward)

    empty = {"train": pool("empty/train", n_empty, []), "val": pool("empty/val", n_val_single, [])}
    single = {
        "train": {c: pool(f"single/{c}/train", n_single, [c]) for c in used},
        "val": {c: pool(f"single/{c}/val", n_val_single, [c]) for c in used},
    }
    query = {p: pool(f"pair/{pair_name(p)}/query", n_query, list(p)) for p in tasks.meta_train}
    test = {p: pool(f"pair/{pair_name(p)}/test", n_test, list(p)) for p in tasks.meta_test}
    return TaskBank(cfg=cfg, empty=empty, single=single, query=query, test=test)
