"""The docs/ results table written by `tracking.redraw_docs` from parent runs' metrics."""

from __future__ import annotations

from types import SimpleNamespace

from tracking.redraw_docs import _latest_main, _latest_per_model, results_table


def _run(model: str, transform: str, metrics: dict[str, float], run_id: str = "r") -> SimpleNamespace:
    return SimpleNamespace(
        info=SimpleNamespace(run_id=run_id, run_name=run_id, start_time=0),
        data=SimpleNamespace(metrics=metrics, tags={"seeds": "1,2,3", "tracked": "comp10,comp4"},
                             params={"training.model_type": model, "training.input_transform": transform}),
    )


def test_results_table_says_not_learned_instead_of_a_transfer():
    metrics = {"test/mse/comp10": 0.0147, "std/test/mse/comp10": 0.0028, "transfer/comp10": 1.0156,
               "std/transfer/comp10": 0.027, "skill/val/comp10": 0.815, "not_learned/comp10": 0.0,
               "test/mse/comp4": 0.244, "skill/val/comp4": -0.22, "not_learned/comp4": 3.0, "gap/comp4": 3.3,
               "oracle/mse/comp4": 0.00095}
    table = results_table([_run("mlp", "none", metrics)]).splitlines()
    assert table[0].startswith("| model | input | seeds | component | test MSE |")
    comp10, comp4 = table[2], table[3]
    assert "| 1.016 ± 0.027 |" in comp10 and "not learned" not in comp10
    assert "not learned (3/3)" in comp4 and "| 3.30 ± 0.00 |" in comp4 and comp4.endswith("| 0.00095 |")


def test_partly_learned_transfer_names_the_seeds_it_rests_on():
    metrics = {"transfer/comp4": 0.5, "std/transfer/comp4": 0.1, "not_learned/comp4": 1.0}
    (row,) = [r for r in results_table([_run("mlp", "log", metrics)]).splitlines() if "comp4" in r]
    assert "0.500 ± 0.100 (2/3 learned)" in row


def test_default_sources_pick_the_default_model_and_one_run_per_model():
    runs = [_run("linear", "log", {}, "a"), _run("mlp", "none", {}, "b"), _run("linear", "log", {}, "c"),
            _run("mlp", "none", {}, "d")]  # newest first
    assert _latest_main(runs).info.run_id == "b"
    assert [r.info.run_id for r in _latest_per_model(runs)] == ["a", "b"]
