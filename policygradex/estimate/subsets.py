"""Random task subsets S_1..S_m, drawn until every pair of tasks shares enough of them."""

from __future__ import annotations

import numpy as np


def default_subset_size(n_tasks: int) -> int:
    return max(2, n_tasks // 2)


def sample_subsets(n_tasks: int, size: int | None, pair_coverage: int, max_subsets: int,
                   rng: np.random.Generator) -> np.ndarray:
    """Boolean (m, n) membership matrix; stops once every pair is in ``pair_coverage`` subsets.

    The paper's m = O(n^2) guarantees coverage with high probability; drawing until coverage holds makes
    it certain and uses no more subsets than needed.
    """
    size = min(n_tasks, size or default_subset_size(n_tasks))
    together = np.zeros((n_tasks, n_tasks), dtype=int)
    off_diag = ~np.eye(n_tasks, dtype=bool)
    rows: list[np.ndarray] = []
    while len(rows) < max_subsets and together[off_diag].min() < pair_coverage:
        row = np.zeros(n_tasks, dtype=bool)
        row[rng.choice(n_tasks, size=size, replace=False)] = True
        together += np.outer(row, row)
        rows.append(row)
    return np.array(rows)
