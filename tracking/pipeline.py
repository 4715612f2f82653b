"""An experiment tracked in MLflow: one child run per training seed under a given parent run.

Used by `tracking.main` (parent = one invocation) and by the Optuna objective (parent = a trial).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from mlflow import MlflowClient
from mlflow.data.http_dataset_source import HTTPDatasetSource
from mlflow.entities import Metric, Param, RunTag

from speccomp.core.config import ExperimentConfig
from speccomp.core.experiment import (
    PLOTS_DIR,
    PREDICTIONS_DIR,
    ExperimentResult,
    run_experiment,
    write_predictions,
)
from speccomp.core.figure_worker import FigureWorker
from speccomp.core.splits import Split
from speccomp.core.task import task_for
from speccomp.core.training import SeedResult
from speccomp_compat import dataset_entity
from tracking.describe import description_tag, domain_word
from tracking.logger import MlflowTrainingLogger
from tracking.runs import RunTracker
from tracking.ui import (  # flatten: tracking.nas and tracking.meta import it from here
    flatten,  # noqa: F401
    for_mlflow,
    role_alias,
    role_names,
    seed_description,
    tracked_labels,
)

SPLIT_CONTEXT = {"train": "training", "val": "validation", "test": "test"}
MODEL_FORMATS = ("pickle", "pt2")
"""How `log_final_model` serialises a model (`mlflow.pytorch`'s `serialization_format`): "pickle"
(the default; `torch.save` of the module, loaded back by `mlflow.pytorch.load_model` where
speccomp is importable) or "pt2" (`torch.export`: a traced graph that loads without executing
pickled code, but costs about a second and 80 MB for its first model, importing torch dynamo)."""


def log_params(client: MlflowClient, run_id: str, params: dict[str, str]) -> None:
    client.log_batch(run_id, params=[Param(k, v[:6000]) for k, v in params.items()])  # MLflow batches it


def finite_metrics(metrics: dict[str, float], step: int = 0) -> list[Metric]:
    """MLflow metrics of the values of `metrics` that are numbers (None and NaN left out), at `step`."""
    now = int(time.time() * 1000)
    return [Metric(k, float(v), now, step) for k, v in metrics.items() if v is not None and not math.isnan(v)]


def log_metric_dict(client: MlflowClient, run_id: str, metrics: dict[str, float], step: int = 0,
                    tags: dict[str, Any] | None = None) -> None:
    """The finite values of `metrics` at `step` (and `tags`), in one batch."""
    client.log_batch(run_id, metrics=finite_metrics(metrics, step),
                     tags=[RunTag(k, str(v)) for k, v in (tags or {}).items()])


def set_tags(client: MlflowClient, run_id: str, tags: dict[str, Any]) -> None:
    client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])


@dataclass
class TrackedExperiment:
    experiment: ExperimentResult
    child_run_ids: dict[int, str]
    """training seed -> its child run id."""
    extra: dict[str, Any] = field(default_factory=dict)


def run_tracked_experiment(
    tracker: RunTracker,
    parent_run_id: str,
    cfg: ExperimentConfig,
    data_seed: int,
    seeds: list[int],
    work_dir: Path,
    params: dict[str, str],
    tags: dict[str, str] | None = None,
    log_models: bool = True,
    model_format: str = "pickle",
    figures: bool = True,
    progress: bool | Callable[[int, int], Any] = False,
    run_name: Callable[[int], str] = lambda seed: f"seed-{seed}",
    datasets: dict[str, Split] | None = None,
    figure_worker: FigureWorker | None = None,
) -> TrackedExperiment:
    """One child run per seed under `parent_run_id`, created when its ensemble starts training
    (see `speccomp.core.experiment.ensembles`), and ended FINISHED with its metrics, checkpoints,
    predictions, inputs and final model as soon as that ensemble is done: so a run stopped at any
    point holds at most one ensemble's runs open, and seeds not started have no run. On an
    exception the open runs stay in `tracker` for the caller's guard to close FAILED or KILLED.
    The figures are drawn by a second process (`figure_worker`, or one started here) while the
    last ensemble's records are logged."""
    client = tracker.client
    child_ids: dict[int, str] = {}
    mlflow_logger = MlflowTrainingLogger(client, {}, tracked=tuple(tracked_labels(cfg)))

    def start(group: list[int]) -> None:
        for seed in group:
            child_ids[seed] = tracker.start(
                run_name(seed),
                parent_id=parent_run_id,
                tags={"seed": str(seed), "data_seed": str(data_seed), "speccomp.role": "seed", **(tags or {})},
            )
            log_params(client, child_ids[seed], params)  # seed and data_seed are the run's tags
        mlflow_logger.add_runs({seed: child_ids[seed] for seed in group})

    def done(part) -> None:
        # The seeds' last metrics, their not-learned tags and descriptions: one batch a run.
        mlflow_logger.flush(tags={r.seed: {
            **(not_learned_tag(r.final, cfg.tracked_labels, cfg.analysis.learned_skill) if spectra else {}),
            **description_tag(seed_description(r.seed, r.data_seed, r.final, tracked_labels(cfg))),
        } for r in part.seeds})
        group_ids = [child_ids[r.seed] for r in part.seeds]
        log_dataset_inputs(client, group_ids, datasets_used)
        for r in part.seeds:
            run_id = child_ids[r.seed]
            if r.checkpoint_paths:
                client.log_artifacts(run_id, str(r.checkpoint_paths[0].parent), "checkpoints")
            client.log_artifact(run_id, str(write_predictions(r, work_dir)), PREDICTIONS_DIR)
            if log_models:
                log_final_model(run_id, r, datasets_used["train"], step=part.total_steps, client=client,
                                model_format=model_format,
                                name=f"{domain_word(task.name)}-{run_name(r.seed)}")
            tracker.finish(run_id)

    task = task_for(cfg)
    spectra = task.name == "spectra"  # the learned/not-learned judgement is the spectra skill's
    datasets_used = datasets if datasets is not None else task.generate(cfg, data_seed)
    try:
        exp = run_experiment(
            cfg, data_seed, seeds, work_dir, logger=mlflow_logger,
            progress=progress, figures=figures, datasets=datasets_used,
            on_start=start, on_done=done, background_figures=True, figure_worker=figure_worker,
        )
    except BaseException:
        # Interrupted or failed: what was measured so far still reaches the runs (the caller's
        # guard then ends them KILLED or FAILED). The store may be what failed, so best effort.
        with contextlib.suppress(Exception):
            mlflow_logger.flush()
        raise
    return TrackedExperiment(exp, child_ids)


def log_dataset_inputs(client: MlflowClient, run_ids: str | list[str], datasets: dict[str, Split]) -> None:
    """Each split as an MLflow dataset input (name, digest, schema) of every run in `run_ids`, so
    the UI shows the data used; the inputs are built once for all the runs."""
    import mlflow.data
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    inputs = []
    for name, split in datasets.items():
        ds = mlflow.data.from_numpy(
            split.inputs.numpy(),  # a view, no copy; the digest is ours, so nothing is hashed again
            targets=split.targets.numpy(),
            name=f"{name}-data_seed-{split.data_seed}",
            digest=split.digest,
            source=SpeccompSource(f"speccomp://data_seed={split.data_seed}/split={name}/n={len(split)}"),
        )
        tag = InputTag(key=MLFLOW_DATASET_CONTEXT, value=SPLIT_CONTEXT.get(name, name))
        inputs.append(DatasetInput(dataset=dataset_entity(ds), tags=[tag]))
    for run_id in [run_ids] if isinstance(run_ids, str) else run_ids:
        log_inputs_retrying(client, run_id, inputs)


from tracking.store import DUPLICATE_WORDS  # noqa: E402  (one list, shared with tracking.ui)


def log_inputs_retrying(client: MlflowClient, run_id: str, inputs: list, attempts: int = 3) -> None:
    """`client.log_inputs`, again when another worker registered the same dataset in the same
    experiment at the same moment: MLflow looks the dataset up, finds it missing and inserts it,
    so the second of two workers logging one dataset together fails on the unique key (seen with
    four study workers started at once); the retry finds the dataset and only links it. The
    failed attempt's transaction was rolled back whole, so nothing is logged twice."""
    from mlflow.exceptions import MlflowException

    for attempt in range(attempts):
        try:
            client.log_inputs(run_id, datasets=inputs)
            return
        except MlflowException as exc:
            if attempt == attempts - 1 or not any(w in str(exc) for w in DUPLICATE_WORDS):
                raise


class SpeccompSource(HTTPDatasetSource):
    """Generated data: the URI names the data seed and split that regenerate it exactly."""

    @staticmethod
    def _get_source_type() -> str:
        return "speccomp"


def log_final_model(
    run_id: str,
    result: SeedResult,
    train: Split,
    step: int = 0,
    client: MlflowClient | None = None,
    name: str | None = None,
    model_format: str = "pickle",
) -> str:
    """The final model the MLflow way (`mlflow.pytorch`, an MLflow 3 logged model named `name`,
    default `seed-<seed>`; the tracked pipeline names it by domain and run, `spectra-seed-123`,
    `raven-seed-123`), with its input/output signature and input example, serialised as
    `model_format` (see MODEL_FORMATS); returns its model id. `step` (the last optimiser step)
    links the run's final metrics to the model."""
    import logging

    import mlflow
    import mlflow.pytorch
    from mlflow.models import infer_signature

    client = client or MlflowClient()
    run = client.get_run(run_id)
    # Created here so that it lands in the run's experiment: left to itself, log_model files the
    # model under the fluent "current" experiment (Default, id 0, outside `mlflow run`).
    model = client.create_logged_model(
        experiment_id=run.info.experiment_id,
        name=name or f"seed-{result.seed}",
        source_run_id=run_id,
        params=dict(run.data.params),
        tags={"seed": str(result.seed), "data_seed": str(result.data_seed)},
    )
    example = train.inputs[:2]
    with torch.no_grad():
        n_out = tuple(result.model(example[:1]).shape[1:])
    signature = infer_signature(np.zeros((1, *example.shape[1:]), np.float32), np.zeros((1, *n_out), np.float32))
    if model_format not in MODEL_FORMATS:
        raise ValueError(f"model_format: {model_format!r}; allowed: {', '.join(MODEL_FORMATS)}")
    pytorch_logger = logging.getLogger("mlflow.pytorch")
    level = pytorch_logger.level
    if model_format == "pickle":  # its warning says what MODEL_FORMATS says, once per model
        pytorch_logger.setLevel(logging.ERROR)
    try:
        mlflow.pytorch.log_model(
            result.model,
            name=name or f"seed-{result.seed}",
            signature=signature,
            input_example=example.numpy(),  # the pt2 format traces forward() on it
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
            run_id=run_id,  # the child run, without making it the active fluent run
            model_id=model.model_id,
            step=step,
            serialization_format=model_format,
        )
    finally:
        pytorch_logger.setLevel(level)
    return model.model_id


def aggregate_finals(children: pd.DataFrame) -> dict[str, float]:
    """Across-seed mean (same metric name) and std (`std/<name>`) of every final metric, over the
    seeds that have it: `transfer/<label>` is the mean of the seeds that learned the component,
    and `not_learned/<label>` counts the seeds that did not (skill/val but no transfer value)."""
    out: dict[str, float] = {}
    numeric = children.drop(columns=[c for c in ("seed", "data_seed") if c in children], errors="ignore")
    for col in numeric.columns:
        values = pd.to_numeric(numeric[col], errors="coerce").dropna()
        if values.empty:
            continue
        out[col] = float(values.mean())
        out[f"std/{col}"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    for col in numeric.columns:
        if col.startswith("skill/val/"):
            label = col.removeprefix("skill/val/")
            judged = pd.to_numeric(numeric[col], errors="coerce").notna()
            has_transfer = (pd.to_numeric(numeric[f"transfer/{label}"], errors="coerce").notna()
                            if f"transfer/{label}" in numeric else pd.Series(False, index=numeric.index))
            out[f"not_learned/{label}"] = float((judged & ~has_transfer).sum())
    return out


def not_learned_tag(final: dict[str, float], tracked: list[str], threshold: float) -> dict[str, str]:
    """The seed run's `not_learned` tag: comma-separated tracked labels whose in-distribution
    skill is below the threshold, empty when every one was learned ({} without a validation split)."""
    from speccomp.core.metrics import not_learned

    labels = not_learned(final, tracked, threshold)
    return {} if labels is None else {"not_learned": ",".join(labels)}


def log_parent_summary(
    client: MlflowClient, run_id: str, summary: pd.DataFrame, trajectory: pd.DataFrame,
    extra: pd.DataFrame | None = None,
) -> None:
    """What a parent run (a `run` invocation, a study trial) shows of its seeds: the across-seed
    mean and std of every final metric (and of the `extra` per-seed columns) at the last step, and
    the mean curves at every earlier checkpoint (one value per metric and step); per-component
    metrics also under their role names (`first/test/mse`, see `tracking.ui.for_mlflow`)."""
    last_step = int(trajectory["step"].max())
    tracked = [c.removeprefix("test/mse/") for c in summary.columns if c.startswith("test/mse/")]
    table = summary if extra is None else pd.concat([summary, extra.reset_index(drop=True)], axis=1)
    finals = aggregate_finals(table)
    metrics = finite_metrics(for_mlflow(finals, tracked), last_step) + mean_curves(trajectory, last_step, tracked)
    labels = [k.removeprefix("not_learned/") for k in finals if k.startswith("not_learned/") and "/tracked" not in k]
    tags = {}
    if labels:  # the tracked components that at least one seed did not learn (empty: all learned)
        tags["not_learned"] = ",".join(label for label in labels if finals[f"not_learned/{label}"] > 0)
    client.log_batch(run_id, metrics=metrics, tags=[RunTag(k, v) for k, v in tags.items()])  # one store call


def mean_curves(trajectory: pd.DataFrame, skip_step: int | None = None, tracked: Sequence[str] = ()) -> list[Metric]:
    """The parent's own curves: the across-seed mean of each checkpoint metric at each step.
    `skip_step` (the last step, where `aggregate_finals` logs the same means) is left out, so that
    no step holds two values of one metric."""
    cols = {c: n for c, n in {"test_loss": "test/mse", "val_loss": "val/mse"}.items() if c in trajectory}
    for split in ("test", "val"):
        for c in trajectory:
            if c.startswith(f"{split}_mse_present_"):
                cols[c] = f"{split}/mse_present/" + c.removeprefix(f"{split}_mse_present_")
            elif c.startswith(f"{split}_mse_"):
                cols[c] = f"{split}/mse/" + c.removeprefix(f"{split}_mse_")
    cols.update({c: c for c in trajectory if "/" in c})  # columns already named as metrics (matrices)
    mean = trajectory.groupby("step")[list(cols)].mean()
    if skip_step is not None:
        mean = mean.drop(index=skip_step, errors="ignore")
    now = int(time.time() * 1000)
    roles = role_names(tracked)  # the role-named curves too (`first/test/mse`)
    names = {col: [name, *filter(None, [role_alias(name, roles)])] for col, name in cols.items()}
    return [
        Metric(alias, float(v), now, int(step))
        for step, row in mean.iterrows()
        for col in cols
        if not math.isnan(v := row[col])
        for alias in names[col]
    ]


def log_parent_artifacts(client: MlflowClient, run_id: str, work_dir: Path, subdir: str | None = None) -> None:
    """Figures, tables and the resolved config of one experiment folder."""
    for name in ("config.yaml", "trajectory_data.csv", "summary.csv"):
        if (work_dir / name).is_file():
            client.log_artifact(run_id, str(work_dir / name), subdir)
    if (work_dir / PLOTS_DIR).is_dir():
        client.log_artifacts(run_id, str(work_dir / PLOTS_DIR), f"{subdir}/{PLOTS_DIR}" if subdir else PLOTS_DIR)
