import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from policygradex.estimate.store import GradientStore

ROOT = Path(__file__).resolve().parents[1]


def random_store(n_tasks=3, rows=500, d=7, seed=0) -> GradientStore:
    rng = np.random.default_rng(seed)
    n = n_tasks * rows
    columns = {"z": rng.normal(size=(n, d)).astype(np.float32), "y": np.where(rng.random(n) < 0.5, 1.0, -1.0),
               "w": rng.exponential(size=n), "task": np.repeat(np.arange(n_tasks), rows),
               "holdout": np.tile(np.arange(rows) >= 400, n_tasks)}
    writer = GradientStore.create(None, n, d, n_tasks)
    writer.write(0, **columns)
    return writer.close()


def test_statistics_are_the_per_task_sums_over_fit_rows():
    store = random_store()
    for i in range(3):
        rows = (store.task == i) & ~store.holdout
        z, w, y = (torch.as_tensor(a[rows], dtype=torch.float64) for a in (store.z, store.w, store.y))
        assert torch.allclose(store.stats.b[i], (w * y) @ z)
        assert torch.allclose(store.stats.H[i], (z * w[:, None]).T @ z)
        assert store.stats.count[i] == 400
        assert store.rows(i, holdout=True) == slice(500 * i + 400, 500 * (i + 1))


def test_disk_store_round_trip_in_chunks(tmp_path, monkeypatch):
    import policygradex.estimate.store as store_mod

    mem = random_store()
    monkeypatch.setattr(store_mod, "CHUNK_ROWS", 128)  # several chunks, one of them partial
    disk = mem.save(tmp_path / "store")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store"]  # the temporary folder is gone
    for k in ("z", "y", "w", "task", "holdout"):
        assert np.array_equal(disk.read(k), mem.read(k).astype(disk.read(k).dtype))
        assert np.array_equal(disk.read(k, slice(333, 777)), disk.read(k)[333:777])
    reopened = GradientStore.open(tmp_path / "store")
    assert torch.allclose(reopened.stats.H, mem.stats.H) and torch.allclose(reopened.stats.b, mem.stats.b)
    assert np.array_equal(np.asarray(reopened.z), mem.z)


def test_truncated_store_is_detected(tmp_path):
    random_store().save(tmp_path / "store")
    with open(tmp_path / "store" / "z.npy", "r+b") as f:
        f.truncate(1000)
    with pytest.raises(ValueError, match="truncated"):
        GradientStore.open(tmp_path / "store")


def test_unfinished_store_is_never_published(tmp_path):
    writer = GradientStore.create(tmp_path / "store", 10, 3, 1)
    writer.write(0, z=np.ones((5, 3)))
    assert not (tmp_path / "store").exists()


def test_million_transition_store_stays_under_two_gigabytes(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "store_memory.py"), "--rows", "1000000",
                           "--d", "400", "--out", str(tmp_path / "store")], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["rows"] == 1_000_000 and result["d"] == 400 and result["finite_scores"]
    assert result["bytes_on_disk"] > 1_600_000_000
    assert result["peak_rss_mb"] < 2048, result


def test_held_out_tasks_reach_a_task_conditioned_policy_without_a_task_id():
    """Features of tasks the policy was not trained on (``unseen``): the policy sees no task id, not the id of
    the training task that shares their index. So they do not depend on the policy's task-id weights at all
    (zeroed: the same features), their rollouts are those of a policy blind to ids (the same labels and
    weights), and they differ from what the ids would give; the store keeps the tasks' own indices."""
    import copy

    from policygradex.config import EstimateConfig, PPOConfig
    from policygradex.estimate.features import collect_features
    from policygradex.estimate.projection import make_projector
    from policygradex.rl.policy import ActorCritic
    from policygradex.tasks.cartpole import CartPoleFactory

    torch.manual_seed(0)
    factories = [CartPoleFactory(), CartPoleFactory(length=0.8), CartPoleFactory(reversed=True)]
    env = factories[0]()
    policy = ActorCritic(4, env.action_space, n_tasks=2, hidden_sizes=(8,), task_conditioned=True)
    blind = copy.deepcopy(policy)
    with torch.no_grad():
        for net in (blind.actor, blind.critic):
            net[0].weight[:, 4:] = 0  # the one-hot columns of the first layer
    cfg, ppo = EstimateConfig(transitions_per_task=64, proj_dim=16), PPOConfig()

    def features(p, unseen):
        return collect_features(p, factories, make_projector("factored", p, 16, 0), cfg, ppo, 5, unseen=unseen)

    unseen, seen = features(policy, True), features(policy, False)
    np.testing.assert_array_equal(unseen.z, features(blind, True).z)
    blind_seen = features(blind, False)
    for column in ("y", "w"):
        np.testing.assert_array_equal(getattr(unseen, column), getattr(blind_seen, column))
    assert not np.array_equal(unseen.w, seen.w)  # with ids, tasks 0 and 1 would be read as training tasks
    np.testing.assert_array_equal(unseen.task, np.repeat([0, 1, 2], 64))
