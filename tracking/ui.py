"""What the MLflow UI shows first: the experiment's kind, run names and descriptions, role-named
metrics, a compact parameter set, and the saved runs-table view.

The UI reads a few reserved tags: `mlflow.experimentKind` on the experiment (which mode the
experiment page opens in: model training, not GenAI), `mlflow.note.content` on a run (its
description, rendered as markdown on the run page) and `mlflow.sharedViewState.<id>` on the
experiment (a saved runs-table view: chosen columns, order, chart layout).
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from mlflow import MlflowClient

from tracking.describe import SHORT_FROM, SHORT_MAX_CHARS, short_seeds  # noqa: F401  (short seed lists live there)

EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
TRAINING_KIND = "custom_model_development"  # the UI's "model training" kind (vs "genai_development")
NOTE_TAG = "mlflow.note.content"
VIEW_TAG_PREFIX = "mlflow.sharedViewState."
VIEW_ID = "speccomp-headline"
ROLES = ("first", "second")
"""Role names of the tracked components, in `analysis.tracked` order, so that runs of different
pairs share metric names. A curve over steps takes the role first (`first/test/mse` beside
`test/mse/comp10`): a run page groups its charts by name prefix, alphabetically, so these curves
open it. A final value takes the role in place of the label (`gap/first` beside `gap/comp10`)."""
ROLE_CURVES = ("test/mse", "val/mse", "test/mse_present", "val/mse_present")
"""Metrics logged at every checkpoint (curves over optimiser steps)."""
NOISE_RTOL = 1e-9
"""A standard deviation below this fraction of its mean is rounding noise of equal values."""


# ------------------------------------------------------------------------------------------------
# experiment
# ------------------------------------------------------------------------------------------------
def prepare_experiment(client: MlflowClient, experiment_id: str) -> None:
    """Mark the experiment as model training (unless its owner chose another kind) and save the
    headline runs-table view on it (refreshed, so that it follows the project's metric names)."""
    exp = client.get_experiment(experiment_id)
    if not exp.tags.get(EXPERIMENT_KIND_TAG):
        _set_experiment_tag(client, experiment_id, EXPERIMENT_KIND_TAG, TRAINING_KIND)
    view = saved_view()
    if exp.tags.get(VIEW_TAG_PREFIX + VIEW_ID) is None or _view_state(exp.tags[VIEW_TAG_PREFIX + VIEW_ID]) != \
            _view_state(view):
        _set_experiment_tag(client, experiment_id, VIEW_TAG_PREFIX + VIEW_ID, view)


def _set_experiment_tag(client: MlflowClient, experiment_id: str, key: str, value: str, attempts: int = 3) -> None:
    """`set_experiment_tag`, again when another worker set the same new tag at the same moment: the
    store looks the tag up, finds it missing and inserts it, so the second of two workers starting
    together on a new experiment fails on the unique key (`experiment_tag_pk`, seen with three
    workers on one tracking server); the retry finds the tag and updates it."""
    from mlflow.exceptions import MlflowException

    from tracking.store import DUPLICATE_WORDS

    for attempt in range(attempts):
        try:
            client.set_experiment_tag(experiment_id, key, value)
            return
        except MlflowException as exc:
            if attempt == attempts - 1 or not any(w in str(exc) for w in DUPLICATE_WORDS):
                raise


HEADLINE_COLUMNS = (
    ("tags", "speccomp.role"),
    ("tags", "domain"),
    ("tags", "seeds"),
    ("params", "training.model_type"),
    # spectra (main, trials, nas: the derived model; see tracking.describe.headline_metrics)
    ("metrics", "first/test/mse"),
    ("metrics", "second/test/mse"),
    ("metrics", "gap/first"),
    ("metrics", "transfer/first"),
    ("metrics", "oracle/efficiency/first"),
    # matrices (raven main, trials, nas)
    ("metrics", "test/acc"),
    ("metrics", "gap/acc"),
    ("metrics", "chance/acc"),
    # the comparisons with a null (nas: vs the default model; meta: vs the oracle and the prior)
    ("metrics", "headline/ratio_to_default"),
    ("metrics", "headline/ratio_to_oracle"),
    ("metrics", "headline/median_test_mse"),
    ("metrics", "headline/p_value"),
    # studies
    ("metrics", "study/best_value"),
    ("metrics", "study/n_complete"),
)
"""The runs-table columns of the saved view (and the set docs/tracking.md recommends): every
parent role fills at least four (role, domain, seeds and its own headline metrics)."""


def column_key(kind: str, name: str) -> str:
    """The UI's column id: ``metrics.`first/test/mse```."""
    return f"{kind}.`{name}`"


def saved_view(created_ms: int | None = None) -> str:
    """The saved view's tag value: the UI's envelope {name, createdAt, updatedAt, state} with the
    runs-table state (selected columns, newest first, charts of the headline metrics on a log
    axis) as a JSON string."""
    created_ms = created_ms or 0
    charts = [_line_chart(f"{role}/test/mse", log=True) for role in ROLES] + [
        _bar_chart(f"{name}/{role}") for name in ("transfer", "gap") for role in ROLES]
    state = {
        "selectedColumns": [column_key(k, n) for k, n in HEADLINE_COLUMNS],
        "orderByKey": "attributes.start_time",
        "orderByAsc": False,
        "compareRunCharts": charts,
        "compareRunSections": [{"uuid": "speccomp-headline", "name": "1 headline (speccomp)", "display": True,
                                "isReordered": False}],
        "hideEmptyCharts": True,
    }
    envelope = {"name": "speccomp: headline", "createdAt": created_ms, "updatedAt": created_ms,
                "state": json.dumps(state, separators=(",", ":"))}
    return json.dumps(envelope, separators=(",", ":"))


def _view_state(tag_value: str) -> Any:
    try:
        return json.loads(json.loads(tag_value)["state"])
    except (ValueError, KeyError, TypeError):
        return None


def _line_chart(metric: str, log: bool) -> dict:
    return {"uuid": f"speccomp-{metric}", "type": "LINE", "metricSectionId": "speccomp-headline",
            "metricKey": metric, "selectedMetricKeys": [metric], "xAxisKey": "step", "scaleType": "log" if log else
            "linear", "xAxisScaleType": "linear", "lineSmoothness": 0, "deleted": False, "isGenerated": False,
            "range": {"xMin": None, "xMax": None, "yMin": None, "yMax": None}, "runsCountToCompare": 10}


def _bar_chart(metric: str) -> dict:
    return {"uuid": f"speccomp-{metric}", "type": "BAR", "metricSectionId": "speccomp-headline",
            "metricKey": metric, "deleted": False, "isGenerated": False}


def view_url(base_url: str, experiment_id: str) -> str:
    """The runs table of `experiment_id` opened on the saved headline view (in the UI's model
    training mode; its GenAI mode is the UI's own default)."""
    from tracking.describe import experiment_url

    return experiment_url(base_url, experiment_id)


def ui_lines(uri: str, experiment_id: str) -> list[str]:
    """The command that opens the UI and the page to open (see `tracking.describe.closing_lines`
    for a command's last lines with its parent run)."""
    from tracking.describe import experiment_url
    from tracking.store import ui_command

    if uri.startswith(("http://", "https://")):
        return [f"the headline view: {experiment_url(uri, experiment_id)}"]
    return [f"open the UI: {ui_command(uri)}", f"then the headline view: {experiment_url(uri, experiment_id)}"]


# ------------------------------------------------------------------------------------------------
# params
# ------------------------------------------------------------------------------------------------
DEAD_PARAMS = ("training.seed", "training.num_workers")
"""Config fields a run's params leave out: `training.seed` is only the default seed list (the
seeds a run actually trained are its `seeds` tag and each seed run's `seed` param), and data
loading has no workers."""


def flatten(tree: Any, prefix: str = "") -> dict[str, str]:
    """Nested config dict -> {'training.learning_rate': '0.001', 'physics.lines.0.center': '732.0', ...}."""
    out: dict[str, str] = {}
    if isinstance(tree, dict):
        for key, value in tree.items():
            out.update(flatten(value, f"{prefix}{key}."))
    elif isinstance(tree, list) and tree and all(isinstance(v, dict) for v in tree):
        for i, value in enumerate(tree):
            out.update(flatten(value, f"{prefix}{i}."))
    else:
        out[prefix.rstrip(".")] = str(tree)
    return out


def run_params(cfg) -> dict[str, str]:
    """The config as a run's params, only what is in use: no unset (`None`) values, no dead
    fields, CNN settings only for a CNN, the checkpoint spacing in use, each split's combinations
    as one param, and of the 20-line physics table the tracked components' lines plus a digest
    of the whole (the full config is the run's `config.yaml`)."""
    import hashlib

    tree = cfg.to_dict()
    lines = tree.get("physics", {}).pop("lines", [])
    flat = {k: v for k, v in flatten(tree).items() if v != "None" and k not in DEAD_PARAMS}
    t = cfg.training
    if t.model_type != "cnn":
        flat = {k: v for k, v in flat.items() if not k.startswith("training.cnn.")}
    if getattr(t, "checkpoint_by", None) is not None:
        unused = "training.checkpoint_every_n_step" if t.checkpoint_by == "ratio" else "training.checkpoint_ratio"
        flat.pop(unused, None)
    combos: dict[str, list[str]] = {}
    out: dict[str, str] = {}
    pattern = re.compile(r"(.*)\.distribution\.combinations\.(\d+)\.(weight|components)$")
    for key, value in flat.items():
        m = pattern.match(key)
        if m is None:
            out[key] = value
        elif m[3] == "components":
            weight = flat[f"{m[1]}.distribution.combinations.{m[2]}.weight"]
            combos.setdefault(f"{m[1]}.combinations", []).append(f"{value.replace(chr(39), '')} x{weight}")
    out.update({k: "; ".join(v) for k, v in combos.items()})
    if lines:
        by_label = {line["label"]: line for line in lines}
        for label in tracked_labels(cfg):
            if label in by_label:
                line = by_label[label]
                out[f"physics.line.{label}"] = (f"center {line['center']} nm, width {line['width']} nm, "
                                                f"strength {line['strength']}")
        out["physics.lines.sha256"] = hashlib.sha256(json.dumps(lines, sort_keys=True).encode()).hexdigest()[:12]
    return out


# ------------------------------------------------------------------------------------------------
# run names and descriptions
# ------------------------------------------------------------------------------------------------
def main_run_name(seeds: Sequence[int], data_seeds: Sequence[int], presets: Sequence[str],
                  domain: str = "spectra") -> str:
    """`main seeds 123-125` / `main loglinear seeds 1,5,9 data 42,43` / `raven main seeds 123-125`
    (the matrices domain): what was run, readable in a list."""
    from tracking.describe import run_name

    kind = "raven main" if domain == "matrices" else "main"
    return run_name(kind, *[_preset_name(p) for p in presets if p], seeds=seeds, data_seeds=data_seeds)


def _preset_name(preset: str) -> str:
    from pathlib import PurePath

    return PurePath(preset).stem


def seed_list(seeds: Sequence[int], sep: str = ",") -> str:
    """A seed list as printed and tagged: every seed up to `SHORT_FROM` of them (`123,124,125`), the
    short form above (`0–4999 (5,000 seeds)`)."""
    seeds = list(seeds)
    return sep.join(map(str, seeds)) if len(seeds) <= SHORT_FROM else short_seeds(seeds)


def seed_count(text: str) -> int:
    """The number of seeds in a `seeds` tag written by `seed_list` (either form)."""
    import re

    found = re.search(r"\(([\d,]+) seeds?\)$", text.strip())
    if found:
        return int(found[1].replace(",", ""))
    return len([s for s in text.split(",") if s.strip()])


GENERATED_NAME = re.compile(r"^[a-z]+-[a-z]+-\d{1,4}$")
"""MLflow's random run names (`rumbling-goose-325`), given when `mlflow run` had no --run-name."""


def rename_run(client: MlflowClient, run_id: str, name: str) -> None:
    """Name the run `name` unless someone chose its name (`mlflow run --run-name ...`)."""
    if GENERATED_NAME.match(client.get_run(run_id).info.run_name or "x"):
        client.update_run(run_id, name=name)


def set_description(client: MlflowClient, run_id: str, markdown: str) -> None:
    from tracking.describe import set_description as store

    store(client, run_id, markdown)


def tracked_labels(cfg) -> list[str]:
    """The tracked components of a spectra config; none for another domain (matrices)."""
    return list(getattr(cfg, "tracked_labels", None) or [])


def role_names(tracked: Sequence[str]) -> dict[str, str]:
    """label -> role (`first`, `second`) for the first two tracked components."""
    return dict(zip(tracked, ROLES, strict=False))


def with_roles(metrics: Mapping[str, float], tracked: Sequence[str]) -> dict[str, float]:
    """`metrics` plus a role-named copy of every per-component metric (see `ROLES`):
    `test/mse/comp10` -> `first/test/mse`, `gap/comp4` -> `gap/second`, `std/gap/comp4` ->
    `std/gap/second`."""
    roles = role_names(tracked)
    out = dict(metrics)
    for key, value in metrics.items():
        alias = role_alias(key, roles)
        if alias is not None:
            out.setdefault(alias, value)
    return out


def role_alias(key: str, roles: Mapping[str, str]) -> str | None:
    head, _, label = key.rpartition("/")
    if not head or label not in roles:
        return None
    return f"{roles[label]}/{head}" if head in ROLE_CURVES else f"{head}/{roles[label]}"


TABLE_ONLY = ("baseline/",)
"""Final values that are the same for every seed of a data seed (the no-skill baseline): shown in
the run's description table and `summary.csv`, not as one-dot metric charts."""


def for_mlflow(metrics: Mapping[str, float], tracked: Sequence[str]) -> dict[str, float]:
    """What a run logs of `metrics`: without the table-only values, std noise set to 0, and with
    the role-named copies of the per-component metrics."""
    kept = {k: v for k, v in metrics.items() if not k.startswith(TABLE_ONLY) and not k.startswith(
        tuple(f"std/{p}" for p in TABLE_ONLY))}
    return with_roles(tidy_std(kept), tracked)


def tidy_std(finals: Mapping[str, float]) -> dict[str, float]:
    """`std/<name>` set to 0 where it is rounding noise of equal values (e.g. 8.3e-21 for the
    oracle MSE that every seed of one data seed shares)."""
    out = dict(finals)
    for key, value in finals.items():
        if key.startswith("std/"):
            mean = finals.get(key.removeprefix("std/"))
            if mean is not None and math.isfinite(value) and abs(value) <= NOISE_RTOL * abs(mean):
                out[key] = 0.0
    return out


HEADLINE = (  # (column title, metric head, significant digits); a column shows when a component has it
    ("test MSE", "test/mse", 3),
    ("in-dist. skill", "skill/val", 3),
    ("transfer", "transfer", 3),
    ("gap", "gap", 3),
    ("floor (oracle MSE)", "oracle/mse", 2),
    ("efficiency", "oracle/efficiency", 2),
)


def headline_table(mean: Mapping[str, float], tracked: Sequence[str], std: Mapping[str, float] | None = None,
                   n: int | None = None) -> str:
    """Markdown table, one row per tracked component: the headline measures as `mean ± std`
    (over `n` seeds) or as single values when `std` is None."""
    if not tracked:
        return _plain_table(mean, std)
    roles = role_names(tracked)
    columns = [(title, head, digits) for title, head, digits in HEADLINE
               if any(_finite(mean.get(f"{head}/{label}")) for label in tracked)]
    header = ["component", *(title for title, _, _ in columns)]
    rows = []
    for label in tracked:
        cells = [f"{label} ({roles[label]})" if label in roles else label]
        for _, head, digits in columns:
            key = f"{head}/{label}"
            value = mean.get(key)
            if not _finite(value):
                judged = head == "transfer" and _finite(mean.get(f"skill/val/{label}"))
                cells.append("not learned" if judged else "—")  # no transfer without in-distribution skill
                continue
            spread = None if std is None else std.get(f"std/{key}")
            shown = _finite(spread) and float(spread) != 0  # the floor is the same for every seed
            cells.append(_number(value, digits) + (f" ± {_number(spread, 2)}" if shown else ""))
        rows.append(cells)
    table = markdown_rows(header, rows)
    return table


PLAIN_HEADLINE = ("test/acc", "val/acc", "gap/acc", "test/error", "val/error", "test/mse", "val/mse")
"""A domain without tracked components (matrices): these whole-split measures, where logged."""


def _plain_table(values: Mapping[str, float], std: Mapping[str, float] | None) -> str:
    rows = []
    for key in PLAIN_HEADLINE:
        if _finite(values.get(key)):
            spread = None if std is None else std.get(f"std/{key}")
            shown = _finite(spread) and float(spread) != 0
            rows.append([key, _number(values[key], 3) + (f" ± {_number(spread, 2)}" if shown else "")])
    return markdown_rows(["metric", "value"], rows)


def seed_description(seed: int, data_seed: int, final: Mapping[str, float], tracked: Sequence[str]) -> str:
    """A seed run's description: its headline table (first: the UI shows a description's first
    lines until "Show more"), what the run is, the no-skill baseline."""
    lines = [headline_table(final, tracked), "", f"**seed {seed}** · data seed {data_seed}"]
    return "\n".join([*lines, *_baseline_lines(final, tracked)])


def summary_description(title: str, summary, tracked: Sequence[str], extra: Sequence[str] = ()) -> str:
    """A parent's (main invocation's or trial's) description: the one-line verdict (`verdict`),
    the headline table as mean ± std over the seeds of `summary` (one row per seed, final metrics
    as columns), `title`, `extra` lines."""
    import pandas as pd

    numeric = summary.drop(columns=[c for c in ("seed", "data_seed") if c in summary]).apply(
        pd.to_numeric, errors="coerce")
    mean = numeric.mean().to_dict()
    n = len(summary)
    std = tidy_std({**mean, **{f"std/{k}": (v if n > 1 else math.nan)
                               for k, v in numeric.std(ddof=1).to_dict().items()}}) if n > 1 else None
    spread = [f"Mean ± std over {n} seeds." if n > 1 else "One seed."]
    lines = [f"**{verdict(summary, tracked)}**", "", headline_table(mean, tracked, std, n), "", title, "", *spread,
             *_baseline_lines(mean, tracked), *extra]
    return "\n".join(lines)


def verdict(summary, tracked: Sequence[str]) -> str:
    """What the seeds of `summary` (one row per seed) show, in one line. Spectra, per tracked
    component: learned by how many seeds (in-distribution skill at the threshold: the component has
    a `transfer` value) and how well it transfers to the novel combination, or its test MSE beside
    the no-skill baseline when it was not learned. Matrices: held-out against in-distribution
    accuracy, and chance."""
    import pandas as pd

    from tracking.describe import pm, sig

    def column(name: str):
        return pd.to_numeric(summary[name], errors="coerce").dropna() if name in summary else pd.Series(dtype=float)

    def mean_std(values) -> str:
        return pm(values.mean(), values.std(ddof=1) if len(values) > 1 else None)

    n = len(summary)
    if not tracked:
        test, val, chance = column("test/acc"), column("val/acc"), column("chance/acc")
        if test.empty:
            return f"{n} seed{'s' if n != 1 else ''} trained"
        text = f"held-out accuracy {mean_std(test)}"
        if not val.empty:
            text += f" vs {mean_std(val)} in distribution"
        if not chance.empty:
            at_chance = test.mean() <= chance.mean() + 2 * (test.std(ddof=1) if len(test) > 1 else 0.01)
            text += f" (chance {sig(chance.mean())}{'; held out at chance' if at_chance else ''})"
        return text
    parts = []
    for label in tracked:
        skill, transfer, mse = column(f"skill/val/{label}"), column(f"transfer/{label}"), column(f"test/mse/{label}")
        baseline = column(f"baseline/test/mse/{label}")
        if skill.empty:  # no validation split: nothing to judge learning by
            parts.append(f"{label} test MSE {mean_std(mse)}")
        elif transfer.empty:
            nothing = f"{label} not learned by any of {n} seed{'s' if n != 1 else ''}"
            against = f" (test MSE {mean_std(mse)}" + (f", no-skill {sig(baseline.mean())})" if not baseline.empty
                                                        else ")")
            parts.append(nothing + against)
        else:
            by = "every seed" if len(transfer) == len(skill) else f"{len(transfer)} of {len(skill)} seeds"
            parts.append(f"{label} learned by {by}, transfer {mean_std(transfer)} (test MSE {mean_std(mse)})")
    return "; ".join(parts)


def main_description(seeds: Sequence[int], data_seeds: Sequence[int], presets: Sequence[str], cfg, summary) -> str:
    """The description of a `main` invocation's parent run."""
    t = cfg.training
    transform = getattr(t, "input_transform", None)
    from speccomp.core.task import task_for

    kind = "raven main" if task_for(cfg).name == "matrices" else "main"
    title = (f"**{kind}** · seeds {seed_list(seeds, ', ')} · data seed{'s' if len(data_seeds) > 1 else ''} "
             f"{seed_list(data_seeds, ', ')} · preset {', '.join(_preset_name(p) for p in presets) or 'none'} · "
             f"model {t.model_type}{f' (input {transform})' if transform else ''}, {t.epochs} epochs")
    extra = ["", "Figures under `plots/`, per-seed values in `summary.csv`, curves in the child runs "
             "(one per seed) and as across-seed means here; `std/<name>` = across-seed std."]
    return summary_description(title, summary, tracked_labels(cfg), extra)


def _baseline_lines(values: Mapping[str, float], tracked: Sequence[str]) -> list[str]:
    found = [(label, values.get(f"baseline/test/mse/{label}")) for label in tracked]
    found = [(label, v) for label, v in found if _finite(v)]
    if not found:
        return []
    return ["", "No-skill baseline (predicting the training mean), test MSE: "
            + ", ".join(f"{label} {_number(v, 2)}" for label, v in found) + "."]


def _finite(value: Any) -> bool:
    try:
        return value is not None and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _number(value: float, digits: int) -> str:
    """`digits` significant digits (0 as "0")."""
    value = float(value)
    return "0" if value == 0 else f"{value:.{digits}g}"


def markdown_rows(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub-flavoured markdown table (pipes in cells escaped); see `tracking.describe`."""
    from tracking.describe import markdown_rows as table

    return table(header, rows)


def now_ms() -> int:
    return int(time.time() * 1000)
