"""The meta-learner on the matrices domain (`configs/meta/raven.yaml`): a task is one (rule,
attribute) pair held out of training. Its tasks are disjoint and drawn from the 16 pairs, a task's
training matrices never hold its pair while its query / test matrices all do, a task's data does
not depend on which other tasks were drawn, every method is scored by held-out accuracy with
chance beside it, the tracked run leaves its records, and each bad input is one line."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from speccomp.core.config import ConfigError
from speccomp.matrices.generator import ATTRIBUTES, RULES
from speccomp.matrices.meta_tasks import RuleAttribute
from speccomp.matrices.search import MATRICES
from speccomp.meta.bank import SplitBank
from speccomp.meta.compare import comparison_table
from speccomp.meta.run import build_task_bank, plan_meta, run_meta
from speccomp.meta.settings import ENV_NAMES
from speccomp.meta.tasks import pair_name

TINY = ["matrices_tasks.n_train=96", "matrices_tasks.n_val=48", "matrices_tasks.n_query=32", "matrices_tasks.n_test=64",
        "inner.steps=1", "inner.batch_size=16", "inner.query_batch_size=16", "adapt.candidates=1",
        "adapt.candidate_steps=2", "adapt.search_steps=2", "adapt.finetune_steps=3", "adapt.batch_size=16",
        "baselines.nas_iterations=2", "log_every=2"]
FLAGS = {"num_meta_training_tasks": "5", "num_meta_testing_tasks": "2", "architecture_search_iterations": "4"}


@pytest.fixture(autouse=True)
def _no_env(monkeypatch, tmp_path):
    for name in ENV_NAMES.values():
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no .env of the checkout


def plan(flags=None, *overrides: str):
    return plan_meta({**FLAGS, **(flags or {})}, "raven", [*TINY, *overrides], env_file=None)


def test_tasks_are_disjoint_rule_attribute_pairs_drawn_per_seed():
    p = plan()
    train, test = p.tasks.meta_train, p.tasks.meta_test
    assert len(train) == 5 and len(test) == 2 and not set(train) & set(test)
    assert all(isinstance(t, RuleAttribute) and t[0] in RULES and t[1] in ATTRIBUTES for t in train + test)
    assert pair_name(test[0]) == f"{test[0][0]}/{test[0][1]}"
    assert plan().tasks == p.tasks
    assert plan({"task_generator_seed": "7"}).tasks != p.tasks


def test_a_task_trains_without_its_pair_and_is_queried_and_tested_on_it():
    p = plan()
    bank = build_task_bank(p)
    assert isinstance(bank, SplitBank) and bank.search is MATRICES
    for task in [*p.tasks.meta_train, *p.tasks.meta_test]:
        rule, attr = RULES.index(task[0]), ATTRIBUTES.index(task[1])
        assert not np.any(bank.train[task].batch.rules[:, attr] == rule), task
        assert not np.any(bank.val[task].batch.rules[:, attr] == rule), task
        held = (bank.test if task in p.tasks.meta_test else bank.query)[task]
        assert np.all(held.batch.rules[:, attr] == rule), task
    rows = bank.train_rows(p.tasks.meta_train[1])
    assert torch.equal(bank.train_x[rows], bank.train[p.tasks.meta_train[1]].panels)
    # a task's data does not depend on the other tasks drawn
    other = build_task_bank(plan({"task_generator_seed": "3"}))
    for task in set(bank.train) & set(other.train):
        assert bank.train[task].digest == other.train[task].digest


@pytest.mark.slow
def test_run_scores_every_method_by_held_out_accuracy_with_chance():
    p = plan()
    outcome = run_meta(p)
    per_pair = outcome.per_pair
    assert set(per_pair.method) == {"meta", "meta-weights", "meta-arch", "prior", "nas", "default", "wren", "chance"}
    assert set(per_pair.pair) == {pair_name(t) for t in p.tasks.meta_test}
    assert np.allclose(per_pair.test_error, 1 - per_pair.test_acc) and (per_pair.chance_acc == 0.125).all()
    assert (per_pair[per_pair.method == "chance"].test_acc == 0.125).all()
    real = per_pair[per_pair.method != "chance"]
    assert real.test_acc.between(0, 1).all() and np.allclose(real.gap, real["val/acc"] - real["test/acc"])
    losses = [r.query_loss for r in outcome.training.records]
    assert all(math.isfinite(v) for v in losses) and abs(np.mean(losses) - math.log(8)) < 0.7  # cross-entropy of 8
    table = comparison_table(per_pair).set_index("method")
    assert {"median_test_error", "median_test_acc", "meta_wins", "wilcoxon_p"} <= set(table.columns)
    assert "median_ratio_to_oracle" not in table.columns


BAD = [
    ({}, ["baselines.methods=[default, loglinear]"],
     "baselines.methods: loglinear is a spectra model and the experiment is of the matrices domain; "
     "allowed: meta-weights, meta-arch, default, wren, prior, nas"),
    ({}, ["tasks.held_out_components=2"], "tasks.held_out_components: 2; allowed: 0 on the matrices domain"),
    ({"num_meta_training_tasks": "13", "num_meta_testing_tasks": "4"}, [],
     "more than the 16 (rule, attribute) tasks; allowed: a sum <= 16"),
    ({"num_meta_testing_tasks": "17"}, [], "more tasks than the 16 (rule, attribute) tasks available for meta-testing"),
    ({}, ["experiment.overrides=[matrices.rules=[constant]]"],
     "meta override experiment.overrides: '[matrices.rules=[constant]]' is not a YAML value (line 1, column 17)"),
    ({}, ["experiment.overrides=['matrices.rules=[constant]']"],
     "data.heldout_pairs.0.rule: rule 'progression' is not in matrices.rules; allowed: constant"),
    ({}, ["space=configs/nas/spectra.yaml"], "input_transforms: log, standardize, log+standardize cannot be used on the "
     "matrices domain; allowed: none"),
]


@pytest.mark.parametrize(("flags", "overrides", "text"), BAD, ids=[t[:40] for *_, t in BAD])
def test_bad_matrices_meta_input_is_one_line(flags, overrides, text):
    with pytest.raises(ConfigError) as info:
        plan(flags, *overrides)
    assert text in str(info.value) and "\n" not in str(info.value)


def test_a_matrices_model_is_refused_on_spectra():
    with pytest.raises(ConfigError, match="baselines.methods: wren is a matrices model and the experiment is of the "
                                          "spectra domain; allowed: meta-weights, meta-arch, default, loglinear, prior, nas"):
        plan_meta(FLAGS, "smoke", ["baselines.methods=[default, wren]"], env_file=None)


# ------------------------------------------------------------------------------------------------
# tracked
# ------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_tracked_meta_on_raven_leaves_its_records(tmp_path, capsys):
    import yaml

    from speccomp.core.task import load_any_config
    from speccomp_cli.main import main
    from tests.conftest import isolated_store

    args = ["meta", "--config", "raven", "--run-name", "meta-raven", "--overrides", " ".join(TINY), "--threads", "1"]
    for k, v in FLAGS.items():
        args += [f"--{k}", v]
    with isolated_store(tmp_path) as store:
        assert main(args) == 0
    assert "chance accuracy 0.125" in capsys.readouterr().out
    client = store.client
    exps = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(exps)
    parent = next(r for r in runs if r.info.run_name == "meta-raven")
    assert parent.info.status == "FINISHED"
    m = parent.data.metrics
    assert {"comparison/meta/median_test_error", "comparison/meta/median_test_acc",
            "comparison/wren/wilcoxon_p", "meta/query_loss"} <= set(m)
    kids = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(kids) == 2 * 8 and {k.data.tags["method"] for k in kids} == {
        "meta", "meta-weights", "meta-arch", "prior", "nas", "default", "wren", "chance"}
    assert all("/" in k.data.tags["pair"] for k in kids)
    path = client.download_artifacts(parent.info.run_id, "meta/architecture_map.yaml", str(tmp_path))
    assert yaml.safe_load(Path(path).read_text())["training"]["model_type"] == "raven_seq"
    from speccomp.core.config import default_config_dir

    assert load_any_config(default_config_dir() / "raven", [], presets=[path]).training.model_type == "raven_seq"
    plots = {a.path for a in client.list_artifacts(parent.info.run_id, "plots")}
    assert {"plots/meta_test.png", "plots/meta_posterior.png"} <= plots
