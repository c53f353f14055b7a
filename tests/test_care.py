"""CARE: task metadata as numbers, attention over encoders that moves with the context, a CARE policy that learns
two conflicting tasks; and the multi-task optimisers as rows of their own beside the groupings."""

import dataclasses

import numpy as np
import pytest
import torch

from policygradex.config import Config, ConfigError, DownstreamConfig, PPOConfig
from policygradex.experiments.pipeline import Pipeline
from policygradex.rl.care import CareNet
from policygradex.rl.evaluate import evaluate
from policygradex.rl.policy import ActorCritic, load_policy, save_policy
from policygradex.rl.ppo import train_ppo
from policygradex.tasks import make_family
from policygradex.tasks.cartpole import CartPoleFactory
from policygradex.tasks.context import context_matrix, text_features


def test_text_features_are_fixed_and_similar_texts_point_alike():
    a, b, c = (text_features(t) for t in ("open a drawer", "close a drawer", "press a button from the top"))
    assert np.array_equal(a, text_features("open a drawer")) and np.isclose(np.linalg.norm(a), 1.0)
    assert a @ b > a @ c


def test_context_matrix_standardises_each_column_over_the_reference():
    params = [{"g": 9.8, "w": [0.2, 0.8], "rev": False, "name": "a"},
              {"g": 4.9, "w": [0.5, 0.5], "rev": True, "name": "b"},
              {"g": 1.6, "w": [0.9, 0.1], "rev": False, "name": "a"}]
    m = context_matrix(params)
    assert m.shape == (3, 1 + 2 + 1 + 32)
    assert np.allclose(m.mean(0), 0) and np.allclose(m.std(0)[m.std(0) > 0], 1)
    assert np.array_equal(m[0, 4:], m[2, 4:])  # the same text, the same encoding
    test = context_matrix([{"g": 9.8, "w": [0.2, 0.8], "rev": False, "name": "a"}], reference=params)
    assert np.allclose(test[0], m[0])  # a test task encoded with the training tasks' statistics
    assert context_matrix(params, keys=()) is None
    with pytest.raises(ValueError, match="same keys"):
        context_matrix([{"g": 1.0}, {"h": 2.0}])


def test_families_describe_their_tasks_but_planted_keeps_its_clusters_hidden():
    cart = make_family("cartpole", n_tasks=4)
    assert cart.context().shape == (4, 6)  # length, masses, gravity, force and its direction
    assert make_family("planted").context() is None


def test_attention_sums_to_one_and_moves_with_the_context():
    torch.manual_seed(0)
    context = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.1]])
    net = CareNet(obs_dim=3, context=context, width=8, head=torch.nn.Linear(16, 2), n_encoders=4)
    with torch.no_grad():
        net.attention.weight.normal_()  # past the near-uniform start
    alpha, _ = net.embed(torch.eye(3))
    assert torch.allclose(alpha.sum(-1), torch.ones(3)) and (alpha > 0).all()
    assert not torch.allclose(alpha[0], alpha[1])  # different contexts, different mixtures of encoders
    assert (alpha[0] - alpha[2]).abs().sum() < (alpha[0] - alpha[1]).abs().sum()  # near contexts mix alike
    with torch.no_grad():
        net.table[1] = net.table[0]
    alpha, _ = net.embed(torch.eye(3))
    assert torch.allclose(alpha[0], alpha[1])  # the task id counts only through its context


def test_a_care_policy_round_trips_with_its_context_table(tmp_path):
    fam = make_family("cartpole", n_tasks=3)
    policy = ActorCritic(4, fam.action_space, 3, (16, 16), True, "care", fam.context())
    save_policy(policy, tmp_path / "p.pt")
    back = load_policy(tmp_path / "p.pt", fam.action_space)
    obs, task = torch.randn(6, 4), torch.tensor([0, 1, 2, 0, 1, 2])
    assert torch.equal(back.policy(obs, task).logits, policy.policy(obs, task).logits)
    assert torch.equal(back.actor.table, torch.as_tensor(fam.context(), dtype=torch.float32))


def test_care_needs_task_ids_and_the_multi_task_protocol():
    with pytest.raises(ConfigError, match="care"):
        Config(train=PPOConfig(task_conditioned=False), downstream=DownstreamConfig(trainer="care"))
    with pytest.raises(ConfigError, match="multi-task"):
        Config(downstream=DownstreamConfig(trainer="care", protocol="meta"))
    with pytest.raises(ConfigError, match="trainer_baselines"):
        DownstreamConfig(trainer_baselines=("maml",))


def test_care_ppo_learns_a_forward_and_a_reversed_cartpole():
    """Opposite actions in the same state, told apart only by the context (a random policy lasts ~22 steps)."""
    factories = [CartPoleFactory(), CartPoleFactory(reversed=True)]
    env = factories[0]()
    cfg = PPOConfig(steps_per_task=16_384, envs_per_task=4, num_steps=128, hidden_sizes=(32, 32))
    context = np.array([[1.0], [-1.0]])  # the force direction, standardised
    policy = train_ppo(factories, env.observation_space, env.action_space, cfg, 3, arch="care",
                       context=context).policy
    returns = evaluate(policy, factories, episodes=5, seed=0, deterministic=False).returns
    assert np.all(returns > 60), returns


def test_trainer_baselines_are_rows_of_their_own_under_the_multi_task_protocol(tmp_path):
    """Meta family: each optimiser trains all tasks as one policy and is scored on the training tasks, beside
    PolicyGradEx's groups trained the same way; the main rows still score the held-out test tasks."""
    fam = make_family("cartpole", n_tasks=4)
    cfg = Config.for_family(fam, quick=True)
    cfg = dataclasses.replace(cfg, workers=1, adapt=dataclasses.replace(cfg.adapt, test_tasks=4),
                              downstream=dataclasses.replace(cfg.downstream, baselines=("single",),
                                                             trainer_baselines=("care", "pcgrad")))
    run = Pipeline(fam, cfg, tmp_path / "run", progress=False).run()
    rows = run.metrics.groupings
    assert {"care", "pcgrad", "policygradex-mt", "single", "policygradex"} <= set(rows)
    for name in ("care", "pcgrad", "policygradex-mt"):
        assert set(rows[name].per_task) == set(fam.task_names)  # evaluated on the training tasks
    assert rows["care"].k == rows["pcgrad"].k == 1 and rows["policygradex-mt"].groups == rows["policygradex"].groups
    assert set(rows["single"].per_task) == {t.name for t in fam.test_tasks[:4]}
    files = {p.name for p in (tmp_path / "run" / "downstream").iterdir()}
    assert {"group-0-1-2-3.care.json", "group-0-1-2-3.pcgrad.json"} <= files
