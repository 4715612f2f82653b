"""The sensitivity report on planted trial tables (no training): a setting with a large effect is
significant, one without none is not; not-learned trials are counted, never scored; intervals,
Holm's correction and the disagreement sentence."""

from __future__ import annotations

import math

import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState

from study.report import build_report, holm

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
DISTRIBUTIONS = {
    "training.model_type": CategoricalDistribution(["mlp", "linear"]),
    "combined_fraction": FloatDistribution(0.0, 0.1),
}


def planted_study(n: int = 30, n_not_learned: int = 4, seed: int = 0) -> optuna.Study:
    """`training.model_type` moves transfer by 0.6 (linear 0.95, mlp 0.35, noise 0.05);
    `combined_fraction` does nothing. The last `n_not_learned` trials learned nothing (FAIL, no
    transfer), all of them mlp."""
    rng = np.random.default_rng(seed)
    study = optuna.create_study(direction="maximize", study_name="planted")
    study.set_user_attr("objective", "transfer")
    for i in range(n):
        params = {"training.model_type": "linear" if i % 2 else "mlp", "combined_fraction": float(rng.uniform(0, 0.1))}
        learned = i < n - n_not_learned
        if not learned:
            params["training.model_type"] = "mlp"
        transfer = (0.95 if params["training.model_type"] == "linear" else 0.35) + rng.normal(0, 0.05)
        attrs = {"skill_val_tracked_mean": 0.9 if learned else 0.1, "skill_val_tracked_std": 0.02,
                 "transfer_tracked_mean": transfer if learned else None, "transfer_tracked_std": 0.03,
                 "learned_skill": 0.5}
        study.add_trial(optuna.trial.create_trial(
            params=params, distributions=DISTRIBUTIONS, user_attrs=attrs,
            state=TrialState.COMPLETE if learned else TrialState.FAIL, value=transfer if learned else None,
        ))
    return study


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    return build_report(planted_study(), tmp_path_factory.mktemp("report"), n_boot_importance=5)


def _row(table, target, param):
    (row,) = table[(table["target"] == target) & (table["param"] == param)].to_dict("records")
    return row


def test_the_planted_effect_is_significant_and_the_null_setting_is_not(report):
    sig = report.significance
    model = _row(sig, "transfer", "training.model_type")
    assert model["test"] == "mann-whitney" and model["significant"] and model["p_holm"] < 1e-3
    assert model["n"] == 26  # the 4 not-learned trials have no transfer and are not scored
    null = _row(sig, "transfer", "combined_fraction")
    assert null["test"] == "spearman" and not null["significant"] and null["p_holm"] > 0.05
    summary = report.text.split("## Significance")[0]
    assert "transfer depends on training.model_type" in summary
    assert "combined_fraction" not in summary.split("transfer depends")[1].split("\n")[0]
    assert "depends on combined_fraction" not in summary


def test_effects_have_bootstrap_intervals_seed_spread_and_not_learned_counts(report):
    eff = report.effects[report.effects["target"] == "transfer"]
    linear = eff[(eff["param"] == "training.model_type") & (eff["value"] == "linear")].iloc[0]
    mlp = eff[(eff["param"] == "training.model_type") & (eff["value"] == "mlp")].iloc[0]
    assert linear["ci_low"] < linear["mean"] < linear["ci_high"] and 0.9 < linear["mean"] < 1.0
    assert mlp["ci_high"] < linear["ci_low"]  # the intervals do not overlap
    assert linear["n_not_learned"] == 0 and mlp["n_not_learned"] == 4 and mlp["n_with_value"] == mlp["n_trials"] - 4
    assert linear["seed_std"] == pytest.approx(0.03)
    assert eff[eff["param"] == "combined_fraction"]["n_trials"].sum() == 30
    assert "26 of 30 trials learned every tracked component" in report.text


def test_importances_have_bootstrap_intervals_and_sum_to_one(report):
    imp = report.importances.dropna(subset=["param"])
    assert set(imp["target"]) == {"transfer", "skill/val"}  # the objective is transfer: not repeated
    for _, group in imp.groupby(["target", "evaluator"]):
        assert group["importance"].sum() == pytest.approx(1.0)
    fanova = imp[(imp["target"] == "transfer") & (imp["evaluator"] == "fanova")].set_index("param")
    assert fanova.loc["training.model_type", "importance"] > 0.8
    assert (fanova["ci_low"] <= fanova["ci_high"]).all() and fanova["ci_low"].notna().all()
    assert {"effects.csv", "significance.csv", "importances.csv", "trials.csv", "effects.png", "report.md"} <= {
        p.name for p in report.files}


