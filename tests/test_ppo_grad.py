"""rl/ppo_grad.py: the hand-written PPO gradient equals autograd's to the bit, and ppo_update takes it."""

import gymnasium as gym
import pytest
import torch

from policygradex.config import PPOConfig
from policygradex.rl import ppo_grad
from policygradex.rl.policy import ActorCritic, mlp, mlp_forward, mlp_layers
from policygradex.rl.ppo import _loss_and_backward, adam, ppo_update
from policygradex.rl.rollout import Rollout, standardize


@pytest.mark.parametrize("n, n_actions, hidden, n_tasks, gaussian", [
    (256, 2, (64, 64), 1, False),   # a CartPole minibatch: the sigmoid form of tanh
    (40, 4, (64, 64), 3, False),    # small: torch.tanh itself
    (100, 3, (32, 16, 8), 5, False),
    (1, 2, (8,), 2, False),
    (16, 3, (), 2, False),          # no hidden layer: one Linear
    (256, 4, (64, 64), 1, True),    # Gaussian actions (Meta-World's 4)
    (30, 2, (16,), 3, True),
])
def test_hand_written_gradient_is_autograds_to_the_bit(n, n_actions, hidden, n_tasks, gaussian):
    torch.manual_seed(n)
    space = gym.spaces.Box(-1, 1, (n_actions,)) if gaussian else gym.spaces.Discrete(n_actions)
    policy = ActorCritic(6, space, n_tasks, hidden)
    layers = ppo_grad.layers_of(policy)
    assert layers is not None
    if gaussian:
        with torch.no_grad():
            policy.log_std.copy_(torch.randn(n_actions) * 0.5)
    x = policy.inputs(torch.randn(n, 6), torch.randint(0, n_tasks, (n,)))
    actions = torch.randn(n, n_actions) if gaussian else torch.randint(0, n_actions, (n,))
    with torch.no_grad():
        current = policy.evaluate_actions(x, actions)[0]
    # old log-probabilities: equal for some rows (ratio exactly 1: max's tie), far off for others (clipped)
    old = current + torch.randn(n) * 0.3 * (torch.rand(n) < 0.7)
    adv, returns = standardize(torch.randn(n)), torch.randn(n) * 5
    cfg = PPOConfig(clip_coef=0.2, ent_coef=0.01, vf_coef=0.5)
    loss = _loss_and_backward(policy, x, actions, old, adv, returns, cfg, None, torch.Generator())["loss"]
    expected = [p.grad.clone() for p in policy.parameters()]
    policy.zero_grad(set_to_none=True)
    parts = ppo_grad.loss_and_grad(policy, layers, x, actions, old, adv, returns, 0.2, 0.01, 0.5)
    assert torch.equal(parts["loss"], loss)
    for (name, p), g in zip(policy.named_parameters(), expected, strict=True):
        assert torch.equal(p.grad, g), name
    assert any(g.abs().sum() > 0 for g in expected)


def test_other_networks_fall_back_to_autograd():
    for arch in ("softmod", "paco", "care"):
        assert ppo_grad.layers_of(ActorCritic(3, gym.spaces.Discrete(2), 2, arch=arch)) is None


def _rollout(seed: int, gaussian: bool, steps: int = 64, envs: int = 4, n_tasks: int = 2) -> Rollout:
    g = torch.Generator().manual_seed(seed)
    shape = (steps, envs)
    actions = torch.randn(*shape, 3, generator=g) if gaussian else torch.randint(0, 3, shape, generator=g)
    return Rollout(obs=torch.randn(*shape, 6, generator=g), actions=actions,
                   logprobs=-torch.rand(shape, generator=g) - 0.5, rewards=torch.randn(shape, generator=g),
                   dones=(torch.rand(shape, generator=g) < 0.05).float(), values=torch.randn(shape, generator=g),
                   last_value=torch.randn(envs, generator=g), task=torch.arange(envs) % n_tasks)


@pytest.mark.parametrize("gaussian", [False, True])
def test_ppo_update_trains_the_same_policy_with_either_gradient(monkeypatch, gaussian):
    cfg = PPOConfig(num_minibatches=3, update_epochs=2)  # 256 rows: minibatches of 85, 85, 85 and 1
    calls = []
    by_hand = ppo_grad.loss_and_grad
    monkeypatch.setattr(ppo_grad, "loss_and_grad", lambda *args: calls.append(1) or by_hand(*args))
    trained = []
    for fast in (True, False):
        if not fast:
            monkeypatch.setattr(ppo_grad, "layers_of", lambda policy: None)
        torch.manual_seed(0)
        policy = ActorCritic(6, gym.spaces.Box(-1, 1, (3,)) if gaussian else gym.spaces.Discrete(3), 2)
        optimizer = adam(policy, 3e-3)
        stats = [ppo_update(policy, optimizer, _rollout(i, gaussian), cfg, torch.Generator().manual_seed(i))
                 for i in range(3)]
        trained.append(([p.detach().clone() for p in policy.parameters()], stats))
    (fast_params, fast_stats), (slow_params, slow_stats) = trained
    assert len(calls) == 3 * 2 * 4  # the hand-written path took every minibatch of the first run, none of the other
    assert fast_stats == slow_stats
    assert all(torch.equal(a, b) for a, b in zip(fast_params, slow_params, strict=True))


@pytest.mark.parametrize("rows", [8, 64, 300])  # tanh itself below 4,096 elements, its sigmoid form above
def test_mlp_forward_is_the_modules_output_to_the_bit(rows):
    torch.manual_seed(rows)
    net = mlp(5, (64, 32), 3, 0.01)
    x = torch.randn(rows, 5)
    assert torch.equal(mlp_forward(mlp_layers(net), x), net(x))
    assert mlp_layers(torch.nn.Sequential(torch.nn.Linear(5, 3), torch.nn.ReLU(), torch.nn.Linear(3, 1))) is None
