"""Stage 3: the weighted logistic regression of a task subset, and its score on each member task.

For a subset S the surrogate of fine-tuning on S's tasks is (paper, eq. for L_S)

    L_S(beta) = 1/N_S sum_{t in S} w_t log(1 + exp(-y_t z_t^T beta)) + lam/2 ||beta||^2.

Its Hessian is bounded by its value at beta = 0 (sigma(1 - sigma) <= 1/4), the matrix
A_S = 1/(4 N_S) sum w z z^T + lam I (Boehning & Lindsay 1988). Hence two solvers:

- ``newton-stats`` (fast path): one Newton step from beta = 0, beta_S = A_S^{-1} (1/(2 N_S)) sum w y z. Both
  sums are sums over tasks of per-task sufficient statistics b_i = sum w y z and H_i = sum w z z^T, so every
  subset costs one d x d Cholesky solve, batched over subsets; no pass over the data.
- ``exact``: the minimum of L_S, by iterating beta <- beta - A_S^{-1} grad L_S(beta). With the fixed bound
  A_S this is a majorise-minimise step: the loss falls at every step and converges to the exact optimum,
  A_S is factored once per subset, and every iteration is one batched pass over the data (on the GPU when
  there is one). Its first iteration is the newton-stats step.

``solve_exact`` (IRLS on one subset's rows) is the plain reference, checked against scikit-learn.
The ridge ``lam`` is relative: ``ridge`` times the mean diagonal of the Hessian at 0.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from policygradex.estimate.affinity import affinity_from_scores
from policygradex.estimate.store import GradientStore, TaskStats
from policygradex.registry import Registry


def ridge_strength(H: torch.Tensor, count: torch.Tensor, ridge: float) -> torch.Tensor:
    """lam = ridge * trace(H / (4 N)) / d, for one subset or a batch of them."""
    d = H.shape[-1]
    return ridge * torch.diagonal(H, dim1=-2, dim2=-1).sum(-1) / (4 * count * d)


def bound_factors(stats: TaskStats, member: torch.Tensor, ridge: float) -> tuple[torch.Tensor, ...]:
    """For a batch of subsets (rows of ``member``): Cholesky factor of A_S, lam_S, and N_S."""
    count = member @ stats.count
    d = stats.H.shape[-1]
    A = (member @ stats.H.reshape(len(stats.H), -1)).reshape(len(member), d, d)  # sum of H_i over the subset
    lam = ridge_strength(A, count, ridge)
    A.div_((4 * count)[:, None, None])
    A.diagonal(dim1=-2, dim2=-1).add_(lam[:, None])
    return torch.linalg.cholesky(A), lam, count


def newton_from_stats(stats: TaskStats, subsets: np.ndarray, ridge: float, chunk: int = 128,
                      device: torch.device | None = None) -> torch.Tensor:
    """One Newton step from beta = 0 for every subset (rows of the boolean (m, n) matrix): (m, d), on the CPU;
    the factorisations run on ``device`` (default: where the statistics are)."""
    stats = stats.to(device)
    member = torch.as_tensor(subsets, dtype=torch.float64, device=stats.H.device)
    betas = []
    for start in range(0, len(member), chunk):
        s = member[start:start + chunk]
        L, _, count = bound_factors(stats, s, ridge)
        rhs = (s @ stats.b) / (2 * count)[:, None]
        betas.append(_cholesky_solve(L, rhs).cpu())
    return torch.cat(betas)


def _cholesky_solve(L: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """x with L L^T x = rhs, batched; two triangular solves (3x faster here than torch.cholesky_solve)."""
    y = torch.linalg.solve_triangular(L, rhs[..., None], upper=False)
    return torch.linalg.solve_triangular(L.mT, y, upper=True)[..., 0]


def logistic_loss(z: torch.Tensor, y: torch.Tensor, w: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """Mean weighted logistic loss for one beta (d,) or many (m, d) -> scalar or (m,), float64.

    The margins are computed in ``z``'s precision (float32 rows: half the time of float64, and their error,
    ~1e-7 of a loss, is far below the transitions' own noise); the mean is taken in float64."""
    betas = (beta[None] if beta.dim() == 1 else beta).to(z.dtype)
    losses = torch.nn.functional.softplus(-(z @ betas.T) * y[:, None].to(z.dtype)).double() * w[:, None]
    out = losses.mean(0)
    return out[0] if beta.dim() == 1 else out


def held_out_scores(z: torch.Tensor, y: torch.Tensor, w: torch.Tensor, betas: torch.Tensor) -> np.ndarray:
    """f = L(0) - L(beta) on one task's held-out rows for each of ``betas`` (m, d): (m,). L(0) = mean(w) log 2,
    since every margin is 0 there."""
    return float(w.mean() * np.log(2.0)) - logistic_loss(z, y, w, betas).cpu().numpy()


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


