"""The training loop's logger, implemented with MLflow: metrics buffered and sent in batches."""

from __future__ import annotations

import time

from mlflow import MlflowClient
from mlflow.entities import Metric, RunTag

from tracking.ui import for_mlflow

FLUSH_EVERY_S = 2.0  # curves stay live in the UI without one request per value


class MlflowTrainingLogger:
    """`speccomp.core.training.TrainingLogger` for MLflow: seed -> run id of that seed's child run.
    With `tracked` (the tracked labels), every per-component metric is also logged under its
    role name (`first/test/mse` beside `test/mse/comp10`, see `tracking.ui.for_mlflow`)."""

    def __init__(self, client: MlflowClient, run_ids: dict[int, str], flush_every_s: float = FLUSH_EVERY_S,
                 tracked: tuple[str, ...] = ()):
        self.client = client
        self.run_ids = run_ids
        self.tracked = tuple(tracked)
        self.flush_every_s = flush_every_s
        self._pending: dict[int, list[Metric]] = {seed: [] for seed in run_ids}
        self._last_flush = time.monotonic()

    def add_runs(self, run_ids: dict[int, str]) -> None:
        """Seeds whose runs open now (an ensemble starting)."""
        self.run_ids.update(run_ids)
        for seed in run_ids:
            self._pending.setdefault(seed, [])

    def log_metrics(self, seed: int, metrics: dict[str, float], step: int) -> None:
        now_ms = int(time.time() * 1000)
        if self.tracked:
            metrics = for_mlflow(metrics, self.tracked)
        self._pending[seed].extend(Metric(k, float(v), now_ms, step) for k, v in metrics.items())

    def checkpoint(self, step: int, metrics_by_seed: dict[int, dict[str, float]]) -> None:
        if time.monotonic() - self._last_flush >= self.flush_every_s:
            self.flush()

    def flush(self, tags: dict[int, dict[str, str]] | None = None) -> None:
        """Write what is pending, one batch per run; `tags` (seed -> tags) go in the same batch: one
        store call instead of two (MLflow's SQL store still writes a batch's metrics and its tags
        in a transaction each)."""
        tags = tags or {}
        for seed, metrics in self._pending.items():
            run_tags = [RunTag(k, str(v)) for k, v in tags.get(seed, {}).items()]
            if not metrics and not run_tags:
                continue
            self.client.log_batch(self.run_ids[seed], metrics=metrics, tags=run_tags)  # MLflow splits it into allowed batches
            metrics.clear()
        self._last_flush = time.monotonic()
