import gymnasium as gym
import numpy as np
import pytest
import torch

from policygradex.estimate.projection import (
    FactoredProjector,
    GaussianProjector,
    apply_step,
    flat_actor_params,
    make_projector,
    per_sample_gradients,
    scale_to_distance,
)
from policygradex.rl.policy import ActorCritic

BACKENDS = ["factored", "gaussian"]


def tiny_policy(continuous: bool, hidden=(5, 4), seed=0) -> ActorCritic:
    torch.manual_seed(seed)
    space = gym.spaces.Box(-1, 1, (2,)) if continuous else gym.spaces.Discrete(3)
    return ActorCritic(obs_dim=3, action_space=space, n_tasks=2, hidden_sizes=hidden, task_conditioned=True)


def batch(policy: ActorCritic, n=16, seed=1):
    gen = torch.Generator().manual_seed(seed)
    obs = torch.randn(n, 3, generator=gen)
    task = torch.randint(0, 2, (n,), generator=gen)
    with torch.no_grad():
        actions = policy.policy(obs, task).sample()
    return obs, task, actions


@pytest.mark.parametrize("continuous", [False, True])
def test_per_sample_gradients_match_one_backward_per_sample(continuous):
    policy = tiny_policy(continuous)
    obs, task, actions = batch(policy, n=4)
    G = per_sample_gradients(policy, obs, task, actions)
    for k in range(4):
        policy.zero_grad()
        policy.log_prob(policy.policy(obs[k:k + 1], task[k:k + 1]), actions[k:k + 1]).sum().backward()
        expected = torch.cat([torch.cat([m.weight.grad, m.bias.grad[:, None]], 1).flatten()
                              for m in policy.actor if isinstance(m, torch.nn.Linear)])
        assert torch.allclose(G[k], expected, atol=1e-6)


@pytest.mark.parametrize("kind", BACKENDS)
@pytest.mark.parametrize("continuous", [False, True])
def test_features_equal_explicit_gradient_times_explicit_matrix(kind, continuous):
    policy = tiny_policy(continuous)
    proj = make_projector(kind, policy, 24, seed=3)
    obs, task, actions = batch(policy)
    P = proj.explicit_matrix()
    assert P.shape == (sum(p.numel() for p in flat_actor_params(policy)), proj.dim)
    G = per_sample_gradients(policy, obs, task, actions)
    assert torch.allclose(proj.features(policy, obs, task, actions), G @ P, atol=1e-5, rtol=1e-4)


def test_gaussian_features_do_not_depend_on_the_memory_budget():
    policy = tiny_policy(False, hidden=(40, 40))
    obs, task, actions = batch(policy, n=30)
    small = GaussianProjector(policy, 50, seed=5, memory_bytes=4 * 50 * 1024)  # one block of P rows at a time
    large = GaussianProjector(policy, 50, seed=5, memory_bytes=2**30)  # all of P, all transitions at once
    assert small.chunk_rows < small.n_params <= large.chunk_rows and small.batch < 30 <= large.batch
    assert torch.allclose(small.features(policy, obs, task, actions), large.features(policy, obs, task, actions),
                          atol=1e-5)
    assert not torch.allclose(small.explicit_matrix(), GaussianProjector(policy, 50, seed=6).explicit_matrix())


@pytest.mark.parametrize("kind,tolerance", [("factored", 0.09), ("gaussian", 0.06)])
def test_projection_preserves_inner_products(kind, tolerance):
    policy = tiny_policy(False, hidden=(64, 64))
    obs, task, actions = batch(policy, n=40)
    G = per_sample_gradients(policy, obs, task, actions).double()
    norms = G.norm(dim=1)
    true = (G @ G.T) / torch.outer(norms, norms)
    grams = []
    for seed in range(20):
        F = make_projector(kind, policy, 400, seed).features(policy, obs, task, actions).double()
        grams.append((F @ F.T) / torch.outer(norms, norms))
    grams = torch.stack(grams)
    # Unbiased: averaged over independent projections, inner products match the true ones.
    assert (grams.mean(0) - true).abs().max() < 0.08
    # One projection at d = 400 keeps cosines within a JL-style tolerance (measured: factored 0.065,
    # gaussian 0.042; a block Kronecker projection 0.24).
    assert (grams - true).abs().mean() < tolerance
    assert min(np.corrcoef(g.flatten(), true.flatten())[0, 1] for g in grams) > 0.9


@pytest.mark.parametrize("kind", BACKENDS)
def test_parameter_step_is_the_first_order_direction_of_the_features(kind):
    policy = tiny_policy(False, hidden=(16, 16))
    proj = make_projector(kind, policy, 60, seed=0)
    obs, task, actions = batch(policy, n=8)
    feats = proj.features(policy, obs, task, actions).detach()
    beta = torch.randn(proj.dim, generator=torch.Generator().manual_seed(0))
    step = proj.parameter_step(policy, beta)
    eps = 1e-3

    def logp_at(sign: float) -> torch.Tensor:
        moved = apply_step(policy, {k: sign * eps * v for k, v in step.items()})
        with torch.no_grad():
            return moved.log_prob(moved.policy(obs, task), actions)

    # d/d eps log pi(theta* + eps P beta) at 0 = g^T P beta = z^T beta (central difference, error O(eps^2))
    assert torch.allclose((logp_at(1) - logp_at(-1)) / (2 * eps), feats @ beta, rtol=1e-2, atol=1e-3)


def test_trust_region_scales_the_step_to_a_relative_distance():
    policy = tiny_policy(False, hidden=(16, 16))
    proj = FactoredProjector(policy, 60, seed=0)
    step = scale_to_distance(policy, proj.parameter_step(policy, torch.ones(60)), distance=0.01)
    moved = apply_step(policy, step)
    before, after = policy.state_dict(), moved.state_dict()
    theta = torch.cat([before[k].flatten() for k in step])
    delta = torch.cat([(after[k] - before[k]).flatten() for k in step])
    assert abs(delta.norm() / theta.norm() - 0.01) < 1e-5
    assert torch.equal(after["critic.0.weight"], before["critic.0.weight"])
