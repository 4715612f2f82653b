"""`train(config, datasets, seeds, logger) -> TrainResult`: every training seed of one config,
trained together as an ensemble (see `models.py`) and scored at every checkpoint.

Each seed owns three streams, derived from the seed alone (`seeding.py`): weight initialisation,
batch order and dropout masks. So a seed trained with others gives what it gives trained alone
(up to float32 rounding of the batched matmul), and adding a seed changes no other seed.

The loop reports through `TrainingLogger`: `tracking/` implements it with MLflow, tests with a list,
studies with a pruning hook (an exception raised from `checkpoint` stops training).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
import torch

from speccomp.core.config import ExperimentConfig, TrainingConfig
from speccomp.core.models import EnsembleModel, Member, ModelSpec, build_model, checkpoint_payload, extract_member
from speccomp.core.optim import FlatAdam
from speccomp.core.seeding import torch_generator
from speccomp.core.splits import Split
from speccomp.core.task import Task, task_for

ProgressFactory = Callable[[int, int], Any]
"""(total steps, number of seeds) -> an object with `update(n)` and `close()` (a tqdm bar, or
`tracking.progress.Progress`)."""

EVAL_CHUNK = 2048  # spectra per evaluation forward pass; bounds memory for large splits


class TrainingLogger(Protocol):
    """What the training loop reports. Every method may be a no-op."""

    def log_metrics(self, seed: int, metrics: dict[str, float], step: int) -> None:
        """Metrics of one seed at one optimiser step."""

    def checkpoint(self, step: int, metrics_by_seed: dict[int, dict[str, float]]) -> None:
        """Called after every checkpoint's evaluation; raising here stops training (pruning)."""


class NullLogger:
    def log_metrics(self, seed: int, metrics: dict[str, float], step: int) -> None:
        pass

    def checkpoint(self, step: int, metrics_by_seed: dict[int, dict[str, float]]) -> None:
        pass


@dataclass
class SeedResult:
    seed: int
    data_seed: int
    final: dict[str, float]
    """Last checkpoint's metrics plus the end-of-training ones (gap, R², baseline)."""
    test_predictions: np.ndarray
    """(N_test, C) predictions of the final model (spectra: abundances; matrices: candidate scores)."""
    model: Member
    checkpoint_paths: list[Path]


@dataclass
class TrainResult:
    spec: ModelSpec
    seeds: list[SeedResult]
    trajectory: pd.DataFrame
    """One row per (seed, checkpoint): the tutorial's trajectory_data.csv."""
    total_steps: int

    def by_seed(self, seed: int) -> SeedResult:
        return next(r for r in self.seeds if r.seed == seed)


HUBER_DELTA = 0.1  # a tenth of the default abundance range [0, 1]

LOSSES = {
    # (S, B, C) predictions and targets -> (S,) per-member loss
    "mse": lambda pred, y: ((pred - y) ** 2).mean(dim=(1, 2)),
    "mae": lambda pred, y: (pred - y).abs().mean(dim=(1, 2)),
    "huber": lambda pred, y: torch.nn.functional.huber_loss(pred, y, reduction="none", delta=HUBER_DELTA).mean(dim=(1, 2)),
}


def checkpoint_steps(training: TrainingConfig, total_steps: int) -> list[int]:
    """Step 0 (the initialisation), then every `checkpoint_ratio` of training or every
    `checkpoint_every_n_step` steps, and always the last step."""
    if training.checkpoint_by == "ratio":
        n = max(1, round(1.0 / training.checkpoint_ratio))
        steps = {round(k * training.checkpoint_ratio * total_steps) for k in range(1, n + 1)}
    else:
        steps = set(range(training.checkpoint_every_n_step, total_steps + 1, training.checkpoint_every_n_step))
    steps = {s for s in steps if 0 < s <= total_steps} | {0, total_steps}
    return sorted(steps)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _optimizer(model: EnsembleModel, training: TrainingConfig) -> FlatAdam:
    return FlatAdam(
        model, lr=training.learning_rate, weight_decay=training.weight_decay,
        decoupled_weight_decay=training.optimizer == "adamw",
    )


@torch.no_grad()
def predict(model: EnsembleModel, inputs: torch.Tensor) -> torch.Tensor:
    """(N, ...) inputs (spectra (N, L), matrices (N, 16, D)) -> (S, N, ...) predictions of every
    member, in evaluation mode."""
    was_training = model.training
    model.eval()
    out = []
    for start in range(0, inputs.shape[0], EVAL_CHUNK):
        chunk = inputs[start : start + EVAL_CHUNK]
        out.append(model(chunk.unsqueeze(0).expand(model.n_members, *chunk.shape)))
    model.train(was_training)
    return torch.cat(out, dim=1)


