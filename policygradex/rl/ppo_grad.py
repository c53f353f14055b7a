"""The PPO minibatch loss and its gradient for the ``mlp`` actor-critic, without autograd.

A 64x64 actor-critic minibatch is a few microseconds of arithmetic per op and several of bookkeeping: recording
the graph and running autograd's engine were a third of a CartPole PPO minibatch (691 us, 436 us here). Here the
forward pass keeps what the backward pass needs and the backward pass is written out, op for op as autograd's own
formulas compute it (``tools/autograd/derivatives.yaml`` in PyTorch) and in the order its engine sums a tensor's
gradients, so that the gradients are the same to the bit (tests/test_ppo_grad.py) and a seed trains the same
policy either way.

The loss is ``ppo_update``'s (Schulman et al. 2017, eq. 9 with the value and entropy terms):
    L = mean_b max(-A_b r_b, -A_b clip(r_b, 1 - eps, 1 + eps)) - c_e mean_b H(pi(.|x_b))
        + c_v 0.5 mean_b (V(x_b) - R_b)^2
with r_b = exp(log pi(a_b|x_b) - log pi_old(a_b|x_b)), pi a softmax (Discrete actions) or a diagonal Gaussian
(Box). ``layers_of`` says whether a policy can take this path; ``ppo_update`` falls back to autograd where it
cannot (the other architectures, PCGrad).
"""

from __future__ import annotations

import functools
import math

import torch

from policygradex.rl.policy import ActorCritic, Layers, Trace, mlp_forward, mlp_layers


def layers_of(policy: ActorCritic) -> tuple[Layers, Layers] | None:
    """The actor's and the critic's layers where the hand-written gradient applies (the mlp architecture, discrete
    or Gaussian actions), else None; looked up once per update (6 us a lookup)."""
    actor, critic = mlp_layers(policy.actor), mlp_layers(policy.critic)
    return None if actor is None or critic is None else (actor, critic)


def _backward(layers: Layers, trace: Trace, grad: torch.Tensor) -> None:
    """Set each layer's ``.grad`` from dL/d(output), as autograd's addmm, tanh and sigmoid formulas compute it."""
    for i in reversed(range(len(layers))):
        w, b = layers[i]
        h, s = trace[i]
        w.grad = grad.t().mm(h)
        b.grad = grad.sum(0)
        if i == 0:
            break
        grad = grad.mm(w)
        if s is None:
            grad = torch.ops.aten.tanh_backward(grad, h)
        else:  # through 2 sigmoid(z + z) - 1
            grad = torch.ops.aten.sigmoid_backward(grad * 2, s)
            grad = grad + grad


@functools.lru_cache(maxsize=64)
def _upstream(n: int, ent_coef: float, vf_coef: float, device: torch.device) -> dict[str, torch.Tensor]:
    """The gradients that reach the per-row terms from the loss's scalar tail, which depend only on the
    minibatch size and coefficients: computed once, by the ops autograd applies (``mean``'s backward divides
    the expanded gradient by n; a tie in ``max`` halves it)."""
    one = torch.ones((), device=device)
    pg = one.expand(n) / n  # d L / d pg_b
    return {"pg": pg, "pg_tie": pg / 2,
            "v_sq": (one * vf_coef * 0.5).expand(n) / n,  # d L / d (V_b - R_b)^2
            "entropy": ((-one * ent_coef).expand(n) / n).unsqueeze(-1),  # d L / d H_b
            "zero": torch.zeros((), device=device)}


class _Categorical:
    """log pi(a|x) and the entropy of a softmax over the actor's output (what ``ActorCritic.evaluate_actions``
    computes for Discrete actions), and their backward pass."""

    def __init__(self, out: torch.Tensor, actions: torch.Tensor) -> None:
        self.log_p = out.log_softmax(-1)
        self.p = self.log_p.exp()
        self.entropy = -(self.p * self.log_p).sum(-1)
        self.index = actions[:, None]
        self.logprob = self.log_p.gather(-1, self.index).squeeze(-1)

    def backward(self, g_logprob: torch.Tensor, g_entropy: torch.Tensor) -> torch.Tensor:
        """dL/d(actor output) from dL/d log pi_b (n,) and dL/dH_b (n, 1)."""
        g = torch.zeros_like(self.log_p).scatter_add_(-1, self.index, g_logprob.unsqueeze(-1))
        # H = -sum p log p, p = exp(log p): log p receives g p directly and (g log p) p through p
        g_h = -g_entropy
        g = g + g_h * self.p + g_h * self.log_p * self.p
        return torch._log_softmax_backward_data(g, self.log_p, -1, self.log_p.dtype)


