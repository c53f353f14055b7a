"""Baseline groupings, test-task routing and Soft Modularization."""

import gymnasium as gym
import numpy as np
import pytest
import torch

from policygradex.cluster.sdp import partition
from policygradex.config import Config, ConfigError, DownstreamConfig, PPOConfig
from policygradex.estimate.store import GradientStore
from policygradex.experiments.groupings import ROUTERS, cosine_matrix, independent_groups, route
from policygradex.rl.policy import ActorCritic, load_policy, save_policy
from policygradex.rl.ppo import train_ppo
from policygradex.tasks import make_family


def _clustered(rng, sizes, d=20, noise=0.3):
    centres = rng.normal(size=(len(sizes), d))
    rows = [centres[c] + noise * rng.normal(size=d) for c, s in enumerate(sizes) for _ in range(s)]
    return np.array(rows)


def test_gradient_similarity_recovers_clusters_of_gradient_directions():
    b = _clustered(np.random.default_rng(0), [3, 4, 3])
    sim = cosine_matrix(b)
    assert np.allclose(sim, sim.T) and np.allclose(np.diag(sim), 0) and np.abs(sim).max() <= 1 + 1e-9
    assert partition(sim, 3, 2.0).groups == [[0, 1, 2], [3, 4, 5, 6], [7, 8, 9]]


def _store(rng, betas, rows=400, d=12, held_out=0.25):
    """A gradient store whose task t's rows follow the logistic model beta_t: y = sign(z beta_t + noise)."""
    z = rng.normal(size=(len(betas) * rows, d)).astype(np.float32)
    task = np.repeat(np.arange(len(betas)), rows)
    margin = np.einsum("nd,nd->n", z, np.asarray(betas)[task]) + 0.5 * rng.normal(size=len(z))
    y = np.where(margin >= 0, 1.0, -1.0).astype(np.float32)
    holdout = np.tile(np.arange(rows) >= (1 - held_out) * rows, len(betas))
    return GradientStore({"z": z, "y": y, "w": np.ones(len(z), np.float32), "task": task, "holdout": holdout},
                         len(betas))


@pytest.mark.parametrize("rule", ROUTERS.names())
def test_routing_sends_each_test_task_to_the_group_of_its_own_kind(rule):
    """Three kinds of task (logistic models pointing three ways); test tasks of kinds 2, 0, 1 go to the groups
    of their kind's training tasks, by either rule; one group takes everything."""
    rng = np.random.default_rng(1)
    kinds = [rng.normal(size=12) for _ in range(3)]
    train = _store(rng, [kinds[c] + 0.2 * rng.normal(size=12) for c in (0, 0, 0, 1, 1, 1, 2, 2, 2)])
    test = _store(rng, [kinds[c] + 0.2 * rng.normal(size=12) for c in (2, 0, 1)], rows=200)
    groups = [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    assert route(rule, test, train.stats, groups, ridge=1e-3) == [2, 0, 1]
    no_holdout = _store(np.random.default_rng(2), [kinds[c] for c in (2, 0, 1)], rows=200, held_out=0.0)
    assert route(rule, no_holdout, train.stats, groups, ridge=1e-3) == [2, 0, 1]  # every row a fit row
    assert route(rule, test, train.stats, [list(range(9))], ridge=1e-3) == [0, 0, 0]
    assert independent_groups(3) == [[0], [1], [2]]


def test_surrogate_routing_is_the_argmax_of_stage_3_scores_on_the_test_tasks_rows():
    """The surrogate's pick is the group whose one-Newton-step solution beta_G has the larger L(0) - L(beta_G)
    on all of the test task's rows (fit and held-out), recomputed here by hand; a mixed test task too."""
    from policygradex.estimate.surrogate import held_out_scores, newton_from_stats

    rng = np.random.default_rng(4)
    kinds = [rng.normal(size=12) for _ in range(2)]
    train = _store(rng, [kinds[c] for c in (0, 0, 1, 1)])
    test = _store(rng, [0.6 * kinds[0] + 0.4 * kinds[1], kinds[1]], rows=300)
    groups = [[0, 1], [2, 3]]
    member = np.array([[True, True, False, False], [False, False, True, True]])
    betas = newton_from_stats(train.stats, member, 1e-3)
    expected = []
    for t in range(2):
        z, y, w = (torch.as_tensor(getattr(test, k)[test.task == t]) for k in ("z", "y", "w"))
        expected.append(int(np.argmax(held_out_scores(z, y.double(), w.double(), betas))))
    assert route("surrogate", test, train.stats, groups, ridge=1e-3) == expected
    assert expected[1] == 1


def test_soft_modularization_routes_by_task_and_round_trips(tmp_path):
    torch.manual_seed(0)
    policy = ActorCritic(4, gym.spaces.Discrete(2), 3, (16, 16), arch="softmod")
    obs = torch.randn(5, 4)
    logits = [policy.actor(policy.inputs(obs, torch.full((5,), t))) for t in range(3)]
    assert logits[0].shape == (5, 2) and not torch.allclose(logits[0], logits[1])
    policy.actor(policy.inputs(obs, torch.zeros(5, dtype=torch.long))).sum().backward()
    assert policy.actor.embed.weight.grad.abs().sum() > 0 and policy.actor.routes[0].weight.grad.abs().sum() > 0
    save_policy(policy, tmp_path / "p.pt")
    loaded = load_policy(tmp_path / "p.pt", gym.spaces.Discrete(2))
    assert loaded.arch == "softmod"
    assert torch.equal(loaded.actor(loaded.inputs(obs, torch.ones(5, dtype=torch.long))),
                       policy.actor(policy.inputs(obs, torch.ones(5, dtype=torch.long))))
    with pytest.raises(ValueError, match="task-conditioned"):
        ActorCritic(4, gym.spaces.Discrete(2), 3, arch="softmod", task_conditioned=False)


def test_ppo_trains_a_soft_modularization_policy():
    fam = make_family("planted", n_tasks=4, seed=0)
    cfg = PPOConfig(steps_per_task=3_072, envs_per_task=2, num_steps=64, hidden_sizes=(16, 16))
    curve = train_ppo(fam.factories(range(4)), fam.observation_space, fam.action_space, cfg, 0, arch="softmod").curve
    first, last = np.nanmean(curve[0][1]), np.nanmean(np.array([c[1] for c in curve[-3:]]))
    assert last > first + 0.1


def test_downstream_settings_are_checked():
    with pytest.raises(ConfigError, match="trainer"):
        DownstreamConfig(trainer="sac")
    with pytest.raises(ConfigError, match="gradient-similarity"):
        DownstreamConfig(baselines=("single", "kmeans"))
    with pytest.raises(ConfigError, match="protocol must be .meta."):
        Config(downstream=DownstreamConfig(trainer="maml"))
