"""Architecture search on the matrices domain (configs/raven): the supernet scores candidates as
the derived `raven_seq` model does, the search is deterministic and minimises the candidates'
cross-entropy, the derived preset trains through the ordinary loop, a space the domain cannot
search is refused in one line, and `speccomp nas --config-dir configs/raven` leaves its records."""

from __future__ import annotations

import math
import random
from types import SimpleNamespace

import pytest
import torch
import yaml

from speccomp.core.config import ConfigError, default_config_dir
from speccomp.core.models import build_model
from speccomp.core.seeding import torch_generator
from speccomp.core.task import get_task, load_any_config
from speccomp.core.training import train
from speccomp.matrices.search import MATRICES
from speccomp.nas import (
    inherit_weights,
    load_space,
    one_hot_weights,
    preset_of,
    run_search,
    space_from_dict,
    write_preset,
)
from speccomp.nas.domain import domain_for_config, domain_of
from speccomp.spectra.search import SPECTRA
from tests.conftest import isolated_store
from tests.test_nas_tracking import _assert_refused
from tests.test_tracking import all_runs, runs_named

RAVEN = default_config_dir() / "raven"
TINY = ["data.splits.train.n_samples=256", "data.splits.test.n_samples=128", "data.validation.n_samples=128",
        "training.epochs=1", "training.batch_size=32", "training.hidden_dims=[16, 8]"]
SPACE = {
    "input_transforms": ["none"],
    "activations": ["relu", "tanh"],
    "conv": {"positions": 0},
    "dense": {"positions": 2, "ops": ["dense16", "dense32", "identity", "zero"]},
    "search": {"architecture_search_iterations": 30, "batch_size": 16, "weight_learning_rate": 0.003},
}


@pytest.fixture(scope="module")
def tiny():
    cfg = load_any_config(RAVEN, TINY)
    return SimpleNamespace(cfg=cfg, data=get_task("matrices").generate(cfg, 3), space=space_from_dict(SPACE))


def test_domains_are_told_apart(tiny):
    assert domain_for_config(tiny.cfg) is MATRICES and domain_of(tiny.data["train"]) is MATRICES
    assert domain_for_config(load_any_config(None)) is SPECTRA
    assert MATRICES.features_of(tiny.cfg) == 9 * tiny.data["train"].panels.shape[2]


def test_one_hot_supernet_scores_as_the_derived_raven_seq_model(tiny, tmp_path):
    """With one-hot weights the supernet's candidate scores are those of the `raven_seq` model built
    from the derived preset through the matrices config, weights copied in."""
    x, y = MATRICES.tensors(tiny.data["train"])
    net = MATRICES.supernet(tiny.space, x, y, torch.Generator().manual_seed(0))
    rng = random.Random(0)
    for k in range(6):
        choices = {d.name: rng.choice(d.options) for d in tiny.space.decisions}
        cfg = load_any_config(RAVEN, TINY, presets=[write_preset(preset_of(tiny.space, choices, "raven_seq"),
                                                                 tmp_path / f"a{k}.yaml")])
        assert cfg.training.model_type == "raven_seq"
        model = build_model(get_task("matrices").model_spec(cfg, tiny.data["train"]), [torch_generator(9, "init")]).eval()
        inherit_weights(net, choices, model)
        with torch.no_grad():
            expected = model(x[:12].unsqueeze(0))[0]
            got = MATRICES.forward(net, x[:12], one_hot_weights(tiny.space, choices))
        assert got.shape == (12, 8)
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_search_is_deterministic_and_scored_by_cross_entropy(tiny):
    a = run_search(tiny.space, tiny.data["train"], tiny.data["val"], 5)
    b = run_search(tiny.space, tiny.data["train"], tiny.data["val"], 5)
    c = run_search(tiny.space, tiny.data["train"], tiny.data["val"], 6)
    assert torch.equal(a.alpha_trajectory, b.alpha_trajectory)
    assert torch.equal(a.history.nan_to_num(-1.0), b.history.nan_to_num(-1.0))
    assert not torch.equal(a.alpha_trajectory, c.alpha_trajectory)
    assert a.domain is MATRICES and a.preset["training"]["model_type"] == "raven_seq"
    warm = a.warmup_iterations  # no validation loss while only the weights train
    assert torch.isnan(a.history[:warm, 2]).all() and bool(torch.isfinite(a.history[warm:]).all())
    # train and val cross-entropy of 8 candidates: ln 8 at chance
    assert abs(float(a.history[:5, 1].mean()) - math.log(8)) < 0.5
    assert abs(float(a.history[warm:warm + 5, 2].mean()) - math.log(8)) < 0.5
    assert not torch.equal(a.alpha_trajectory[0], a.alpha_trajectory[-1])


