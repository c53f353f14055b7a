import numpy as np
import pytest

from policygradex.cluster.sdp import partition, round_solution, spectral_groups


def planted(sizes, noise, seed):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(sizes)), sizes)
    U = np.where(labels[:, None] == labels[None, :], 1.0, -1.0) + noise * rng.normal(size=(len(labels),) * 2)
    U = (U + U.T) / 2
    np.fill_diagonal(U, 0)
    perm = rng.permutation(len(labels))  # hide the blocks behind a shuffled task order
    truth = sorted([sorted(np.flatnonzero(labels[perm] == c).tolist()) for c in range(len(sizes))])
    return U[np.ix_(perm, perm)], truth


@pytest.mark.parametrize("sizes,seed", [([3, 3, 4], 0), ([2, 5], 1), ([4, 4, 2, 2], 2)])
def test_sdp_recovers_planted_blocks(sizes, seed):
    U, truth = planted(sizes, noise=0.4, seed=seed)
    auto = partition(U, k=None, trace_penalty=0.0)
    assert sorted(auto.groups) == truth and auto.method == "sdp"
    fixed = partition(U, k=len(sizes))
    assert sorted(fixed.groups) == truth and fixed.method == "sdp-fixed-k"


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("k", [None, 1, 2, 5, 7])
def test_grouping_is_always_a_partition(seed, k):
    rng = np.random.default_rng(seed)
    U = rng.normal(size=(7, 7))
    g = partition(U, k=k, trace_penalty=float(rng.uniform(0, 2)))
    flat = sorted(i for grp in g.groups for i in grp)
    assert flat == list(range(7)) and all(g.groups)
    if k is not None:
        assert g.k == k


def test_rounding_splits_identical_rows_to_reach_k():
    X = np.full((6, 6), 1 / 6)  # one group's relaxed matrix, asked for three groups
    groups = round_solution(X, k=3)
    assert len(groups) == 3 and sorted(i for g in groups for i in g) == list(range(6))


def test_trace_penalty_merges_groups():
    U, _ = planted([3, 3], noise=0.0, seed=0)
    U = U + 1.2  # every pair now mildly positive: the penalty decides
    assert partition(U, trace_penalty=0.0).k >= 1
    assert partition(U, trace_penalty=5.0).k == 1


def test_spectral_fallback_recovers_blocks():
    U, truth = planted([3, 4], noise=0.2, seed=3)
    assert sorted(spectral_groups(U, 2)) == truth
