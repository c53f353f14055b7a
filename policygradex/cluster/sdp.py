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

import functools
import logging
import warnings
from dataclasses import dataclass

import numpy as np
from sklearn.cluster import KMeans, SpectralClustering
from sklearn.exceptions import ConvergenceWarning

from policygradex.cluster.significance import Confidence
from policygradex.errors import PGXError

log = logging.getLogger(__name__)


@dataclass
class Grouping:
    groups: list[list[int]]
    method: str
    X: np.ndarray | None = None
    """The relaxed solution (None for the fallback)."""
    null_p: float | None = None
    """How likely noise alone makes splitting look this good (``cluster/significance.py``), where tested."""
    p_values: list[float] | None = None
    """p-value of k groups' value against the null, for k = 1, 2, ..., where tested."""
    reason: str = ""
    """Why this many groups, in one sentence."""
    confidence: Confidence | None = None
    """Bootstrap co-membership, per-task confidence and stability, where bootstrap draws were made."""

    @property
    def k(self) -> int:
        return len(self.groups)


@functools.lru_cache(maxsize=8)
def _sdp_problem(n: int, fixed_k: bool):
    """The SDP for n tasks, compiled once: U (and k or the penalty) are parameters, so that grouping many
    affinities of one size (bootstrap draws) skips cvxpy's compilation."""
    import cvxpy as cp

    X = cp.Variable((n, n), symmetric=True)
    U = cp.Parameter((n, n), symmetric=True)
    knob = cp.Parameter(nonneg=True)  # k, or the price of one more group
    constraints = [X >> 0, X >= 0, X @ np.ones(n) == np.ones(n)]
    if fixed_k:
        constraints.append(cp.trace(X) == knob)
        objective = cp.Maximize(cp.trace(U @ X))
    else:
        objective = cp.Maximize(cp.trace(U @ X) - knob * cp.trace(X))
    return cp.Problem(objective, constraints), X, U, knob


def solve_sdp(U: np.ndarray, k: int | None, trace_penalty: float, solver: str = "SCS") -> np.ndarray:
    """The relaxed partition matrix X: with ``k`` fixed, or with k priced by ``trace_penalty`` (in units of the
    mean absolute off-diagonal affinity)."""
    n = len(U)
    problem, X, U_param, knob = _sdp_problem(n, k is not None)
    U_param.value = (U + U.T) / 2
    if k is not None:
        knob.value = float(k)
    else:
        off = np.abs(U[~np.eye(n, dtype=bool)])
        knob.value = trace_penalty * (off.mean() if off.size and off.mean() > 0 else 1.0)
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
