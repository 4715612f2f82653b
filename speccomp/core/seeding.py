"""Every random stream in speccomp is derived here, from an explicit seed and a name.

A stream is identified by (seed, name, ...): the data seed and a split's name give that split's
generator, a training seed and a purpose ("init", "shuffle", "dropout") give the training streams.
Adding a split or a purpose never shifts another stream, and no global random state is touched.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch


def derive_seed(seed: int, *names: str | int) -> int:
    """A 63-bit integer determined by `seed` and `names` (stable across runs and platforms)."""
    text = "/".join([str(int(seed)), *map(str, names)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") & ((1 << 63) - 1)


def numpy_generator(seed: int, *names: str | int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(derive_seed(seed, *names)))


def torch_generator(seed: int, *names: str | int) -> torch.Generator:
    gen = torch.Generator(device="cpu")
    gen.manual_seed(derive_seed(seed, *names))
    return gen
