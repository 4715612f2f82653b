"""The MLflow records a tracked `main` run must leave, checked through `MlflowClient`.

In-process and tiny (`TINY_OVERRIDES`). One SQLite store serves the whole module: creating an MLflow
database runs its migrations, which takes seconds, so tests share it and tell their runs apart by
run name. The full run (`main_run`) is made once and read by several tests.
"""

from __future__ import annotations

import importlib
import math
import shlex
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from speccomp.core.config import default_config_dir
from speccomp.core.metrics import component_mse
from speccomp.core.models import Member, load_member
from speccomp.core.training import checkpoint_steps
from speccomp.spectra.data import generate_datasets
from speccomp.spectra.figures import FIGURE_NAMES
from speccomp_cli.main import main as cli
from tests.conftest import TINY_OVERRIDES, isolated_store, tiny_config

SEEDS = (1, 2)
DATA_SEED = 42
TINY_ARGS = [arg for item in TINY_OVERRIDES for arg in ("--set", item)]
CHECKPOINT_METRICS = ("val/mse", "test/mse")
LABELS = tiny_config().tracked_labels
PER_LABEL = tuple(f"{split}/{mse}/{label}" for label in LABELS for split in ("val", "test")
                  for mse in ("mse", "mse_present"))
END_METRICS = tuple(f"{name}/{label}" for label in LABELS for name in ("gap", "test/r2", "skill/val", "skill/test"))
REPO = Path(__file__).resolve().parent.parent


def oracle_metrics(cfg) -> tuple[str, ...]:
    """The physical floor's end-of-seed metrics (none when `analysis.oracle` is off)."""
    if getattr(cfg.analysis, "oracle", "off") == "off":
        return ()
    return tuple(f"oracle/mse/{label}" for label in cfg.tracked_labels)


