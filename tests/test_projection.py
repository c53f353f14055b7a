import gymnasium as gym
import numpy as np
import pytest
import torch
from torch.func import functional_call, grad, vmap

from policygradex.estimate.projection import FactoredProjector, flat_actor_params
from policygradex.rl.policy import ActorCritic


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


def per_sample_gradients(policy: ActorCritic, obs, task, actions) -> torch.Tensor:
    """Explicit per-sample grad of log pi w.r.t. the actor's [W b] blocks, flattened row-major."""
    params = {k: v.detach() for k, v in policy.named_parameters() if k.startswith("actor.")}

    def logp(p, o, t, a):
        out = functional_call(policy.actor, {k[len("actor."):]: v for k, v in p.items()},
                              (policy.inputs(o[None], t[None]),))
        return policy.log_prob(policy.distribution(out), a[None]).sum()

    grads = vmap(grad(logp), in_dims=(None, 0, 0, 0))(params, obs, task, actions)
    blocks = []
    for i in range(0, len(policy.actor), 2):
        w, b = grads[f"actor.{i}.weight"], grads[f"actor.{i}.bias"]
        blocks.append(torch.cat([w, b[:, :, None]], dim=2).reshape(len(obs), -1))
    return torch.cat(blocks, dim=1)


@pytest.mark.parametrize("continuous", [False, True])
def test_factored_features_equal_explicit_gradient_times_kronecker_matrix(continuous):
    policy = tiny_policy(continuous)
    proj = FactoredProjector(policy, dim=24, seed=3)
    obs, task, actions = batch(policy)
    G = per_sample_gradients(policy, obs, task, actions)
    P = proj.explicit_matrix()
    assert P.shape == (sum(p.numel() for p in flat_actor_params(policy)), proj.dim)
    feats = proj.features(policy, obs, task, actions)
    assert torch.allclose(feats, G @ P, atol=1e-5, rtol=1e-4)


def test_factored_projection_preserves_inner_products():
    policy = tiny_policy(False, hidden=(64, 64))
    obs, task, actions = batch(policy, n=40)
    G = per_sample_gradients(policy, obs, task, actions).double()
    norms = G.norm(dim=1)
    true = (G @ G.T) / torch.outer(norms, norms)
    grams = []
    for seed in range(50):
        F = FactoredProjector(policy, dim=400, seed=seed).features(policy, obs, task, actions).double()
        grams.append((F @ F.T) / torch.outer(norms, norms))
    grams = torch.stack(grams)
    # Unbiased: averaged over independent projections, inner products match the true ones.
    assert (grams.mean(0) - true).abs().max() < 0.06
    # One projection at d = 400 keeps cosines within a JL-style tolerance (dense Gaussian: 0.042 here).
    assert (grams - true).abs().mean() < 0.09
    assert min(np.corrcoef(g.flatten(), true.flatten())[0, 1] for g in grams) > 0.9


def test_parameter_step_is_the_first_order_direction_of_the_features():
    policy = tiny_policy(False, hidden=(16, 16))
    proj = FactoredProjector(policy, dim=60, seed=0)
    obs, task, actions = batch(policy, n=8)
    feats = proj.features(policy, obs, task, actions).detach()
    beta = torch.randn(proj.dim, generator=torch.Generator().manual_seed(0))
    step = proj.parameter_step(policy, beta)
    eps = 1e-3

    def logp_at(sign: float) -> torch.Tensor:
        moved = tiny_policy(False, hidden=(16, 16))
        moved.load_state_dict({k: v + sign * eps * step.get(k, 0) for k, v in policy.state_dict().items()})
        with torch.no_grad():
            return moved.log_prob(moved.policy(obs, task), actions)

    # d/d eps log pi(theta* + eps P beta) at 0 = g^T P beta = z^T beta (central difference, error O(eps^2))
    assert torch.allclose((logp_at(1) - logp_at(-1)) / (2 * eps), feats @ beta, rtol=1e-2, atol=1e-3)
