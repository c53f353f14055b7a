"""How many groups: the null test, the resampling behind it, the bootstrap, and one rule for API and CLI."""

import json
import subprocess
import sys

import numpy as np
import pytest

import policygradex as pgx
from policygradex.cli import build_config
from policygradex.cluster.grouping import group, modal_k
from policygradex.cluster.significance import choose_k, partition_values
from policygradex.config import ClusterConfig, Config
from policygradex.errors import PGXError
from policygradex.estimate.affinity import affinity_from_scores
from policygradex.estimate.resample import Draw, bootstrap_draw, make_blocks, null_draw, resampled_affinities
from policygradex.estimate.store import GradientStore
from policygradex.estimate.subsets import sample_subsets
from policygradex.estimate.surrogate import solve_subsets, subset_scores


def block_affinity(n_blocks: int, rng: np.random.Generator, n: int = 12, noise: float = 0.5) -> np.ndarray:
    labels = np.repeat(np.arange(n_blocks), n // n_blocks)
    signal = np.where(labels[:, None] == labels[None, :], 1.0, -0.5) if n_blocks > 1 else np.zeros((n, n))
    U = signal + noise * rng.normal(size=(n, n))
    U = (U + U.T) / 2
    np.fill_diagonal(U, 0.0)
    return U


def test_null_test_keeps_noise_in_one_group_and_counts_planted_blocks():
    rng = np.random.default_rng(0)
    null = np.stack([partition_values(block_affinity(1, rng)) for _ in range(49)])
    false_splits = sum(choose_k(partition_values(block_affinity(1, rng)), null, 0.05).k > 1 for _ in range(60))
    assert false_splits <= 9  # level 5%: about 3 of 60 expected
    for blocks in (2, 3, 4, 6):
        choice = choose_k(partition_values(block_affinity(blocks, rng)), null, 0.05)
        assert choice.k == blocks and choice.p <= 0.05
        assert choice.excess[blocks - 1] > 0  # k itself beats the null


def test_a_split_that_does_not_replicate_gives_way_to_one_group():
    rng = np.random.default_rng(2)
    null = np.stack([partition_values(block_affinity(1, rng)) for _ in range(49)])
    U = block_affinity(2, rng)  # beats the null clearly
    replicating = np.stack([block_affinity(2, rng) for _ in range(10)])
    kept = group(U, ClusterConfig(), 0, null, replicating)
    assert kept.k == 2 and kept.confidence.stability > 0.9
    # bootstrap draws without that structure: the split is not seen again
    noise = np.stack([block_affinity(1, rng) for _ in range(10)])
    dropped = group(U, ClusterConfig(), 0, null, noise)
    assert dropped.k == 1 and dropped.null_p <= 0.05 and "does not replicate" in dropped.reason
    assert dropped.confidence.stability > 0.5  # most noise draws are one group too: agreement with the answer
    assert "most often find no split" in dropped.reason
    # draws that split in two, but never the same way: their modal k is 2, their stability low
    shuffled = np.stack([A[np.ix_(p, p)] for A, p in ((block_affinity(2, rng), rng.permutation(12))
                                                        for _ in range(10))])
    unstable = group(U, ClusterConfig(), 0, null, shuffled)
    assert unstable.k == 1 and "stability" in unstable.reason and "does not replicate" in unstable.reason
    assert group(U, ClusterConfig(min_stability=0.0), 0, null, noise).k == 2  # the checks off
    assert group(U, ClusterConfig(min_stability=0.0), 0, null, shuffled).k == 2
    assert group(U, ClusterConfig(k=2), 0, null, noise).k == 2  # a fixed k is never overruled


def near_blocks(between: float, rng: np.random.Generator, noise: float = 0.3) -> np.ndarray:
    """Tasks 0-3, 4-7, 8-11 in three blocks; the first two share ``between`` (1.0: they are one block)."""
    label = np.repeat([0, 1, 2], 4)
    signal = np.where(label[:, None] == label[None, :], 1.0, -0.5)
    signal[:8, :8] = np.where(signal[:8, :8] == 1.0, 1.0, between)
    U = signal + noise * rng.normal(size=(12, 12))
    U = (U + U.T) / 2
    np.fill_diagonal(U, 0.0)
    return U


def test_k_is_held_to_the_bootstrap_draws_modal_k_which_only_removes_groups():
    assert modal_k([3, 2, 2, 2, 8], 3) == 2 and modal_k([2, 3, 3, 2], 3) == 3  # a tie keeps the data's k
    assert modal_k([8, 8, 9, 9, 10], 10) == 8  # other ties: fewer groups
    rng = np.random.default_rng(3)
    null = np.stack([partition_values(block_affinity(1, rng)) for _ in range(49)])
    U = near_blocks(0.3, rng)
    assert group(U, ClusterConfig(min_stability=0.0), 0, null, np.stack([U])).k == 3  # the data alone
    # the draws see the first two blocks as one more often than apart
    mostly_two = np.stack([near_blocks(1.0, rng) for _ in range(6)] + [near_blocks(0.3, rng) for _ in range(4)])
    held = group(U, ClusterConfig(), 0, null, mostly_two)
    assert held.k == 2 and held.confidence.draw_k.count(2) == 6 and "most often pick 2 (6 of 10)" in held.reason
    assert held.groups == [list(range(8)), list(range(8, 12))]
    apart = np.stack([block_affinity(4, rng) for _ in range(10)])  # the draws choose more groups: no effect
    assert group(U, ClusterConfig(), 0, null, apart).k == 3
    assert group(U, ClusterConfig(k=3), 0, null, mostly_two).k == 3  # a fixed k is never overruled


def test_partition_values_are_the_sdp_objective_of_a_partition():
    rng = np.random.default_rng(1)
    U = block_affinity(3, rng, noise=0.0)
    values = partition_values(U)
    assert values[0] == 0.0 and len(values) == 12
    assert np.isclose(values[2], 3 * (4 * 3 * 1.0) / 4)  # three blocks of 4: 12 within-block pairs of 1.0 each


def clustered_store(n_clusters: int, n_tasks: int = 9, rows: int = 1024, d: int = 12, seed: int = 0) -> GradientStore:
    """Tasks whose advantage signs follow their cluster's direction in feature space (one cluster: identical)."""
    rng = np.random.default_rng(seed)
    directions = rng.normal(size=(n_clusters, d)) * 1.5
    cols = {k: [] for k in ("z", "y", "w", "task", "holdout")}
    for i in range(n_tasks):
        z = rng.normal(size=(rows, d))
        p = 1 / (1 + np.exp(-z @ directions[i % n_clusters]))
        cols["z"].append(z)
        cols["y"].append(np.where(rng.random(rows) < p, 1.0, -1.0))
        cols["w"].append(rng.exponential(size=rows))
        cols["task"].append(np.full(rows, i))
        cols["holdout"].append(np.arange(rows) >= int(rows * 0.75))
    columns = {k: np.concatenate(v) for k, v in cols.items()}
    columns["z"], columns["y"], columns["w"] = (columns[k].astype(np.float32) for k in ("z", "y", "w"))
    return GradientStore(columns, n_tasks)


def stage_3_and_4(store: GradientStore, seed: int = 0):
    n, ridge = store.n_tasks, 0.1
    subsets = sample_subsets(n, None, 20, 2000, np.random.default_rng(seed))
    betas = solve_subsets(store, subsets, "newton-stats", ridge)
    U = affinity_from_scores(subsets, subset_scores(store, subsets, betas))
    blocks = make_blocks(store, 64)
    rng = np.random.default_rng(seed + 1)
    draws = [null_draw(blocks, rng) for _ in range(39)] + [bootstrap_draw(blocks, rng) for _ in range(10)]
    affinities = resampled_affinities(store, blocks, subsets, ridge, draws)
    null = np.stack([partition_values(A) for A in affinities[:39]])
    return group(U, ClusterConfig(), 0, null, affinities[39:])


def test_identical_tasks_stay_one_group_and_clusters_are_found():
    same = stage_3_and_4(clustered_store(1))
    assert same.k == 1 and same.null_p > 0.05 and same.reason.startswith("one group")
    found = stage_3_and_4(clustered_store(3))
    assert sorted(found.groups) == [[0, 3, 6], [1, 4, 7], [2, 5, 8]] and found.null_p <= 0.05
    conf = found.confidence
    assert conf.co_membership.shape == (9, 9) and np.allclose(np.diag(conf.co_membership), 1.0)
    assert 0.0 <= conf.stability <= 1.0 and ((conf.confidence >= 0) & (conf.confidence <= 1)).all()
    assert conf.co_membership[0, 3] > conf.co_membership[0, 1]  # cluster mates together more often


def test_null_draws_deal_every_block_once_and_bootstrap_stays_within_task():
    store = clustered_store(2, n_tasks=4, rows=256)
    blocks = make_blocks(store, 32)
    rng = np.random.default_rng(0)
    draw = null_draw(blocks, rng)
    for parts, task_of in ((draw.fit, blocks.fit_task), (draw.holdout, blocks.ho_task)):
        assert sorted(np.concatenate(parts).tolist()) == list(range(len(task_of)))  # each block once
        assert [len(p) for p in parts] == np.bincount(task_of).tolist()  # each task keeps its count
        assert any((task_of[p] != i).any() for i, p in enumerate(parts))  # and blocks do change task
    boot = bootstrap_draw(blocks, rng)
    assert all((blocks.fit_task[p] == i).all() for i, p in enumerate(boot.fit))
    assert all((blocks.ho_task[p] == i).all() for i, p in enumerate(boot.holdout))


def test_the_identity_draw_reproduces_the_affinity():
    """With every task's own blocks the fixed-curvature draw is the real computation."""
    store = clustered_store(2, n_tasks=5, rows=256)
    subsets = sample_subsets(5, None, 4, 100, np.random.default_rng(0))
    U = affinity_from_scores(subsets, subset_scores(store, subsets, solve_subsets(store, subsets, "newton-stats", 0.1)))
    blocks = make_blocks(store, 50)
    own = Draw([np.flatnonzero(blocks.fit_task == i) for i in range(5)],
               [np.flatnonzero(blocks.ho_task == i) for i in range(5)])
    assert np.allclose(resampled_affinities(store, blocks, subsets, 0.1, [own])[0], U, atol=1e-8)


def test_a_bare_matrix_needs_k_or_a_penalty():
    U = block_affinity(2, np.random.default_rng(0))
    with pytest.raises(PGXError, match="AffinityResult"):
        pgx.group_tasks(U)
    assert len(pgx.group_tasks(U, k=2)) == 2
    assert sorted(i for g in pgx.group_tasks(U, trace_penalty=2.0) for i in g) == list(range(12))


def test_api_and_cli_start_from_the_same_family_defaults():
    for name in ("cartpole", "planted", "lunar_lander"):
        family = pgx.make_family(name, n_tasks=3)
        assert Config.for_family(family) == build_config({}, name, quick=False)
        assert Config.for_family(family, quick=True) == build_config({}, name, quick=True)


def test_api_and_cli_give_identical_groups_from_one_run_folder(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "policygradex.cli", "run", "--family", "planted", "--n-tasks", "6",
                           "--quick", "--no-progress", "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    written = json.loads((out / "groups.json").read_text())
    for key in ("stability", "null_p"):
        assert 0.0 <= written[key] <= 1.0
    assert set(written["confidence"]) == set(written["tasks"])
    assert all(0.0 <= c <= 1.0 for c in written["confidence"].values())
    assert written["reason"]
    family = pgx.make_family("planted", n_tasks=6)
    res = pgx.estimate_affinity(family, Config.for_family(family, quick=True), out=out)  # resumed, not recomputed
    names = family.task_names
    assert [[names[i] for i in g] for g in pgx.group_tasks(res)] == written["groups"]
