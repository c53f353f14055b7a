"""MAML's maths (the meta-gradient through the inner update), adaptation, and a tiny meta-training."""

import gymnasium as gym
import numpy as np
import torch

import policygradex as pgx
from policygradex.config import AdaptConfig, PPOConfig
from policygradex.rl.maml import actor_params, adapt, inner_update, pg_loss, train_maml
from policygradex.rl.policy import ActorCritic
from policygradex.rl.rollout import Rollout

LR = 0.5


def _policy() -> ActorCritic:
    torch.manual_seed(0)
    return ActorCritic(3, gym.spaces.Discrete(3), 1, (5,), task_conditioned=False).double()


def _rollout(seed: int, steps: int = 16, envs: int = 2) -> tuple[Rollout, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    z = torch.zeros(steps, envs, dtype=torch.float64)
    roll = Rollout(torch.randn(steps, envs, 3, generator=g, dtype=torch.float64),
                   torch.randint(0, 3, (steps, envs), generator=g), z, z, z, z, z[0],
                   torch.zeros(envs, dtype=torch.long))
    return roll, torch.randn(steps * envs, generator=g, dtype=torch.float64)


def _outer(policy: ActorCritic, flat: torch.Tensor, create_graph: bool) -> torch.Tensor:
    """L_query(theta'(theta)) with theta the actor parameters laid out as one flat vector."""
    params, start = {}, 0
    for k, v in actor_params(policy).items():
        params[k] = flat[start:start + v.numel()].view_as(v)
        start += v.numel()
    (support, s_adv), (query, q_adv) = _rollout(1), _rollout(2)
    return pg_loss(policy, inner_update(policy, params, support, s_adv, LR, create_graph), query, q_adv)


def test_second_order_meta_gradient_matches_finite_differences():
    policy = _policy()
    theta = torch.cat([v.detach().reshape(-1) for v in actor_params(policy).values()]).requires_grad_()
    exact = torch.autograd.grad(_outer(policy, theta, create_graph=True), theta)[0]
    first = torch.autograd.grad(_outer(policy, theta, create_graph=False), theta)[0]
    direction = torch.randn(theta.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    eps = 1e-5
    with torch.enable_grad():  # the inner update needs gradients even when we only evaluate
        step = eps * direction
        fd = (_outer(policy, theta + step, False) - _outer(policy, theta - step, False)) / (2 * eps)
    assert torch.allclose(exact @ direction, fd.detach(), rtol=1e-5, atol=1e-9)
    # first-order MAML drops the Hessian term: a visibly different gradient, and the plain gradient at theta'
    assert not torch.allclose(first, exact, rtol=1e-2)
    (support, s_adv), (query, q_adv) = _rollout(1), _rollout(2)
    adapted = {k: v.detach().requires_grad_() for k, v in
               inner_update(policy, actor_params(policy), support, s_adv, LR, False).items()}
    at_adapted = torch.autograd.grad(pg_loss(policy, adapted, query, q_adv), list(adapted.values()))
    assert torch.allclose(first, torch.cat([g.reshape(-1) for g in at_adapted]))


def test_inner_update_descends_the_policy_gradient_loss():
    policy = _policy()
    support, adv = _rollout(1)
    params = actor_params(policy)
    before = pg_loss(policy, params, support, adv)
    after = pg_loss(policy, inner_update(policy, params, support, adv, 0.05, False), support, adv)
    assert after < before


def test_adaptation_is_seeded_and_leaves_the_meta_policy_alone():
    fam = pgx.make_family("cartpole", n_tasks=2, seed=0)
    policy = ActorCritic(4, fam.action_space, 1, (16,), task_conditioned=False)
    original = {k: v.clone() for k, v in policy.state_dict().items()}
    cfg, ppo = AdaptConfig(steps=64, inner_updates=2), PPOConfig()
    a, b = (adapt(policy, fam.test_tasks[0].make, cfg, ppo, seed=5) for _ in range(2))
    c = adapt(policy, fam.test_tasks[0].make, cfg, ppo, seed=6)
    assert all(torch.equal(v, original[k]) for k, v in policy.state_dict().items())
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["actor.0.weight"], original["actor.0.weight"])
    assert not torch.equal(sa["actor.0.weight"], sc["actor.0.weight"])
    assert torch.equal(sa["critic.0.weight"], original["critic.0.weight"])  # only the actor adapts


def test_maml_meta_trains_within_its_budget_first_and_second_order():
    fam = pgx.make_family("cartpole", n_tasks=2, seed=0)
    ppo = PPOConfig(steps_per_task=600, envs_per_task=1, num_steps=64, hidden_sizes=(16,))
    for second_order in (False, True):
        steps = []
        res = train_maml(fam.factories([0, 1]), fam.observation_space, fam.action_space, ppo,
                         AdaptConfig(steps=64, second_order=second_order), seed=0, progress=steps.append)
        assert not res.policy.task_conditioned
        assert sum(steps) == 2 * 600 and 600 <= len(res.curve) * 128 < 600 + 128  # the bar ends at the budget
        assert all(len(returns) == 2 for _, returns in res.curve)  # post-adaptation return of each task
        assert all(np.isfinite(v.detach().numpy()).all() for v in res.policy.parameters())
