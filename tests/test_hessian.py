"""The Hessian measures of ``validate generalization`` against Hessians built in full on a small policy."""

import gymnasium as gym
import torch
from torch.func import hessian

from policygradex.experiments.hessian import hessian_bound, hutchinson_trace, layer_quadratic_forms, surrogate_loss
from policygradex.rl.policy import ActorCritic


def _setup():
    torch.manual_seed(0)
    policy = ActorCritic(3, gym.spaces.Discrete(3), n_tasks=1, hidden_sizes=(5,), task_conditioned=False)
    obs, task = torch.randn(48, 3), torch.zeros(48, dtype=torch.long)
    with torch.no_grad():
        actions = policy.policy(obs, task).sample()
        logp_star = policy.log_prob(policy.policy(obs, task), actions)
        for p in policy.actor.parameters():  # move away from theta*, where every sample's loss is w log 2
            p.add_(0.3 * torch.randn_like(p))
    y, w = torch.where(torch.randn(48) > 0, 1.0, -1.0), torch.rand(48) * 2
    params = {k: p.detach() for k, p in policy.actor.named_parameters()}
    return policy, surrogate_loss(policy, obs, task, actions, y, w, logp_star), params


def _flat_hessian(f, params):
    """The full Hessian of f over the flattened parameters, and a function back from flat to the dict."""
    names, shapes = list(params), [p.shape for p in params.values()]
    sizes = [p.numel() for p in params.values()]

    def unflat(x):
        return {n: c.reshape(s) for n, c, s in zip(names, torch.split(x, sizes), shapes, strict=True)}

    flat = torch.cat([p.ravel() for p in params.values()])
    return hessian(lambda x: f(unflat(x)))(flat), sizes


def test_hutchinson_trace_is_within_5_percent_of_the_exact_trace():
    _, per_sample, params = _setup()

    def mean(p):
        return per_sample(p).mean()

    H, sizes = _flat_hessian(mean, params)
    exact = float(torch.diagonal(H).sum())
    est = hutchinson_trace(mean, params, probes=3000, generator=torch.Generator().manual_seed(1))
    value, se = est["total"]
    assert abs(value - exact) <= 0.05 * abs(exact), (value, exact)
    assert 0 < se < 0.05 * abs(exact)  # the standard error says how close it should be
    blocks = torch.split(torch.diagonal(H), sizes)  # per tensor: the trace of its own diagonal block
    for (name, (v, s)), block in zip(list(est.items())[:-1], blocks, strict=True):
        assert abs(v - float(block.sum())) <= 4 * s + 1e-6, name


def test_per_sample_quadratic_forms_match_the_full_hessian():
    _, per_sample, params = _setup()
    move = {k: 0.1 * torch.randn_like(p) for k, p in params.items()}
    layers = [["0.weight", "0.bias"], ["2.weight", "2.bias"]]
    forms = layer_quadratic_forms(per_sample, params, move, layers)
    names = list(params)
    for j in (0, 7):  # two samples: v_i^T H_i(x_j) v_i from the full Hessian of sample j's loss
        H, sizes = _flat_hessian(lambda p, j=j: per_sample(p)[j], params)
        for layer, form in zip(layers, forms, strict=True):
            v = torch.cat([move[k].ravel() if k in layer else torch.zeros(p.numel())
                           for k, p in zip(names, params.values(), strict=True)])
            assert torch.isclose(form[j], v @ H @ v, rtol=1e-4, atol=1e-6)
    H, _ = _flat_hessian(lambda p: per_sample(p).mean(), params)
    v = torch.cat([move[k].ravel() if k in layers[0] else torch.zeros(p.numel()) for k, p in params.items()])
    assert torch.isclose(forms[0].mean(), v @ H @ v, rtol=1e-4, atol=1e-6)  # the mean loss's form


def test_the_bound_sums_layers_and_ignores_negative_curvature():
    forms = [torch.tensor([0.5, 2.0]), torch.tensor([-1.0, -3.0]), torch.tensor([8.0, 1.0])]
    assert abs(hessian_bound(forms, loss_bound=2.0, n=100) - ((2 * 2 / 100) ** 0.5 + (2 * 8 / 100) ** 0.5)) < 1e-12


def test_the_surrogate_loss_is_w_log_2_at_theta_star():
    policy, _, _ = _setup()
    obs, task = torch.randn(8, 3), torch.zeros(8, dtype=torch.long)
    actions = torch.randint(0, 3, (8,))
    with torch.no_grad():
        logp = policy.log_prob(policy.policy(obs, task), actions)
    w = torch.rand(8)
    f = surrogate_loss(policy, obs, task, actions, torch.ones(8), w, logp)
    params = dict(policy.actor.named_parameters())
    assert torch.allclose(f(params), w * torch.log(torch.tensor(2.0)))
