"""Assemble the benchmarks' JSON results into one markdown table.

    python benchmarks/summarize.py benchmarks/results/*.json > benchmarks/results/latest.md

Targets first (measure, figure, target, PASS/FAIL), then every informational figure, then notes.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def main(paths: list[str]) -> int:
    reports = [json.loads(Path(p).read_text()) for p in paths]
    skipped = [p for p, r in zip(paths, reports, strict=True) if not isinstance(r, dict) or "rows" not in r]
    reports = [r for r in reports if isinstance(r, dict) and "rows" in r]
    for p in skipped:
        print(f"summarize: {p} is not a bench_* report (no 'rows'); skipped", file=sys.stderr)
    out = [f"# Benchmark results ({time.strftime('%Y-%m-%d %H:%M %Z')})", ""]
    for r in reports:
        ctx = r.get("context", {})
        machine = ctx.get("machine") or ctx.get("machine_start", "")
        out.append(f"- `{r['name']}`: {machine}")
    out += ["", "## Targets", "", "| measure | figure | target | verdict |", "| --- | --- | --- | --- |"]
    for r in reports:
        for row in r["rows"]:
            if row["verdict"]:
                out.append(f"| {r['name']}: {_cell(row['measure'])} | {_cell(row['figure'])} | {_cell(row['target'])} | **{row['verdict']}** |")
    out += ["", "## All figures", "", "| measure | figure |", "| --- | --- |"]
    for r in reports:
        for row in r["rows"]:
            if not row["verdict"]:
                out.append(f"| {r['name']}: {_cell(row['measure'].strip())} | {_cell(row['figure'])} |")
    notes = [f"- {r['name']}: {n}" for r in reports for n in r.get("notes", [])]
    if notes:
        out += ["", "## Notes", "", *notes]
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
