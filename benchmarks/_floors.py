"""What the work of a run or a trial costs at the least, measured beside it: the yardsticks that
tell a target the project's code can meet from one below the libraries' own cost.

- `replay_records`: a study trial's MLflow records (its run and its seed runs: tags, params, every
  metric row, dataset inputs, artifact files), read back from the study's own store and written
  again into a fresh one with the plainest MlflowClient calls (one call per kind of record per
  run, metrics in batches of 1,000): the records the project writes today, at MLflow's price.
  Not replayed: the study run's few per-trial rows, the Optuna side (user attributes, the
  dashboard note) and logged models (`--log-models`: MLflow 3 keeps them outside the run's
  artifacts; the caller measures no floor then). So it errs low, and it is a floor of the
  current records, not of the least a trial could record.
- `generation_seconds`: each trial's data generated again from its logged `config.yaml`.

Used by `bench_study.py`; `bench_pipeline.py` has the launcher's and the memory's.
"""

from __future__ import annotations

import logging
import math
import sqlite3
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse

METRIC_BATCH = 1000  # MLflow's limit of metrics per log_batch


def _local(uri: str) -> Path:
    return Path(urlparse(uri).path if uri.startswith("file:") else uri)


def trial_records(db: Path, trial_run_id: str) -> list[dict]:
    """The records of a trial's run, then of each of its seed runs, as the store holds them."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        children = [r for (r,) in con.execute(
            "SELECT run_uuid FROM tags WHERE key = 'mlflow.parentRunId' AND value = ? ORDER BY run_uuid",
            (trial_run_id,))]
        out = []
        for run_id in [trial_run_id, *children]:
            def rows(sql: str, run_id: str = run_id) -> list[tuple]:
                return con.execute(sql, (run_id,)).fetchall()

            (uri,) = con.execute("SELECT artifact_uri FROM runs WHERE run_uuid = ?", (run_id,)).fetchone()
            out.append({
                "tags": dict(rows("SELECT key, value FROM tags WHERE run_uuid = ?")),
                "params": rows("SELECT key, value FROM params WHERE run_uuid = ?"),
                "metrics": rows("SELECT key, value, timestamp, step, is_nan FROM metrics WHERE run_uuid = ?"),
                "inputs": rows(
                    "SELECT d.name, d.digest, d.dataset_source_type, d.dataset_source, d.dataset_schema, "
                    "d.dataset_profile, t.value FROM inputs i JOIN datasets d ON d.dataset_uuid = i.source_id "
                    "LEFT JOIN input_tags t ON t.input_uuid = i.input_uuid AND t.name = 'mlflow.data.context' "
                    "WHERE i.destination_type = 'RUN' AND i.destination_id = ?"),
                "artifacts": _local(uri),
            })
        return out
    finally:
        con.close()


def count(records: list[dict]) -> dict[str, int]:
    """How many runs, tags, params, metric rows, dataset inputs and artifact files `records` hold."""
    return {
        "runs": len(records),
        "tags": sum(len(r["tags"]) for r in records),
        "params": sum(len(r["params"]) for r in records),
        "metric rows": sum(len(r["metrics"]) for r in records),
        "dataset inputs": sum(len(r["inputs"]) for r in records),
        "artifact files": sum(sum(1 for p in r["artifacts"].rglob("*") if p.is_file())
                              for r in records if r["artifacts"].is_dir()),
    }


def replay_records(trials: list[list[dict]]) -> float:
    """Mean seconds to write each trial's records again into a fresh SQLite store (made, untimed,
    before the first), with one MlflowClient call per kind of record per run."""
    from mlflow import MlflowClient
    from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT, MLFLOW_PARENT_RUN_ID

    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)  # its migrations' chatter
    with tempfile.TemporaryDirectory(prefix="bench-floor-") as tmp:
        client = MlflowClient(f"sqlite:///{tmp}/floor.db")
        experiment_id = client.create_experiment("floor", artifact_location=f"{tmp}/artifacts")
        parent = client.create_run(experiment_id).info.run_id  # stands for the study's run
        started = time.perf_counter()
        for records in trials:
            trial_id = None
            for r in records:
                tags = {**r["tags"], MLFLOW_PARENT_RUN_ID: trial_id or parent}
                run_id = client.create_run(experiment_id, tags=tags).info.run_id
                trial_id = trial_id or run_id
                client.log_batch(run_id, params=[Param(k, v) for k, v in r["params"]])
                metrics = [Metric(k, math.nan if is_nan else v, ts, step) for k, v, ts, step, is_nan in r["metrics"]]
                for i in range(0, len(metrics), METRIC_BATCH):
                    client.log_batch(run_id, metrics=metrics[i:i + METRIC_BATCH])
                if r["inputs"]:
                    client.log_inputs(run_id, [
                        DatasetInput(Dataset(name, digest, source_type, source, schema, profile),
                                     [InputTag(MLFLOW_DATASET_CONTEXT, context)] if context else [])
                        for name, digest, source_type, source, schema, profile, context in r["inputs"]])
                if r["artifacts"].is_dir() and any(r["artifacts"].iterdir()):
                    client.log_artifacts(run_id, str(r["artifacts"]))
                client.set_terminated(run_id)
        return (time.perf_counter() - started) / len(trials)


def generation_seconds(data: list[tuple[Path, int]]) -> float:
    """Mean seconds to generate the data of each (logged `config.yaml`, data seed), as a trial does once."""
    from speccomp.core.experiment import read_config
    from speccomp.core.task import task_for

    spent = 0.0
    for path, data_seed in data:
        cfg = read_config(path)
        started = time.perf_counter()
        task_for(cfg).generate(cfg, data_seed)
        spent += time.perf_counter() - started
    return spent / len(data)