# --------------------------------------------------------------------------------------------
# fixtures and helpers
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A fresh SQLite tracking store; the working directory is its folder (artifacts land there)."""
    with isolated_store(tmp_path_factory.mktemp("mlflow")) as store:
        yield store


def run_main(name: str, *extra: str, seeds: str = "1,2") -> int:
    from speccomp_cli.main import main

    return main(["run", "--seeds", seeds, "--run-name", name, "--config-dir", str(default_config_dir()), *TINY_ARGS, *extra])


def runs_named(client, name: str) -> list:
    from mlflow.entities import ViewType

    exps = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)]
    return client.search_runs(exps, f"attributes.run_name = '{name}'", run_view_type=ViewType.ALL)


def family(client, name: str):
    """(parent run, {seed: child run}) of the invocation with parent run name `name`."""
    (parent,) = runs_named(client, name)
    kids = client.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    return parent, {int(k.data.tags["seed"]): k for k in kids}


def all_runs(client) -> list:
    from mlflow.entities import ViewType

    exps = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)]
    return client.search_runs(exps, run_view_type=ViewType.ALL) if exps else []


def history(client, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def artifact_names(client, run_id: str, path: str | None = None) -> set[str]:
    return {Path(a.path).name for a in client.list_artifacts(run_id, path)}


def load_records(client, parent_run_id: str) -> SimpleNamespace:
    """A finished tiny invocation as the checks below read it (also used by the end-to-end tests)."""
    parent = client.get_run(parent_run_id)
    kids = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent_run_id}'")
    cfg = tiny_config()
    datasets = generate_datasets(cfg, DATA_SEED)
    total = cfg.training.epochs * math.ceil(len(datasets["train"]) / cfg.training.batch_size)
    return SimpleNamespace(
        client=client, parent=parent, children={int(k.data.tags["seed"]): k for k in kids}, cfg=cfg,
        datasets=datasets, total_steps=total, ckpt_steps=checkpoint_steps(cfg.training, total),
    )


def check_records(records: SimpleNamespace, tmp_path: Path) -> None:
    """Everything a finished `main` invocation with seeds 1,2 and the tiny config must leave."""
    for check in (
        test_one_parent_with_a_child_per_seed,
        test_every_contract_metric_has_its_full_history,
        test_parent_logs_mean_and_std_across_seeds,
        test_artifacts,
    ):
        check(records)
    test_logged_model_and_checkpoint_reproduce_the_logged_metrics(records, tmp_path)


@pytest.fixture(scope="module")
def main_run(store):
    assert run_main("full") == 0
    (parent,) = runs_named(store.client, "full")
    return load_records(store.client, parent.info.run_id)


# --------------------------------------------------------------------------------------------
# a full run
# --------------------------------------------------------------------------------------------
def test_one_parent_with_a_child_per_seed(main_run):
    parent, children = main_run.parent, main_run.children
    assert parent.info.status == "FINISHED"
    assert "mlflow.parentRunId" not in parent.data.tags
    assert parent.data.tags["seeds"] == "1,2" and parent.data.tags["data_seeds"] == str(DATA_SEED)
    assert sorted(children) == list(SEEDS)
    for seed, child in children.items():
        assert child.info.run_name == f"seed-{seed}"
        assert child.info.status == "FINISHED"
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.data.tags["seed"] == str(seed) and child.data.tags["data_seed"] == str(DATA_SEED)
        assert "seed" not in child.data.params and "data_seed" not in child.data.params  # tags, not repeated
    # params: the resolved config in use (the overrides applied; see tracking.ui.run_params)
    for run in (parent, *children.values()):
        assert run.data.params["training.epochs"] == "2"
        assert run.data.params["physics.n_bins"] == "128"
        assert run.data.params["training.hidden_dims"] == "[32, 16]"
        assert {f"physics.line.{label}" for label in main_run.cfg.tracked_labels} < set(run.data.params)


def test_every_contract_metric_has_its_full_history(main_run):
    client, steps, total = main_run.client, main_run.ckpt_steps, main_run.total_steps
    assert len(steps) == 5 and steps[0] == 0 and steps[-1] == total
    for child in main_run.children.values():
        run_id = child.info.run_id
        for key in (*CHECKPOINT_METRICS, *PER_LABEL):
            assert [s for s, _ in history(client, run_id, key)] == steps, key
        assert [s for s, _ in history(client, run_id, "train/loss")] == list(range(1, total + 1))
        for key in (*END_METRICS, *oracle_metrics(main_run.cfg)):
            assert [s for s, _ in history(client, run_id, key)] == [total], key
            assert math.isfinite(child.data.metrics[key])


def test_parent_logs_mean_and_std_across_seeds(main_run):
    client, parent = main_run.client, main_run.parent
    finals = pd.DataFrame([c.data.metrics for c in main_run.children.values()])
    for key in (*CHECKPOINT_METRICS, *PER_LABEL, *END_METRICS, *oracle_metrics(main_run.cfg)):
        assert parent.data.metrics[key] == pytest.approx(finals[key].mean(), rel=1e-9), key
        assert parent.data.metrics[f"std/{key}"] == pytest.approx(finals[key].std(ddof=1), rel=1e-9), key
    # the parent's curves: one value per checkpoint step (the final mean at the last step, once)
    for key in (*CHECKPOINT_METRICS, *PER_LABEL):
        assert [s for s, _ in history(client, parent.info.run_id, key)] == main_run.ckpt_steps, key


def test_not_learned_is_tagged_on_each_seed_and_counted_on_the_parent(main_run):
    parent, children = main_run.parent, list(main_run.children.values())
    threshold = main_run.cfg.analysis.learned_skill
    for child in children:
        m, tag = child.data.metrics, child.data.tags["not_learned"]
        for label in LABELS:
            learned = m[f"skill/val/{label}"] >= threshold
            assert (f"transfer/{label}" in m) == learned, label
            assert (label in tag.split(",")) == (not learned), (label, tag)
            if learned:
                assert m[f"transfer/{label}"] == pytest.approx(m[f"skill/test/{label}"] / m[f"skill/val/{label}"])
    for label in LABELS:
        missed = sum(label in c.data.tags["not_learned"].split(",") for c in children)
        assert parent.data.metrics[f"not_learned/{label}"] == missed
        learned = [c.data.metrics[f"transfer/{label}"] for c in children if f"transfer/{label}" in c.data.metrics]
        assert (f"transfer/{label}" in parent.data.metrics) == bool(learned)
        if learned:
            assert parent.data.metrics[f"transfer/{label}"] == pytest.approx(np.mean(learned))
    expected = [label for label in LABELS if parent.data.metrics[f"not_learned/{label}"] > 0]
    assert parent.data.tags["not_learned"] == ",".join(expected)


def test_artifacts(main_run):
    client, parent = main_run.client, main_run.parent
    assert {"config.yaml", "trajectory_data.csv", "plots"} <= artifact_names(client, parent.info.run_id)
    assert artifact_names(client, parent.info.run_id, "plots") == set(FIGURE_NAMES)
    for seed, child in main_run.children.items():
        run_id = child.info.run_id
        assert artifact_names(client, run_id, "checkpoints") == {f"step-{s:06d}.pt" for s in main_run.ckpt_steps}
        assert artifact_names(client, run_id, "predictions") == {f"test_seed-{seed}.npy"}
        # the datasets, as MLflow inputs with the digests of the regenerated data
        inputs = {d.dataset.name: d.dataset.digest for d in child.inputs.dataset_inputs}
        assert inputs == {f"{n}-data_seed-{DATA_SEED}": d.digest for n, d in main_run.datasets.items()}


def test_logged_model_and_checkpoint_reproduce_the_logged_metrics(main_run, tmp_path):
    import mlflow.pytorch

    client, test = main_run.client, main_run.datasets["test"]
    for seed, child in main_run.children.items():
        run_id = child.info.run_id
        (output,) = child.outputs.model_outputs
        model = client.get_logged_model(output.model_id)
        assert model.name == f"spectra-seed-{seed}" and model.source_run_id == run_id
        assert model.experiment_id == child.info.experiment_id
        found = client.search_logged_models([child.info.experiment_id], filter_string=f"source_run_id = '{run_id}'")
        assert [m.model_id for m in found] == [output.model_id]
        logged = np.load(client.download_artifacts(run_id, f"predictions/test_seed-{seed}.npy", str(tmp_path)))

        loaded = mlflow.pytorch.load_model(f"models:/{output.model_id}")
        assert isinstance(loaded, Member)  # pickled by default (`--model-format pt2`: a traced graph)
        with torch.no_grad():
            pred = loaded(test.spectra)
        np.testing.assert_allclose(pred.numpy(), logged, rtol=1e-5, atol=1e-6)

        path = client.download_artifacts(run_id, f"checkpoints/step-{main_run.total_steps:06d}.pt", str(tmp_path))
        member = load_member(path)  # torch.load(..., weights_only=True)
        with torch.no_grad():
            pred = member(test.spectra)
        mse = component_mse(pred, test.abundances)
        for label in LABELS:
            expected = child.data.metrics[f"test/mse/{label}"]
            assert float(mse[test.label_index(label)]) == pytest.approx(expected, rel=1e-5)


def test_a_pt2_model_is_a_traced_graph_that_predicts_the_same(main_run, tmp_path):
    import mlflow.pytorch

    assert run_main("pt2", "--model-format", "pt2", "--no-figures", seeds="1") == 0
    _, children = family(main_run.client, "pt2")
    (output,) = children[1].outputs.model_outputs
    loaded = mlflow.pytorch.load_model(f"models:/{output.model_id}")
    assert not isinstance(loaded, Member)  # torch.export's graph module, no pickled class
    test = main_run.datasets["test"]
    logged = np.load(main_run.client.download_artifacts(children[1].info.run_id, "predictions/test_seed-1.npy",
                                                        str(tmp_path)))
    with torch.no_grad():
        pred = loaded(test.spectra)
    np.testing.assert_allclose(pred.numpy(), logged, rtol=1e-5, atol=1e-6)


def test_an_unknown_model_format_is_refused_in_one_line(capsys):
    assert run_main("bad-format", "--model-format", "onnx") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--model-format" in err[0] and "onnx" in err[0]


def test_same_seeds_give_identical_metrics(main_run):
    assert run_main("repeat", "--no-models", "--no-figures") == 0
    _, again = family(main_run.client, "repeat")
    for seed, child in main_run.children.items():
        first = {k: history(main_run.client, child.info.run_id, k) for k in child.data.metrics}
        second = {k: history(main_run.client, again[seed].info.run_id, k) for k in again[seed].data.metrics}
        assert first == second
        digests = [{d.dataset.digest for d in r.inputs.dataset_inputs} for r in (child, again[seed])]
        assert digests[0] == digests[1]


# --------------------------------------------------------------------------------------------
# reading back
# --------------------------------------------------------------------------------------------
def test_children_table_matches_the_runs(main_run, tmp_path):
    from tracking import readback

    table = readback.children_table(main_run.parent.info.run_id, main_run.client)
    assert list(table["seed"]) == list(SEEDS)
    assert list(table.columns[:5]) == ["run_id", "run_name", "data_seed", "seed", "status"]
    for _, row in table.iterrows():
        child = main_run.children[row["seed"]]
        assert row["run_id"] == child.info.run_id and row["status"] == "FINISHED"
        assert row["data_seed"] == DATA_SEED and row["training.epochs"] == "2"
        for key, value in child.data.metrics.items():
            assert row[key] == value, key
    csv = tmp_path / "table.csv"
    assert cli(["readback", "table", main_run.parent.info.run_id, "--csv", str(csv)]) == 0
    assert csv.read_text() == table.to_csv(index=False)


def test_trajectory_from_runs_matches_the_logged_csv(main_run, tmp_path):
    from tracking.readback import trajectory_from_runs

    run_id = main_run.parent.info.run_id
    rebuilt = trajectory_from_runs(run_id, main_run.client)
    logged = pd.read_csv(main_run.client.download_artifacts(run_id, "trajectory_data.csv", str(tmp_path)))
    assert list(rebuilt.columns) == list(logged.columns)
    keys = ["data_seed", "seed", "step"]
    pd.testing.assert_frame_equal(
        rebuilt.sort_values(keys).reset_index(drop=True),
        logged.sort_values(keys).reset_index(drop=True),
        rtol=1e-6,  # train_loss: a float64 mean of the logged float32 losses
    )


@pytest.mark.slow
def test_redraw_from_mlflow_draws_the_nine_figures(main_run, tmp_path):

    out = tmp_path / "redrawn"
    assert cli(["redraw", main_run.parent.info.run_id, "--out", str(out)]) == 0
    assert {p.name for p in out.iterdir()} == set(FIGURE_NAMES)
    assert all(p.stat().st_size > 0 for p in out.iterdir())


@pytest.mark.slow
def test_several_data_seeds_read_back_per_data_seed(store, tmp_path):
    from tracking import readback

    assert run_main("two-data-seeds", "--data-seeds", "7,8", "--no-models", "--no-figures", seeds="1") == 0
    parent, _ = family(store.client, "two-data-seeds")
    run_id = parent.info.run_id
    table = readback.children_table(run_id, store.client)
    assert list(zip(table["run_name"], table["data_seed"], table["seed"], strict=True)) == [("seed-1-data-7", 7, 1), ("seed-1-data-8", 8, 1)]
    rebuilt = readback.trajectory_from_runs(run_id, store.client)
    for data_seed in (7, 8):
        logged = pd.read_csv(store.client.download_artifacts(run_id, f"data_seed-{data_seed}/trajectory_data.csv", str(tmp_path)))
        mine = rebuilt[rebuilt["data_seed"] == data_seed].reset_index(drop=True)
        pd.testing.assert_frame_equal(mine, logged.sort_values(["checkpoint", "seed"]).reset_index(drop=True), rtol=1e-6)
    paths = readback.redraw_from_mlflow(run_id, tmp_path / "figs", store.client)
    assert set(paths) == {f"data_seed-{d}/{name}" for d in (7, 8) for name in FIGURE_NAMES}
    assert all(path.is_file() for path in paths.values())


@pytest.mark.parametrize("which", ["unknown", "child"])
def test_readback_refuses_a_bad_run_id(main_run, which, capsys):

    run_id = "0123456789abcdef" if which == "unknown" else main_run.children[SEEDS[0]].info.run_id
    assert cli(["readback", "table", run_id]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: run_id:") and run_id in line


# --------------------------------------------------------------------------------------------
# failures and interruptions
# --------------------------------------------------------------------------------------------
def _raise_at_checkpoint(monkeypatch, step: int, exc: BaseException) -> None:
    from tracking.logger import MlflowTrainingLogger

    real = MlflowTrainingLogger.checkpoint

    def checkpoint(self, at: int, metrics_by_seed):
        real(self, at, metrics_by_seed)
        if at == step:
            raise exc

    monkeypatch.setattr(MlflowTrainingLogger, "checkpoint", checkpoint)


def _assert_nothing_running(client) -> None:
    assert [r.info.run_name for r in all_runs(client) if r.info.status == "RUNNING"] == []


def test_an_exception_ends_the_runs_failed_with_the_error(store, monkeypatch):
    _raise_at_checkpoint(monkeypatch, 3, RuntimeError("disk on fire"))
    with pytest.raises(RuntimeError, match="disk on fire"):
        run_main("boom", "--no-models")
    parent, children = family(store.client, "boom")
    assert sorted(children) == list(SEEDS)
    for run in (parent, *children.values()):
        assert run.info.status == "FAILED"
        assert run.data.tags["error"] == "RuntimeError: disk on fire"
    for child in children.values():  # what was measured before the failure is kept
        assert [s for s, _ in history(store.client, child.info.run_id, "test/mse")] == [0, 3]
    _assert_nothing_running(store.client)


def test_an_interrupt_ends_the_runs_killed_keeping_the_metrics(store, monkeypatch, capsys, tmp_path):
    _raise_at_checkpoint(monkeypatch, 6, KeyboardInterrupt())
    assert run_main("ctrl-c", "--no-models") == 130
    assert "KILLED" in capsys.readouterr().err
    parent, children = family(store.client, "ctrl-c")
    assert sorted(children) == list(SEEDS)
    for run in (parent, *children.values()):
        assert run.info.status == "KILLED"
        assert "interrupted" in run.data.tags["error"]
    for child in children.values():
        run_id = child.info.run_id
        for key in (*CHECKPOINT_METRICS, *PER_LABEL):
            assert [s for s, _ in history(store.client, run_id, key)] == [0, 3, 6], key
        assert [s for s, _ in history(store.client, run_id, "train/loss")] == list(range(1, 7))
    assert "config.yaml" in artifact_names(store.client, parent.info.run_id)
    _assert_nothing_running(store.client)

    # read back: the curves so far are there; the figures need the final predictions, which are not
    from tracking import readback

    trajectory = readback.trajectory_from_runs(parent.info.run_id, store.client)
    assert sorted(set(trajectory["step"])) == [0, 3, 6] and len(trajectory) == 3 * len(SEEDS)
    capsys.readouterr()
    assert cli(["redraw", parent.info.run_id, "--out", str(tmp_path / "figs")]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "predictions/test_seed-" in line and "KILLED" in line


# --------------------------------------------------------------------------------------------
# bad input: one line, exit code 2, before any run
# --------------------------------------------------------------------------------------------
def _config_dir_without_physics(tmp_path: Path) -> str:
    folder = tmp_path / "partial-configs"
    folder.mkdir()
    (folder / "data_distribution.yaml").write_text((default_config_dir() / "data_distribution.yaml").read_text())
    return str(folder)


BAD_INPUTS = {
    "seeds-empty-item": (["--seeds=1,,2"], "seeds"),
    "seeds-not-int": (["--seeds=abc"], "seeds"),
    "seeds-negative": (["--seeds=-1"], "seeds"),
    "seeds-duplicate": (["--seeds=1,1"], "seeds"),
    "data-seeds": (["--data-seeds=x"], "data-seeds"),
    "unknown-key": (["--set", "training.epochz=3"], "training.epochz"),
    "bad-type": (["--overrides", "training.epochs=abc"], "training.epochs"),
    "missing-config-dir": (["--config-dir", "no/such/folder"], "config_dir"),
    "missing-config-file": (["--config-dir", "{partial}"], "config_dir"),
}


def _bad_argv(case: str, tmp_path: Path) -> tuple[list[str], str]:
    argv, name = BAD_INPUTS[case]
    argv = [_config_dir_without_physics(tmp_path) if a == "{partial}" else a for a in argv]
    return ["run", "--seeds", "1", *TINY_ARGS, *argv], name


def _one_error_line(capsys) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_exits_2_before_any_run(store, case, tmp_path, capsys):
    from speccomp_cli.main import main

    argv, name = _bad_argv(case, tmp_path)
    before = len(all_runs(store.client))
    assert main(argv) == 2
    line = _one_error_line(capsys)
    assert name in line
    assert "allowed" in line or "Input should be" in line  # what would be accepted
    assert len(all_runs(store.client)) == before


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_fails_the_run_mlflow_run_created(store, case, tmp_path, monkeypatch, capsys):
    """Under `mlflow run` the run exists already: it ends FAILED with the line, nothing logged into it."""
    from speccomp_cli.main import main

    client = store.client
    experiment = client.get_experiment_by_name("speccomp") or client.get_experiment(client.create_experiment("speccomp"))
    run_id = client.create_run(experiment.experiment_id, run_name=f"mlflow-run-{case}").info.run_id
    monkeypatch.setenv("MLFLOW_RUN_ID", run_id)
    argv, name = _bad_argv(case, tmp_path)
    assert main(argv) == 2
    line = _one_error_line(capsys)
    run = client.get_run(run_id)
    assert run.info.status == "FAILED"
    assert run.data.tags["error"] == line.removeprefix("error: ") and name in run.data.tags["error"]
    assert run.data.metrics == {} and run.data.params == {}
    assert client.list_artifacts(run_id) == []
    assert client.search_runs([experiment.experiment_id], f"tags.mlflow.parentRunId = '{run_id}'") == []


# --------------------------------------------------------------------------------------------
# the MLproject entry points, as `mlflow run` formats them
# --------------------------------------------------------------------------------------------
def _parsed(monkeypatch, entry_point: str, params: dict, target: str):
    """The typed options `mlflow run -e ENTRY -P ...` hands to `target` (captured, not run)."""
    import speccomp_cli.main as cli
    from speccomp_compat import mlproject_command

    command = mlproject_command(str(REPO), entry_point, params)
    argv = shlex.split(command)
    assert argv[:3] == ["python", "-m", "speccomp_cli"]
    monkeypatch.chdir(REPO)  # where `mlflow run .` runs the command
    seen = []
    module, _, name = target.rpartition(".")
    monkeypatch.setattr(importlib.import_module(module), name, lambda *a, **k: seen.append((a, k)) or 0)
    assert cli.main(argv[3:]) == 0
    return seen[0]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({}, {"seeds": [123, 124, 125], "overrides": [], "presets": [], "threads": None}),
        ({"seeds": "1,2", "overrides": ""}, {"seeds": [1, 2], "overrides": []}),
        ({"seeds": "", "threads": "1", "overrides": "training.epochs=2 training.hidden_dims=[32, 16]"},
         {"seeds": None, "threads": 1, "overrides": ["training.epochs=2", "training.hidden_dims=[32, 16]"]}),
        ({"preset": "loglinear"}, {"presets": ["loglinear"], "overrides": []}),
    ],
)
def test_mlproject_main_passes_parameters_through(monkeypatch, params, expected):
    (options,), _ = _parsed(monkeypatch, "main", params, "tracking.main.run")
    assert {k: getattr(options, k) for k in expected} == expected
    assert options.config_dir == "configs" and options.data_seeds == [42]


def test_empty_seeds_take_the_configs_training_seeds(monkeypatch):
    from tracking.main import _Inputs

    (options,), _ = _parsed(monkeypatch, "main", {"seeds": ""}, "tracking.main.run")
    assert _Inputs(options).seeds == [123, 124, 125]  # configs/training.yaml: seed: [123, 124, 125]


def test_a_preset_reaches_the_config(monkeypatch):
    from tracking.main import _Inputs

    overrides = " ".join(TINY_OVERRIDES)
    (options,), _ = _parsed(monkeypatch, "main", {"seeds": "1", "preset": "loglinear", "overrides": overrides},
                            "tracking.main.run")
    cfg = _Inputs(options).cfg
    assert (cfg.training.model_type, cfg.training.input_transform) == ("linear", "log")


def test_mlproject_redraw_passes_parameters_through(monkeypatch):
    args, kwargs = _parsed(monkeypatch, "redraw", {"run_id": "abc123", "out": "figs"}, "tracking.readback.main")
    assert (args, kwargs) == (("redraw", "abc123"), {"out": "figs"})
