"""The matrices domain: the generator's rules (re-derived by an independent checker), the
I-RAVEN answer set, compositional splits, reproducibility, the task interface, training and the
tracked `main` on `configs/raven`, and bad inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from speccomp.core.config import ConfigError
from speccomp.core.models import load_member
from speccomp.core.task import get_task, load_any_config, task_for, task_for_dir
from speccomp.core.training import train
from speccomp.matrices.config import MatricesExperimentConfig
from speccomp.matrices.data import generate_datasets
from speccomp.matrices.generator import ATTRIBUTES, LEVELS, N_CONTEXT, RULES, SplitSpec, generate
from speccomp.matrices.render import render_panels
from tests.conftest import ListLogger

REPO = Path(__file__).resolve().parent.parent
RAVEN = REPO / "configs" / "raven"
TINY = [
    "data.splits.train.n_samples=400",
    "data.splits.test.n_samples=200",
    "data.validation.n_samples=200",
    "training.epochs=2",
    "training.batch_size=64",
    "training.hidden_dims=[32,16]",
    "training.checkpoint_ratio=0.5",
]


def raven(*extra: str) -> MatricesExperimentConfig:
    return load_any_config(RAVEN, [*TINY, *extra])


# --------------------------------------------------------------------------------------------
# an independent checker: plain Python over one 3 x 3 grid of one attribute
# --------------------------------------------------------------------------------------------
def rules_of(grid: list[list[int]]) -> set[str]:
    """Every rule family that all three rows of a 3 x 3 grid satisfy."""
    found = set()
    if all(a == b == c for a, b, c in grid):
        found.add("constant")
    d = grid[0][1] - grid[0][0]
    if d in (-2, -1, 1, 2) and all(b - a == d and c - b == d for a, b, c in grid):
        found.add("progression")
    for sign in (1, -1):
        if all(c == a + sign * b and b >= 1 for a, b, c in grid):
            found.add("arithmetic")
    first = grid[0]
    if len(set(first)) == 3:
        left = [first[1:] + first[:1], first[2:] + first[:2]]
        right = [first[2:] + first[:2], first[1:] + first[:1]]
        if [list(grid[1]), list(grid[2])] in (left, right):
            found.add("distribute_three")
    return found


def completed_grid(values: np.ndarray, candidate: np.ndarray, attribute: int) -> list[list[int]]:
    cells = [int(v) for v in values[:N_CONTEXT, attribute]] + [int(candidate[attribute])]
    return [cells[0:3], cells[3:6], cells[6:9]]


def check_matrix(values: np.ndarray, target: int, rules: np.ndarray) -> None:
    """Each attribute's rule re-derived from the completed matrix; exactly one candidate fits."""
    n_cand = values.shape[0] - N_CONTEXT
    answer = values[N_CONTEXT + target]
    for a in range(len(ATTRIBUTES)):
        assert rules_of(completed_grid(values, answer, a)) == {RULES[rules[a]]}
    fitting = [c for c in range(n_cand)
               if all(rules_of(completed_grid(values, values[N_CONTEXT + c], a)) for a in range(len(ATTRIBUTES)))]
    assert fitting == [target]


def full_spec(n_candidates: int = 8, **kw) -> SplitSpec:
    ranges = np.array([LEVELS[a] for a in ATTRIBUTES])
    return SplitSpec(ranges, np.ones((len(RULES), len(ATTRIBUTES)), bool), n_candidates, **kw)


@pytest.mark.parametrize("n_candidates", [2, 4, 8, 16])
def test_every_matrix_follows_its_rules_and_exactly_one_candidate_is_correct(n_candidates):
    batch = generate(np.random.default_rng(n_candidates), full_spec(n_candidates), 300)
    assert batch.values.shape == (300, N_CONTEXT + n_candidates, 4)
    for m in range(len(batch)):
        check_matrix(batch.values[m], int(batch.target[m]), batch.rules[m])
    # every rule on every attribute occurs, and the answer's place is spread over the candidates
    for a in range(len(ATTRIBUTES)):
        assert set(batch.rules[:, a]) == set(range(len(RULES)))
    assert set(batch.target) == set(range(n_candidates))


def test_the_splits_of_the_raven_config_follow_their_rules():
    data = generate_datasets(raven(), 7)
    for split in data.values():
        for m in range(0, len(split), 3):
            check_matrix(split.batch.values[m], int(split.target[m]), split.batch.rules[m])


