"""`speccomp meta-eval`: the meta-learner's powered evaluation, tracked.

    speccomp meta-eval --repetitions 3                       (spectra, 3 x 20 meta-test pairs)
    speccomp meta-eval --config raven --repetitions 6        (matrices)
    speccomp meta-eval --threads 1,2                         (every repetition at 1 and at 2 threads)
    mlflow run . --env-manager local -e meta-eval -P repetitions=3

One parent run (tag `speccomp.role=meta-eval`) with a nested child per (threads, repetition)
(tag `speccomp.role=meta-eval-rep`, params `task_generator_seed`, `meta_seed`, `threads`; its
per-pair table `meta/per_pair.csv` and metrics `median/<method>/<measure>`,
`meta/entropy_ratio`). The parent holds `meta_eval/evaluation.csv` (per method: median ratio to
`meta` with its bootstrap 95 % interval, wins, Wilcoxon and Holm p), `meta_eval/shares.csv` (the
ablations read as shares), `meta_eval/per_unit.csv`, `meta_eval/threads.csv` (with two thread
counts) and `plots/meta_eval.png` (per-unit ratios per method with the median and its interval),
and a description that opens with the verdicts. The settings resolve as for `speccomp meta`
(flags, environment, `.env`, the meta config); repetition r adds r to TASK_GENERATOR_SEED and to
the meta seed. Bad input: one line, exit 2, before any run.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from speccomp.core.config import ConfigError


@dataclass
class MetaEvalOptions:
    flags: dict[str, str | None] = field(default_factory=dict)
    config: str = ""
    overrides: list[str] = field(default_factory=list)
    env_file: str = ".env"
    repetitions: int = 3
    threads: list[int] = field(default_factory=lambda: [1])
    experiment_name: str | None = None
    run_name: str | None = None


def run_meta_eval(options: MetaEvalOptions) -> int:
    from speccomp.meta.run import plan_meta
    from tracking import store
    from tracking.progress import heartbeat
    from tracking.runs import RunTracker, guarded, parent_experiment, refused, stopped

    uri = store.configure()
    attached = os.environ.get("MLFLOW_RUN_ID") or None
    try:
        store.check_store(uri)
        if options.repetitions < 1:
            raise ConfigError(f"--repetitions: {options.repetitions} is too small; allowed: an integer >= 1")
        if not options.threads or any(t < 1 for t in options.threads) or len(set(options.threads)) != len(options.threads):
            raise ConfigError(f"--threads: {','.join(map(str, options.threads))}; allowed: comma-separated distinct "
                              "integers >= 1, e.g. 1,2")
        plan = plan_meta(options.flags, options.config or None, options.overrides, options.env_file)
    except ConfigError as exc:
        return refused(str(exc))
    client = store.tracking_client()
    experiment_id = parent_experiment(client, uri, options.experiment_name, attached)
    tracker = RunTracker(client, experiment_id)
    parent = None
    try:
        with guarded(tracker), heartbeat("meta-eval"):
            parent = tracker.open_parent(options.run_name or _name(plan, options), attached)
            with tempfile.TemporaryDirectory(prefix="speccomp-meta-eval-") as tmp:
                lines = _run(tracker, parent, plan, options, Path(tmp))
            tracker.finish(parent)
    except KeyboardInterrupt as exc:
        return stopped(exc, f"parent run {parent} and its children ended KILLED")
    from tracking.describe import closing_lines

    print("\n".join([*lines, "", *closing_lines(uri, client.get_run(parent).info)]))
    return 0


def _name(plan, options: MetaEvalOptions) -> str:
    from speccomp.nas.domain import domain_for_config
    from tracking.describe import domain_word, run_name

    s = plan.settings.values
    return run_name("meta-eval", domain_word(domain_for_config(plan.cfg).name), f"{options.repetitions} reps",
                    f"{s.num_meta_training_tasks}/{s.num_meta_testing_tasks} tasks",
                    f"threads {','.join(map(str, options.threads))}")


def _run(tracker, parent: str, plan, options: MetaEvalOptions, work: Path) -> list[str]:
    import pandas as pd

    from speccomp.meta.evaluate import (
        entropy_ratio,
        evaluate,
        evaluation_table,
        ingredient_shares,
        threads_agree,
        verdicts,
    )
    from tracking.describe import description, set_description, sig
    from tracking.pipeline import log_metric_dict, log_params, set_tags
    from tracking.progress import Progress, stage_progress

    client = tracker.client
    log_params(client, parent, {**plan.settings.as_params(), "meta_eval.repetitions": str(options.repetitions),
                                "meta_eval.threads": ",".join(map(str, options.threads)),
                                "meta_eval.config": str(plan.meta_path)})
    set_tags(client, parent, {"speccomp.role": "meta-eval"})

    def on_repetition(threads, r, task_seed, meta_seed, outcome, frame):
        child = tracker.start(f"rep-{r} threads-{threads}", parent_id=parent, tags={
            "speccomp.role": "meta-eval-rep", "repetition": str(r), "threads": str(threads)})
        log_params(client, child, {"task_generator_seed": str(task_seed), "meta_seed": str(meta_seed),
                                   "threads": str(threads)})
        measure = plan.domain.measure
        medians = frame.groupby("method")[measure].median()
        log_metric_dict(client, child, {f"median/{m}/{measure}": float(v) for m, v in medians.items()}
                        | {"meta/entropy_ratio": entropy_ratio(plan.space, outcome.training.posterior)})
        path = work / f"rep-{r}-threads-{threads}.csv"
        frame.to_csv(path, index=False)
        client.log_artifact(child, str(path), "meta")
        tracker.finish(child)

    runs = Progress("meta-eval", total=options.repetitions * len(options.threads), unit="repetition",
                    after="writing the evaluation")

    def repetition_done(*args) -> None:
        on_repetition(*args)
        runs.update(1)

    result = evaluate(options.flags, options.config or None, options.overrides, options.env_file,
                      options.repetitions, options.threads, repetition_done, runs.say, stage_progress)
    runs.close()
    per_unit = result["per_unit"]
    measure = plan.domain.measure
    out = work / "meta_eval"
    out.mkdir()
    floors = [plan.domain.floor_method] if plan.domain.floor_method else []
    tables = {t: evaluation_table(per_unit[per_unit["threads"] == t], measure, floors=floors) for t in options.threads}
    first = options.threads[0]
    shares = ingredient_shares(per_unit[per_unit["threads"] == first], measure)
    tables[first].to_csv(out / "evaluation.csv", index=False)
    shares.to_csv(out / "shares.csv", index=False)
    per_unit.to_csv(out / "per_unit.csv", index=False)
    agree = threads_agree(tables) if len(tables) > 1 else None
    if agree is not None:
        agree.to_csv(out / "threads.csv", index=False)
        for t, table in tables.items():
            table.to_csv(out / f"evaluation_threads_{t}.csv", index=False)
    client.log_artifacts(parent, str(out), "meta_eval")
    (work / "plots").mkdir()
    _figure(per_unit[per_unit["threads"] == first], measure, tables[first], work / "plots" / "meta_eval.png")
    client.log_artifacts(parent, str(work / "plots"), "plots")

    units = per_unit[(per_unit["threads"] == first) & (per_unit["method"] == "meta")]
    distinct = units["pair"].nunique()
    metrics = {"meta_eval/units": float(len(units)), "meta_eval/distinct_tasks": float(distinct),
               "meta_eval/entropy_ratio_median": float(pd.Series(result["entropy_ratio"]).median())}
    for _, row in tables[first].iterrows():
        for col in ("median_ratio_to_meta", "ci_low", "ci_high", "wilcoxon_p", "holm_p"):
            if pd.notna(row[col]):
                metrics[f"meta_eval/{row['method']}/{col}"] = float(row[col])
    if agree is not None:
        metrics["meta_eval/threads_agree"] = float(agree["agree"].all())
    log_metric_dict(client, parent, metrics)

    said = verdicts(shares)
    header = ["method", "median ratio to meta", "95 % interval", "meta wins", "Holm p"]
    rows = [[r["method"], sig(r["median_ratio_to_meta"]), f"[{sig(r['ci_low'])}, {sig(r['ci_high'])}]",
             f"{r['meta_wins']}/{r['units']}", sig(r["holm_p"])] for _, r in tables[first].iterrows()]
    unit = f"{plan.domain.unit}s"
    verdict = (said[1] if len(said) > 1 else said[0] if said else "no ablation ran") + \
        f" ({len(units)} (repetition, {unit[:-1]}) units, {distinct} distinct {unit})"
    notes = [f"Ratio = method's {measure} ÷ meta's on the same unit (> 1: meta better); interval: percentile "
             "bootstrap of the median over units; p: two-sided Wilcoxon signed-rank, Holm-corrected over methods.",
             *said]
    if agree is not None:
        notes.append("thread counts agree within their intervals: " + ("yes" if agree["agree"].all() else
                     "NO: " + ", ".join(agree.loc[~agree["agree"], "method"])))
    set_description(client, parent, description(verdict, header, rows, notes))
    lines = [f"meta-eval: {options.repetitions} repetitions x {plan.settings.values.num_meta_testing_tasks} meta-test "
             f"{unit} at threads {','.join(map(str, options.threads))}: {len(units)} units, {distinct} distinct {unit}",
             f"posterior mean entropy ÷ prior's, median over repetitions: {metrics['meta_eval/entropy_ratio_median']:.2f}",
             "", "ratio of each method's error to meta's (> 1: meta better), median over units [bootstrap 95 %]:"]
    from tracking.nas import _aligned

    lines += ["  " + x for x in _aligned(header, rows)]
    lines += ["", *said]
    if agree is not None:
        lines.append(notes[-1])
    return lines


def _figure(per_unit, measure: str, table, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    wide = per_unit.pivot_table(index=["repetition", "pair"], columns="method", values=measure, aggfunc="first")
    methods = list(table["method"])
    fig, ax = plt.subplots(figsize=(1.2 * len(methods) + 2.5, 4))
    rng = np.random.default_rng(0)
    for i, m in enumerate(methods):
        ratio = (wide[m] / wide["meta"]).dropna().to_numpy()
        ax.scatter(i + rng.uniform(-0.18, 0.18, len(ratio)), ratio, s=9, alpha=0.5, color="0.4")
        row = table.set_index("method").loc[m]
        ax.errorbar(i, row["median_ratio_to_meta"], yerr=[[row["median_ratio_to_meta"] - row["ci_low"]],
                    [row["ci_high"] - row["median_ratio_to_meta"]]], fmt="o", color="C3", capsize=5, lw=2)
    ax.axhline(1.0, color="k", lw=0.8, ls=":")
    ax.set_yscale("log")
    ax.set_xticks(range(len(methods)), methods)
    ax.set_ylabel(f"{measure} ÷ meta's (per unit)")
    ax.set_title("Each method against the meta-learner per (repetition, task): median and 95 % interval (red)",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