def _task_rows(store: GradientStore, device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Each task's fit rows as (z, w*y), on ``device``."""
    out = []
    for i in range(store.n_tasks):
        sl = store.rows(i, holdout=False)
        z = torch.as_tensor(store.read("z", sl), dtype=torch.float64, device=device)
        wy = torch.as_tensor(store.read("w", sl) * store.read("y", sl), dtype=torch.float64, device=device)
        out.append((z, wy))
    return out


def solve_mm(store: GradientStore, subsets: np.ndarray, ridge: float, tol: float = 1e-7, max_iter: int = 500,
             chunk: int = 128, device: str | torch.device | None = None) -> tuple[torch.Tensor, int]:
    """Exact minimisers of every subset's L_S by the bounded-Hessian iteration (see module doc).

    Returns (betas (m, d) float64, the largest number of iterations any chunk of subsets needed).
    """
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    rows = _task_rows(store, dev)
    stats = store.stats.to(dev)  # the factorisations run there too
    member_all = torch.as_tensor(subsets, dtype=torch.float64, device=dev)
    betas, most = [], 0
    for start in range(0, len(member_all), chunk):
        member = member_all[start:start + chunk]
        L, lam, count = bound_factors(stats, member, ridge)
        beta = torch.zeros(len(member), store.d, dtype=torch.float64, device=dev)
        it = 0
        while it < max_iter:
            it += 1
            grad = lam[:, None] * beta
            for i, (z, wy) in enumerate(rows):
                idx = torch.nonzero(member[:, i]).flatten()
                if len(idx) == 0:
                    continue
                margin = z @ beta[idx].T  # (rows_i, subsets holding i)
                coef = wy[:, None] * torch.sigmoid(-torch.sign(wy)[:, None] * margin)
                grad[idx] -= (z.T @ coef).T / count[idx, None]
            step = _cholesky_solve(L, grad)
            beta = beta - step
            if (step.norm(dim=1) <= tol * (1 + beta.norm(dim=1))).all():
                break
        most = max(most, it)
        betas.append(beta.cpu())
    return torch.cat(betas), most


Solver = Callable[[GradientStore, np.ndarray, float, torch.device], torch.Tensor]
"""(store, (m, n) boolean subsets, ridge, device) -> beta_S of every subset, (m, d) float64 on the CPU."""


def _newton_stats(store: GradientStore, subsets: np.ndarray, ridge: float, device: torch.device) -> torch.Tensor:
    return newton_from_stats(store.stats, subsets, ridge, device=device)


def _exact(store: GradientStore, subsets: np.ndarray, ridge: float, device: torch.device) -> torch.Tensor:
    return solve_mm(store, subsets, ridge, device=device)[0]


# The solvers --estimate-solver chooses from. Adding one: a function of type Solver (in its own module if it is
# long), one line here, and its name in EstimateConfig.solver's Literal (config.py).
SOLVERS: Registry[Solver] = Registry("estimate.solver", {
    "newton-stats": _newton_stats,
    "exact": _exact,
})


def solve_subsets(store: GradientStore, subsets: np.ndarray, solver: str, ridge: float,
                  device: torch.device | None = None) -> torch.Tensor:
    """beta_S for every subset by the solver called ``solver``: (m, d) float64 on the CPU, computed on ``device``
    (default the CPU). A subset drawn twice is solved once."""
    solve = SOLVERS.get(solver)
    distinct, inverse = np.unique(subsets, axis=0, return_inverse=True)
    return solve(store, distinct, ridge, device or torch.device("cpu"))[torch.as_tensor(inverse.reshape(-1))]


def subset_scores(store: GradientStore, subsets: np.ndarray, betas: torch.Tensor,
                  device: torch.device | None = None) -> np.ndarray:
    """f(S, i) = L_i(0) - L_i(beta_S) on task i's held-out transitions, for every member i of S, computed on
    ``device`` (default the CPU).

    Returns an (m, n) array, NaN where task i is not in subset S. A positive score means fine-tuning on S
    is predicted to improve task i.
    """
    m, n = subsets.shape
    scores = np.full((m, n), np.nan)
    betas = betas.to(device) if device is not None else betas
    for i in range(n):
        sl = store.rows(i, holdout=True)
        z = torch.as_tensor(store.read("z", sl), device=betas.device)
        y, w = (torch.as_tensor(store.read(k, sl), dtype=torch.float64, device=betas.device) for k in ("y", "w"))
        members = np.flatnonzero(subsets[:, i])
        scores[members, i] = held_out_scores(z, y, w, betas[torch.as_tensor(members, device=betas.device)])
    return scores


def estimate_subsets(store: GradientStore, subsets: np.ndarray, solver: str, ridge: float,
                     device: torch.device | None = None) -> dict[str, np.ndarray]:
    """Stage 3: every subset's solution, its scores f(S, i) and the affinity they give: ``{"subsets", "scores",
    "affinity"}``, what ``surrogate.npz`` holds."""
    scores = subset_scores(store, subsets, solve_subsets(store, subsets, solver, ridge, device), device)
    return {"subsets": subsets, "scores": scores, "affinity": affinity_from_scores(subsets, scores)}
