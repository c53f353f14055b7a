"""PaCo: a task's network is the MLP with parameters Phi w_t; a PaCo policy learns two conflicting tasks."""

import numpy as np
import pytest
import torch

from policygradex.config import Config, ConfigError, DownstreamConfig, PPOConfig
from policygradex.rl.evaluate import evaluate
from policygradex.rl.paco import MaskOut, PaCoNet
from policygradex.rl.ppo import train_ppo
from policygradex.tasks.cartpole import CartPoleFactory


def test_a_tasks_network_is_the_mlp_with_parameters_phi_w():
    torch.manual_seed(0)
    net = PaCoNet(obs_dim=3, n_tasks=2, hidden=(8, 8), n_out=2, out_gain=1.0, n_sets=4)
    with torch.no_grad():
        net.composition.copy_(torch.randn(2, 4))
    obs = torch.randn(5, 3)
    for t in range(2):
        one_hot = torch.zeros(5, 2)
        one_hot[:, t] = 1
        w = net.composition[t]
        h = obs
        for i, (W, b) in enumerate(zip(net.weights, net.biases, strict=True)):  # theta_t = sum_k w_k phi_k
            h = h @ torch.einsum("k,koi->oi", w, W).T + torch.einsum("k,ko->o", w, b)
            h = torch.tanh(h) if i < len(net.weights) - 1 else h
        assert torch.allclose(net(torch.cat([obs, one_hot], dim=1)), h, atol=1e-6)
    # the two tasks' networks differ only through their compositions
    a, b = (net(torch.cat([obs, torch.eye(2)[[t] * 5]], dim=1)) for t in (0, 1))
    assert not torch.allclose(a, b)


def test_paco_needs_task_ids_and_the_multi_task_protocol():
    with pytest.raises(ConfigError, match="paco"):
        Config(train=PPOConfig(task_conditioned=False), downstream=DownstreamConfig(trainer="paco"))
    with pytest.raises(ConfigError, match="multi-task"):
        Config(downstream=DownstreamConfig(trainer="paco", protocol="meta"))


def test_paco_ppo_learns_a_forward_and_a_reversed_cartpole():
    """Opposite actions in the same state: the compositions must tell the tasks apart (a random policy lasts
    about 22 steps)."""
    factories = [CartPoleFactory(), CartPoleFactory(reversed=True)]
    env = factories[0]()
    cfg = PPOConfig(steps_per_task=16_384, envs_per_task=4, num_steps=128, hidden_sizes=(32, 32))
    policy = train_ppo(factories, env.observation_space, env.action_space, cfg, 3, arch="paco",
                       mask_out=MaskOut()).policy
    returns = evaluate(policy, factories, episodes=5, seed=0, deterministic=False).returns
    assert np.all(returns > 60), returns


def test_mask_out_leaves_a_diverging_task_out_and_resets_its_composition():
    """PaCo's stabilisers: task 2's value loss is far above the others', so its samples do not enter the update
    and its w becomes the mean of the others' (actor and critic)."""
    from policygradex.rl.policy import ActorCritic
    from policygradex.rl.ppo import adam, ppo_update
    from policygradex.rl.rollout import Rollout

    torch.manual_seed(0)
    env = CartPoleFactory()()
    policy = ActorCritic(4, env.action_space, 3, (8, 8), True, "paco")
    steps, task = 16, torch.tensor([0, 1, 2, 0, 1, 2])
    obs = torch.randn(steps, 6, 4)
    with torch.no_grad():
        values = policy.value(obs, task.expand(steps, 6))
    rewards = torch.ones(steps, 6)
    rewards[:, [2, 5]] = 1e4  # task 2's returns are far from its values
    rollout = Rollout(obs, torch.randint(0, 2, (steps, 6)), torch.full((steps, 6), -0.69), rewards,
                      torch.zeros(steps, 6), values, torch.zeros(6), task)
    seen = []
    policy.evaluate_actions = lambda x, a, f=policy.evaluate_actions: seen.append(x[:, 4:].argmax(1)) or f(x, a)
    guard = MaskOut()
    before = policy.actor.composition.detach().clone()
    ppo_update(policy, adam(policy, 1e-3), rollout, PPOConfig(num_minibatches=2, update_epochs=1),
               torch.Generator().manual_seed(0), mask_out=guard)
    assert guard.resets == 1 and 2 not in torch.cat(seen).tolist() and set(torch.cat(seen).tolist()) == {0, 1}
    # the reset row is the others' mean, and no gradient moved it afterwards (its samples were left out)
    assert torch.allclose(policy.actor.composition[2], before[:2].mean(0), atol=1e-6)
    assert not torch.allclose(policy.actor.composition[:2], before[:2])
    # healthy tasks: nothing to mask
    assert MaskOut()(policy, task, torch.zeros(steps, 6), torch.zeros(steps, 6) + 0.1) is None
