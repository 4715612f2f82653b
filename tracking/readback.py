"""Reading a tracked `main` invocation back out of MLflow: into pandas, and into the nine figures.

    speccomp readback table PARENT_RUN_ID [--csv out.csv]        one row per seed
    speccomp readback trajectory PARENT_RUN_ID [--csv out.csv]   one row per (seed, checkpoint)
    speccomp redraw PARENT_RUN_ID --out DIR                        the nine figures again
    mlflow run . -e redraw -P run_id=PARENT_RUN_ID -P out=DIR              the same, as a tracked run

Everything comes from the tracking store alone: the children's tags, params and metric histories,
the parent's `config.yaml` and each child's `predictions/test_seed-<s>.npy`; the data are
regenerated from the config and the data seed. A bad run id prints one line and exits with code 2.
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd

from speccomp.core.experiment import CONFIG_FILE, PREDICTIONS_DIR

# No download progress bars in the middle of a table (the user may still turn them on).
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

USER_ERROR = 2
CHILD_COLUMNS = ("run_id", "run_name", "data_seed", "seed", "status")
PARAMS_OF_INTEREST: tuple[str, ...] = (
    "training.model_type",
    "training.hidden_dims",
    "training.activation",
    "training.dropout_rate",
    "training.input_transform",
    "training.learning_rate",
    "training.weight_decay",
    "training.batch_size",
    "training.epochs",
    "data.splits.train.n_samples",
)
"""Params shown by `children_table` by default (every child carries the whole flattened config)."""


class ReadbackError(ValueError):
    """The run asked for cannot be read back (unknown id, not a parent, artifacts missing); one line."""


def _client(client):
    if client is not None:
        return client
    from mlflow import MlflowClient

    return MlflowClient()


def _parent(client, run_id: str):
    from mlflow.exceptions import MlflowException

    if not run_id or not run_id.strip():
        raise ReadbackError("run_id: empty; give the id of the parent run of a `main` invocation")
    try:
        return client.get_run(run_id.strip())
    except MlflowException as exc:
        from tracking.store import redact_url

        raise ReadbackError(
            f"run_id: no run {run_id!r} in {redact_url(client.tracking_uri)} "
            f"({str(exc).splitlines()[0]}); give the id of the parent run of a `main` invocation"
        ) from None


def _children(client, parent) -> list:
    """The parent's direct child runs that are seed runs (tagged `seed`), by data seed then seed."""
    from mlflow.entities import ViewType

    runs, token = [], None
    query = f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    while True:
        page = client.search_runs(
            [parent.info.experiment_id], query, run_view_type=ViewType.ALL, max_results=1000, page_token=token
        )
        runs.extend(page)
        token = page.token
        if not token:
            break
    children = [r for r in runs if "seed" in r.data.tags and "data_seed" in r.data.tags]
    if not children:
        raise ReadbackError(
            f"run_id: run {parent.info.run_id} ({parent.info.run_name}) has no child runs tagged seed; "
            "give the id of the parent run of a `main` invocation"
        )
    return sorted(children, key=lambda r: (int(r.data.tags["data_seed"]), int(r.data.tags["seed"])))


def _tracked_labels(parent, children) -> list[str]:
    """Tracked component labels in the config's order (the parent's `tracked` tag), else from metric names."""
    if parent.data.tags.get("tracked"):
        return parent.data.tags["tracked"].split(",")
    names = {k.removeprefix("test/mse/") for c in children for k in c.data.metrics if k.startswith("test/mse/")}
    return sorted(names)