def train(
    cfg: ExperimentConfig,
    datasets: dict[str, Split],
    seeds: list[int],
    logger: TrainingLogger | None = None,
    out_dir: str | Path | None = None,
    progress: bool | ProgressFactory = False,
) -> TrainResult:
    """Train one member per seed on `datasets['train']`; evaluate `val` (if present) and `test` at
    every checkpoint. Checkpoints go to `out_dir/checkpoints/seed-<seed>/` (if `out_dir` is given).
    The loss and metrics come from the config's task (`speccomp.core.task`); a split supplies
    `inputs` and `targets`. `progress`: True for a tqdm bar, or a factory called with (total
    steps, number of seeds) whose result is updated once per optimiser step and closed at the end.
    """
    if not seeds:
        raise ValueError("seeds: give at least one training seed")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds: duplicates in {seeds}")
    logger = logger or NullLogger()
    training = cfg.training
    task = task_for(cfg)
    train_split, test_split, val_split = datasets["train"], datasets["test"], datasets.get("val")
    device = resolve_device(training.device)

    spec = task.model_spec(cfg, train_split)
    model = build_model(spec, [torch_generator(s, "init") for s in seeds], train_split.inputs).to(device)
    model.dropout_generators = [torch_generator(s, "dropout") for s in seeds]
    shuffle_gens = [torch_generator(s, "shuffle") for s in seeds]
    optimizer = _optimizer(model, training)
    loss_fn = task.loss_fn(cfg)

    x_train = train_split.inputs.to(device)
    y_train = train_split.targets.to(device)
    n_train, batch = x_train.shape[0], training.batch_size
    closed_form = bool(getattr(model, "closed_form", False))
    if closed_form and val_split is None:
        raise ValueError(f"training.model_type: {spec.model_type} chooses its regularisation on the validation "
                         "split; set data.validation.n_samples > 0")
    # A closed-form model takes one "step", the solve: checkpoints at the initialisation and after it.
    steps_per_epoch = 1 if closed_form else math.ceil(n_train / batch)
    total_steps = 1 if closed_form else training.epochs * steps_per_epoch
    ckpt_steps = [0, 1] if closed_form else checkpoint_steps(training, total_steps)
    ckpt_set = set(ckpt_steps)
    ckpt_dirs = _checkpoint_dirs(out_dir, seeds, training)
    saved: dict[int, list[Path]] = {s: [] for s in seeds}

    rows: list[dict[str, Any]] = []
    losses = torch.zeros(total_steps + 1, len(seeds))
    last_flushed = 0
    bar = _progress_bar(total_steps, len(seeds), progress)

    def do_checkpoint(step: int, epoch: float) -> dict[int, dict[str, float]]:
        nonlocal last_flushed
        _flush_train_loss(logger, seeds, losses, last_flushed, step, training.log_every_n_step)
        metrics = _evaluate(task, cfg, model, seeds, test_split, val_split, device)
        train_loss = losses[last_flushed + 1 : step + 1].mean(0) if step > last_flushed else None
        last_flushed = step
        for i, seed in enumerate(seeds):
            logger.log_metrics(seed, metrics[seed], step)
            rows.append(_trajectory_row(train_split.data_seed, seed, ckpt_steps.index(step), step, epoch,
                                        None if train_loss is None else float(train_loss[i]),
                                        task.trajectory_columns(cfg, metrics[seed])))
            path = _save_checkpoint(model, optimizer, i, seed, step, step == total_steps, ckpt_dirs, training)
            if path is not None:
                saved[seed].append(path)
        logger.checkpoint(step, metrics)
        return metrics

    model.train()
    last_metrics = do_checkpoint(0, 0.0)
    step = 0
    fit_extra: list[dict[str, float]] = [{} for _ in seeds]
    if closed_form:
        chosen = model.fit_closed_form(x_train, y_train, val_split.inputs.to(device), val_split.targets.to(device))
        lam = {f"{spec.model_type}/lambda/{label}": float(chosen[train_split.label_index(label)])
               for label in cfg.tracked_labels}  # closed-form models are spectra models
        fit_extra = [dict(lam) for _ in seeds]
        with torch.no_grad():
            losses[1] = ((predict(model, x_train) - y_train) ** 2).mean(dim=(1, 2)).cpu()
        step = 1
        last_metrics = do_checkpoint(1, 1.0)
    for _epoch in range(0 if closed_form else training.epochs):
        order = torch.stack([torch.randperm(n_train, generator=g) for g in shuffle_gens]).to(device)
        for start in range(0, n_train, batch):
            idx = order[:, start : start + batch]  # (S, B)
            flat = idx.reshape(-1)
            batch_x = x_train.index_select(0, flat).view(len(seeds), -1, *x_train.shape[1:])
            batch_y = y_train.index_select(0, flat).view(len(seeds), -1, *y_train.shape[1:])
            per_seed = loss_fn(model(batch_x), batch_y)
            optimizer.zero_grad()
            per_seed.sum().backward()  # members are independent: each gets its own loss's gradient
            optimizer.step()
            step += 1
            losses[step] = per_seed.detach().cpu()
            if step in ckpt_set:
                last_metrics = do_checkpoint(step, step / steps_per_epoch)
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()

    test_pred = predict(model, test_split.inputs.to(device)).cpu()
    val_pred = predict(model, val_split.inputs.to(device)).cpu() if val_split is not None else None
    finals = task.final_metrics(cfg, {"test": test_pred, "val": val_pred}, datasets)
    results = []
    for i, seed in enumerate(seeds):
        finals[i].update(fit_extra[i])
        logger.log_metrics(seed, finals[i], total_steps)
        results.append(
            SeedResult(
                seed=seed,
                data_seed=train_split.data_seed,
                final={**last_metrics[seed], **finals[i]},
                test_predictions=test_pred[i].numpy(),
                model=extract_member(model.cpu(), i),
                checkpoint_paths=saved[seed],
            )
        )
    return TrainResult(spec=spec, seeds=results, trajectory=pd.DataFrame(rows), total_steps=total_steps)