def test_answer_set_is_a_balanced_bisection_tree():
    """Per attribute, the candidates take at most two values; when two, each in exactly half of
    them, so neither majority nor rarity points at the answer."""
    batch = generate(np.random.default_rng(3), full_spec(8), 500)
    cands = batch.values[:, N_CONTEXT:]
    modified = 0
    for a in range(len(ATTRIBUTES)):
        for m in range(len(batch)):
            values, counts = np.unique(cands[m, :, a], return_counts=True)
            assert len(values) in (1, 2)
            if len(values) == 2:
                assert list(counts) == [4, 4]
                modified += 1
    assert modified == 3 * len(batch)  # log2(8) = 3 levels of the tree
    # candidates with equal counts share their slots, so positions tell nothing either
    for m in range(50):
        for count in np.unique(cands[m, :, 0]):
            slots = batch.positions[m, N_CONTEXT:][cands[m, :, 0] == count]
            assert (slots == slots[0]).all() and slots[0].sum() == count


# --------------------------------------------------------------------------------------------
# splits
# --------------------------------------------------------------------------------------------
def test_heldout_pairs_never_reach_train_or_validation_and_every_test_matrix_has_one():
    cfg = raven("data.heldout_pairs=[{rule: progression, attribute: size}, {rule: arithmetic, attribute: colour}]")
    data = generate_datasets(cfg, 42)
    held = [(RULES.index("progression"), ATTRIBUTES.index("size")), (RULES.index("arithmetic"), ATTRIBUTES.index("colour"))]
    for name in ("train", "val"):
        rules = data[name].batch.rules
        for r, a in held:
            assert not (rules[:, a] == r).any(), name
        # the other rules on size and progression on the other attributes are seen
        assert set(rules[:, ATTRIBUTES.index("size")]) == set(range(len(RULES))) - {RULES.index("progression")}
        assert (rules[:, ATTRIBUTES.index("number")] == RULES.index("progression")).any()
    test_rules = data["test"].batch.rules
    hit = np.zeros(len(data["test"]), bool)
    for r, a in held:
        hit |= test_rules[:, a] == r
    assert hit.all()


def test_heldout_values_never_reach_train_and_every_test_matrix_shows_one():
    cfg = raven("data.heldout_pairs=[]", "data.heldout_values={size: [4, 5]}")
    data = generate_datasets(cfg, 42)
    size = ATTRIBUTES.index("size")
    for name in ("train", "val"):
        assert data[name].batch.values[:, :, size].max() <= 3  # candidates included
    grid = data["test"].batch.grid()[:, size]
    assert (grid >= 4).any(axis=(1, 2)).all()


def test_neutral_split_draws_test_like_train():
    cfg = raven("data.heldout_pairs=[]")
    data = generate_datasets(cfg, 42)
    for name in ("train", "test"):
        assert set(data[name].batch.rules.ravel()) == set(range(len(RULES)))


def test_same_seed_same_matrices_other_seed_other_matrices():
    a, b = generate_datasets(raven(), 42), generate_datasets(raven(), 42)
    c = generate_datasets(raven(), 43)
    for name in a:
        assert torch.equal(a[name].panels, b[name].panels) and torch.equal(a[name].target, b[name].target)
        assert a[name].digest == b[name].digest != c[name].digest
        assert not torch.equal(a[name].panels, c[name].panels)


def test_splits_are_independent():
    base = generate_datasets(raven(), 42)
    resized = generate_datasets(raven("data.splits.test.n_samples=50", "data.validation.n_samples=30"), 42)
    assert torch.equal(base["train"].panels, resized["train"].panels)
    assert base["train"].digest != base["val"].digest  # val is drawn like train, from its own stream


def test_rendering_is_deterministic_and_shows_the_objects():
    batch = generate(np.random.default_rng(0), full_spec(), 20)
    values, slots = batch.values.reshape(-1, 4), batch.positions.reshape(-1, 9)
    images = render_panels(values, slots, 48)
    assert images.shape == (len(values), 48, 48) and images.dtype == np.float32
    np.testing.assert_array_equal(images, render_panels(values, slots, 48))
    assert (images.min(axis=(1, 2)) == 0.0).all()  # every panel has an outlined object
    one = render_panels(values[:1] * 0 + np.array([[1, 4, 5, 9]]), np.eye(9, dtype=bool)[:1])
    assert (one[0, 16:, :] == 1.0).all() and (one[0, :16, 16:] == 1.0).all()  # only the top-left slot is drawn


