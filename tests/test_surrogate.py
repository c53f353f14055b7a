import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from sklearn.linear_model import LogisticRegression

from policygradex.estimate.affinity import affinity_from_scores
from policygradex.estimate.store import GradientStore
from policygradex.estimate.subsets import sample_subsets
from policygradex.estimate.surrogate import (
    logistic_loss,
    newton_from_stats,
    ridge_strength,
    solve_exact,
    solve_mm,
    solve_subsets,
    subset_scores,
)


def synthetic_features(n_tasks=4, rows=300, d=6, seed=0) -> GradientStore:
    """Tasks 0-1 share one true direction, tasks 2-3 the opposite one."""
    rng = np.random.default_rng(seed)
    direction = rng.normal(size=d)
    z, y, w, task = [], [], [], []
    for i in range(n_tasks):
        zi = rng.normal(size=(rows, d))
        sign = 1.0 if i < n_tasks // 2 else -1.0
        p = 1 / (1 + np.exp(-sign * zi @ direction))
        z.append(zi)
        y.append(np.where(rng.random(rows) < p, 1.0, -1.0))
        w.append(rng.exponential(size=rows))
        task.append(np.full(rows, i))
    holdout = np.tile(np.arange(rows) >= int(rows * 0.75), n_tasks)
    columns = {"z": np.concatenate(z).astype(np.float32), "y": np.concatenate(y).astype(np.float32),
               "w": np.concatenate(w).astype(np.float32), "task": np.concatenate(task), "holdout": holdout}
    return GradientStore(columns, n_tasks)


def test_exact_solver_matches_scikit_learn_weighted_logistic_regression():
    f = synthetic_features()
    z, y, w = (torch.as_tensor(a, dtype=torch.float64) for a in (f.z, f.y, f.w))
    lam = 0.05
    beta = solve_exact(z, y, w, lam)
    # sklearn minimises C * sum w log(1+exp(-y z b)) + ||b||^2 / 2; ours is that divided by C * N.
    ref = LogisticRegression(C=1 / (lam * len(z)), fit_intercept=False, tol=1e-12, max_iter=10_000)
    ref.fit(f.z.astype(np.float64), f.y, sample_weight=f.w)
    assert np.allclose(beta.numpy(), ref.coef_[0], rtol=1e-4, atol=1e-6)


def test_newton_from_stats_is_one_newton_step_of_the_exact_solver():
    f = synthetic_features()
    subsets = np.array([[1, 1, 0, 0], [0, 1, 1, 1], [1, 1, 1, 1]], dtype=bool)
    fast = newton_from_stats(f.stats, subsets, ridge=0.1)
    stats = f.stats
    fit = ~f.holdout
    for s, beta in zip(subsets, fast, strict=True):
        rows = fit & np.isin(f.task, np.flatnonzero(s))
        z, y, w = (torch.as_tensor(a[rows], dtype=torch.float64) for a in (f.z, f.y, f.w))
        lam = float(ridge_strength(stats.H[torch.as_tensor(s)].sum(0), torch.tensor(float(rows.sum())), 0.1))
        assert torch.allclose(beta, solve_exact(z, y, w, lam, max_iter=1), rtol=1e-8, atol=1e-10)


def test_bounded_hessian_iteration_reaches_the_exact_minimum_of_every_subset():
    f = synthetic_features()
    subsets = np.array([[1, 1, 0, 0], [0, 1, 1, 1], [1, 1, 1, 1], [0, 0, 1, 1]], dtype=bool)
    betas, iterations = solve_mm(f, subsets, ridge=0.1, tol=1e-10)
    assert 1 < iterations < 500
    fit = ~f.holdout
    for s, beta in zip(subsets, betas, strict=True):
        rows = fit & np.isin(f.task, np.flatnonzero(s))
        z, y, w = (torch.as_tensor(a[rows], dtype=torch.float64) for a in (f.z, f.y, f.w))
        lam = float(ridge_strength(f.stats.H[torch.as_tensor(s)].sum(0), torch.tensor(float(rows.sum())), 0.1))
        assert torch.allclose(beta, solve_exact(z, y, w, lam), rtol=1e-6, atol=1e-8)
    one_step, _ = solve_mm(f, subsets, ridge=0.1, max_iter=1)
    assert torch.allclose(one_step, newton_from_stats(f.stats, subsets, 0.1), rtol=1e-8, atol=1e-10)


