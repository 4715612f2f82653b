"""How many torch threads a command uses unless told: one.

Measured on the project's 2-core machine (`benchmarks/bench_threads.py`, docs/reliability.md, "A busy machine"):
with one core busy in another process, torch's own default (a thread per core) made a one-seed
`train()` several times slower than one thread (its OpenMP threads spin, waiting for a core that
is taken), while on a quiet machine one thread costs `train()` about a quarter and the tracked
default run, where training is a small part, much less. One thread is never much worse; every
core can be many times worse. `--threads N` (or OMP_NUM_THREADS) asks for more.

Importing this module does not import torch.
"""

from __future__ import annotations

import os

DEFAULT_THREADS = 1


def default_threads() -> int:
    """OMP_NUM_THREADS when the environment sets it to a positive integer, else `DEFAULT_THREADS`."""
    text = os.environ.get("OMP_NUM_THREADS", "").strip()
    return int(text) if text.isdigit() and int(text) >= 1 else DEFAULT_THREADS


def apply_threads(threads: int | None) -> int:
    """Set torch's intra-op threads to `threads`, or to `default_threads()` when None; returns it."""
    import torch

    n = threads if threads is not None else default_threads()
    torch.set_num_threads(n)
    return n
