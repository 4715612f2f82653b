"""Raven's-style 3 × 3 matrices, generated symbolically and in batches.

A panel holds `number` objects (1..9) on a 3 × 3 grid of slots (`position`: which slots, drawn at
random for the count), all of one `type` (0..4: triangle, square, pentagon, hexagon, circle), one
`size` (0..5) and one `colour` (0..9, light to dark). Every attribute of a matrix follows one
row-wise rule, applied to each of the three rows with the row's own values:

| rule             | a row (x, y, z)                          | variants                  |
| ---------------- | ---------------------------------------- | ------------------------- |
| constant         | x = y = z                                | 1                         |
| progression      | y = x + d, z = y + d                     | d in {-2, -1, +1, +2}     |
| arithmetic       | z = x + y or z = x - y (y >= 1)          | + or -                    |
| distribute_three | the rows are cyclic shifts of 3 values   | shift left or right       |

A matrix is kept only if, for every attribute, its first two rows are consistent with exactly one
rule variant (the one it was generated with), so that the answer (the ninth panel) follows from
the eight context panels. The candidates are built I-RAVEN style: a bisection tree over k =
log2(n_candidates) attributes of the answer, each level offering the answer's value and one
modified value, so that every candidate attribute value occurs in exactly half of the candidates
and no candidate-only statistic (majority, rarity) singles the answer out. Modified values are
other matrices' answer values (from the same batch, so from the same distribution) and differ
from the answer's.

All draws come from the one `numpy.random.Generator` passed in, in a fixed order; nothing touches
global random state. Matrices are drawn in vectorised batches and filtered (validity and the
split's constraints) until enough are kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

ATTRIBUTES: tuple[str, ...] = ("number", "type", "size", "colour")
"""Attribute order of every (…, 4) array."""
LEVELS: dict[str, tuple[int, int]] = {"number": (1, 9), "type": (0, 4), "size": (0, 5), "colour": (0, 9)}
"""The values each attribute can take, [min, max] inclusive."""
TYPE_NAMES: tuple[str, ...] = ("triangle", "square", "pentagon", "hexagon", "circle")
RULES: tuple[str, ...] = ("constant", "progression", "arithmetic", "distribute_three")
"""Rule families, the `rule` of a (rule, attribute) pair."""

# Rule variants (a family and its parameter); the checker tells them apart.
VARIANT_FAMILY = np.array([0, 1, 1, 1, 1, 2, 2, 3, 3])
VARIANT_NAMES = ("constant", "progression-2", "progression-1", "progression+1", "progression+2",
                 "arithmetic+", "arithmetic-", "distribute_three-left", "distribute_three-right")
PROGRESSION_DELTAS = np.array([-2, -1, 1, 2])
N_CONTEXT = 8
N_SLOTS = 9
PANEL_DIM = sum(hi - lo + 2 for lo, hi in LEVELS.values()) + N_SLOTS
"""Length of a panel's encoding: per attribute a one-hot over its levels plus the value scaled to
[0, 1], then the 9 slot occupancies."""


@dataclass(frozen=True)
class SplitSpec:
    """What one split may and must contain.

    `ranges`: (4, 2) inclusive value range per attribute; `allowed`: (4 rules, 4 attributes) bool,
    the (rule, attribute) pairs that may be drawn; `required_pairs`: pairs of which every matrix
    holds at least one (the held-out test split); `excluded`: per attribute, values no panel of the
    split may show (candidates included); `required_values`: per attribute, values of which
    every matrix shows at least one among its nine panels (ORed with `required_pairs`)."""

    ranges: np.ndarray
    allowed: np.ndarray
    n_candidates: int = 8
    required_pairs: tuple[tuple[int, int], ...] = ()
    excluded: dict[int, tuple[int, ...]] = field(default_factory=dict)
    required_values: dict[int, tuple[int, ...]] = field(default_factory=dict)


@dataclass
class MatrixBatch:
    """Matrices as symbolic arrays (N matrices).

    values: (N, 16, 4) int64 attribute values of the 8 context panels then the candidates;
    positions: (N, 16, 9) bool occupied slots; target: (N,) int64 index of the answer among the
    candidates; rules: (N, 4) int64 rule family per attribute (index into RULES); variants:
    (N, 4) int64 rule variant per attribute; answer: (N, 4) int64 the ninth panel's values."""

    values: np.ndarray
    positions: np.ndarray
    target: np.ndarray
    rules: np.ndarray
    variants: np.ndarray
    answer: np.ndarray

    def __len__(self) -> int:
        return self.values.shape[0]

    def take(self, idx: np.ndarray) -> MatrixBatch:
        return MatrixBatch(*(getattr(self, f)[idx] for f in ("values", "positions", "target", "rules", "variants", "answer")))

    def grid(self) -> np.ndarray:
        """(N, 4, 3, 3) attribute values of the completed matrix (the answer in the last cell)."""
        cells = np.concatenate([self.values[:, :N_CONTEXT], self.answer[:, None, :]], axis=1)  # (N, 9, 4)
        return cells.transpose(0, 2, 1).reshape(-1, len(ATTRIBUTES), 3, 3)


