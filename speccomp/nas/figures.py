"""The search's figure: per decision, the probability of each option over the iterations."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from speccomp.nas.space import NasSpace

PROBABILITIES_FIGURE = "nas_probabilities.png"


def draw_probabilities(
    space: NasSpace, trajectory: torch.Tensor, path: str | Path, choices: dict[str, str] | None = None
) -> Path:
    """One panel per decision: softmax(α) of each option (y) against the iteration (x), from the
    (T + 1, n_logits) flat α trajectory; the derived choice (`choices`, default the final argmax)
    drawn bold. Each y axis is zoomed to its data (a search that barely moved α still shows which
    option leads); the dotted line is the uniform probability."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(space.decisions)
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 2.8 * rows), squeeze=False, sharex=True)
    iterations = torch.arange(trajectory.shape[0])
    start = 0
    for ax, d in zip(axes.flat, space.decisions, strict=False):
        logits = trajectory[:, start : start + len(d.options)]
        start += len(d.options)
        probs = torch.softmax(logits, dim=1)
        best = d.options.index(choices[d.name]) if choices else int(probs[-1].argmax())
        for k, option in enumerate(d.options):
            ax.plot(iterations, probs[:, k], lw=2.2 if k == best else 1.0, label=option)
        ax.set_title(d.name, fontsize=10)
        ax.axhline(1 / len(d.options), color="grey", lw=0.6, ls=":")
        ax.legend(fontsize=7, loc="upper left", ncol=2, frameon=False)
        ax.set_ylabel("softmax(α)", fontsize=8)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("search iteration")
    fig.suptitle("Architecture probabilities during the search (bold: derived; dotted: uniform; y axes zoomed)",
                 fontsize=11)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
