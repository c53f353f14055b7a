"""Stage 4: group tasks by a convex (SDP) relaxation of affinity clustering, then round.

A partition into groups G_1..G_k is the matrix X = sum_g 1_G 1_G^T / |G|: X is PSD, entrywise >= 0,
X 1 = 1 and tr(X) = k, and <U, X> = sum_g mean pairwise affinity inside g (times |G|). Dropping
"X is such a partition matrix" for the convex constraints gives the paper's relaxation

    max <U, X> - lam tr(X)   s.t.  X >= 0 (PSD), X >= 0 (entrywise), X 1 = 1,

where the trace penalty lam prices every extra group, so that k is chosen by the solver; with a fixed k
the penalty becomes the constraint tr(X) = k. Rounding clusters the rows of X (equal within a group for
an exact partition) with k-means, which always returns a partition of all tasks.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import numpy as np
from sklearn.cluster import KMeans, SpectralClustering
from sklearn.exceptions import ConvergenceWarning

from policygradex.errors import PGXError

log = logging.getLogger(__name__)


@dataclass
class Grouping:
    groups: list[list[int]]
    method: str
    X: np.ndarray | None = None
    """The relaxed solution (None for the fallback)."""

    @property
    def k(self) -> int:
        return len(self.groups)


def solve_sdp(U: np.ndarray, k: int | None, trace_penalty: float, solver: str = "SCS") -> np.ndarray:
    import cvxpy as cp

    n = len(U)
    X = cp.Variable((n, n), symmetric=True)
    constraints = [X >> 0, X >= 0, X @ np.ones(n) == np.ones(n)]
    if k is not None:
        constraints.append(cp.trace(X) == k)
        objective = cp.Maximize(cp.trace(U @ X))
    else:
        off = U[~np.eye(n, dtype=bool)]
        lam = trace_penalty * (np.abs(off).mean() if off.size and np.abs(off).mean() > 0 else 1.0)
        objective = cp.Maximize(cp.trace(U @ X) - lam * cp.trace(X))
    problem = cp.Problem(objective, constraints)
    problem.solve(solver=solver)
    if X.value is None or problem.status not in ("optimal", "optimal_inaccurate"):
        raise RuntimeError(f"SDP solver {solver} ended with status {problem.status}")
    return np.asarray(X.value)


def round_solution(X: np.ndarray, k: int | None, seed: int = 0) -> list[list[int]]:
    """A partition of all n tasks from a relaxed X; k defaults to round(tr X)."""
    n = len(X)
    k = int(np.clip(round(float(np.trace(X))), 1, n)) if k is None else min(k, n)
    if k == 1 or k == n:
        labels = np.zeros(n, dtype=int) if k == 1 else np.arange(n)
    else:
        with warnings.catch_warnings():  # fewer distinct rows than k: _split_to_k below handles it
            warnings.simplefilter("ignore", ConvergenceWarning)
            labels = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(X)
    return _split_to_k(_labels_to_groups(labels), k)


def _labels_to_groups(labels: np.ndarray) -> list[list[int]]:
    groups = [sorted(np.flatnonzero(labels == c).tolist()) for c in np.unique(labels)]
    return sorted(groups, key=lambda g: g[0])


def _split_to_k(groups: list[list[int]], k: int) -> list[list[int]]:
    """k-means may merge identical rows into fewer than k clusters; split the largest groups until k."""
    groups = [list(g) for g in groups]
    while len(groups) < k:
        big = max(groups, key=len)
        groups.remove(big)
        groups += [big[: len(big) // 2], big[len(big) // 2:]]
    return sorted(groups, key=lambda g: g[0])


def spectral_groups(U: np.ndarray, k: int, seed: int = 0) -> list[list[int]]:
    """Fallback: spectral clustering of the affinity shifted to be non-negative."""
    n = len(U)
    if k <= 1 or k >= n:
        return [list(range(n))] if k <= 1 else [[i] for i in range(n)]
    A = U - U.min()
    np.fill_diagonal(A, A.max())
    labels = SpectralClustering(k, affinity="precomputed", random_state=seed).fit_predict(A)
    return _split_to_k(_labels_to_groups(labels), k)


def partition(affinity: np.ndarray, k: int | None = None, trace_penalty: float = 0.0,
              solver: str = "SCS", seed: int = 0) -> Grouping:
    """Partition tasks by affinity; ``k=None`` lets the trace penalty pick the number of groups."""
    import cvxpy as cp

    U = (np.asarray(affinity, dtype=float) + np.asarray(affinity, dtype=float).T) / 2
    if k is not None and not 1 <= k <= len(U):
        raise PGXError(f"k = {k} groups for {len(U)} tasks; choose k between 1 and {len(U)}")
    if solver not in cp.installed_solvers():
        raise PGXError(f"SDP solver {solver!r} is not installed; choose one of {', '.join(cp.installed_solvers())}")
    if len(U) == 1:
        return Grouping([[0]], "trivial")
    try:
        X = solve_sdp(U, k, trace_penalty, solver)
    except (cp.SolverError, RuntimeError) as exc:  # numerical failures are rare but real; keep the run going
        fallback_k = k if k is not None else 2
        log.warning("SDP failed (%s); falling back to spectral clustering with k=%d", exc, fallback_k)
        return Grouping(spectral_groups(U, fallback_k, seed), "spectral-fallback")
    return Grouping(round_solution(X, k, seed), "sdp" if k is None else "sdp-fixed-k", X)


def group_tasks(affinity: np.ndarray, k: int | None = None, trace_penalty: float = 0.0,
                solver: str = "SCS", seed: int = 0) -> list[list[int]]:
    """The groups of ``partition`` as lists of task indices (the public API)."""
    return partition(affinity, k, trace_penalty, solver, seed).groups
