"""Groupings compared downstream: PolicyGradEx's own and the baselines, as lists of task indices."""

from __future__ import annotations

import numpy as np


def single_group(n_tasks: int) -> list[list[int]]:
    """Multi-task training: every task in one policy (k = 1)."""
    return [list(range(n_tasks))]


def random_groups(n_tasks: int, k: int, rng: np.random.Generator) -> list[list[int]]:
    """A uniformly shuffled split into k groups of near-equal size."""
    order = rng.permutation(n_tasks)
    groups = [sorted(part.tolist()) for part in np.array_split(order, min(k, n_tasks))]
    return sorted(groups, key=lambda g: g[0])