def test_solvers_agree_and_scores_see_the_planted_conflict():
    f = synthetic_features()
    subsets = np.array([[1, 1, 0, 0], [0, 0, 1, 1], [1, 0, 1, 0], [0, 1, 0, 1]], dtype=bool)
    exact = solve_subsets(f, subsets, "exact", 0.1)
    fast = solve_subsets(f, subsets, "newton-stats", 0.1)
    rel = (fast - exact).norm(dim=1) / exact.norm(dim=1)
    assert (rel < 0.3).all() and (torch.nn.functional.cosine_similarity(exact, fast, dim=1) > 0.95).all()
    member = subsets.astype(bool)
    rho = spearmanr(subset_scores(f, subsets, fast)[member], subset_scores(f, subsets, exact)[member]).statistic
    assert rho > 0.9
    scores = subset_scores(f, subsets, fast)
    assert np.isnan(scores[0, 2]) and np.isnan(scores[1, 0])
    # Agreeing partners help (positive gain); conflicting partners cancel out and help less.
    assert scores[0, 0] > 0 and scores[1, 2] > 0
    assert scores[0, 0] > scores[2, 0] and scores[1, 3] > scores[3, 3]


def test_logistic_loss_batches_over_betas():
    f = synthetic_features()
    z, y, w = (torch.as_tensor(a, dtype=torch.float64) for a in (f.z, f.y, f.w))
    betas = torch.randn(3, z.shape[1], dtype=torch.float64)
    batched = logistic_loss(z, y, w, betas)
    assert torch.allclose(batched, torch.stack([logistic_loss(z, y, w, b) for b in betas]))
    assert torch.isclose(logistic_loss(z, y, w, torch.zeros(z.shape[1], dtype=torch.float64)),
                         w.mean() * np.log(2))


