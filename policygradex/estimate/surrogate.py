"""Stage 3: the weighted logistic regression of a task subset, and its score on each member task.

For a subset S the surrogate of fine-tuning on S's tasks is (paper, eq. for L_S)

    L_S(beta) = 1/N_S sum_{t in S} w_t log(1 + exp(-y_t z_t^T beta)) + lam/2 ||beta||^2.

Two solvers:
- ``newton_from_stats`` (fast path): one Newton step from beta = 0. At beta = 0 the gradient is
  -1/(2 N_S) sum w y z and the Hessian 1/(4 N_S) sum w z z^T, both sums over tasks of per-task sufficient
  statistics b_i = sum w y z and H_i = sum w z z^T. Every subset then costs one d x d solve, batched.
- ``solve_exact``: Newton's method (IRLS) on the subset's data until convergence, for validation.

The ridge ``lam`` is relative: ``ridge`` times the mean diagonal of the Hessian at 0, so that it does not
depend on the scale of the features.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from policygradex.estimate.features import GradientFeatures


@dataclass
class TaskStats:
    """Per-task sufficient statistics of the fit rows: b (n, d), H (n, d, d), count (n,)."""

    b: torch.Tensor
    H: torch.Tensor
    count: torch.Tensor

    @classmethod
    def from_features(cls, feats: GradientFeatures) -> TaskStats:
        n = int(feats.task.max()) + 1
        fit = ~feats.holdout
        z = torch.as_tensor(feats.z[fit], dtype=torch.float64)
        y, w = (torch.as_tensor(a[fit], dtype=torch.float64) for a in (feats.y, feats.w))
        task = torch.as_tensor(feats.task[fit])
        d = z.shape[1]
        b, H, count = torch.zeros(n, d, dtype=torch.float64), torch.zeros(n, d, d, dtype=torch.float64), torch.zeros(n)
        for i in range(n):
            rows = task == i
            zi, wi = z[rows], w[rows]
            b[i] = (wi * y[rows]) @ zi
            H[i] = (zi * wi[:, None]).T @ zi
            count[i] = rows.sum()
        return cls(b, H, count.double())


def ridge_strength(H: torch.Tensor, count: torch.Tensor, ridge: float) -> torch.Tensor:
    """lam = ridge * trace(H / (4 N)) / d, for one subset or a batch of them."""
    d = H.shape[-1]
    return ridge * torch.diagonal(H, dim1=-2, dim2=-1).sum(-1) / (4 * count * d)


def newton_from_stats(stats: TaskStats, subsets: np.ndarray, ridge: float, chunk: int = 64) -> torch.Tensor:
    """One Newton step from beta = 0 for every subset (rows of the boolean (m, n) matrix): (m, d)."""
    member = torch.as_tensor(subsets, dtype=torch.float64)
    d = stats.b.shape[1]
    betas = []
    for start in range(0, len(member), chunk):
        s = member[start:start + chunk]
        count = s @ stats.count
        H = torch.einsum("mn,nij->mij", s, stats.H)
        lam = ridge_strength(H, count, ridge)
        A = H / (4 * count)[:, None, None] + lam[:, None, None] * torch.eye(d, dtype=torch.float64)
        rhs = (s @ stats.b) / (2 * count)[:, None]
        betas.append(torch.linalg.solve(A, rhs))
    return torch.cat(betas)


def logistic_loss(z: torch.Tensor, y: torch.Tensor, w: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """Mean weighted logistic loss for one beta (d,) or many (m, d) -> scalar or (m,)."""
    betas = beta[None] if beta.dim() == 1 else beta
    losses = torch.nn.functional.softplus(-(z @ betas.T) * y[:, None]) * w[:, None]
    out = losses.mean(0)
    return out[0] if beta.dim() == 1 else out


def solve_exact(z: torch.Tensor, y: torch.Tensor, w: torch.Tensor, lam: float, max_iter: int = 100,
                tol: float = 1e-10) -> torch.Tensor:
    """Minimise 1/N sum w log(1+exp(-y z^T beta)) + lam/2 ||beta||^2 by Newton's method (IRLS)."""
    n, d = z.shape
    beta = torch.zeros(d, dtype=z.dtype)
    eye = torch.eye(d, dtype=z.dtype)
    for _ in range(max_iter):
        p = torch.sigmoid(-y * (z @ beta))  # = 1 - sigma(y z^T beta)
        grad = -(z.T @ (w * y * p)) / n + lam * beta
        hess = (z.T * (w * p * (1 - p))) @ z / n + lam * eye
        step = torch.linalg.solve(hess, grad)
        beta = beta - step
        if step.norm() <= tol * (1 + beta.norm()):
            break
    return beta


def solve_subsets(feats: GradientFeatures, subsets: np.ndarray, solver: str, ridge: float) -> torch.Tensor:
    """beta_S for every subset: (m, d) float64."""
    stats = TaskStats.from_features(feats)
    if solver == "newton-stats":
        return newton_from_stats(stats, subsets, ridge)
    fit = ~feats.holdout
    z = torch.as_tensor(feats.z[fit], dtype=torch.float64)
    y, w = (torch.as_tensor(a[fit], dtype=torch.float64) for a in (feats.y, feats.w))
    task = feats.task[fit]
    betas = []
    for s in subsets:
        rows = torch.as_tensor(np.isin(task, np.flatnonzero(s)))
        H = torch.einsum("n,nij->ij", torch.as_tensor(s, dtype=torch.float64), stats.H)
        lam = float(ridge_strength(H, rows.sum().double(), ridge))
        betas.append(solve_exact(z[rows], y[rows], w[rows], lam))
    return torch.stack(betas)


def subset_scores(feats: GradientFeatures, subsets: np.ndarray, betas: torch.Tensor) -> np.ndarray:
    """f(S, i) = L_i(0) - L_i(beta_S) on task i's held-out transitions, for every member i of S.

    Returns an (m, n) array, NaN where task i is not in subset S. A positive score means fine-tuning on S
    is predicted to improve task i.
    """
    m, n = subsets.shape
    scores = np.full((m, n), np.nan)
    for i in range(n):
        rows = (feats.task == i) & feats.holdout
        z = torch.as_tensor(feats.z[rows], dtype=torch.float64)
        y, w = (torch.as_tensor(a[rows], dtype=torch.float64) for a in (feats.y, feats.w))
        members = np.flatnonzero(subsets[:, i])
        base = float(w.mean() * np.log(2.0))
        scores[members, i] = base - logistic_loss(z, y, w, betas[members]).numpy()
    return scores
