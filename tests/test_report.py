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