@pytest.mark.parametrize("n,size,cover", [(10, None, 5), (7, 3, 2), (4, 2, 1)])
def test_subsets_cover_every_pair(n, size, cover):
    subsets = sample_subsets(n, size, cover, 10_000, np.random.default_rng(0))
    assert (subsets.sum(1) == (size or n // 2)).all()
    together = subsets.T.astype(int) @ subsets.astype(int)
    assert together[~np.eye(n, dtype=bool)].min() >= cover


def test_affinity_recovers_each_partners_effect_other_members_held_fixed():
    """Scores linear in membership: the regression returns each partner's own effect, standardised; the
    average over shared subsets would mix in the partners it happened to share subsets with. Subsets have one
    size, so effects are identified relative to the task's mean partner effect."""
    rng = np.random.default_rng(0)
    n = 8
    effect = rng.normal(size=(n, n))
    np.fill_diagonal(effect, 0.0)
    subsets = sample_subsets(n, 4, 30, 10_000, rng)
    scores = np.where(subsets, subsets.astype(float) @ effect.T, np.nan)  # f(S, i) = sum_{j in S} effect[i, j]
    U = affinity_from_scores(subsets, scores)
    expected = np.zeros((n, n))
    for i in range(n):
        others = np.arange(n) != i
        expected[i, others] = (effect[i, others] - effect[i, others].mean()) / np.nanstd(scores[subsets[:, i], i])
    expected, off = (expected + expected.T) / 2, ~np.eye(n, dtype=bool)
    assert np.corrcoef(U[off], expected[off])[0, 1] > 0.99
    slope = (U[off] @ expected[off]) / (expected[off] @ expected[off])
    assert 0.85 < slope <= 1.0  # the ridge only shrinks
    assert np.allclose(U, U.T) and np.allclose(np.diag(U), 0)
    batched = affinity_from_scores(subsets, np.stack([scores, 2 * scores + 1]))
    assert np.allclose(batched[0], U) and np.allclose(batched[1], U)  # standardised: scale and shift drop out


def test_repeated_subsets_get_identical_solutions():
    f = synthetic_features()
    subsets = np.array([[1, 1, 0, 0], [0, 1, 1, 1], [1, 1, 0, 0]], dtype=bool)
    for solver in ("newton-stats", "exact"):
        betas = solve_subsets(f, subsets, solver, 0.1)
        assert torch.equal(betas[0], betas[2]) and not torch.equal(betas[0], betas[1])



def lottery_features(seed: int, rows=600, lottery_rows=60) -> tuple[GradientStore, np.ndarray]:
    """8 tasks in 2 clusters whose labels conflict along dims 0-1, plus, per task, a few "lottery" rows whose
    labels are coin flips with large weights, on features confined to dims 2-3 (the one observation of the
    lottery family's first step): pure noise in b, large in a few directions."""
    rng = np.random.default_rng(seed)
    direction = np.array([1.0, -0.5])
    cluster = np.arange(8) % 2
    z, y, w, task = [], [], [], []
    for i in range(8):
        zi = np.zeros((rows + lottery_rows, 4))
        zi[:rows, :2] = rng.normal(size=(rows, 2))
        zi[rows:, 2:] = rng.normal(size=(lottery_rows, 2))
        logit = (1 - 2 * cluster[i]) * 2.0 * zi[:rows, :2] @ direction
        yi = np.concatenate([np.where(rng.random(rows) < 1 / (1 + np.exp(-logit)), 1.0, -1.0),
                             rng.choice([-1.0, 1.0], lottery_rows)])
        z.append(zi)
        y.append(yi)
        w.append(np.concatenate([np.ones(rows), np.full(lottery_rows, 100.0)]))
        task.append(np.full(rows + lottery_rows, i))
    holdout = np.tile(rng.random(rows + lottery_rows) < 0.5, 8)
    columns = {"z": np.concatenate(z).astype(np.float32), "y": np.concatenate(y).astype(np.float32),
               "w": np.concatenate(w).astype(np.float32), "task": np.concatenate(task), "holdout": holdout}
    return GradientStore(columns, 8), cluster


def test_surrogate_whitens_a_noisy_low_dimensional_block_that_misleads_the_cosine():
    """The lottery family's maths: zero-mean noise with a large spread in a few directions dominates the
    mean gradients b_i, so their cosines group partly at random; the Newton step divides each direction by its
    spread (A_S = H_S / 4N + lam I), so the surrogate's affinity still reads the clusters' conflict."""
    from policygradex.cluster.sdp import partition
    from policygradex.cluster.significance import nmi
    from policygradex.experiments.groupings import cosine_matrix

    subsets = sample_subsets(8, 4, 6, 10_000, np.random.default_rng(1))
    ours, cosine = [], []
    for seed in range(5):
        store, cluster = lottery_features(seed)
        truth = [np.flatnonzero(cluster == c).tolist() for c in (0, 1)]
        affinity = affinity_from_scores(subsets, subset_scores(store, subsets, solve_subsets(
            store, subsets, "newton-stats", 0.1)))
        ours.append(nmi(partition(affinity, 2).groups, truth, 8))
        cosine.append(nmi(partition(cosine_matrix(store.stats.b.numpy()), 2).groups, truth, 8))
    assert min(ours) == 1.0
    assert max(cosine) < 0.9 and np.mean(cosine) < 0.5, cosine  # measured: 0.56, 0.34, 0.56, 0.05, 0.00
