"""How a parent run presents itself: its name, its description, its headline metrics and the
addresses that lead to it. Every entry point (`main`, `study`, `nas`, `meta`) calls these at the
end, so that its runs read alike in the MLflow UI, in optuna-dashboard and on the console.

API (one example each):

`seed_range(seeds) -> str`: compact seeds, runs of three or more collapsed.
    seed_range([123, 124, 125]) == "123-125";  seed_range([1, 5, 6, 7, 9]) == "1,5-7,9"

`run_name(kind, *words, seeds=None, data_seeds=None) -> str`: a descriptive parent-run name
(data seeds only when not the default 42; empty words dropped).
    run_name("nas", "spectra", "1000 it", seeds=[123, 124, 125]) == "nas spectra 1000 it seeds 123-125"
    run_name("meta", "spectra", "100/20 tasks") == "meta spectra 100/20 tasks"

`domain_word(domain) -> str`: the domain as run and model names say it ("spectra", "raven" for
the matrices domain).    run_name("nas", domain_word("matrices"), "300 it", seeds=[1]) == "nas raven 300 it seeds 1"

`sig(value, digits=3) -> str`: `digits` significant digits, no exponent for 0.001 <= |v| < 1e5,
"—" for None/NaN/inf.    sig(0.01466353) == "0.0147";  sig(1234.5) == "1230";  sig(2.5e-6) == "2.5e-06"
`pm(mean, std, digits=3) -> str`: "0.0147 ± 0.0012" (the std to 2 digits; no "±" when std is 0/NaN).

`description(verdict, header=(), rows=(), notes=()) -> str`: markdown that opens with the one-line
verdict (bold), then the table, then the notes (one paragraph each). The UI shows the first lines
of a description until "Show more", so the verdict is what a reader sees first.
    description("NAS beats the default: test MSE 0.0147 vs 0.0211 (p = 0.031)",
                ["model", "test MSE"], [["nas", sig(0.0147)], ["default", sig(0.0211)]])
`set_description(client, run_id, markdown)`: store it as the run's description (`mlflow.note.content`).

`headline_metrics(domain, values, tracked=(), chance=None) -> dict[str, float]`: the values a
parent logs for the saved headline view's columns (`tracking.ui.HEADLINE_COLUMNS`): spectra
per-component metrics under their role names (`test/mse/comp10` -> `first/test/mse`, `gap/comp4` ->
`gap/second`, ...), matrices `test/acc`, `val/acc`, `gap/acc` and `chance/acc`; plus any
`headline/...` values already in `values` (`headline/ratio_to_default`, `headline/ratio_to_oracle`,
`headline/p_value`, `headline/median_test_mse`).
    headline_metrics("spectra", {"test/mse/comp10": 0.0147, "gap/comp10": 1.2}, ["comp10", "comp4"])
        == {"first/test/mse": 0.0147, "gap/first": 1.2}
    headline_metrics("matrices", {"test/acc": 0.61, "gap/acc": 0.2}, chance=0.125)
        == {"test/acc": 0.61, "gap/acc": 0.2, "chance/acc": 0.125}

Addresses: every URL of the MLflow UI that the project prints or stores carries
`?workflowType=machine_learning` (without it the UI opens in its GenAI mode, whatever the
experiment's kind tag says).
`ui_base(uri) -> str`: the UI's address for a tracking URI (the server itself for http(s), else
    `mlflow ui`'s http://127.0.0.1:5000), password hidden.
`run_url(uri, experiment_id, run_id) -> str`: a run's page.
    run_url("sqlite:///mlflow.db", "1", "ab12") ==
        "http://127.0.0.1:5000/#/experiments/1/runs/ab12?workflowType=machine_learning"
`experiment_url(uri, experiment_id, view=True) -> str`: the runs table (on the saved headline view).
`with_workflow(url) -> str`: any UI address with the query added (kept when already there).
`link(text, url) -> str`: a markdown link, "[text](url)".
`closing_lines(uri, info) -> list[str]`: what a command prints last: the parent run (id, name,
    experiment), its page, the command that opens the UI, the headline view; `info` is the run's
    `RunInfo` (`client.get_run(run_id).info`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

NOTE_TAG = "mlflow.note.content"
NOTE_LIMIT = 5000
"""Characters of a description the project stores (MLflow tag values allow more; the UI shows
them all, but a description is a summary: details go to artifacts)."""
WORKFLOW_QUERY = "workflowType=machine_learning"
LOCAL_UI = "http://127.0.0.1:5000"
"""Where `mlflow ui --host 127.0.0.1` (the command the project prints) serves the UI."""
VIEW_ID = "speccomp-headline"
DEFAULT_DATA_SEEDS = (42,)
MISSING = "—"


# ------------------------------------------------------------------------------------------------
# names
# ------------------------------------------------------------------------------------------------
SHORT_FROM = 10
"""Seed lists longer than this are printed and tagged in short form (`short_seeds`)."""
SHORT_MAX_CHARS = 120


def short_seeds(seeds: Sequence[int]) -> str:
    """`0–4999 (5,000 seeds)`; runs of consecutive seeds as ranges (`0–99, 200–299 (200 seeds)`),
    and when those are still long the first and last few (`1, 3, 5, …, 9999 (5,000 seeds)`)."""
    seeds = list(seeds)
    parts, start = [], 0
    for i in range(1, len(seeds) + 1):
        if i == len(seeds) or seeds[i] != seeds[i - 1] + 1:
            first, last = seeds[start], seeds[i - 1]
            parts.append(str(first) if first == last else f"{first}–{last}")
            start = i
    count = f"({len(seeds):,} seed{'s' if len(seeds) != 1 else ''})"
    text = ", ".join(parts)
    if len(text) > SHORT_MAX_CHARS:
        text = ", ".join([*parts[:3], "…", *parts[-2:]])
    return f"{text} {count}"


def seed_range(seeds: Iterable[int]) -> str:
    """Seeds as written by hand: runs of three or more consecutive seeds as `a-b`, the rest
    comma-separated, in the given order; a list longer than `SHORT_FROM` in its short
    form (`0–4999 (5,000 seeds)`, `short_seeds`)."""
    seeds = list(seeds)
    if len(seeds) > SHORT_FROM:
        return short_seeds(seeds)
    parts: list[str] = []
    i = 0
    while i < len(seeds):
        j = i
        while j + 1 < len(seeds) and seeds[j + 1] == seeds[j] + 1:
            j += 1
        if j - i >= 2:
            parts.append(f"{seeds[i]}-{seeds[j]}")
        else:
            parts.extend(str(s) for s in seeds[i:j + 1])
        i = j + 1
    return ",".join(parts)


DOMAIN_WORDS = {"matrices": "raven"}
"""A domain's word in names where it differs from its registry name."""


