"""Figures of example spectra (`diverse_samples.png`, `train_samples.png`, `test_samples.png`) and
how the examples are picked: cycling through a split's component sets so that each shows up, with a
`numpy.random.Generator` the caller passes in."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from speccomp.core.config import PhysicsConfig
from speccomp.spectra.data import SplitData
from speccomp.spectra.figures._common import TRACKED_COLORS, _label_panels, _panel_grid, _split_color
from speccomp.spectra.physics import ForwardModel


def plot_diverse_samples(
    physics: PhysicsConfig,
    datasets: Mapping[str, SplitData],
    rng: np.random.Generator,
    n: int = 10,
    forward: ForwardModel | None = None,
) -> Figure:
    """About `n` spectra across all splits and compositions, each with its blackbody continuum dashed."""
    forward = forward or ForwardModel.from_config(physics)
    wl = forward.wavelength_nm.numpy()
    picks: list[tuple[str, int]] = []
    for name, split in datasets.items():
        for idx in _pick_by_group(split, [], rng, max(1, n // max(1, len(datasets)) + 1)):
            picks.append((name, idx))
    if len(picks) > n:
        keep = np.sort(rng.choice(len(picks), size=n, replace=False))
        picks = [picks[k] for k in keep]
    picks.sort(key=lambda p: float(datasets[p[0]].temperature_k[p[1]]))

    ncols = min(5, len(picks))
    nrows = int(np.ceil(len(picks) / ncols))
    fig, axes = _panel_grid((12, 2.75 * nrows + 1.2), nrows, ncols)
    for ax, (name, idx) in zip(axes, picks, strict=False):
        split = datasets[name]
        temp = split.temperature_k[idx : idx + 1].to(torch.float64)
        cont = forward.continuum(temp)[0].numpy()
        color = _split_color(name)
        ax.plot(wl, split.spectra[idx].numpy(), color=color, lw=0.7, alpha=0.85)
        ax.plot(wl, cont, color="black", lw=1.3, ls="--")
        comps = _present_labels(split, idx)
        ax.set_title(
            f"{name}: {_short_list(comps)}\nT = {float(temp):.0f} K, σ = {float(split.noise_sigma[idx]):.3f}",
            fontsize=8.5,
        )
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(4))
    _label_panels(axes, len(picks), ncols, "wavelength (nm)", "flux (continuum peak = 1)")
    handles = [Line2D([], [], color=_split_color(s), lw=1.2, label=f"{s} spectrum") for s in datasets]
    handles.append(Line2D([], [], color="black", lw=1.3, ls="--", label="blackbody continuum"))
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=9, frameon=False)
    fig.suptitle(
        f"{len(picks)} random spectra over the full grid (ordered by temperature)", fontsize=11, y=0.995, va="top"
    )
    return fig


def plot_train_samples(
    physics: PhysicsConfig,
    train: SplitData,
    tracked: Sequence[str],
    rng: np.random.Generator,
    n: int = 6,
    forward: ForwardModel | None = None,
) -> Figure:
    """Training examples, one per panel (columns cycle through the split's compositions)."""
    title = f"Examples from the {train.name!r} split: single components and the bare continuum"
    return plot_split_samples(physics, train, tracked, rng, n, forward, title=title)


def plot_test_samples(
    physics: PhysicsConfig,
    test: SplitData,
    tracked: Sequence[str],
    rng: np.random.Generator,
    n: int = 6,
    forward: ForwardModel | None = None,
) -> Figure:
    """Test examples (the tracked components together), one per panel."""
    title = f"Examples from the {test.name!r} split: the combination never seen in training"
    return plot_split_samples(physics, test, tracked, rng, n, forward, title=title)


def plot_split_samples(
    physics: PhysicsConfig,
    split: SplitData,
    tracked: Sequence[str],
    rng: np.random.Generator,
    n: int = 6,
    forward: ForwardModel | None = None,
    title: str | None = None,
) -> Figure:
    """`n` examples of one split: noisy spectrum, noise-free model, continuum; tracked lines marked."""
    forward = forward or ForwardModel.from_config(physics)
    wl = forward.wavelength_nm.numpy()
    idx = _pick_by_group(split, tracked, rng, n)
    temps = split.temperature_k[idx].to(torch.float64)
    abund = split.abundances[idx].to(torch.float64)
    clean = forward.clean(temps, abund).numpy()
    cont = forward.continuum(temps).numpy()
    lines = {ln.label: ln for ln in physics.lines}
    color = _split_color(split.name)

    ncols = min(3, len(idx))
    nrows = int(np.ceil(len(idx) / ncols))
    fig, axes = _panel_grid((11.5, 2.8 * nrows + 1.2), nrows, ncols)
    for k, (ax, i) in enumerate(zip(axes, idx, strict=False)):
        for j, label in enumerate(tracked):
            ln = lines[label]
            tc = TRACKED_COLORS[j % len(TRACKED_COLORS)]
            ax.axvspan(ln.center - ln.width, ln.center + ln.width, color=tc, alpha=0.10, lw=0)
            ax.axvline(ln.center, color=tc, lw=1.2, ls=":")
        ax.plot(wl, split.spectra[i].numpy(), color=color, lw=0.7, alpha=0.7)
        ax.plot(wl, clean[k], color="black", lw=1.1)
        ax.plot(wl, cont[k], color="0.4", lw=1.1, ls="--")
        ax.set_title(_sample_title(split, i, tracked), fontsize=9)
        ax.grid(alpha=0.3)
    _label_panels(axes, len(idx), ncols, "wavelength (nm)", "flux (continuum peak = 1)")
    handles = [
        Line2D([], [], color=color, lw=1.0, label="noisy spectrum (model input)"),
        Line2D([], [], color="black", lw=1.1, label="noise-free spectrum"),
        Line2D([], [], color="0.4", lw=1.1, ls="--", label="blackbody continuum"),
    ]
    for j, label in enumerate(tracked):
        ln = lines[label]
        handles.append(
            Line2D(
                [],
                [],
                color=TRACKED_COLORS[j % len(TRACKED_COLORS)],
                lw=1.5,
                ls=":",
                label=f"{label}: {ln.center:g} nm ± {ln.width:g} nm",
            )
        )
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 5), fontsize=9, frameon=False)
    fig.suptitle(title or f"Examples from the {split.name} split", fontsize=11, y=0.995, va="top")
    return fig