def concat(batches: list[MatrixBatch]) -> MatrixBatch:
    fields = ("values", "positions", "target", "rules", "variants", "answer")
    return MatrixBatch(*(np.concatenate([getattr(b, f) for b in batches]) for f in fields))


# ------------------------------------------------------------------------------------------------
# rule variants: which are consistent with given rows (vectorised)
# ------------------------------------------------------------------------------------------------
def consistent_variants(rows: np.ndarray) -> np.ndarray:
    """(…, R, 3) values of R >= 2 rows -> (…, 9) bool: rule variants every row satisfies."""
    x, y, z = rows[..., 0], rows[..., 1], rows[..., 2]
    out = [np.all((x == y) & (y == z), axis=-1)]
    out += [np.all((y - x == d) & (z - y == d), axis=-1) for d in PROGRESSION_DELTAS]
    out += [np.all((z == x + y) & (y >= 1), axis=-1), np.all((z == x - y) & (y >= 1), axis=-1)]
    first = rows[..., 0, :]
    distinct = (first[..., 0] != first[..., 1]) & (first[..., 1] != first[..., 2]) & (first[..., 0] != first[..., 2])
    for shift in (-1, 1):  # left: (a,b,c) -> (b,c,a); right: (a,b,c) -> (c,a,b)
        ok = distinct
        for r in range(1, rows.shape[-2]):
            ok = ok & np.all(rows[..., r, :] == np.roll(first, shift * r, axis=-1), axis=-1)
        out.append(ok)
    return np.stack(out, axis=-1)


# ------------------------------------------------------------------------------------------------
# drawing rows for one rule family (vectorised over matrices)
# ------------------------------------------------------------------------------------------------
def _int_between(rng: np.random.Generator, lo: np.ndarray | int, hi: np.ndarray | int, shape) -> np.ndarray:
    """Uniform integers in [lo, hi] (inclusive, broadcast); requires lo <= hi."""
    lo = np.broadcast_to(lo, shape)
    hi = np.broadcast_to(hi, shape)
    return lo + np.floor(rng.random(shape) * (hi - lo + 1)).astype(np.int64)


def feasible_deltas(lo: int, hi: int) -> np.ndarray:
    return PROGRESSION_DELTAS[2 * np.abs(PROGRESSION_DELTAS) <= hi - lo]


def family_feasible(family: int, lo: int, hi: int) -> bool:
    """Whether a rule family can be drawn in the value range [lo, hi]."""
    if family == 0:
        return True
    if family == 1:
        return feasible_deltas(lo, hi).size > 0
    if family == 2:
        return max(1, lo) <= hi - lo
    return hi - lo >= 2