def _evaluate(
    task: Task,
    cfg: ExperimentConfig,
    model: EnsembleModel,
    seeds: list[int],
    test: Split,
    val: Split | None,
    device: torch.device,
) -> dict[int, dict[str, float]]:
    test_rows = task.split_metrics(cfg, "test", predict(model, test.inputs.to(device)).cpu(), test)
    val_rows = (
        task.split_metrics(cfg, "val", predict(model, val.inputs.to(device)).cpu(), val)
        if val is not None
        else [{} for _ in seeds]
    )
    return {seed: {**val_rows[i], **test_rows[i]} for i, seed in enumerate(seeds)}


def _flush_train_loss(
    logger: TrainingLogger, seeds: list[int], losses: torch.Tensor, after: int, upto: int, every: int
) -> None:
    for step in range(after + 1, upto + 1):
        if step % every == 0 or step == upto:
            for i, seed in enumerate(seeds):
                logger.log_metrics(seed, {"train/loss": float(losses[step, i])}, step)


def _trajectory_row(
    data_seed: int, seed: int, checkpoint: int, step: int, epoch: float,
    train_loss: float | None, task_columns: dict[str, float],
) -> dict[str, Any]:
    return {
        "data_seed": data_seed,
        "seed": seed,
        "checkpoint": checkpoint,
        "step": step,
        "epoch": epoch,
        "train_loss": float("nan") if train_loss is None else train_loss,
        **task_columns,
    }


def _checkpoint_dirs(out_dir: str | Path | None, seeds: list[int], training: TrainingConfig) -> dict[int, Path]:
    if out_dir is None or training.checkpoint_retention == "none":
        return {}
    dirs = {seed: Path(out_dir) / "checkpoints" / f"seed-{seed}" for seed in seeds}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    return dirs


def _save_checkpoint(
    model: EnsembleModel,
    optimizer: FlatAdam,
    member: int,
    seed: int,
    step: int,
    is_last: bool,
    dirs: dict[int, Path],
    training: TrainingConfig,
) -> Path | None:
    if seed not in dirs or (training.checkpoint_retention == "last" and not is_last):
        return None
    extra: dict[str, Any] = {"seed": seed, "step": step}
    if is_last:  # resuming needs the optimiser state of the last checkpoint only
        extra["optimizer"] = optimizer.member_state(member)
    path = dirs[seed] / f"step-{step:06d}.pt"
    torch.save(checkpoint_payload(model, member, **extra), path)
    return path


def _progress_bar(total: int, n_seeds: int, progress: bool | ProgressFactory):
    if callable(progress):
        return progress(total, n_seeds)
    if not progress:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=f"training {n_seeds} seed(s)", unit="step", leave=False, dynamic_ncols=True)