def children_table(parent_run_id: str, client=None, params: Sequence[str] = PARAMS_OF_INTEREST) -> pd.DataFrame:
    """One row per child run of `parent_run_id`: run id and name, data seed, seed, status, the
    `params` given (default `PARAMS_OF_INTEREST`, those present) and every final metric (the value
    at the last logged step), metric columns sorted by name."""
    client = _client(client)
    children = _children(client, _parent(client, parent_run_id))
    rows = []
    for run in children:
        row = {
            "run_id": run.info.run_id,
            "run_name": run.info.run_name,
            "data_seed": int(run.data.tags["data_seed"]),
            "seed": int(run.data.tags["seed"]),
            "status": run.info.status,
        }
        row.update({p: run.data.params[p] for p in params if p in run.data.params})
        row.update(dict(sorted(run.data.metrics.items())))
        rows.append(row)
    table = pd.DataFrame(rows)
    metric_cols = sorted(c for c in table.columns if c not in CHILD_COLUMNS and c not in params)
    param_cols = [p for p in params if p in table.columns]
    return table[[*CHILD_COLUMNS, *param_cols, *metric_cols]]


def _history(client, run_id: str, key: str) -> dict[int, float]:
    """step -> value; where a step holds several values (a re-logged copy) the latest one counts."""
    out: dict[int, tuple[int, float]] = {}
    for m in client.get_metric_history(run_id, key):
        if m.step not in out or m.timestamp >= out[m.step][0]:
            out[m.step] = (m.timestamp, m.value)
    return {step: value for step, (_, value) in sorted(out.items())}


def _steps_per_epoch(params: dict[str, str]) -> float:
    try:
        return math.ceil(int(params["data.splits.train.n_samples"]) / int(params["training.batch_size"]))
    except (KeyError, ValueError):
        return math.nan


def trajectory_from_runs(parent_run_id: str, client=None) -> pd.DataFrame:
    """speccomp's `trajectory_data.csv`, rebuilt from the children's metric histories: one row per
    (data seed, seed, checkpoint) with columns data_seed, seed, checkpoint, step, epoch, train_loss,
    val_loss, test_loss, then val_mse_<label>, test_mse_<label> per tracked label, then
    val_mse_present_<label>, test_mse_present_<label> (NaN at steps where a run did not log them).

    Checkpoints are the steps at which `test/mse` was logged. `epoch` is step ÷ steps per epoch
    (from the `data.splits.train.n_samples` and `training.batch_size` params); `train_loss` is the
    mean of the `train/loss` values logged since the previous checkpoint (NaN at step 0), which is
    the loop's own value when `training.log_every_n_step` is 1. Rows are ordered like the file:
    by data seed, checkpoint, seed."""
    client = _client(client)
    parent = _parent(client, parent_run_id)
    children = _children(client, parent)
    if parent.data.tags.get("domain") == "matrices":
        return _matrices_trajectory(client, parent, children)
    tracked = _tracked_labels(parent, children)
    rows = []
    for run in children:
        run_id = run.info.run_id
        test = _history(client, run_id, "test/mse")
        if not test:
            continue  # stopped before its first checkpoint
        val = _history(client, run_id, "val/mse")
        train = _history(client, run_id, "train/loss")
        per_label = {
            (split, label): _history(client, run_id, f"{split}/mse/{label}") for label in tracked for split in ("val", "test")
        }
        present = {
            (split, label): _history(client, run_id, f"{split}/mse_present/{label}")
            for label in tracked for split in ("val", "test")
        }
        per_epoch = _steps_per_epoch(run.data.params)
        train_steps = np.array(list(train), dtype=np.int64)
        train_values = np.array(list(train.values()), dtype=np.float64)
        previous = None
        for checkpoint, step in enumerate(test):
            since = (train_steps > previous) & (train_steps <= step) if previous is not None else train_steps < 0
            row = {
                "data_seed": int(run.data.tags["data_seed"]),
                "seed": int(run.data.tags["seed"]),
                "checkpoint": checkpoint,
                "step": step,
                "epoch": step / per_epoch if per_epoch else math.nan,
                "train_loss": float(train_values[since].mean()) if since.any() else math.nan,
                "val_loss": val.get(step, math.nan),
                "test_loss": test[step],
            }
            for label in tracked:
                row[f"val_mse_{label}"] = per_label["val", label].get(step, math.nan)
                row[f"test_mse_{label}"] = per_label["test", label].get(step, math.nan)
            for label in tracked:
                row[f"val_mse_present_{label}"] = present["val", label].get(step, math.nan)
                row[f"test_mse_present_{label}"] = present["test", label].get(step, math.nan)
            rows.append(row)
            previous = step
    if not rows:
        raise ReadbackError(f"run_id: the children of run {parent.info.run_id} have no checkpoint metrics yet")
    return pd.DataFrame(rows).sort_values(["data_seed", "checkpoint", "seed"], kind="stable").reset_index(drop=True)


