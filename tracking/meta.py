"""The `meta` entry point: the Bayesian meta-learner, tracked in MLflow.

    mlflow run . --env-manager local -e meta                     (settings from env / .env / defaults)
    mlflow run . --env-manager local -e meta -P config=smoke     (a run of well under a minute)
    speccomp meta --num-meta-training-tasks 50                   (the same, without `mlflow run`)

Records: one parent run (the settings' effective values and sources as params `meta.<name>` and
`meta.<name>.source`, the pairs of each role, per meta-iteration `meta/elbo`, `meta/query_loss`,
`meta/kl`, `meta/tau`, `meta/prob/<decision>/<option>`; artifacts `meta/posterior.pt`,
`meta/tasks.json`, `meta/comparison.csv`, `meta/per_pair.csv`, `meta/architecture_map.yaml`,
`plots/meta_posterior.png`, `plots/meta_test.png`) and one nested child per (meta-test pair,
method), tagged `pair` and `method`, with `test/mse/<label>`, `gap/<label>`,
`oracle/efficiency/<label>` and the rest (on the matrices domain, `-P config=raven`: a task is a
held-out (rule, attribute) pair, children carry `val/acc`, `test/acc`, `gap/acc`, `test/error` and
`chance/acc`, and the comparison is by held-out error). Every bad setting is one line and exit code 2 before any
run is created (a run `mlflow run` made already ends FAILED with the reason).
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from speccomp.core.config import ConfigError


@dataclass
class MetaOptions:
    """The command line, typed."""

    flags: dict[str, str | None] = field(default_factory=dict)
    """The six settings as given on the command line (None or "" = not given)."""
    config: str = ""
    """Meta config file or name under configs/meta/ (empty = default)."""
    overrides: list[str] = field(default_factory=list)
    """Dotted `key=value` overrides of the meta config (e.g. `inner.steps=2`)."""
    env_file: str = ".env"
    threads: str = ""
    experiment_name: str | None = None
    run_name: str | None = None


def _threads(text: str) -> int | None:
    if not str(text).strip():
        return None
    if not str(text).strip().isdigit() or int(text) < 1:
        raise ConfigError(f"threads: {text!r}; allowed: an integer >= 1 (or empty: one, or OMP_NUM_THREADS)")
    return int(text)


def run_meta(options: MetaOptions) -> int:
    """Validate, then run and track; returns the exit code."""

    from speccomp.meta.run import plan_meta
    from tracking import store
    from tracking.progress import heartbeat
    from tracking.runs import RunTracker, guarded, parent_experiment, refused, stopped

    uri = store.configure()
    attached = os.environ.get("MLFLOW_RUN_ID") or None
    try:
        store.check_store(uri)
        threads = _threads(options.threads)
        plan = plan_meta(options.flags, options.config or None, options.overrides, options.env_file)
    except ConfigError as exc:
        return refused(str(exc))  # `mlflow run` made a run already: it ends FAILED with the reason

    from speccomp.core.threads import apply_threads

    apply_threads(threads)  # one unless told, as every command (speccomp.core.threads)
    client = store.tracking_client()
    experiment_id = parent_experiment(client, uri, options.experiment_name, attached)
    tracker = RunTracker(client, experiment_id)
    parent = None
    try:
        with guarded(tracker), heartbeat("meta"):
            parent = tracker.open_parent(options.run_name or default_run_name(plan), attached)
            with tempfile.TemporaryDirectory(prefix="speccomp-meta-") as tmp:
                outcome, table = _run_tracked(tracker, parent, plan, Path(tmp))
            tracker.finish(parent)
    except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM: the guard has ended the runs KILLED
        return stopped(exc, f"parent run {parent} and its children ended KILLED")
    _print_summary(outcome, table, client.get_run(parent).info, uri)
    return 0


def default_run_name(plan) -> str:
    """`meta spectra 100/20 tasks` (`meta raven 12/4 tasks` on the matrices domain)."""
    from speccomp.nas.domain import domain_for_config
    from tracking.describe import domain_word, run_name

    s = plan.settings.values
    return run_name("meta", domain_word(domain_for_config(plan.cfg).name),
                    f"{s.num_meta_training_tasks}/{s.num_meta_testing_tasks} tasks")


class _BatchedMetrics:
    """Collects per-iteration metrics and sends them with `log_batch` every `every` iterations."""

    def __init__(self, client, run_id: str, space, every: int):
        from speccomp.nas import metric_label

        self.client, self.run_id, self.every = client, run_id, every
        self.names = {d.name: [f"meta/prob/{d.name}/{metric_label(o)}" for o in d.options] for d in space.decisions}
        self.pending: list = []

    def __call__(self, record) -> None:
        from mlflow.entities import Metric

        now, step = int(time.time() * 1000), record.iteration + 1
        values = {"meta/elbo": record.elbo, "meta/query_loss": record.query_loss, "meta/kl": record.kl,
                  "meta/tau": record.tau}
        for decision, probs in record.probabilities.items():
            values.update(zip(self.names[decision], probs.tolist(), strict=True))
        self.pending += [Metric(k, float(v), now, step) for k, v in values.items()]
        if step % self.every == 0:
            self.flush()

    def flush(self) -> None:
        for start in range(0, len(self.pending), 1000):
            self.client.log_batch(self.run_id, metrics=self.pending[start : start + 1000])
        self.pending = []


def _run_tracked(tracker, parent: str, plan, work: Path):
    import matplotlib.pyplot as plt
    import torch
    import yaml

    from speccomp.meta.compare import comparison_table, format_table, plot_meta_test, plot_posterior
    from speccomp.meta.run import posterior_history, run_meta
    from speccomp.meta.tasks import pair_name
    from speccomp.nas import choices_of, preset_of, unflatten_alpha
    from speccomp.nas.domain import domain_for_config
    from tracking.pipeline import flatten, log_metric_dict, log_params, set_tags
    from tracking.progress import say, set_stage, stage_progress

    client = tracker.client
    s = plan.settings.values
    params = {**plan.settings.as_params(), **{f"meta_config.{k}": v for k, v in flatten(plan.meta.model_dump(mode="json")).items()}}
    params["meta_config.file"] = str(plan.meta_path)
    log_params(client, parent, params)
    set_tags(client, parent, {
        "speccomp.role": "meta",  # the settings' sources are params (meta.<name>.source), not tags
        "meta.pairs.train": ",".join(pair_name(p) for p in plan.tasks.meta_train)[:5000],
        "meta.pairs.test": ",".join(pair_name(p) for p in plan.tasks.meta_test),
        "meta.held_out": ",".join(plan.tasks.held_out),
    })
    tasks = {"task_generator_seed": s.task_generator_seed, "meta_train": [pair_name(p) for p in plan.tasks.meta_train],
             "meta_test": [pair_name(p) for p in plan.tasks.meta_test], "held_out_components": plan.tasks.held_out}
    client.log_text(parent, json.dumps(tasks, indent=1), "meta/tasks.json")
    client.log_text(parent, yaml.safe_dump(plan.cfg.to_dict(), sort_keys=False), "meta/experiment_config.yaml")

    logger = _BatchedMetrics(client, parent, plan.space, plan.meta.log_every)

    def on_pair(pair, by_method):
        for method, metrics in by_method.items():
            child = tracker.start(f"{pair_name(pair)}-{method}", parent_id=parent,
                                  tags={"pair": pair_name(pair), "method": method, "speccomp.role": "meta-test"})
            log_metric_dict(client, child, metrics)
            tracker.finish(child)

    def progress(msg: str) -> None:
        logger.flush()
        say(msg)

    outcome = run_meta(plan, on_iteration=logger, on_pair=on_pair, progress=progress, steps=stage_progress)
    logger.flush()
    set_stage("logging the posterior, tables and figures")

    # posterior, MAP architecture, tables, figures
    posterior = outcome.training.posterior
    buf = io.BytesIO()
    torch.save({**posterior.state(), "decisions": [d.name for d in plan.space.decisions]}, buf)
    (work / "meta").mkdir(exist_ok=True)
    (work / "meta" / "posterior.pt").write_bytes(buf.getvalue())
    choices = choices_of(plan.space, unflatten_alpha(plan.space, posterior.mean.detach()))
    (work / "meta" / "architecture_map.yaml").write_text(
        "# MAP architecture of the meta-learned posterior (a preset: main can train it)\n"
        + yaml.safe_dump(preset_of(plan.space, choices, domain_for_config(plan.cfg).model_type), sort_keys=False))
    table = comparison_table(outcome.per_pair, measure=plan.domain.measure)
    table.to_csv(work / "meta" / "comparison.csv", index=False)
    outcome.per_pair.to_csv(work / "meta" / "per_pair.csv", index=False)
    client.log_artifacts(parent, str(work / "meta"), "meta")
    (work / "plots").mkdir(exist_ok=True)
    history = {k: v.numpy() for k, v in posterior_history(outcome.training).items()}
    fig = plot_posterior(history, {d.name: d.options for d in plan.space.decisions})
    fig.savefig(work / "plots" / "meta_posterior.png", dpi=110)
    plt.close(fig)
    fig = plot_meta_test(outcome.per_pair, plan.domain.meta_test_figure())
    fig.savefig(work / "plots" / "meta_test.png", dpi=110)
    plt.close(fig)
    client.log_artifacts(parent, str(work / "plots"), "plots")

    summary: dict[str, float] = {}
    measure = plan.domain.measure
    for _, row in table.iterrows():
        summary[f"comparison/{row['method']}/median_{measure}"] = row[f"median_{measure}"]
        for column in ("median_ratio_to_oracle", "median_test_acc"):  # those of the domain's table
            if column in row:
                summary[f"comparison/{row['method']}/{column}"] = row[column]
        if row["method"] != "meta":
            summary[f"comparison/{row['method']}/median_ratio_meta_to_method"] = row["median_ratio_meta_to_method"]
            summary[f"comparison/{row['method']}/wilcoxon_p"] = row["wilcoxon_p"]
    summary.update(posterior_summary(plan.space, posterior))
    summary.update({f"time/{k}_s": v for k, v in outcome.timings.items()})
    summary["time/meta_iterations_per_s"] = s.architecture_search_iterations / max(outcome.timings["meta_train"], 1e-9)
    log_metric_dict(client, parent, summary, step=s.architecture_search_iterations)
    _describe(client, parent, plan, table, measure, choices, posterior)
    client.log_text(parent, format_table(table), "meta/comparison.txt")
    return outcome, table


def _describe(client, parent: str, plan, table, measure: str, choices: dict, posterior) -> None:
    """Verdict first: did q move, and does meta beat each method; the MAP architecture; headline metrics."""
    from tracking.describe import description, set_description, sig
    from tracking.pipeline import log_metric_dict

    moved = posterior_summary(plan.space, posterior)
    rows, best_p = [], float("nan")
    for _, r in table.iterrows():
        if r["method"] in ("meta", plan.domain.floor_method):
            continue
        rows.append([r["method"], sig(r[f"median_{measure}"]), sig(r["median_ratio_meta_to_method"]), r["meta_wins"],
                     sig(r["wilcoxon_p"])])
        if r["method"] == "prior":
            best_p = r["wilcoxon_p"]
    ratio = moved["meta/entropy_ratio"]
    meta_row = table.set_index("method").loc["meta"]
    verdict = (f"posterior {'moved' if ratio <= 0.9 else 'did NOT move'} (entropy {sig(ratio)} x the prior's, KL "
               f"{sig(moved['meta/final_kl'])}); meta median {measure} {sig(meta_row[f'median_{measure}'])}, "
               f"vs prior p = {sig(best_p)}")
    notes = ["MAP architecture: " + ", ".join(f"{k} {v}" for k, v in choices.items()),
             "Ratio = meta ÷ method per task, median over tasks (< 1: meta better); p: two-sided Wilcoxon. "
             "For a powered answer: `speccomp meta-eval`."]
    set_description(client, parent, description(verdict, ["method", f"median {measure}", "meta ÷ method",
                                                           "meta wins", "p"], rows, notes))
    headline = {"headline/p_value": best_p, "meta/entropy_ratio": ratio,
                **plan.domain.headline(meta_row, plan.cfg)}
    log_metric_dict(client, parent, {k: float(v) for k, v in headline.items() if v == v})


def posterior_summary(space, posterior) -> dict[str, float]:
    """How far q moved: `meta/entropy_ratio` (mean entropy of softmax(μ) over decisions ÷ the
    prior's, log K; 1 = nothing learned), `meta/final_kl` (KL(q‖p), nats) and per decision
    `meta/max_prob/<decision>`."""
    from speccomp.meta.evaluate import entropy_ratio
    from speccomp.meta.metatrain import posterior_probabilities

    probs = posterior_probabilities(space, posterior)
    return {"meta/entropy_ratio": entropy_ratio(space, posterior), "meta/final_kl": float(posterior.kl().detach()),
            **{f"meta/max_prob/{k}": float(p.max()) for k, p in probs.items()}}


def _print_summary(outcome, table, info, uri: str) -> None:
    from speccomp.meta.compare import format_table

    plan = outcome.plan
    s = plan.settings.values
    unit = f"{plan.domain.unit}s"
    print(f"meta-learner: {s.num_meta_training_tasks} meta-training {unit}, {s.num_meta_testing_tasks} meta-test {unit}, "
          f"{s.architecture_search_iterations} meta-iterations ({outcome.timings['meta_train']:.0f} s), "
          f"seeds {plan.meta.experiment.seeds}")
    print(plan.domain.header(plan.cfg))
    print(format_table(table))
    moved = posterior_summary(plan.space, outcome.training.posterior)
    ratio = moved["meta/entropy_ratio"]
    print(f"posterior: mean entropy of softmax(mu) {ratio:.2f} x the prior's "
          f"({'moved' if ratio <= 0.9 else 'NOT moved: close to the prior'}), KL(q||p) {moved['meta/final_kl']:.1f} nats")
    from tracking.describe import closing_lines

    print("\n" + "\n".join(closing_lines(uri, info)))