# --------------------------------------------------------------------------------------------
# the task interface and training
# --------------------------------------------------------------------------------------------
def test_the_config_folder_selects_the_domain():
    assert task_for_dir(RAVEN).name == "matrices"
    assert task_for_dir(REPO / "configs").name == "spectra" == task_for_dir(None).name
    cfg = raven()
    assert task_for(cfg) is get_task("matrices")
    assert cfg.chance == 0.125


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    cfg = raven("training.checkpoint_retention=last")
    data = generate_datasets(cfg, 42)
    logger = ListLogger()
    out = tmp_path_factory.mktemp("raven")
    return cfg, data, train(cfg, data, [1, 2], logger=logger, out_dir=out), logger


def test_training_reports_accuracy_metrics_and_the_gap(trained):
    cfg, data, result, logger = trained
    final = result.by_seed(1).final
    for name in ("val/acc", "test/acc", "val/loss", "test/loss", "gap/acc", "chance/acc"):
        assert name in final, name
    assert final["chance/acc"] == 0.125
    assert final["gap/acc"] == pytest.approx(final["val/acc"] - final["test/acc"])
    scores = torch.from_numpy(result.by_seed(1).test_predictions)
    assert scores.shape == (len(data["test"]), 8)
    assert final["test/acc"] == pytest.approx(float((scores.argmax(-1) == data["test"].target).double().mean()))
    pairs = [k for k in final if k.startswith("test/acc/")]
    assert "test/acc/progression/size" in pairs  # the held-out pair is scored on its own
    assert all(0.0 <= final[k] <= 1.0 for k in pairs)
    assert {"val/acc", "test/acc", "train_loss"} <= set(result.trajectory.columns)
    assert logger.history(1, "test/acc")[0][0] == 0


def test_seeds_are_reproducible_and_differ(trained):
    cfg, data, result, _ = trained
    again = train(cfg, data, [2], out_dir=None)
    np.testing.assert_allclose(again.by_seed(2).test_predictions, result.by_seed(2).test_predictions, atol=1e-5)
    assert not np.allclose(result.by_seed(1).test_predictions, result.by_seed(2).test_predictions)


def test_checkpoint_reloads_to_the_same_scores(trained):
    _, data, result, _ = trained
    member = load_member(result.by_seed(1).checkpoint_paths[-1])
    with torch.no_grad():
        scores = member(data["test"].panels).numpy()
    np.testing.assert_allclose(scores, result.by_seed(1).test_predictions, atol=1e-5)


@pytest.mark.parametrize("model", ["raven_mlp", "raven_wren", "raven_candidates", "raven_seq"])
def test_every_matrices_model_maps_panels_to_candidate_scores(model):
    from speccomp.core.models import build_model
    from speccomp.core.seeding import torch_generator

    cfg = raven(f"training.model_type={model}")
    data = generate_datasets(cfg, 1)
    spec = get_task("matrices").model_spec(cfg, data["train"])
    net = build_model(spec, [torch_generator(s, "init") for s in (1, 2)])
    out = net(data["train"].panels[:5].unsqueeze(0).expand(2, -1, -1, -1))
    assert out.shape == (2, 5, 8)


def test_candidates_only_model_ignores_the_context():
    from speccomp.core.models import build_model
    from speccomp.core.seeding import torch_generator

    cfg = raven("training.model_type=raven_candidates")
    data = generate_datasets(cfg, 1)
    net = build_model(get_task("matrices").model_spec(cfg, data["train"]), [torch_generator(0, "init")])
    x = data["train"].panels[:4].unsqueeze(0).clone()
    y = x.clone()
    y[:, :, :N_CONTEXT] = torch.rand_like(y[:, :, :N_CONTEXT])
    torch.testing.assert_close(net(x), net(y))


@pytest.mark.slow
def test_no_candidate_only_shortcut_but_the_matrix_is_learnable():
    """Trained the same way on 6,000 matrices: the candidates-only model stays near chance on the
    held-out split (measured 0.12-0.14); the matrix-seeing MLP reaches ~0.35 in distribution."""
    sizes = ["data.splits.train.n_samples=6000", "data.splits.test.n_samples=1000",
             "data.validation.n_samples=1000", "training.epochs=10", "training.checkpoint_ratio=0.5"]
    shortcut = load_any_config(RAVEN, [*sizes, "training.model_type=raven_candidates"])
    data = generate_datasets(shortcut, 42)
    probe = train(shortcut, data, [1]).by_seed(1).final
    assert probe["test/acc"] <= 0.20
    seeing = load_any_config(RAVEN, [*sizes, "training.model_type=raven_mlp"])
    learned = train(seeing, data, [1]).by_seed(1).final
    assert learned["val/acc"] >= 0.25 > 2 * 0.125 - 0.01
    assert learned["val/acc"] > probe["val/acc"] + 0.1


