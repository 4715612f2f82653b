"""What the nine figures share: the dpi, the colours that carry meaning (train blue, test red, val
cyan, oracle floor green, one colour per training seed), line widths, the two ways a figure is laid
out (constrained layout, or a grid of shared-axis panels with fixed margins), and the helpers for
legends, log scales, axis limits and colour norms."""

from __future__ import annotations

import numpy as np
from matplotlib import colormaps
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure

DPI = 100
TRAIN_COLOR = "tab:blue"
TEST_COLOR = "tab:red"
VAL_COLOR = "tab:cyan"
FLOOR_COLOR = "darkgreen"
BASELINE_COLOR = "0.45"
TRACKED_COLORS = ("tab:purple", "tab:orange", "tab:olive", "tab:brown", "tab:pink", "teal")
# Seeds avoid the colours that carry meaning elsewhere (train blue, test red, val cyan, floor green).
SEED_COLORS = (
    "tab:orange",
    "tab:purple",
    "tab:brown",
    "tab:pink",
    "tab:olive",
    "goldenrod",
    "navy",
    "magenta",
    "teal",
    "tab:gray",
)
THIN, THICK = 1.0, 2.6


def _figure(size: tuple[float, float]) -> Figure:
    return Figure(figsize=size, dpi=DPI, layout="constrained")


def _panel_grid(
    size: tuple[float, float],
    nrows: int,
    ncols: int,
    left: float = 0.7,
    right: float = 0.15,
    top: float = 0.35,
    bottom: float = 0.85,
    wgap: float = 0.12,
    hgap: float = 0.45,
) -> tuple[Figure, np.ndarray]:
    """A grid of panels sharing both axes, with fixed margins in inches.

    Constrained layout would measure every tick label of every panel twice (half the drawing
    time of a 10-panel figure); with shared axes and fixed font sizes the margins are known.
    Room is left for a two-line panel title (`hgap` and `top`), the suptitle and a one- or
    two-row figure legend at the bottom.
    """
    w, h = size
    fig = Figure(figsize=size, dpi=DPI)
    cell_w = (w - left - right - wgap * (ncols - 1)) / ncols
    cell_h = (h - top - bottom - hgap * (nrows - 1) - 0.35) / nrows
    axes = fig.subplots(
        nrows,
        ncols,
        sharex=True,
        sharey=True,
        squeeze=False,
        gridspec_kw=dict(
            left=left / w,
            right=1 - right / w,
            top=1 - (top + 0.35) / h,
            bottom=bottom / h,
            wspace=wgap / cell_w,
            hspace=hgap / cell_h,
        ),
    )
    return fig, axes.ravel()


def _label_panels(axes: np.ndarray, n_shown: int, ncols: int, xlabel: str, ylabel: str) -> None:
    """Hide the panels after the first `n_shown`; label x under the bottom row, y left of the first column."""
    for ax in axes[n_shown:]:
        ax.set_visible(False)
    grid = axes.reshape(-1, ncols)
    for ax in grid[-1]:
        ax.set_xlabel(xlabel)
    for ax in grid[:, 0]:
        ax.set_ylabel(ylabel)


def _seed_colors(n: int) -> list:
    return [SEED_COLORS[i % len(SEED_COLORS)] for i in range(n)]


def _row_major(handles: list, ncol: int) -> list:
    """Reorder legend entries so that a legend with `ncol` columns reads row by row."""
    nrows = int(np.ceil(len(handles) / ncol))
    grid = [handles[r * ncol : (r + 1) * ncol] for r in range(nrows)]
    return [row[c] for c in range(ncol) for row in grid if c < len(row)]


def _component_colors(n: int) -> list:
    cmap = colormaps["tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def _split_color(name: str) -> str:
    if name == "test":
        return TEST_COLOR
    if name == "train":
        return TRAIN_COLOR
    if name == "val":
        return VAL_COLOR
    return "tab:gray"


def _log_if_positive(ax, axis: str, values: np.ndarray) -> bool:
    """Log scale when every finite value is > 0 and they span more than a factor of 10."""
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if len(v) == 0 or v.min() <= 0 or v.max() / v.min() < 10:
        return False
    if axis in ("x", "both"):
        ax.set_xscale("log")
    if axis in ("y", "both"):
        ax.set_yscale("log")
    return True


def _limits(values: np.ndarray, log: bool) -> tuple[float, float]:
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return 0.0, 1.0
    lo, hi = float(v.min()), float(v.max())
    if log:
        return lo / 1.4, hi * 1.4
    pad = 0.06 * (hi - lo) if hi > lo else 0.05 * max(abs(hi), 1e-3)
    return lo - pad, hi + pad


def _color_norm(values: np.ndarray):
    v = values[np.isfinite(values)]
    positive = v[v > 0]
    if len(positive) and positive.max() / positive.min() > 30:
        vmin = max(float(positive.min()), float(positive.max()) * 1e-4)
        return LogNorm(vmin=vmin, vmax=float(positive.max()), clip=True)
    return Normalize(vmin=float(v.min()) if len(v) else 0.0, vmax=float(v.max()) if len(v) else 1.0)
