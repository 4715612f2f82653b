"""The nine figures' file names (the tutorial's, `reference/tutorial/plots.md`), in a module of their
own: the task reads them without importing matplotlib."""

FIGURE_NAMES: tuple[str, ...] = (
    "spectral_lines.png",
    "diverse_samples.png",
    "train_samples.png",
    "test_samples.png",
    "abundance_scatter.png",
    "training_curves.png",
    "mse_trajectory.png",
    "mse_time_series.png",
    "test_abundance_mse.png",
)
DATA_FIGURES, RUN_FIGURES = FIGURE_NAMES[:5], FIGURE_NAMES[5:]
"""The figures of the data alone (drawable as soon as the data exist), and those of the trained runs."""
FLOOR_FREE_FIGURES: tuple[str, ...] = ("training_curves.png", "test_abundance_mse.png")
"""The run figures that draw no floor line: drawable while the oracle is still being fitted."""
