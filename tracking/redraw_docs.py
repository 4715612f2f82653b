"""Redraw the figures and tables of the documentation pages under `docs/` (the README's figure
among them) from runs in the tracking store, so that they cannot go stale silently: every file
names the runs (and code commit) it came from.

    speccomp redraw-docs                        the latest finished runs of the store
    speccomp redraw-docs --main RUN_ID --study RUN_ID --compare RUN_ID RUN_ID ...

Writes into `--out` (default `docs/`):

    mse_time_series.png   the `--main` run's figure (default: the latest finished `main` run with the
                          default model, the MLP on raw spectra)
    study_effects.png     the `--study` run's effect plot (default: the latest finished study run)
    study_report.md       that study's report
    results.md            one row per `--compare` run (default: the latest finished `main` run of each
                          model type × input transform): test MSE, in-distribution and combination
                          skill, transfer (with the number of seeds that learned), gap and the
                          physical floor, per tracked component, mean ± std over seeds
    SOURCES.md            which run each file came from, when, at which commit
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

from tracking.ui import seed_count

USER_ERROR = 2
MEASURES = (("test/mse", "test MSE", ".2g"), ("skill/val", "in-dist skill", ".3f"),
            ("skill/test", "comb. skill", ".3f"), ("transfer", "transfer", ".3f"), ("gap", "gap", ".2f"))


def _finished(client, role: str) -> list:
    experiments = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(experiments, filter_string=f"tags.`speccomp.role` = '{role}' and attributes.status = 'FINISHED'",
                              order_by=["attributes.start_time DESC"], max_results=500)


def _latest_main(runs: list):
    for run in runs:  # the default model: what the README's figure shows (docs/mse_time_series.png)
        p = run.data.params
        if p.get("training.model_type") == "mlp" and p.get("training.input_transform") == "none":
            return run
    return runs[0] if runs else None


def _latest_per_model(runs: list) -> list:
    seen, out = set(), []
    for run in runs:
        key = (run.data.params.get("training.model_type"), run.data.params.get("training.input_transform"))
        if key not in seen:
            seen.add(key)
            out.append(run)
    return out


def results_table(runs: list) -> str:
    """A markdown table: one row per run and tracked component, across-seed mean ± std."""
    head = ["model", "input", "seeds", "component", *[t for _, t, _ in MEASURES], "oracle MSE"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for run in runs:
        m, p, tags = run.data.metrics, run.data.params, run.data.tags
        n = seed_count(tags.get("seeds", ""))
        for label in tags.get("tracked", "").split(","):
            cells = [p.get("training.model_type", "?"), p.get("training.input_transform", "?"), str(n), label]
            for key, _, fmt in MEASURES:
                name = f"{key}/{label}"
                if name not in m:
                    missed = int(m.get(f"not_learned/{label}", 0))
                    cells.append(f"not learned ({missed}/{n})" if key == "transfer" and missed else "-")
                    continue
                cell = f"{m[name]:{fmt}} ± {m.get(f'std/{name}', 0.0):{fmt}}"
                if key == "transfer" and m.get(f"not_learned/{label}", 0):
                    cell += f" ({n - int(m[f'not_learned/{label}'])}/{n} learned)"
                cells.append(cell)
            oracle = m.get(f"oracle/mse/{label}")
            cells.append(f"{oracle:.2g}" if oracle is not None else "-")
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _source(run, what: str) -> str:
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(run.info.start_time / 1000))
    commit = run.data.tags.get("mlflow.source.git.commit", "unknown")[:10]
    return f"- {what}: run `{run.info.run_id}` ({run.info.run_name}), started {started}, commit `{commit}`"


def main(main_run: str | None = None, study_run: str | None = None, compare: list[str] | None = None,
         out: str = "docs") -> int:
    """`speccomp redraw-docs`: the documentation's figures, results table and study report from the runs
    named (default: the latest finished ones)."""
    args = SimpleNamespace(main=main_run, study=study_run, compare=compare or None, out=out)
    from tracking import store
    from tracking.readback import ReadbackError, redraw_from_mlflow

    store.configure()
    client = store.tracking_client()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        mains = _finished(client, "main")
        main_run = client.get_run(args.main) if args.main else _latest_main(mains)
        compare = [client.get_run(r) for r in args.compare] if args.compare else _latest_per_model(mains)
        study_run = client.get_run(args.study) if args.study else next(iter(_finished(client, "study")), None)
    except Exception as exc:  # an unknown run id, an unreachable store: one line
        print(f"error: {exc}".splitlines()[0], file=sys.stderr)
        return USER_ERROR
    if main_run is None:
        print("error: no finished `main` run in the tracking store; run `mlflow run . --env-manager local` first",
              file=sys.stderr)
        return USER_ERROR
    sources = ["# Where the figures and tables in docs/ come from", "",
               f"Written by `speccomp redraw-docs` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.", ""]
    with tempfile.TemporaryDirectory(prefix="speccomp-docs-") as tmp:
        try:
            drawn = redraw_from_mlflow(main_run.info.run_id, tmp, client)
        except ReadbackError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return USER_ERROR
        shutil.copy(drawn["mse_time_series.png"], out / "mse_time_series.png")
    sources.append(_source(main_run, "mse_time_series.png"))
    (out / "results.md").write_text("# Results of the latest runs (mean ± std over seeds)\n\n"
                                    + results_table(compare) + "\n")
    sources += [_source(r, "results.md row") for r in compare]
    if study_run is not None:
        with tempfile.TemporaryDirectory(prefix="speccomp-docs-") as tmp:
            for name, target in (("report/effects.png", "study_effects.png"), ("report/report.md", "study_report.md")):
                try:
                    shutil.copy(client.download_artifacts(study_run.info.run_id, name, tmp), out / target)
                except Exception as exc:  # an older study without the file
                    print(f"warning: study run {study_run.info.run_id} has no {name} ({exc})", file=sys.stderr)
                    continue
                sources.append(_source(study_run, target))
    (out / "SOURCES.md").write_text("\n".join(sources) + "\n")
    print("\n".join(sources[4:]))
    print(f"wrote {out}/: mse_time_series.png, results.md" + (", study_effects.png, study_report.md" if study_run else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
