"""Seeds: one independent, reproducible seed per purpose, derived from the run's seed."""

from __future__ import annotations

import zlib

import numpy as np


def derive_seed(seed: int, *keys: int | str) -> int:
    """An independent, reproducible seed for one purpose (one stage, one group, one task)."""
    ints = [k if isinstance(k, int) else zlib.crc32(k.encode()) for k in keys]
    return int(np.random.SeedSequence([seed, *ints]).generate_state(1)[0] % (2**31))