MATRICES_CURVES = ("val/acc", "test/acc", "val/loss", "test/loss")


def _matrices_trajectory(client, parent, children) -> pd.DataFrame:
    """The matrices domain's trajectory (columns named as the metrics: val/acc, test/acc, val/loss,
    test/loss), checkpoints being the steps at which `test/acc` was logged."""
    rows = []
    for run in children:
        curves = {name: _history(client, run.info.run_id, name) for name in MATRICES_CURVES}
        train = _history(client, run.info.run_id, "train/loss")
        per_epoch = _steps_per_epoch(run.data.params)
        previous = None
        for checkpoint, step in enumerate(curves["test/acc"]):
            losses = [v for s, v in train.items() if previous is not None and previous < s <= step]
            rows.append({
                "data_seed": int(run.data.tags["data_seed"]), "seed": int(run.data.tags["seed"]),
                "checkpoint": checkpoint, "step": step, "epoch": step / per_epoch if per_epoch else math.nan,
                "train_loss": float(np.mean(losses)) if losses else math.nan,
                **{name: curves[name].get(step, math.nan) for name in MATRICES_CURVES},
            })
            previous = step
    if not rows:
        raise ReadbackError(f"run_id: the children of run {parent.info.run_id} have no checkpoint metrics yet")
    return pd.DataFrame(rows).sort_values(["data_seed", "checkpoint", "seed"], kind="stable").reset_index(drop=True)


def _download(client, run_id: str, path: str, dst: Path, what: str) -> Path:
    from mlflow.exceptions import MlflowException

    try:
        local = Path(client.download_artifacts(run_id, path, str(dst)))
    except (MlflowException, OSError) as exc:
        raise ReadbackError(f"run {run_id}: cannot download {path} ({what}): {str(exc).splitlines()[0]}") from None
    if not local.is_file():
        raise ReadbackError(f"run {run_id}: no artifact {path} ({what})")
    return local


def _parent_config_path(client, parent, data_seed: int, several: bool, dst: Path) -> Path:
    names = [f"data_seed-{data_seed}/{CONFIG_FILE}", CONFIG_FILE] if several else [CONFIG_FILE]
    listed = {a.path for a in client.list_artifacts(parent.info.run_id)}
    listed |= {a.path for a in client.list_artifacts(parent.info.run_id, f"data_seed-{data_seed}")} if several else set()
    for name in names:
        if name in listed:
            return _download(client, parent.info.run_id, name, dst, "the resolved config")
    raise ReadbackError(f"run {parent.info.run_id}: no {CONFIG_FILE} artifact; was it logged by `tracking.main`?")


