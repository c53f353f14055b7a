"""Task affinity: U_ij = mean over subsets S that hold i and j of task i's standardised score f(S, i)."""

from __future__ import annotations

import numpy as np


def affinity_from_scores(subsets: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Symmetric (n, n) affinity from the (m, n) membership matrix and the (m, n) scores.

    Each task's scores are standardised over the subsets that hold it: tasks differ in how much any
    fine-tuning moves their loss, and only the comparison between subsets tells which partners help.
    So U_ii = 0, U_ij > 0 when having j in the subset helps i more than i's average subset does, and the
    matrix is symmetrised as (U + U^T) / 2.
    """
    m, n = subsets.shape
    z = np.zeros((m, n))
    for i in range(n):
        s = scores[subsets[:, i], i]
        std = s.std()
        z[subsets[:, i], i] = (s - s.mean()) / std if std > 0 else 0.0
    member = subsets.astype(float)
    together = member.T @ member  # (n, n) subsets holding both
    U = np.divide(member.T @ z, together, out=np.zeros((n, n)), where=together > 0).T  # U[i, j]
    np.fill_diagonal(U, 0.0)
    return (U + U.T) / 2
