"""Figures of the physics and of the abundances, drawable before any training: the spectral lines
(`spectral_lines.png`) and the tracked pair's abundance space, train against test
(`abundance_scatter.png`). The example spectra are in `samples`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from speccomp.core.config import PhysicsConfig
from speccomp.spectra.data import SplitData
from speccomp.spectra.figures._common import TEST_COLOR, TRACKED_COLORS, TRAIN_COLOR, _component_colors, _figure
from speccomp.spectra.physics import ForwardModel


def plot_spectral_lines(physics: PhysicsConfig, tracked: Sequence[str] = ()) -> Figure:
    """Top: every line's signed profile s·g(λ) over the grid; bottom: centre vs strength."""
    forward = ForwardModel.from_config(physics)
    wl = forward.wavelength_nm.numpy()
    signed = (forward.strengths[:, None] * forward.profiles).numpy()
    tracked = list(tracked)
    colors = _component_colors(len(physics.lines))
    for i, line in enumerate(physics.lines):
        if line.label in tracked:
            colors[i] = TRACKED_COLORS[tracked.index(line.label) % len(TRACKED_COLORS)]

    fig = _figure((11, 7.5))
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[1.15, 1])
    for i, line in enumerate(physics.lines):
        is_tracked = line.label in tracked
        top.plot(
            wl,
            signed[i],
            color=colors[i],
            lw=2.6 if is_tracked else 1.0,
            alpha=1.0 if is_tracked else 0.75,
            zorder=3 if is_tracked else 2,
        )
        if is_tracked:
            right = tracked.index(line.label) % 2 == 0
            top.annotate(
                f"{line.label} (tracked)",
                (line.center, line.strength),
                xytext=(8 if right else -8, 6 if line.strength > 0 else -12),
                textcoords="offset points",
                ha="left" if right else "right",
                fontsize=9.5,
                fontweight="bold",
                color=colors[i],
            )
    top.axhline(0, color="0.3", lw=0.8)
    top.set_ylabel("strength × profile  s·g(λ)")
    top.set_ylim(-1.15, 1.15)
    top.set_title(
        f"{len(physics.lines)} spectral components: signed Gaussian line profiles "
        f"(> 0 emission, < 0 absorption; spectrum = continuum · Π(1 + a·s·g))",
        fontsize=10,
    )
    top.grid(alpha=0.3)

    for i, line in enumerate(physics.lines):
        is_tracked = line.label in tracked
        bottom.errorbar(
            line.center,
            line.strength,
            xerr=line.width,
            fmt="o",
            color=colors[i],
            ms=8 if is_tracked else 6,
            elinewidth=1.2,
            capsize=3,
            alpha=0.9,
            mec="black" if is_tracked else colors[i],
        )
        bottom.annotate(
            line.label,
            (line.center, line.strength),
            xytext=(4, 5),
            textcoords="offset points",
            fontsize=8.5,
            fontweight="bold" if is_tracked else "normal",
        )
    bottom.axhline(0, color="0.3", lw=0.8)
    bottom.set_ylim(-1.15, 1.15)
    bottom.set_xlim(physics.wavelength_min, physics.wavelength_max)
    bottom.set_xlabel("wavelength (nm)")
    bottom.set_ylabel("line strength s")
    bottom.set_title("Line centre vs strength (bars: ± one width σ)", fontsize=10)
    bottom.grid(alpha=0.3)
    return fig


def plot_abundance_scatter(datasets: Mapping[str, SplitData], tracked: Sequence[str]) -> Figure:
    """Abundances of the tracked pair: train (blue) on the axes, test (red) in the interior."""
    train, test = datasets["train"], datasets["test"]
    fig = _figure((8, 7))
    ax = fig.subplots()
    if len(tracked) < 2:  # one tracked component: compare the two splits' abundance histograms
        label = tracked[0]
        bins = np.linspace(0, 1, 41)
        for split, color in ((train, TRAIN_COLOR), (test, TEST_COLOR)):
            a = split.abundances[:, split.label_index(label)].numpy()
            ax.hist(a, bins=bins, color=color, alpha=0.45, label=f"{split.name} (n = {len(a)})", density=True)
        ax.set_xlabel(f"{label} abundance")
        ax.set_ylabel("density")
        ax.set_title(f"Abundance of {label}: train vs test", fontsize=11)
        ax.legend(loc="upper right", fontsize=9)
        return fig

    x, y = tracked[0], tracked[1]
    lo, hi = 0.0, 1.0
    for split, color, size, z in ((train, TRAIN_COLOR, 10, 3), (test, TEST_COLOR, 10, 2)):
        ax_ = split.abundances[:, split.label_index(x)].numpy()
        ay_ = split.abundances[:, split.label_index(y)].numpy()
        at_origin = int(np.sum((ax_ == 0) & (ay_ == 0)))
        extra = f"; {at_origin} at the origin" if at_origin else ""
        ax.scatter(
            ax_, ay_, s=size, color=color, alpha=0.5, lw=0, zorder=z, label=f"{split.name} (n = {len(ax_)}{extra})"
        )
        lo, hi = min(lo, ax_.min(), ay_.min()), max(hi, ax_.max(), ay_.max())
    pad = 0.04 * (hi - lo)
    ax.set_xlim(lo - pad, hi + pad)
    ax.set_ylim(lo - pad, hi + pad)
    ax.set_aspect("equal")
    ax.set_xlabel(f"{x} abundance")
    ax.set_ylabel(f"{y} abundance")
    ax.set_title(f"Abundance space of {x} and {y}: train on the axes, test in the interior", fontsize=11)
    ax.grid(alpha=0.3)
    fig.legend(
        *ax.get_legend_handles_labels(),
        loc="outside lower center",
        ncol=2,
        fontsize=9.5,
        markerscale=2.5,
        frameon=False,
    )
    return fig