def draw_family(rng: np.random.Generator, family: int, lo: int, hi: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """n matrices' (n, 3, 3) values of one attribute under one rule family, and their variants (n,)."""
    if family == 0:
        x = _int_between(rng, lo, hi, (n, 3))
        return np.repeat(x[:, :, None], 3, axis=2), np.zeros(n, np.int64)
    if family == 1:
        deltas = feasible_deltas(lo, hi)
        d = deltas[_int_between(rng, 0, deltas.size - 1, (n,))]
        start = _int_between(rng, lo - np.minimum(0, 2 * d)[:, None], hi - np.maximum(0, 2 * d)[:, None], (n, 3))
        rows = start[:, :, None] + d[:, None, None] * np.arange(3)
        return rows, 1 + np.searchsorted(PROGRESSION_DELTAS, d)
    if family == 2:
        minus = rng.random(n) < 0.5
        b = _int_between(rng, max(1, lo), hi - lo, (n, 3))
        a = np.where(minus[:, None], _int_between(rng, lo + b, hi, (n, 3)), _int_between(rng, lo, hi - b, (n, 3)))
        c = np.where(minus[:, None], a - b, a + b)
        return np.stack([a, b, c], axis=2), np.where(minus, 6, 5)
    three = lo + rng.permuted(np.broadcast_to(np.arange(hi - lo + 1), (n, hi - lo + 1)), axis=1)[:, :3]
    right = rng.random(n) < 0.5
    shift = np.where(right, 1, -1)
    rows = np.stack([np.roll(three, 0, axis=1)] + [np.where(shift[:, None] == 1, np.roll(three, r, axis=1),
                                                           np.roll(three, -r, axis=1)) for r in (1, 2)], axis=1)
    return rows, np.where(right, 8, 7)


# ------------------------------------------------------------------------------------------------
# one batch
# ------------------------------------------------------------------------------------------------
def _draw_rules(rng: np.random.Generator, spec: SplitSpec, n: int) -> np.ndarray:
    """(n, 4) rule family per attribute: uniform over the split's allowed pairs; with required
    pairs, one of them (uniform) overwrites its attribute's rule."""
    allowed = spec.allowed.T  # (4 attributes, 4 rules)
    keys = rng.random((n, *allowed.shape)) * allowed + allowed  # allowed pairs rank above others
    rules = np.argmax(keys, axis=2)
    if spec.required_pairs:
        pairs = np.array(spec.required_pairs)  # (P, 2): (rule, attribute)
        pick = pairs[_int_between(rng, 0, len(pairs) - 1, (n,))]
        rules[np.arange(n), pick[:, 1]] = pick[:, 0]
    return rules


def _slot_table() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every subset of the 9 slots as a (512, 9) bool table sorted by size, with the first row
    and the number of subsets of each size (0..9)."""
    masks = (np.arange(2**N_SLOTS)[:, None] >> np.arange(N_SLOTS)) & 1
    sizes = masks.sum(1)
    order = np.argsort(sizes, kind="stable")
    counts = np.bincount(sizes, minlength=N_SLOTS + 1)
    return masks[order].astype(bool), np.concatenate([[0], np.cumsum(counts)[:-1]]), counts


_SLOTS, _SLOT_START, _SLOT_COUNT = _slot_table()


def _positions(rng: np.random.Generator, number: np.ndarray) -> np.ndarray:
    """(…,) object counts -> (…, 9) bool occupied slots, a uniform subset of that size."""
    pick = _SLOT_START[number] + np.floor(rng.random(number.shape) * _SLOT_COUNT[number]).astype(np.int64)
    return _SLOTS[pick]


def draw_batch(rng: np.random.Generator, spec: SplitSpec, n: int) -> MatrixBatch:
    """n candidate matrices (before filtering): rules, values, the answer and the candidate tree.
    Invalid ones (a context that does not determine its rule) are dropped here; the split's value
    constraints are applied by `generate`."""
    n_attr = len(ATTRIBUTES)
    rules = _draw_rules(rng, spec, n)
    grid = np.zeros((n, n_attr, 3, 3), np.int64)
    variants = np.zeros((n, n_attr), np.int64)
    for a in range(n_attr):
        lo, hi = (int(v) for v in spec.ranges[a])
        for family in range(len(RULES)):
            if not family_feasible(family, lo, hi):
                continue
            rows, var = draw_family(rng, family, lo, hi, n)  # drawn for all, used where selected
            sel = rules[:, a] == family
            grid[sel, a], variants[sel, a] = rows[sel], var[sel]
    unique = consistent_variants(grid[:, :, :2, :]).sum(-1) == 1  # (n, 4): the context fixes the rule
    keep = unique.all(axis=1)
    grid, rules, variants = grid[keep], rules[keep], variants[keep]
    m = grid.shape[0]
    cells = grid.reshape(m, n_attr, 9).transpose(0, 2, 1)  # (m, 9, 4)
    answer = cells[:, 8].copy()
    cand_values, target = _candidates(rng, spec, answer)
    values = np.concatenate([cells[:, :N_CONTEXT], cand_values], axis=1)  # (m, 16, 4)
    positions = _positions(rng, values[..., 0])
    # Candidates share slots by count: those with the answer's count the answer's slots, those with
    # the modified count one other set, so that slots cannot tell the two halves apart.
    same_count = cand_values[..., 0] == answer[:, None, 0]
    answer_slots = positions[np.arange(m), N_CONTEXT + target]  # (m, 9)
    other = np.argmin(same_count, axis=1)  # a candidate with the modified count (if any)
    other_slots = positions[np.arange(m), N_CONTEXT + other]
    positions[:, N_CONTEXT:] = np.where(same_count[..., None], answer_slots[:, None, :], other_slots[:, None, :])
    return MatrixBatch(values, positions, target, rules, variants, answer)


def _candidates(rng: np.random.Generator, spec: SplitSpec, answer: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """I-RAVEN bisection tree. answer (m, 4) -> candidates (m, n_candidates, 4) and target (m,)."""
    m, n_attr = answer.shape
    k = int(np.log2(spec.n_candidates))
    levels = rng.permuted(np.broadcast_to(np.arange(n_attr), (m, n_attr)), axis=1)[:, :k]  # which attributes the tree modifies
    modified = _modified_values(rng, spec, answer)  # (m, 4)
    bits = (np.arange(spec.n_candidates)[:, None] >> np.arange(k)) & 1  # (C, k): leaf c takes level j's modification?
    cands = np.repeat(answer[:, None, :], spec.n_candidates, axis=1)
    rows = np.arange(m)[:, None]
    for j in range(k):
        attr = levels[:, j]  # (m,)
        mod = modified[np.arange(m), attr]  # (m,)
        use = bits[:, j].astype(bool)  # (C,)
        current = cands[rows, np.arange(spec.n_candidates)[None, :], attr[:, None]]
        cands[rows, np.arange(spec.n_candidates)[None, :], attr[:, None]] = np.where(use[None, :], mod[:, None], current)
    order = rng.permuted(np.broadcast_to(np.arange(spec.n_candidates), (m, spec.n_candidates)), axis=1)
    cands = np.take_along_axis(cands, order[:, :, None], axis=1)
    target = np.argmax(order == 0, axis=1)  # where leaf 0 (the answer) went
    return cands, target


def _modified_values(rng: np.random.Generator, spec: SplitSpec, answer: np.ndarray) -> np.ndarray:
    """(m, 4) a value != the answer's per attribute: another matrix's answer (same distribution),
    a second donor where the first equals it, else a uniform other value of the range."""
    m, n_attr = answer.shape
    out = answer[rng.permutation(m)]
    second = answer[rng.permutation(m)]
    out = np.where(out == answer, second, out)
    lo, hi = spec.ranges[:, 0], spec.ranges[:, 1]
    width = hi - lo + 1
    shift = _int_between(rng, 1, width - 1, (m, n_attr))  # every range has >= 3 values (validated)
    uniform = lo + (answer - lo + shift) % width
    return np.where(out == answer, uniform, out)


def _satisfies_split(batch: MatrixBatch, spec: SplitSpec) -> np.ndarray:
    """(N,) bool: no excluded value anywhere, and (for a held-out split) a required pair or value."""
    ok = np.ones(len(batch), bool)
    for a, values in spec.excluded.items():
        ok &= ~np.isin(batch.values[:, :, a], values).any(axis=1)
    if spec.required_pairs or spec.required_values:
        hit = np.zeros(len(batch), bool)
        for rule, a in spec.required_pairs:
            hit |= batch.rules[:, a] == rule
        grid = batch.grid()
        for a, values in spec.required_values.items():
            hit |= np.isin(grid[:, a], values).any(axis=(1, 2))
        ok &= hit
    return ok


def generate(rng: np.random.Generator, spec: SplitSpec, n: int, max_rounds: int = 200) -> MatrixBatch:
    """n valid matrices satisfying the split's constraints, drawn in vectorised batches."""
    kept: list[MatrixBatch] = []
    have, drawn, accepted = 0, 0, 0
    for _ in range(max_rounds):
        if have >= n:
            break
        rate = max(accepted, 1) / drawn if drawn else 0.9  # acceptance so far sizes the next batch
        size = int((n - have) / rate * 1.05) + 32
        batch = draw_batch(rng, spec, size)
        batch = batch.take(np.flatnonzero(_satisfies_split(batch, spec)))
        kept.append(batch)
        drawn, accepted, have = drawn + size, accepted + len(batch), have + len(batch)
    if have < n:
        raise ValueError(f"could not draw {n} matrices satisfying the split's constraints (got {have})")
    out = concat(kept)
    return out.take(np.arange(n))


# ------------------------------------------------------------------------------------------------
# encoding
# ------------------------------------------------------------------------------------------------
def encode(values: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """(…, 4) values and (…, 9) slots -> (…, PANEL_DIM) float32: per attribute a one-hot over its
    levels and the value scaled to [0, 1], then the slot occupancies (written in place, one pass)."""
    out = np.zeros((*values.shape[:-1], PANEL_DIM), np.float32)
    offset = 0
    for a, name in enumerate(ATTRIBUTES):
        lo, hi = LEVELS[name]
        idx = values[..., a] - lo
        np.put_along_axis(out, offset + idx[..., None], 1.0, axis=-1)
        out[..., offset + hi - lo + 1] = idx / (hi - lo)
        offset += hi - lo + 2
    out[..., offset:] = positions
    return out
