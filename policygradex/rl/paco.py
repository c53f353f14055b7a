"""PaCo (Sun et al. 2022, "PaCo: Parameter-Compositional Multi-Task Reinforcement Learning"): K shared
parameter sets Phi = [phi_1, ..., phi_K] of one MLP, and per task a learned compositional vector w_t; task
t's network is the MLP with parameters theta_t = Phi w_t = sum_k w_t[k] phi_k.

Every layer is linear in its parameters, so layer l of theta_t applied to h is sum_k w_t[k] (W_k h + b_k):
the K layers run on the batch at once and their outputs are mixed by each sample's w, with no per-task
weight matrix built. The paper's stabilisers are ``MaskOut``: a task whose loss diverges is left out of the
update (loss mask-out) and its w is reset to the mean of the other tasks' (w-reset), so that one unstable
task can neither drag the shared Phi along nor stay stuck.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:
    from policygradex.rl.policy import ActorCritic


class PaCoNet(nn.Module):
    """Input ``[obs, one-hot task]`` (what ``ActorCritic.inputs`` builds); tanh hidden layers."""

    def __init__(self, obs_dim: int, n_tasks: int, hidden: tuple[int, ...], n_out: int, out_gain: float,
                 n_sets: int = 5) -> None:
        super().__init__()
        self.obs_dim = obs_dim
        widths = [obs_dim, *hidden, n_out]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for i, (n_in, n_o) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
            gain = out_gain if i == len(widths) - 2 else np.sqrt(2)
            w = torch.empty(n_sets, n_o, n_in)
            for k in range(n_sets):
                nn.init.orthogonal_(w[k], gain)
            self.weights.append(nn.Parameter(w))
            self.biases.append(nn.Parameter(torch.zeros(n_sets, n_o)))
        # each task starts from its own random mix of the K sets (weights summing to 1): with one common start
        # the tasks' networks would be identical and only slowly drift apart
        mix = torch.rand(n_tasks, n_sets)
        self.composition = nn.Parameter(mix / mix.sum(1, keepdim=True))

    def task_weights(self, one_hot: torch.Tensor) -> torch.Tensor:
        """w of each sample's task, (..., K)."""
        return one_hot @ self.composition

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x[..., :self.obs_dim], self.task_weights(x[..., self.obs_dim:])
        for i, (weight, bias) in enumerate(zip(self.weights, self.biases, strict=True)):
            per_set = torch.einsum("...i,koi->...ko", h, weight) + bias  # (..., K, out)
            h = torch.einsum("...ko,...k->...o", per_set, w)
            if i < len(self.weights) - 1:
                h = torch.tanh(h)
        return h


class MaskOut:
    """PaCo's loss mask-out and w-reset (Sun et al. 2022, Sec. 4.3), for PPO. The paper thresholds each task's
    critic loss; here a task diverges when its value loss on the rollout about to be trained on, mean (G_t -
    V(s_t))^2 with G_t the GAE return, is non-finite or above ``factor`` times the median over tasks (a relative
    threshold: return scales differ by family). Those tasks are left out of the update, and their composition
    rows in actor and critic are set to the mean of the other tasks' rows."""

    def __init__(self, factor: float = 100.0) -> None:
        self.factor = factor
        self.resets = 0
        """Task resets so far (a training statistic)."""

    def __call__(self, policy: ActorCritic, task: torch.Tensor, returns: torch.Tensor,
                 values: torch.Tensor) -> torch.Tensor | None:
        """Tasks (bool, policy's task space) to leave out of the update on this rollout, or None. ``task``: each
        env's task id (envs,); ``returns``, ``values``: (steps, envs)."""
        sq = (returns - values).pow(2).mean(0)  # per env
        ids = task.unique()
        loss = torch.stack([sq[task == t].mean() for t in ids])
        bad = ~torch.isfinite(loss) | (loss > self.factor * loss[torch.isfinite(loss)].median().clamp_min(1e-8))
        if not bad.any() or bad.all():
            return None
        skip = torch.zeros(policy.n_tasks, dtype=torch.bool)
        skip[ids[bad]] = True
        with torch.no_grad():
            for net in (policy.actor, policy.critic):
                assert isinstance(net, PaCoNet)
                net.composition[skip] = net.composition[~skip].mean(0)
        self.resets += int(bad.sum())
        return skip


def paco_net(obs_dim: int, n_tasks: int, task_conditioned: bool, hidden: tuple[int, ...], n_out: int,
             out_gain: float, context: torch.Tensor | None = None) -> nn.Module:
    """A PaCo network (task-conditioned only: the task id picks the composition)."""
    if not task_conditioned:
        raise ValueError("PaCo composes its parameters per task: it needs a task-conditioned policy")
    return PaCoNet(obs_dim, n_tasks, hidden, n_out, out_gain)
