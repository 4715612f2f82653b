"""Figures of the matrices domain: the rule × attribute accuracy heat-map, accuracy over steps,
and a few rendered test matrices with their answers."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from speccomp.matrices.generator import ATTRIBUTES, N_CONTEXT, RULES  # noqa: E402
from speccomp.matrices.render import render_panels  # noqa: E402

FIGURES = {
    "pair_accuracy": "pair_accuracy.png",
    "accuracy_curves": "accuracy_curves.png",
    "matrices": "matrices.png",
}


def pair_accuracy(split, predictions: dict[int, np.ndarray], rules: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(rules, attributes) mean accuracy over seeds and number of matrices per pair (NaN where none
    or without predictions)."""
    if not predictions:
        predictions = {0: np.full((len(split), 1), np.nan)}
    correct = np.stack([p.argmax(-1) == split.target.numpy() for p in predictions.values()])  # (S, N)
    acc = np.full((len(rules), len(ATTRIBUTES)), np.nan)
    count = np.zeros_like(acc)
    for i, rule in enumerate(rules):
        for j, attr in enumerate(ATTRIBUTES):
            mask = split.pair_mask(rule, attr)
            count[i, j] = mask.sum()
            if mask.any():
                acc[i, j] = correct[:, mask].mean()
    return acc, count


def draw_pair_accuracy(path: Path, datasets, predictions, rules: list[str], heldout: list[str], chance: float) -> Path:
    """Rule × attribute accuracy per split with predictions (`predictions`: split -> seed ->
    (N, C) scores; the pipeline keeps the test split's), one colour scale; a cell is the accuracy
    on the matrices whose attribute follows that rule (n of them; 'none' where the split has none)."""
    titles = {"val": "validation (in distribution)", "test": "test (held out of training: red)"}
    panels = [(name, titles.get(name, name)) for name in ("val", "test") if name in predictions and name in datasets]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.4 * len(panels) + 1.6, 0.8 * len(rules) + 1.8), squeeze=False,
                             layout="constrained")
    im = None
    for ax, (name, title) in zip(axes[0], panels, strict=True):
        acc, count = pair_accuracy(datasets[name], predictions.get(name, {}), rules)
        im = ax.imshow(acc, vmin=0, vmax=1, cmap="viridis")
        for i in range(len(rules)):
            for j in range(len(ATTRIBUTES)):
                empty = np.isnan(acc[i, j])
                text = "none" if empty else f"{acc[i, j]:.2f}\nn={int(count[i, j])}"
                ax.text(j, i, text, ha="center", va="center", fontsize=7,
                        color="grey" if empty else ("white" if acc[i, j] < 0.6 else "black"))
                if f"{rules[i]}/{ATTRIBUTES[j]}" in heldout:
                    ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2.5))
        ax.set_xticks(range(len(ATTRIBUTES)), ATTRIBUTES, fontsize=8)
        ax.set_yticks(range(len(rules)), rules, fontsize=8)
        ax.set_title(title, fontsize=9)
    n_seeds = len(predictions.get("test", {}))
    fig.suptitle(f"accuracy by the (rule, attribute) pairs a matrix contains\nmean of {n_seeds} seed(s), "
                 f"chance {chance:.3f}", fontsize=9)
    fig.colorbar(im, ax=list(axes[0]), label="accuracy")
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def draw_accuracy_curves(path: Path, trajectory: pd.DataFrame, chance: float) -> Path:
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for col, colour, label in (("val/acc", "tab:blue", "validation (in distribution)"),
                               ("test/acc", "tab:red", "test (held out)")):
        if col not in trajectory or trajectory[col].isna().all():
            continue
        for _, seed_rows in trajectory.groupby("seed"):
            ax.plot(seed_rows["step"], seed_rows[col], color=colour, alpha=0.3, linewidth=0.8)
        mean = trajectory.groupby("step")[col].mean()
        ax.plot(mean.index, mean.values, color=colour, linewidth=2, label=f"{label}, mean of seeds")
    ax.axhline(chance, color="grey", linestyle="--", label=f"chance {chance:.3f}")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    ax.set_title("accuracy over training (thin: one seed)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def draw_matrices(path: Path, split, predictions: dict[int, np.ndarray], image_size: int, n_show: int = 3) -> Path:
    """The first `n_show` test matrices as one mosaic: the 3 × 3 context (the ninth cell '?') and
    the candidates; the answer framed green, the first seed's choice (when wrong) framed red."""
    batch = split.batch
    n_show = min(n_show, len(split))
    n_cand = batch.values.shape[1] - N_CONTEXT
    per_row = max(1, (n_cand + 1) // 2)
    pick = next(iter(predictions.values())).argmax(-1) if predictions else None
    pad, size = 4, image_size
    step = size + pad
    caption = 2 * 11  # two caption lines under each matrix, in canvas pixels
    block = 3 * step + 2 * pad + caption
    width = (3 + per_row) * step + 2 * pad
    height = n_show * block
    canvas = np.full((height, width), 0.85, np.float32)
    scale = 40  # canvas pixels per inch: panels large enough to see, captions at a readable size
    fig, ax = plt.subplots(figsize=(max(width / scale, 6.0), height / scale + 0.6))
    for m in range(n_show):
        top = m * block
        images = render_panels(batch.values[m], batch.positions[m], size)
        for k in range(9):
            y, x = top + (k // 3) * step, (k % 3) * step
            canvas[y : y + size, x : x + size] = images[k] if k < N_CONTEXT else 1.0
            if k == N_CONTEXT:
                ax.text(x + size / 2, y + size / 2, "?", ha="center", va="center", fontsize=14)
        for c in range(n_cand):
            y, x = top + (c // per_row) * step + step // 2, (3 + c % per_row) * step + 2 * pad
            canvas[y : y + size, x : x + size] = images[N_CONTEXT + c]
            colour = "green" if c == batch.target[m] else ("red" if pick is not None and c == pick[m] else None)
            if colour:
                ax.add_patch(plt.Rectangle((x - 1.5, y - 1.5), size + 2, size + 2, fill=False, edgecolor=colour, linewidth=2))
        rules = [f"{a}: {RULES[r]}" for a, r in zip(ATTRIBUTES, batch.rules[m], strict=True)]
        half = (len(rules) + 1) // 2
        ax.text(0, top + 3 * step + pad, f"matrix {m + 1}: " + ", ".join(rules[:half]) + "\n" + ", ".join(rules[half:]),
                fontsize=9, va="top", ha="left", linespacing=1.3)
    ax.imshow(canvas, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_axis_off()
    ax.set_title("test matrices: context (left), candidates (right)\ngreen = answer, red = first seed's wrong pick",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def draw_all(plots_dir: Path, cfg, datasets, trajectory: pd.DataFrame, predictions: dict[int, np.ndarray]) -> dict[str, Path]:
    plots_dir = Path(plots_dir)
    plots_dir.mkdir(parents=True, exist_ok=True)
    heldout = [p.label for p in cfg.data.heldout_pairs]
    return {
        "pair_accuracy": draw_pair_accuracy(plots_dir / FIGURES["pair_accuracy"], datasets, {"test": predictions},
                                            cfg.matrices.rules, heldout, cfg.chance),
        "accuracy_curves": draw_accuracy_curves(plots_dir / FIGURES["accuracy_curves"], trajectory, cfg.chance),
        "matrices": draw_matrices(plots_dir / FIGURES["matrices"], datasets["test"], predictions, cfg.matrices.image_size),
    }
