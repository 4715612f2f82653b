"""Panels drawn as small greyscale images (numpy only, deterministic): each occupied slot of the
3 × 3 grid holds the panel's shape (triangle, square, pentagon, hexagon or circle), scaled by its
size and filled with its colour (0 white .. 9 near black), outlined in black."""

from __future__ import annotations

import functools

import numpy as np

from speccomp.matrices.generator import LEVELS, N_SLOTS

WHITE = 1.0


@functools.lru_cache(maxsize=8)
def _shape_table(cell: int) -> tuple[np.ndarray, np.ndarray]:
    """(types, sizes, cell, cell) bool fill and outline masks of one slot."""
    n_types = LEVELS["type"][1] - LEVELS["type"][0] + 1
    n_sizes = LEVELS["size"][1] - LEVELS["size"][0] + 1
    c = (cell - 1) / 2
    yy, xx = np.mgrid[0:cell, 0:cell].astype(np.float64)
    dx, dy = xx - c, c - yy
    r = np.hypot(dx, dy)
    theta = np.arctan2(dy, dx)
    fill = np.zeros((n_types, n_sizes, cell, cell), bool)
    inner = np.zeros_like(fill)
    for t in range(n_types):
        for s in range(n_sizes):
            radius = cell / 2 * (0.35 + 0.11 * s)
            for k, rad in ((0, radius), (1, radius - 1.3)):
                if t == n_types - 1:  # circle
                    mask = r <= rad
                else:
                    n = t + 3
                    sector = 2 * np.pi / n
                    ang = np.mod(theta - np.pi / 2, sector) - sector / 2  # a vertex points up
                    mask = r * np.cos(ang) <= rad * np.cos(np.pi / n)
                (fill if k == 0 else inner)[t, s] = mask
    return fill, fill & ~inner


def render_panels(values: np.ndarray, positions: np.ndarray, size: int = 48) -> np.ndarray:
    """(P, 4) attribute values and (P, 9) occupied slots -> (P, size, size) float32 in [0, 1]
    (1 = white). `size` must be a multiple of 3."""
    cell = size // 3
    fill, outline = _shape_table(cell)
    t = values[:, 1] - LEVELS["type"][0]
    s = values[:, 2] - LEVELS["size"][0]
    grey = (1.0 - 0.9 * (values[:, 3] - LEVELS["colour"][0]) / (LEVELS["colour"][1] - LEVELS["colour"][0]))
    glyph = np.where(fill[t, s], grey[:, None, None], WHITE)
    glyph = np.where(outline[t, s], 0.0, glyph).astype(np.float32)  # (P, cell, cell)
    slots = positions.reshape(-1, N_SLOTS, 1, 1)
    cells = np.where(slots, glyph[:, None], np.float32(WHITE))  # (P, 9, cell, cell)
    return cells.reshape(-1, 3, 3, cell, cell).transpose(0, 1, 3, 2, 4).reshape(-1, 3 * cell, 3 * cell)
