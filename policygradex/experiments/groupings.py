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


def independent_groups(n_tasks: int) -> list[list[int]]:
    """One policy per task (k = n)."""
    return [[i] for i in range(n_tasks)]


def cosine_matrix(b: np.ndarray) -> np.ndarray:
    """Pairwise cosine similarity of the rows of ``b``, zero on the diagonal (the affinity convention)."""
    sim = _unit_rows(b) @ _unit_rows(b).T
    np.fill_diagonal(sim, 0.0)
    return sim


def route(test_b: np.ndarray, train_b: np.ndarray, groups: list[list[int]]) -> list[int]:
    """For each test task, the group whose training tasks' projected policy gradients at theta* have the highest
    mean cosine with its own (rows of ``test_b``; ``train_b`` rows are training tasks). Uses no test returns."""
    if len(groups) == 1:
        return [0] * len(test_b)
    cos = _unit_rows(test_b) @ _unit_rows(train_b).T  # (tests, tasks)
    scores = np.stack([cos[:, g].mean(axis=1) for g in groups], axis=1)
    return scores.argmax(axis=1).tolist()


def _unit_rows(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
