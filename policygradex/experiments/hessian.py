"""Hessian measures of a fine-tuned policy, for ``validate generalization`` (experiments/validate.py).

The loss is the surrogate's own (paper, "Reducing policy optimization to weighted logistic regression"): on a
transition with label y = sign(A) and weight w = |A| at theta*,
    l(theta) = w * softplus(-y * (log pi_theta(a|s) - log pi_theta*(a|s))),
which is w log 2 at theta* and falls as theta raises the probability of good actions and lowers that of bad ones.

Ju, Li and Zhang (ICML 2022, "Robust fine-tuning of deep neural networks with Hessian-based generalization
guarantees", Theorem 2.1) bound the generalisation gap of a model fine-tuned from theta* by, up to lower-order
terms, sum over layers i of sqrt(C * v_i^T H_i^+ v_i / n), with v_i = theta_i - theta*_i the layer's move, H_i^+
the positive part of the loss Hessian's block of layer i, maximised over the training samples, C a bound on the
loss and n the number of training samples. Hessian-vector products (forward over reverse) and per-sample second
directional derivatives (forward over forward) come from torch.func; no Hessian is ever built.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.func import functional_call, grad, jvp, vmap

from policygradex.rl.policy import ActorCritic

Params = dict[str, torch.Tensor]


def surrogate_loss(policy: ActorCritic, obs: torch.Tensor, task: torch.Tensor, actions: torch.Tensor,
                   y: torch.Tensor, w: torch.Tensor, logp_star: torch.Tensor) -> Callable[[Params], torch.Tensor]:
    """Per-transition surrogate losses as a function of the actor's parameters, (n,)."""
    x = policy.inputs(obs, task)

    def loss(params: Params) -> torch.Tensor:
        logp = policy.log_prob(policy.distribution(functional_call(policy.actor, params, (x,))), actions)
        return w * torch.nn.functional.softplus(-y * (logp - logp_star))

    return loss


def hvp(f: Callable[[Params], torch.Tensor], params: Params, v: Params) -> Params:
    """H v for the Hessian H of the scalar f at params."""
    return jvp(grad(f), (params,), (v,))[1]  # type: ignore[index]


def hutchinson_trace(f: Callable[[Params], torch.Tensor], params: Params, probes: int,
                     generator: torch.Generator, batch: int = 8) -> dict[str, tuple[float, float]]:
    """Per parameter tensor (and ``"total"``): (estimate, standard error) of the trace of the Hessian of f's
    block, Hutchinson's E[v^T H v] over Rademacher probes v (each probe serves every block: the cross terms
    of a block's v_i^T (H v)_i have mean zero). ``batch`` probes share one vectorised Hessian-vector product."""
    per: dict[str, list[torch.Tensor]] = {k: [] for k in params}
    for start in range(0, probes, batch):
        count = min(batch, probes - start)
        v = {k: torch.randint(0, 2, (count, *p.shape), generator=generator).to(p.dtype) * 2 - 1
             for k, p in params.items()}
        hv = vmap(lambda u: hvp(f, params, u))(v)
        for k in params:
            per[k].append((v[k] * hv[k]).flatten(1).sum(1).double())
    samples = {k: torch.cat(vals) for k, vals in per.items()}
    samples["total"] = torch.stack(list(samples.values())).sum(0)
    return {k: (float(t.mean()), float(t.std() / len(t) ** 0.5) if len(t) > 1 else float("nan"))
            for k, t in samples.items()}


def layer_quadratic_forms(f: Callable[[Params], torch.Tensor], params: Params, move: Params,
                          layers: list[list[str]]) -> list[torch.Tensor]:
    """Per layer i (its parameter names): each sample's v_i^T H_i(x) v_i, (n,), with v_i the layer's block of
    ``move`` and H_i(x) the block of sample x's loss Hessian, as the second derivative of the per-sample losses
    ``f`` along v_i (forward over forward: every sample at once, no Hessian built). Their mean is the mean
    loss's form; their maximum is what Ju et al.'s theorem reads."""
    forms = []
    for names in layers:
        v = {k: move[k] if k in names else torch.zeros_like(p) for k, p in params.items()}

        def slope(p: Params, v: Params = v) -> torch.Tensor:
            return jvp(f, (p,), (v,))[1]

        forms.append(jvp(slope, (params,), (v,))[1].detach())
    return forms


def hessian_bound(forms: list[torch.Tensor], loss_bound: float, n: int) -> float:
    """sum_i sqrt(C max_x max(v_i^T H_i(x) v_i, 0) / n): Ju et al.'s bound without its lower-order terms. The
    positive part of each sample's form stands in for v^T H^+ v (which is at least as large: the bound reads
    low where a sample's Hessian block is indefinite along the move)."""
    return float(sum((loss_bound * max(float(q.max()), 0.0) / n) ** 0.5 for q in forms))