@pytest.mark.slow
def test_no_significant_effect_is_said_as_such(tmp_path):
    rng = np.random.default_rng(1)
    study = optuna.create_study(direction="minimize")
    for _ in range(12):
        params = {"training.model_type": str(rng.choice(["mlp", "linear"])), "combined_fraction": float(rng.uniform(0, 0.1))}
        study.add_trial(optuna.trial.create_trial(
            params=params, distributions=DISTRIBUTIONS, value=float(rng.normal()),
            user_attrs={"skill_val_tracked_mean": float(rng.normal(0.8, 0.05)),
                        "transfer_tracked_mean": float(rng.normal(0.9, 0.05))}))
    rep = build_report(study, tmp_path, n_boot_importance=3)
    summary = rep.text.split("## Significance")[0]
    assert "- transfer: no setting has a significant effect" in summary
    assert "- objective: no setting has a significant effect" in summary
    assert "depends on" not in summary


def test_two_importance_methods_that_disagree_get_a_sentence():
    import pandas as pd

    from study.report import disagreements

    imp = pd.DataFrame([
        {"target": "objective", "evaluator": "fanova", "param": "a", "importance": 0.91, "ci_low": 0.5, "ci_high": 0.95},
        {"target": "objective", "evaluator": "fanova", "param": "b", "importance": 0.09, "ci_low": 0.0, "ci_high": 0.4},
        {"target": "objective", "evaluator": "ped_anova", "param": "a", "importance": 0.002, "ci_low": 0, "ci_high": 0.3},
        {"target": "objective", "evaluator": "ped_anova", "param": "b", "importance": 0.998, "ci_low": 0.7, "ci_high": 1},
        {"target": "transfer", "evaluator": "fanova", "param": "a", "importance": 0.6, "ci_low": 0.5, "ci_high": 0.7},
        {"target": "transfer", "evaluator": "fanova", "param": "b", "importance": 0.4, "ci_low": 0.3, "ci_high": 0.5},
        {"target": "transfer", "evaluator": "ped_anova", "param": "a", "importance": 0.7, "ci_low": 0.5, "ci_high": 0.8},
        {"target": "transfer", "evaluator": "ped_anova", "param": "b", "importance": 0.3, "ci_low": 0.2, "ci_high": 0.5},
    ])
    (sentence,) = disagreements(imp)
    assert sentence.startswith("fANOVA and PED-ANOVA disagree on objective: fANOVA ranks a first (0.91 [0.50, 0.95]), "
                                "PED-ANOVA ranks b first")


def test_holm_adjustment():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    adjusted = holm([0.2, math.nan, 0.01])
    assert math.isnan(adjusted[1]) and adjusted[0] == pytest.approx(0.2) and adjusted[2] == pytest.approx(0.02)


# --- the matrices domain ----------------------------------------------------------------------------
MATRICES_DISTRIBUTIONS = {
    "training.model_type": CategoricalDistribution(["raven_mlp", "raven_wren"]),
    "heldout_pair": CategoricalDistribution(["progression/size", "arithmetic/colour"]),
}


