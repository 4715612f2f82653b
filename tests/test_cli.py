"""The untracked CLI: `main(argv) -> int`; user errors are one line on stderr and exit code 2 before
any work; generate / train / plot write what they promise."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from speccomp.core.models import load_member
from speccomp.spectra.figures import FIGURE_NAMES
from speccomp_cli.main import USER_ERROR, main
from tests.conftest import TINY_OVERRIDES

FIGURES = list(FIGURE_NAMES)  # the tutorial's names (checked against plots.md in test_figures)


def tiny_args(*extra: str) -> list[str]:
    out: list[str] = []
    for item in [*TINY_OVERRIDES, "physics.n_bins=64", *extra]:
        out += ["--set", item]
    return out


def assert_user_error(capsys, code: int, *words: str) -> str:
    captured = capsys.readouterr()
    assert code == USER_ERROR == 2
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("error: "), lines[0]
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert "Traceback" not in captured.err
    return lines[0]


@pytest.mark.parametrize("command", ["generate", "train"])
@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        (["training.epochs=0"], ["override training.epochs=0", "training.epochs"]),
        (["data.splits.train.distribution.combinations.1.components=[comp99]"], ["override data.splits", "comp99"]),
        (["training.epochz=1"], ["training.epochz"]),
        (["notakeyvalue"], ["key=value"]),
        (["training.model_type=cnn", "physics.n_bins=4"], ["training.cnn.channels"]),
    ],
)
def test_bad_config_exits_2_with_one_line_and_writes_nothing(capsys, tmp_path, command, overrides, words):
    out = tmp_path / "out"
    code = main([command, "--out", str(out), *tiny_args(*overrides)])
    assert_user_error(capsys, code, *words)
    assert not out.exists()


def test_bad_yaml_file_in_config_dir(capsys, tmp_path, edited_config_dir):
    folder = edited_config_dir("synthetic_spectra.yaml", lambda raw: "n_bins: [1\n")
    out = tmp_path / "out"
    code = main(["train", "--out", str(out), "--config-dir", str(folder)])
    assert_user_error(capsys, code, str(folder / "synthetic_spectra.yaml"))
    assert not out.exists()


def test_missing_config_dir(capsys, tmp_path):
    code = main(["config", "--config-dir", str(tmp_path / "nowhere")])
    assert_user_error(capsys, code, "nowhere", "not found")


@pytest.mark.parametrize("seeds", [",", "1,,2", "abc", "-1", "1,1"])
def test_bad_seeds_exit_2_naming_the_parameter(capsys, tmp_path, seeds):
    out = tmp_path / "out"
    code = main(["train", "--out", str(out), f"--seeds={seeds}", *tiny_args()])
    assert_user_error(capsys, code, "--seeds")
    assert not out.exists()


@pytest.mark.parametrize("command", ["generate", "train"])
def test_bad_data_seeds_exit_2_naming_the_parameter(capsys, tmp_path, command):
    out = tmp_path / "out"
    code = main([command, "--out", str(out), "--data-seeds", "4,x", *tiny_args()])
    assert_user_error(capsys, code, "--data-seeds")
    assert not out.exists()


def test_plot_on_a_folder_that_is_not_an_experiment(capsys, tmp_path):
    code = main(["plot", str(tmp_path)])
    assert_user_error(capsys, code, str(tmp_path), "experiment folder")


def test_config_prints_the_resolved_configuration(capsys):
    assert main(["config", "--set", "training.epochs=3", "--set", "physics.lines.3.strength=0.25"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["training"]["epochs"] == 3
    assert printed["physics"]["lines"][3]["strength"] == 0.25
    assert printed["data"]["splits"]["train"]["n_samples"] == 4096


def test_generate_writes_safely_loadable_tensors(capsys, tmp_path):
    out = tmp_path / "data"
    assert main(["generate", "--out", str(out), "--data-seeds", "5", *tiny_args()]) == 0
    index = json.loads((out / "datasets.json").read_text())
    assert {k: v["n_samples"] for k, v in index["splits"].items()} == {"train": 192, "test": 64, "val": 64}
    for split, n in (("train", 192), ("test", 64), ("val", 64)):
        spectra = torch.load(out / f"{split}_spectra.pt", weights_only=True)
        abundances = torch.load(out / f"{split}_abundances.pt", weights_only=True)
        assert spectra.shape == (n, 64) and abundances.shape == (n, 20)
        assert spectra.dtype == torch.float32 and bool((abundances >= 0).all())
        torch.load(out / f"{split}_meta.pt", weights_only=True)
    # same seed -> the same bytes; several data seeds -> one folder each
    again = tmp_path / "again"
    assert main(["generate", "--out", str(again), "--data-seeds", "5", *tiny_args()]) == 0
    assert torch.equal(torch.load(again / "train_spectra.pt", weights_only=True),
                       torch.load(out / "train_spectra.pt", weights_only=True))
    many = tmp_path / "many"
    assert main(["generate", "--out", str(many), "--data-seeds", "1,2", *tiny_args()]) == 0
    assert (many / "data_seed-1" / "datasets.json").is_file() and (many / "data_seed-2" / "datasets.json").is_file()
    assert not torch.equal(torch.load(many / "data_seed-1" / "test_spectra.pt", weights_only=True),
                           torch.load(many / "data_seed-2" / "test_spectra.pt", weights_only=True))


@pytest.mark.slow
def test_train_then_plot(capsys, tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--seeds", "3,4", "--data-seeds", "9", *tiny_args()]) == 0
    printed = capsys.readouterr().out
    assert "gap/comp10" in printed and "test/mse/comp4" in printed

    traj = pd.read_csv(out / "trajectory_data.csv")
    assert sorted(traj.seed.unique()) == [3, 4] and (traj.data_seed == 9).all()
    assert len(traj) == 2 * 5
    summary = pd.read_csv(out / "summary.csv")
    assert sorted(summary.seed) == [3, 4] and "gap/comp10" in summary.columns
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["physics"]["n_bins"] == 64 and cfg["training"]["epochs"] == 2

    for seed in (3, 4):
        ckpts = sorted((out / "checkpoints" / f"seed-{seed}").glob("*.pt"))
        assert len(ckpts) == 5
        pred = np.load(out / "predictions" / f"test_seed-{seed}.npy")
        assert pred.shape == (64, 20)
        test_spectra = _regenerated_test_spectra(out)
        with torch.no_grad():
            np.testing.assert_allclose(load_member(ckpts[-1])(test_spectra).numpy(), pred, rtol=0, atol=1e-5)

    plots = out / "plots"
    assert sorted(p.name for p in plots.glob("*.png")) == sorted(FIGURES)  # `train` draws them
    for name in FIGURES:
        (plots / name).unlink()  # `plot` must redraw them from the folder alone
    assert main(["plot", str(out)]) == 0
    for name in FIGURES:
        path = plots / name
        assert path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name


def _regenerated_test_spectra(out) -> torch.Tensor:
    from speccomp.core.experiment import read_config
    from speccomp.spectra.data import generate_datasets

    return generate_datasets(read_config(out / "config.yaml"), 9)["test"].spectra
