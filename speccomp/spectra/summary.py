"""What the spectra report of their results: the console table at the end of a run (per seed and
component the test MSE, the skills, the transfer and the gap, then the across-seed means and the
physical floor: `SpectraTask.console_summary`), and the label-free measures of one seed that a
study compares across trials (`SpectraTask.seed_measures`)."""

from __future__ import annotations

import math

import pandas as pd

SUMMARY_MEASURES = (("test/mse", "test MSE"), ("skill/val", "in-dist skill"), ("skill/test", "comb. skill"),
                    ("transfer", "transfer"), ("gap", "gap"))


def summary_lines(summary, tracked: list[str], learned_skill: float) -> list[str]:
    """The console's results: one row per (seed, component) with the test MSE, the in-distribution
    skill (R² where present, validation), the combination skill (R² where present, test), the
    transfer (their ratio, or "not learned") and the old gap; then per component the across-seed
    mean ± std of each, over the seeds that have it, and the physical floor."""
    rows = []
    for _, seed_row in summary.iterrows():
        for label in tracked:
            row = {"data_seed": int(seed_row["data_seed"]), "seed": int(seed_row["seed"]), "component": label}
            for key, title in SUMMARY_MEASURES:
                value = seed_row.get(f"{key}/{label}", math.nan)
                row[title] = f"{value:.4f}" if pd.notna(value) else "-"
            skill = seed_row.get(f"skill/val/{label}", math.nan)
            if pd.notna(skill) and pd.isna(seed_row.get(f"transfer/{label}", math.nan)):
                row["transfer"] = "not learned"
            rows.append(row)
    lines = [pd.DataFrame(rows).to_string(index=False), ""]
    n = len(summary)
    lines.append(f"mean ± std over seeds (transfer: over the seeds that learned the component, "
                 f"i.e. in-distribution skill >= {learned_skill:g}):")
    for label in tracked:
        parts = []
        for key, _ in SUMMARY_MEASURES:
            col = f"{key}/{label}"
            values = pd.to_numeric(summary[col], errors="coerce").dropna() if col in summary else pd.Series([], dtype=float)
            if values.empty:
                continue
            std = values.std(ddof=1) if len(values) > 1 else 0.0
            parts.append(f"{col} {values.mean():.4f} ± {std:.4f}")
        if f"skill/val/{label}" in summary:
            learned = int(pd.to_numeric(summary.get(f"transfer/{label}", pd.Series([math.nan] * n)),
                                        errors="coerce").notna().sum())
            parts.append(f"learned by {learned} of {n} seed(s)")
        lines.append("  " + "   ".join(parts))
    floors = [(t, summary[f"oracle/mse/{t}"].mean()) for t in tracked if f"oracle/mse/{t}" in summary]
    if floors:
        lines.append("physical floor (oracle MSE on the test split): "
                     + "   ".join(f"{t} {v:.2g} (test MSE {summary[f'test/mse/{t}'].mean() / v:.0f}x that)"
                                  for t, v in floors))
    return lines


def seed_measures(final: dict[str, float], tracked: list[str]) -> dict[str, float]:
    """Label-independent summaries of one seed (comparable across trials with different pairs).
    `transfer/tracked` is the mean transfer of the tracked components, NaN unless every one was
    learned in distribution; `learned/tracked` is 1 when every one was, 0 when not (NaN without a
    validation split)."""
    def mean_of(prefix: str) -> float:
        values = [final.get(f"{prefix}/{label}", math.nan) for label in tracked]
        return float(sum(values) / len(values))

    judged = all(f"skill/val/{label}" in final for label in tracked)
    learned = all(f"transfer/{label}" in final for label in tracked)
    return {
        "test/mse/tracked": mean_of("test/mse"),
        "val/mse/tracked": mean_of("val/mse"),
        "val/mse_present/tracked": mean_of("val/mse_present"),
        "test/mse_present/tracked": mean_of("test/mse_present"),
        "gap/tracked": mean_of("gap"),
        "skill/val/tracked": mean_of("skill/val"),
        "skill/test/tracked": mean_of("skill/test"),
        "transfer/tracked": mean_of("transfer") if learned else math.nan,
        "learned/tracked": float(learned) if judged else math.nan,
        "oracle/mse/tracked": mean_of("oracle/mse"),
        "oracle/efficiency/tracked": mean_of("oracle/efficiency"),
    }