def domain_word(domain: str) -> str:
    return DOMAIN_WORDS.get(domain, domain)


def run_name(kind: str, *words: Any, seeds: Iterable[int] | None = None,
             data_seeds: Iterable[int] | None = None) -> str:
    """`kind` and `words` (empty ones dropped), then `seeds a-b` and `data c` (when not 42)."""
    parts = [str(kind), *(str(w) for w in words if w not in (None, ""))]
    if seeds is not None:
        parts.append(f"seeds {seed_range(seeds)}")
    if data_seeds is not None and tuple(data_seeds) != DEFAULT_DATA_SEEDS:
        parts.append(f"data {seed_range(data_seeds)}")
    return " ".join(parts)


# ------------------------------------------------------------------------------------------------
# numbers
# ------------------------------------------------------------------------------------------------
def finite(value: Any) -> bool:
    try:
        return value is not None and not isinstance(value, bool) and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def sig(value: Any, digits: int = 3) -> str:
    """`value` to `digits` significant digits: plain notation for 0.001 <= |value| < 1e5
    (`0.0147`, `1230`, `12.5`), an exponent outside (`2.5e-06`); 0 as "0"; "—" when missing."""
    if not finite(value):
        return MISSING
    rounded = float(f"{float(value):.{digits}g}")
    if rounded == 0:
        return "0"
    if not 1e-3 <= abs(rounded) < 1e5:
        return _trim_exponent(f"{rounded:.{digits - 1}e}")
    decimals = max(digits - 1 - math.floor(math.log10(abs(rounded))), 0)
    text = f"{rounded:.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def _trim_exponent(text: str) -> str:
    mantissa, _, exponent = text.partition("e")
    if "." in mantissa:
        mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}e{exponent}"


def pm(mean: Any, std: Any = None, digits: int = 3) -> str:
    """"mean ± std" (std to 2 significant digits); the mean alone when std is 0, None or NaN."""
    shown = sig(mean, digits)
    if finite(std) and float(std) != 0 and shown != MISSING:
        shown += f" ± {sig(std, 2)}"
    return shown