def redraw_from_mlflow(
    parent_run_id: str,
    out_dir: str | Path,
    client=None,
    floor: dict[str, float] | None = None,
) -> dict[str, Path]:
    """Re-draw the nine figures of a `main` invocation from MLflow alone, into `out_dir` (with
    several data seeds, into `out_dir/data_seed-<d>/`). Returns figure name -> path (names are
    prefixed `data_seed-<d>/` with several data seeds). `floor` (label -> oracle MSE) defaults to
    the `oracle/mse/<label>` metrics the children of each data seed logged, when they have them."""
    from speccomp.core.experiment import draw_figures, read_config
    from speccomp.core.task import task_for

    client = _client(client)
    parent = _parent(client, parent_run_id)
    children = _children(client, parent)
    trajectory = trajectory_from_runs(parent_run_id, client)
    data_seeds = sorted({int(c.data.tags["data_seed"]) for c in children})
    several = len(data_seeds) > 1
    out = Path(out_dir)
    paths: dict[str, Path] = {}
    with tempfile.TemporaryDirectory(prefix="speccomp-redraw-") as tmp:
        for data_seed in data_seeds:
            work = Path(tmp) / f"data_seed-{data_seed}"
            cfg = read_config(_parent_config_path(client, parent, data_seed, several, work))
            predictions = {}
            runs = [c for c in children if int(c.data.tags["data_seed"]) == data_seed]
            for run in runs:
                seed = int(run.data.tags["seed"])
                path = f"{PREDICTIONS_DIR}/test_seed-{seed}.npy"
                predictions[seed] = np.load(
                    _download(client, run.info.run_id, path, work / f"seed-{seed}",
                              f"final test predictions; the run is {run.info.status}")
                )
            task = task_for(cfg)
            seed_floor = floor if floor is not None else task.recorded_floor(cfg, [run.data.metrics for run in runs])
            drawn = draw_figures(
                cfg,
                task.generate(cfg, data_seed),
                trajectory[trajectory["data_seed"] == data_seed].reset_index(drop=True),
                predictions,
                out / f"data_seed-{data_seed}" if several else out,
                seed_floor,
            )
            paths.update({(f"data_seed-{data_seed}/{k}" if several else k): Path(v) for k, v in drawn.items()})
    return paths


# --------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------
def _write_or_print(table: pd.DataFrame, csv: str | None) -> None:
    if csv:
        Path(csv).parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(csv, index=False)
        print(f"{len(table)} rows -> {csv}")
    else:
        with pd.option_context("display.max_columns", None, "display.width", 200):
            print(table.to_string(index=False))


def _cmd_table(args: SimpleNamespace, client) -> int:
    _write_or_print(children_table(args.run_id, client), args.csv)
    return 0


def _cmd_trajectory(args: SimpleNamespace, client) -> int:
    _write_or_print(trajectory_from_runs(args.run_id, client), args.csv)
    return 0


def _cmd_redraw(args: SimpleNamespace, client) -> int:
    paths = redraw_from_mlflow(args.run_id, args.out, client)
    attached = os.environ.get("MLFLOW_RUN_ID")
    if attached:  # started by `mlflow run -e redraw`: that run keeps the figures it drew
        from tracking.pipeline import set_tags

        set_tags(client, attached, {"speccomp.role": "redraw", "source_run_id": args.run_id.strip()})
        for name, path in paths.items():
            client.log_artifact(attached, str(path), str(Path("plots", name).parent))
    print(f"{len(paths)} figures -> {Path(args.out)}")
    return 0


COMMANDS: dict[str, tuple[Callable[[SimpleNamespace, object], int], str]] = {
    "table": (_cmd_table, "one row per seed run: ids, seeds, status, main params, final metrics"),
    "trajectory": (_cmd_trajectory, "trajectory_data.csv rebuilt from the metric histories"),
    "redraw": (_cmd_redraw, "re-draw the nine figures from the runs alone"),
}


def main(command: str, run_id: str, out: str | None = None, csv: str | None = None) -> int:
    """`speccomp readback table|trajectory RUN_ID [--csv F]`, `speccomp redraw RUN_ID --out DIR`."""
    from mlflow import MlflowClient

    from tracking import store

    args = SimpleNamespace(run_id=run_id, out=out, csv=csv)
    store.configure()
    client = MlflowClient()
    try:
        return COMMANDS[command][0](args, client)
    except ReadbackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        attached = os.environ.get("MLFLOW_RUN_ID")
        if attached:  # `mlflow run -e redraw` made a run: it ends FAILED with the reason on it
            from tracking.runs import record_error

            record_error(client, attached, str(exc))
            client.set_terminated(attached, status="FAILED")
        return USER_ERROR