def test_derived_preset_trains_through_the_normal_loop(tiny, tmp_path):
    result = run_search(tiny.space, tiny.data["train"], tiny.data["val"], 5)
    cfg = load_any_config(RAVEN, TINY, presets=[write_preset(result.preset, tmp_path / "arch.yaml")])
    trained = train(cfg, tiny.data, [1, 2])
    assert trained.seeds[0].test_predictions.shape == (len(tiny.data["test"]), 8)
    final = trained.seeds[0].final
    assert {"test/acc", "val/acc", "gap/acc", "chance/acc"} <= set(final)
    assert final["gap/acc"] == pytest.approx(final["val/acc"] - final["test/acc"])


def test_a_space_with_spectra_transforms_is_refused_for_matrices(tiny):
    spectra_space = load_space(default_config_dir() / "nas" / "spectra.yaml")
    with pytest.raises(ConfigError, match=r"input_transforms: log, standardize, log\+standardize cannot be used on "
                                          r"the matrices domain; allowed: none"):
        run_search(spectra_space, tiny.data["train"], tiny.data["val"], 1)


def test_the_project_raven_space_loads_and_has_no_input_choice():
    space = load_space(default_config_dir() / "nas" / "raven.yaml")
    assert space.decision("input").options == ("none",) and space.conv_positions == 0
    MATRICES.check(space, MATRICES.features_of(load_any_config(RAVEN)))


# ------------------------------------------------------------------------------------------------
# the tracked entry point
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def store(tmp_path_factory):
    with isolated_store(tmp_path_factory.mktemp("mlflow-nas-raven")) as store:
        store.space = store.path / "space.yaml"
        store.space.write_text(yaml.safe_dump(SPACE))
        yield store


def run_nas(store, name: str, *extra: str) -> int:
    from speccomp_cli.main import main

    args = ["nas", "--seeds", "1,2", "--run-name", name, "--config-dir", str(RAVEN), "--space", str(store.space),
            "--architecture-search-iterations", "10"]
    return main([*args, *[a for item in TINY for a in ("--set", item)], *extra])


def test_spectra_space_on_the_raven_folder_is_one_line_exit_2(store, capsys):
    before = {r.info.run_id for r in all_runs(store.client)}
    code = run_nas(store, "bad", "--space", str(default_config_dir() / "nas" / "spectra.yaml"))
    _assert_refused(store, capsys, code, "input_transforms: log, standardize, log+standardize cannot be used on the "
                    "matrices domain; allowed: none", before)


@pytest.mark.slow
def test_nas_on_raven_tracks_search_and_compares_three_models(store, capsys, tmp_path):
    assert run_nas(store, "nas-raven") == 0
    out = capsys.readouterr().out
    assert "chance accuracy 0.125 (8 candidates)" in out and "\nwren " in out and "\nrandom " in out
    (parent,) = runs_named(store.client, "nas-raven")
    client = store.client
    assert parent.data.tags["domain"] == "matrices" and parent.data.params["compared_models"] == "nas,default,wren,random"
    kids = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    searches = [k for k in kids if k.data.tags["speccomp.role"] == "nas-search"]
    kids = [k for k in kids if k.data.tags["speccomp.role"] == "nas-retrain"]
    assert searches and all("nas/val_loss" in k.data.metrics and "nas/prob/dense1/dense16" in k.data.metrics
                            for k in searches)
    fixed = sorted((k.data.tags["model"], k.data.tags["seed"]) for k in kids if k.data.tags["model"] in ("default", "wren"))
    assert fixed == sorted((m, s) for m in ("default", "wren") for s in ("1", "2"))
    metrics = parent.data.metrics
    for model in ("nas", "default", "wren"):
        mine = [k.data.metrics["test/acc"] for k in kids if k.data.tags["model"] == model]
        assert metrics[f"compare/{model}/test/acc"] == pytest.approx(sum(mine) / len(mine))
        assert f"compare/{model}/std/gap/acc" in metrics and f"compare/{model}/val/acc" in metrics
    assert "nas/rank/val" in metrics and "nas/paired/val/pairs" in metrics
    path = client.download_artifacts(parent.info.run_id, "nas/architecture.yaml", str(tmp_path))
    cfg = load_any_config(RAVEN, TINY, presets=[path])
    assert cfg.training.model_type == "raven_seq"
    assert [k for k in kids if k.data.tags["model"] == "nas"][0].data.params["training.model_type"] == "raven_seq"