def _group_keys(split: SplitData) -> np.ndarray:
    """An integer id per sample for its set of present components."""
    present = split.present.numpy()
    _, inverse = np.unique(present, axis=0, return_inverse=True)
    return inverse.ravel()


def _pick_by_group(split: SplitData, tracked: Sequence[str], rng: np.random.Generator, n: int) -> list[int]:
    """Up to `n` sample indices, cycling through the split's component sets so that each shows up:
    sets are ordered by size, then by how many tracked components they hold."""
    present = split.present.numpy()
    groups = _group_keys(split)
    tracked_idx = [split.label_index(t) for t in tracked]
    order = []
    for g in np.unique(groups):
        members = np.flatnonzero(groups == g)
        row = present[members[0]]
        tracked_pos = [tracked_idx.index(i) for i in np.flatnonzero(row) if i in tracked_idx]
        untracked = int(row.sum()) - len(tracked_pos)
        order.append(((int(row.sum()), untracked, tracked_pos), rng.permutation(members)))
    order.sort(key=lambda t: t[0])
    if len(order) == 1 and tracked_idx:  # one composition (test): spread over the first tracked abundance
        a = split.abundances.numpy()[:, tracked_idx[0]]
        members = np.sort(order[0][1])
        chunks = np.array_split(members[np.argsort(a[members], kind="stable")], min(n, len(members)))
        return [int(rng.choice(c)) for c in chunks]
    picked: list[int] = []
    depth = 0
    while len(picked) < n and any(depth < len(m) for _, m in order):
        for _, members in order:
            if depth < len(members) and len(picked) < n:
                picked.append(int(members[depth]))
        depth += 1
    return picked


def _present_labels(split: SplitData, idx: int) -> list[str]:
    row = split.present[idx].numpy()
    return [split.labels[i] for i in np.flatnonzero(row)]


def _short_list(labels: list[str], n: int = 3) -> str:
    if not labels:
        return "continuum only"
    return ", ".join(labels[:n]) + (f" +{len(labels) - n}" if len(labels) > n else "")


def _sample_title(split: SplitData, idx: int, tracked: Sequence[str]) -> str:
    a = split.abundances[idx].numpy()
    parts = [f"{t} = {a[split.label_index(t)]:.2f}" for t in tracked]
    others = [lab for lab in _present_labels(split, idx) if lab not in tracked]
    if others:
        parts.append("+ " + _short_list(others, 2))
    if not _present_labels(split, idx):
        parts = ["continuum only"]
    return ", ".join(parts) + f"\nT = {float(split.temperature_k[idx]):.0f} K, σ = {float(split.noise_sigma[idx]):.3f}"