def planted_matrices_study(n: int = 16, seed: int = 0, objective: str = "gap") -> optuna.Study:
    """Trials with the user attributes a matrices trial records (the task's seed measures
    `test/error`, `val/error`, `gap/acc` as across-seed mean and std, and `chance_acc`):
    `training.model_type` moves held-out accuracy by 0.4 (raven_wren 0.7, raven_mlp 0.3);
    `heldout_pair` does nothing."""
    rng = np.random.default_rng(seed)
    study = optuna.create_study(direction="minimize", study_name="planted-matrices")
    study.set_user_attr("objective", objective)
    for i in range(n):
        params = {"training.model_type": "raven_wren" if i % 2 else "raven_mlp",
                  "heldout_pair": "progression/size" if (i // 2) % 2 else "arithmetic/colour"}
        test_acc = (0.7 if params["training.model_type"] == "raven_wren" else 0.3) + rng.normal(0, 0.03)
        val_acc = 0.8 + rng.normal(0, 0.03)
        attrs = {"test_error_mean": 1 - test_acc, "test_error_std": 0.02, "val_error_mean": 1 - val_acc,
                 "val_error_std": 0.01, "gap_acc_mean": val_acc - test_acc, "gap_acc_std": 0.03, "chance_acc": 0.125}
        study.add_trial(optuna.trial.create_trial(params=params, distributions=MATRICES_DISTRIBUTIONS,
                                                  user_attrs=attrs, value=val_acc - test_acc))
    return study


def markdown_tables(text: str) -> list[list[dict[str, str]]]:
    """Every markdown table of a report, as rows of {column: cell}."""
    tables, lines = [], text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("|") and i + 1 < len(lines) and lines[i + 1].startswith("|---"):
            header = [c.strip() for c in line.strip("|").split("|")]
            rows = []
            for row in lines[i + 2:]:
                if not row.startswith("|"):
                    break
                rows.append(dict(zip(header, (c.strip() for c in row.strip("|").split("|")), strict=True)))
            tables.append(rows)
    return tables


def empty_rows(text: str) -> list[dict[str, str]]:
    """Rows that report nothing: an effect without a mean, a test over no trial, a measure over none."""
    return [row for table in markdown_tables(text) for row in table
            if row.get("mean", "x") == "" or row.get("n", "x") == "0" or row.get("n_trials", "x") == "0"]


def test_matrices_report_has_accuracy_targets_with_chance_and_no_empty_rows(tmp_path):
    """A matrices study's report explains the matrices measures (accuracy = 1 - error, chance
    beside it), never the spectra ones (transfer, skill, not-learned counts) as empty rows."""
    rep = build_report(planted_matrices_study(), tmp_path, n_boot_importance=3)
    assert empty_rows(rep.text) == []
    assert set(rep.effects["target"]) == set(rep.significance["target"]) == {"test/acc", "val/acc", "gap/acc"}
    assert "n_not_learned" not in rep.effects and rep.effects["mean"].notna().all()
    assert (rep.effects["n_with_value"] == rep.effects["n_trials"]).all() and (rep.significance["n"] == 16).all()
    chance = rep.effects.groupby("target")["chance"].unique()
    assert list(chance["test/acc"]) == list(chance["val/acc"]) == [0.125] and list(chance["gap/acc"]) == [0.0]
    wren = rep.effects[(rep.effects["target"] == "test/acc") & (rep.effects["value"] == "raven_wren")].iloc[0]
    assert 0.65 < wren["mean"] < 0.75  # accuracy, not error
    assert "transfer" not in rep.text and "skill/val" not in rep.text and "learned every tracked" not in rep.text
    assert "test/acc depends on training.model_type" in rep.text.split("## Measures")[0]
    assert "chance accuracy 0.125 (1 / 8 candidates)" in rep.text
    measures = {row["measure"]: row for row in markdown_tables(rep.text.split("## Measures")[1])[0]}
    assert list(measures) == ["test/acc", "val/acc", "gap/acc", "test/error", "val/error"]
    assert (measures["test/acc"]["chance"], measures["test/error"]["chance"], measures["gap/acc"]["chance"]) == \
        ("0.125", "0.875", "0")
    assert float(measures["test/acc"]["mean"]) + float(measures["test/error"]["mean"]) == pytest.approx(1.0, abs=1e-3)
    assert {"measures.csv", "effects.png", "importances.png"} <= {p.name for p in rep.files}
    trials = rep.trials.set_index("number")
    assert (trials["test_acc_mean"] == 1 - trials["test_error_mean"]).all() and (trials["chance_acc"] == 0.125).all()
    assert set(rep.importances["target"]) == {"test/acc", "val/acc", "gap/acc"}  # the objective gap: not repeated


def test_matrices_objective_names():
    from study.records import compact_seeds, objective_names

    assert objective_names("gap", 1, "matrices") == ["gap/acc (val/acc - test/acc, mean)"]
    assert objective_names("pareto", 2, "matrices") == ["in-distribution (val) error", "test error"]
    assert compact_seeds({1: {"test/error": 0.25, "val/error": 0.2, "gap/acc": -0.05}}) == \
        "1: test_error 0.25, gap_acc -0.05"


def test_a_study_that_learned_nothing_draws_no_empty_row_and_no_nan_title(tmp_path):
    """Three trials, none of which learned anything (no transfer), too few for any test: the
    effect figure has one row per target that has values (not transfer) and titles that say why
    nothing was tested; the report embeds only figures that exist and its tables stay narrow."""
    import re

    from study.report import effects_figure

    study = planted_study(n=3, n_not_learned=3)
    rep = build_report(study, tmp_path, n_boot_importance=2)
    fig = effects_figure(rep.effects, rep.significance)
    assert [ax.get_ylabel() for ax in fig.axes if ax.get_ylabel()] == ["skill/val"]
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles and not [t for t in titles if "nan" in t] and all("too few trials to test" in t for t in titles)
    embedded = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", rep.text)
    assert "effects.png" in embedded and all((tmp_path / name).is_file() for name in embedded)
    widths = [len(row) for table in markdown_tables(rep.text) for row in table[:1]]
    assert widths and max(widths) <= 8  # columns, so that cells do not wrap in the artifact viewer
    assert "trials: 3 fail." in rep.text and "(of the failed" not in rep.text