# --------------------------------------------------------------------------------------------
# bad inputs: one line naming the key, exit 2 (through the tracked entry point)
# --------------------------------------------------------------------------------------------
BAD = {
    "unknown-rule": ("data.heldout_pairs=[{rule: rotation, attribute: size}]", "data.heldout_pairs.0.rule"),
    "unknown-attribute": ("data.heldout_pairs=[{rule: progression, attribute: shape}]", "data.heldout_pairs.0.attribute"),
    "unknown-rule-listed": ("matrices.rules=[constant, rotation]", "matrices.rules.1"),
    "unknown-range-attribute": ("matrices.ranges={angle: [0, 3]}", "matrices.ranges.angle"),
    "every-pair-of-an-attribute": (
        "data.heldout_pairs=[{rule: constant, attribute: size}, {rule: progression, attribute: size}, "
        "{rule: arithmetic, attribute: size}, {rule: distribute_three, attribute: size}]", "data.heldout_pairs"),
    "empty-range": ("matrices.ranges.size=[4, 2]", "matrices.ranges.size"),
    "empty-heldout-values": ("data.heldout_values={size: [5, 3]}", "data.heldout_values.size"),
    "one-candidate": ("matrices.n_candidates=1", "matrices.n_candidates"),
    "spectra-model": ("training.model_type=mlp", "training.model_type"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_matrices_config_is_one_line_naming_the_key(case):
    override, key = BAD[case]
    with pytest.raises(ConfigError) as info:
        raven(override)
    message = str(info.value)
    assert "\n" not in message and key in message, message


@pytest.mark.parametrize("case", ["unknown-rule", "every-pair-of-an-attribute", "empty-range", "one-candidate"])
def test_bad_matrices_config_exits_2_before_any_run(case, tmp_path, monkeypatch, capsys):
    from speccomp_cli.main import main

    override, key = BAD[case]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.chdir(tmp_path)
    assert main(["run", "--seeds", "1", "--config-dir", str(RAVEN), "--set", override]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and key in lines[0], lines
    assert not (tmp_path / "mlruns").exists()


def test_config_folder_without_the_data_file_is_refused(tmp_path):
    (tmp_path / "matrices.yaml").write_text("n_candidates: 8\n")
    with pytest.raises(ConfigError, match="config_dir: .* has no data_distribution.yaml"):
        get_task("matrices").check_config_dir(tmp_path)


def test_the_raven_study_space_loads_against_the_raven_config():
    from study.space import SpaceError, load_space

    base = raven()
    space = load_space(REPO / "configs" / "spaces" / "raven.yaml", base)
    assert {p.name for p in space.params} >= {"heldout_pair", "n_train", "training.model_type"}
    bad = REPO / "tests" / "data" / "no-such-space.yaml"
    with pytest.raises(SpaceError):
        load_space(bad, base)


@pytest.mark.parametrize("value,expected", [
    ("progression/size", ["data.heldout_pairs=[{rule: progression, attribute: size}]"]),
    ("none", ["data.heldout_pairs=[]"]),
])
def test_named_heldout_pair_setting(value, expected):
    from study.space import overrides_for

    assert overrides_for({"heldout_pair": value}) == expected
    load_any_config(RAVEN, [*TINY, *expected])  # and the config accepts it


# --------------------------------------------------------------------------------------------
# the tracked `main` on configs/raven: the records it leaves
# --------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_tracked_main_on_the_raven_folder_leaves_its_records(tmp_path, monkeypatch):
    from mlflow import MlflowClient

    from speccomp_cli.main import main

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.chdir(tmp_path)
    sets = [a for item in TINY for a in ("--set", item)]
    assert main(["run", "--seeds", "1,2", "--config-dir", str(RAVEN), "--run-name", "raven", *sets]) == 0
    client = MlflowClient(uri)
    (parent,) = client.search_runs([e.experiment_id for e in client.search_experiments()],
                                   "attributes.run_name = 'raven'")
    assert parent.data.tags["domain"] == "matrices" and parent.data.tags["heldout"] == "progression/size"
    kids = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert sorted(int(k.data.tags["seed"]) for k in kids) == [1, 2]
    for kid in kids:
        assert kid.info.status == "FINISHED"
        for name in ("val/acc", "test/acc", "gap/acc", "chance/acc", "test/acc/progression/size", "train/loss"):
            assert name in kid.data.metrics, name
        assert len(client.get_metric_history(kid.info.run_id, "test/acc")) == 3  # steps 0, middle, last
    for name in ("val/acc", "std/val/acc", "test/acc", "gap/acc", "chance/acc"):
        assert name in parent.data.metrics, name
    plots = {Path(a.path).name for a in client.list_artifacts(parent.info.run_id, "plots")}
    assert plots == {"pair_accuracy.png", "accuracy_curves.png", "matrices.png"}
    # and the figures redraw from MLflow alone
    from tracking.readback import redraw_from_mlflow, trajectory_from_runs

    trajectory = trajectory_from_runs(parent.info.run_id, client)
    assert list(trajectory["step"].unique()) == [0, 7, 14] and trajectory["test/acc"].notna().all()
    drawn = redraw_from_mlflow(parent.info.run_id, tmp_path / "redrawn", client=client)
    assert {p.name for p in drawn.values()} == plots


def test_every_pair_is_a_compositional_task_a_meta_learner_can_load():
    cfg = raven()
    tasks = get_task("matrices").compositional_tasks(cfg)
    assert len(tasks) == len(RULES) * len(ATTRIBUTES)
    held = load_any_config(RAVEN, [*TINY, *tasks["arithmetic/colour"]])
    assert [p.label for p in held.data.heldout_pairs] == ["arithmetic/colour"]


@pytest.mark.slow
def test_mlflow_run_with_the_raven_config_dir(tmp_path):
    """The issue's command, as a user types it (shrunk by overrides): one parent, a child per seed."""
    import os
    import subprocess
    import sys

    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    bin_dir = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(MLFLOW_TRACKING_URI=uri, MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false", PYTHONPATH=str(REPO),
               PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    done = subprocess.run(
        [str(bin_dir / "mlflow"), "run", str(REPO), "--env-manager", "local", "-P", "config_dir=configs/raven",
         "-P", "seeds=123,124", "-P", f"overrides={' '.join(TINY)}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "test/acc" in done.stdout and "chance accuracy 0.125" in done.stdout
    client = MlflowClient(uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    (parent,) = [r for r in runs if r.data.tags.get("mlflow.project.entryPoint") == "main"]
    assert parent.info.status == "FINISHED" and parent.data.tags["domain"] == "matrices"
    kids = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(int(k.data.tags["seed"]) for k in kids) == [123, 124]
    assert all("gap/acc" in k.data.metrics for k in kids)


def test_figures_are_drawn_from_a_training(trained, tmp_path):
    from speccomp.core.experiment import predictions_by_seed
    from speccomp.matrices.figures import FIGURES, draw_all, pair_accuracy

    cfg, data, result, _ = trained
    paths = draw_all(tmp_path, cfg, data, result.trajectory, predictions_by_seed(result))
    assert {p.name for p in paths.values()} == set(FIGURES.values())
    assert all(p.stat().st_size > 5_000 for p in paths.values())
    acc, count = pair_accuracy(data["test"], predictions_by_seed(result), cfg.matrices.rules)
    size, progression = ATTRIBUTES.index("size"), cfg.matrices.rules.index("progression")
    assert count[progression, size] == len(data["test"])  # every test matrix holds the held-out pair
    assert np.isnan(acc[cfg.matrices.rules.index("constant"), size])  # other rules on size: none in test


def test_matrices_figure_captions_are_readable(tmp_path, monkeypatch):
    """Every text of `matrices.png` (title, the rules under each matrix) is at least 8 pt, with one
    caption per matrix shown."""
    from matplotlib.figure import Figure

    from speccomp.matrices.figures import draw_matrices

    cfg = raven()
    test = task_for(cfg).generate(cfg, 42)["test"]
    sizes: list[tuple[str, float]] = []
    save = Figure.savefig

    def recording(fig, *args, **kwargs):
        sizes.extend((t.get_text(), t.get_fontsize()) for ax in fig.axes for t in [*ax.texts, ax.title] if t.get_text())
        return save(fig, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", recording)
    draw_matrices(tmp_path / "matrices.png", test, {}, cfg.matrices.image_size, n_show=2)
    captions = [text for text, _ in sizes if text.startswith("matrix ")]
    assert len(captions) == 2 and all(size >= 8 for _, size in sizes), sizes