# ------------------------------------------------------------------------------------------------
# descriptions
# ------------------------------------------------------------------------------------------------
def markdown_rows(header: Sequence[Any], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub-flavoured markdown table (pipes in cells escaped, newlines as spaces)."""
    def cell(v: Any) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def description(verdict: str, header: Sequence[Any] = (), rows: Iterable[Sequence[Any]] = (),
                notes: Iterable[str] = ()) -> str:
    """The verdict (one line, bold), the table (when `header` is given), then each note as a
    paragraph. A verdict of several lines is refused: the UI's collapsed description shows the
    first line, and that line is the verdict."""
    verdict = verdict.strip()
    if not verdict or "\n" in verdict:
        raise ValueError(f"verdict: one non-empty line, got {verdict!r}")
    parts = [verdict if verdict.startswith("**") else f"**{verdict}**"]
    if header:
        parts.append(markdown_rows(header, rows))
    parts += [n for n in notes if n]
    return "\n\n".join(parts)


def set_description(client, run_id: str, markdown: str) -> None:
    """`markdown` as the run's description (the `mlflow.note.content` tag, cut to `NOTE_LIMIT`)."""
    client.set_tag(run_id, NOTE_TAG, markdown[:NOTE_LIMIT])


def description_tag(markdown: str) -> dict[str, str]:
    """The tag `set_description` sets, for a batch that carries other records too."""
    return {NOTE_TAG: markdown[:NOTE_LIMIT]}


# ------------------------------------------------------------------------------------------------
# headline metrics
# ------------------------------------------------------------------------------------------------
ROLES = ("first", "second")
SPECTRA_HEADLINE = ("test/mse", "gap", "transfer", "oracle/efficiency", "skill/val")
"""Per-component final metrics whose role-named copies are headline metrics (`first/test/mse`,
`gap/first`, ...)."""
MATRICES_HEADLINE = ("test/acc", "val/acc", "gap/acc", "chance/acc")
HEADLINE_PREFIX = "headline/"
HEADLINE_EXTRAS = ("headline/ratio_to_default", "headline/ratio_to_oracle", "headline/p_value",
                   "headline/median_test_mse")
"""Role-specific headline values a parent may log besides its domain's: nas the derived model's
test MSE ratio to the default model's, meta the median ratio to the oracle (spectra) and its
median test MSE, both the p-value of their comparison with the null."""


def role_metric(head: str, role: str) -> str:
    """Where a role-named metric goes: curves take the role first (`first/test/mse`), final values
    in place of the label (`gap/first`) — see `tracking.ui.ROLES`."""
    return f"{role}/{head}" if head.startswith(("test/mse", "val/mse")) else f"{head}/{role}"


def headline_metrics(domain: str, values: Mapping[str, Any], tracked: Sequence[str] = (),
                     chance: float | None = None) -> dict[str, float]:
    """The headline values of `values` (see the module docstring); only finite ones."""
    out: dict[str, float] = {}
    if domain == "matrices":
        out = {k: float(values[k]) for k in MATRICES_HEADLINE if finite(values.get(k))}
        if chance is not None and finite(chance):
            out["chance/acc"] = float(chance)
    else:
        for label, role in zip(tracked, ROLES, strict=False):
            for head in SPECTRA_HEADLINE:
                value = values.get(f"{head}/{label}")
                if finite(value):
                    out[role_metric(head, role)] = float(value)
    out.update({k: float(v) for k, v in values.items() if k.startswith(HEADLINE_PREFIX) and finite(v)})
    return out


# ------------------------------------------------------------------------------------------------
# addresses
# ------------------------------------------------------------------------------------------------
def ui_base(uri: str) -> str:
    """The MLflow UI's address for tracking URI `uri`: a tracking server serves its own UI; any
    other store is opened with `mlflow ui --host 127.0.0.1` (port 5000)."""
    from tracking.store import redact_url

    if uri.startswith(("http://", "https://")):
        return redact_url(uri).rstrip("/")
    return LOCAL_UI


def with_workflow(url: str) -> str:
    """`url` with `workflowType=machine_learning` in its query (after the `#/...` route, where the
    UI reads it); unchanged when it is there already."""
    if WORKFLOW_QUERY in url:
        return url
    return f"{url}{'&' if '?' in url else '?'}{WORKFLOW_QUERY}"


def run_url(uri: str, experiment_id: str, run_id: str) -> str:
    """The run's own page (Overview tab) in the model-training view. `uri`: a tracking URI or the
    UI's base address."""
    return with_workflow(f"{ui_base(uri)}/#/experiments/{experiment_id}/runs/{run_id}")


def experiment_url(uri: str, experiment_id: str, view: bool = True) -> str:
    """The experiment's runs table, on the saved headline view when `view`."""
    url = with_workflow(f"{ui_base(uri)}/#/experiments/{experiment_id}/runs")
    return f"{url}&viewStateShareKey={VIEW_ID}" if view else url


URL_PATTERN = re.compile(r"https?://[^\s)\]>\"'`]+")
"""An address in printed text or markdown (ends at whitespace or a closing bracket or quote)."""


def urls_in(text: str) -> list[str]:
    return URL_PATTERN.findall(text or "")


def link(text: str, url: str) -> str:
    return f"[{text}]({url})"


def closing_lines(uri: str, info) -> list[str]:
    """A command's last lines: which parent run it made, its page, how to open the UI."""
    from tracking.store import ui_command

    lines = [f"parent run {info.run_id} ({info.run_name}) in experiment {info.experiment_id}",
             f"its page: {run_url(uri, info.experiment_id, info.run_id)}"]
    if uri.startswith(("http://", "https://")):
        lines.append(f"the headline view: {experiment_url(uri, info.experiment_id)}")
    else:
        lines += [f"open the UI: {ui_command(uri)}", f"then the headline view: {experiment_url(uri, info.experiment_id)}"]
    return lines
