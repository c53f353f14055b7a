"""Random projections of per-transition policy gradients g_t = grad_theta log pi(a_t|s_t).

The paper projects g_t in R^p with a dense Gaussian P in R^{p x d}, P_ij ~ N(0, 1/d) (Johnson-
Lindenstrauss). We never form g_t: for a Linear layer y = W a + b, the per-sample gradient of log pi with
respect to [W b] is the outer product delta (a, 1)^T, with delta = d log pi / d y. If column j of the
projection is, layer by layer, an outer product p_lj q_lj^T of two Gaussian vectors (a Khatri-Rao, i.e.
column-wise Kronecker, structure), then

    z_j = sum_l <p_lj q_lj^T, delta_l a_l^T> / sqrt(d) = sum_l (p_lj^T delta_l) (q_lj^T a_l) / sqrt(d):

one batched forward+backward plus two thin matmuls per layer. Inner products stay unbiased, as with the
dense matrix: E[(p^T d1)(p^T d2)(q^T a1)(q^T a2)] = <d1, d2><a1, a2> = <d1 a1^T, d2 a2^T>.

Why not the block Kronecker P_out (x) P_in with d_out * d_in = d per layer: its error is set by d_out and
d_in (about sqrt(d) each), not by d. Measured on a 64x64 MLP, d = 400, cosine of 40 gradients against the
exact ones (tests/test_projection.py): mean absolute error 0.24 for Kronecker blocks, 0.065 for this
sketch, 0.042 for the dense Gaussian; the cost stays two (N x width) @ (width x d) matmuls per layer.

Only the actor's Linear layers are projected (the critic does not enter log pi); a Gaussian policy's
state-independent log-std is left out.
"""

from __future__ import annotations

import math
from typing import Protocol

import torch
from torch import nn

from policygradex.rl.policy import ActorCritic


class Projector(Protocol):
    dim: int

    def features(self, policy: ActorCritic, obs: torch.Tensor, task: torch.Tensor,
                 actions: torch.Tensor) -> torch.Tensor:
        """Projected gradients of log pi(a|s), one row per transition: shape (batch, dim)."""
        ...


def _actor_layers(policy: ActorCritic) -> list[nn.Linear]:
    return [m for m in policy.actor if isinstance(m, nn.Linear)]


class FactoredProjector:
    """Khatri-Rao-structured Gaussian projection of the actor's per-sample gradients (see module doc)."""

    def __init__(self, policy: ActorCritic, dim: int, seed: int) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.dim = dim
        # (p_l, q_l) per layer: (out, d) and (in + 1, d), N(0, 1) entries; the 1/sqrt(d) comes at use.
        self.mats = [(torch.randn(layer.out_features, dim, generator=gen),
                      torch.randn(layer.in_features + 1, dim, generator=gen)) for layer in _actor_layers(policy)]

    def features(self, policy: ActorCritic, obs: torch.Tensor, task: torch.Tensor,
                 actions: torch.Tensor) -> torch.Tensor:
        h = policy.inputs(obs, task)
        cache: list[tuple[torch.Tensor, torch.Tensor]] = []  # (layer input, layer output)
        for module in policy.actor:
            out = module(h)
            if isinstance(module, nn.Linear):
                cache.append((h, out))
            h = out
        logp = policy.log_prob(policy.distribution(h), actions)
        # Rows are independent, so d(sum logp)/d(output) holds each row's own delta.
        deltas = torch.autograd.grad(logp.sum(), [out for _, out in cache])
        z = torch.zeros(len(obs), self.dim)
        for (inp, _), delta, (p, q) in zip(cache, deltas, self.mats, strict=True):
            a = torch.cat([inp.detach(), torch.ones(len(inp), 1)], dim=1)
            z += (delta @ p) * (a @ q)
        return z / math.sqrt(self.dim)

    def explicit_matrix(self) -> torch.Tensor:
        """The whole (p, dim) matrix in the parameter order of ``flat_actor_params`` (tests on tiny nets)."""
        blocks = [(p[:, None, :] * q[None, :, :]).reshape(-1, self.dim) for p, q in self.mats]
        return torch.cat(blocks) / math.sqrt(self.dim)

    def parameter_step(self, policy: ActorCritic, beta: torch.Tensor) -> dict[str, torch.Tensor]:
        """Map a d-dim solution back to parameter space, P beta: [dW db]_l = p_l diag(beta) q_l^T / sqrt(d)."""
        step = {}
        names = {id(m): n for n, m in policy.actor.named_children()}
        for layer, (p, q) in zip(_actor_layers(policy), self.mats, strict=True):
            block = (p * beta.to(p.dtype)) @ q.T / math.sqrt(self.dim)
            name = f"actor.{names[id(layer)]}"
            step[f"{name}.weight"], step[f"{name}.bias"] = block[:, :-1], block[:, -1]
        return step


def flat_actor_params(policy: ActorCritic) -> list[torch.Tensor]:
    """The actor's [W b] matrices, the layout the projections use."""
    return [torch.cat([m.weight, m.bias[:, None]], dim=1) for m in _actor_layers(policy)]