class _Gaussian:
    """log pi(a|x) and the entropy of a diagonal Gaussian, mean the actor's output and std exp(log_std) (as
    ``torch.distributions.Normal`` computes them, summed over action dimensions), and their backward pass."""

    def __init__(self, mu: torch.Tensor, log_std: torch.Tensor, actions: torch.Tensor) -> None:
        self.log_std, self.std = log_std, log_std.exp()
        self.scale = self.std.expand_as(mu)
        self.d = actions - mu
        self.num, self.den = -(self.d ** 2), 2 * self.scale ** 2
        log_scale = self.scale.log()
        self.logprob = (self.num / self.den - log_scale - math.log(math.sqrt(2 * math.pi))).sum(-1)
        self.entropy = (0.5 + 0.5 * math.log(2 * math.pi) + log_scale).sum(-1)  # Normal takes the log twice

    def backward(self, g_logprob: torch.Tensor, g_entropy: torch.Tensor) -> torch.Tensor:
        """dL/d(mean) from dL/d log pi_b (n,) and dL/dH_b (n, 1); sets ``log_std.grad``."""
        g = g_logprob.unsqueeze(-1).expand_as(self.d)
        g_num = g / self.den
        g_den = -g * ((self.num / self.den) / self.den)
        g_mu = -(-g_num * (2.0 * self.d))
        # the std receives three gradients, summed in the order autograd's engine reaches them: log std in log pi,
        # log std in H, then through the variance
        g_scale = ((-g) / self.scale + g_entropy.expand_as(self.d) / self.scale) + g_den * 2 * (2.0 * self.scale)
        self.log_std.grad = g_scale.sum(0) * self.std
        return g_mu


@torch.no_grad()
def loss_and_grad(policy: ActorCritic, layers: tuple[Layers, Layers], x: torch.Tensor, actions: torch.Tensor,
                  old_logprob: torch.Tensor, adv: torch.Tensor, returns: torch.Tensor, clip_coef: float,
                  ent_coef: float, vf_coef: float) -> dict[str, torch.Tensor]:
    """Forward the minibatch through ``layers`` (``layers_of(policy)``), set every parameter's ``.grad`` to
    dL/dtheta and return the loss's parts
    (``loss``, ``pg_loss``, ``v_loss``, ``entropy``, ``logratio``, ``ratio``), as ``ppo_update`` records them.
    ``adv`` is already standardised."""
    actor, critic = layers
    c = _upstream(len(x), ent_coef, vf_coef, x.device)

    v_trace: Trace = []
    a_trace: Trace = []
    value = mlp_forward(critic, x, v_trace).squeeze(-1)
    out = mlp_forward(actor, x, a_trace)
    head: _Gaussian | _Categorical = (_Gaussian(out, policy.log_std, actions) if policy.continuous
                                      else _Categorical(out, actions))
    logratio = head.logprob - old_logprob
    ratio = logratio.exp()
    neg_adv = -adv
    clipped = ratio.clamp(1 - clip_coef, 1 + clip_coef)
    unclipped_pg, clipped_pg = neg_adv * ratio, neg_adv * clipped
    pg = torch.max(unclipped_pg, clipped_pg)
    diff = value - returns
    pg_loss, v_loss, entropy = pg.mean(), 0.5 * diff.pow(2).mean(), head.entropy.mean()
    loss = pg_loss - ent_coef * entropy + vf_coef * v_loss

    # critic: d L / d V_b = c_v 0.5 / n * 2 (V_b - R_b)
    _backward(critic, v_trace, (c["v_sq"] * (diff * 2.0)).unsqueeze(-1))
    # actor, the clipped surrogate: max sends the gradient to the larger side (half to each on a tie), clip
    # passes it inside [1 - eps, 1 + eps]
    tie = unclipped_pg == clipped_pg
    g_pg = torch.where(tie, c["pg_tie"], c["pg"])
    g_unclipped = g_pg.masked_fill(unclipped_pg < clipped_pg, 0)
    g_clipped = g_pg.masked_fill_(unclipped_pg > clipped_pg, 0)
    inside = (ratio >= 1 - clip_coef).logical_and_(ratio <= 1 + clip_coef)
    g_ratio = g_unclipped * neg_adv + torch.where(inside, g_clipped * neg_adv, c["zero"])
    _backward(actor, a_trace, head.backward(g_ratio * ratio, c["entropy"]))
    return {"loss": loss, "pg_loss": pg_loss, "v_loss": v_loss, "entropy": entropy, "logratio": logratio,
            "ratio": ratio}
