"""PCGrad (Yu et al. 2020, "Gradient Surgery for Multi-Task Learning"): where two tasks' gradients conflict
(negative inner product), each task's gradient is projected onto the normal plane of the other's before they
are combined, so that no task's step undoes another's.

Used as a group trainer (``--downstream-trainer pcgrad``): multi-task PPO whose minibatch gradient is the
mean over the minibatch's tasks of their surgered gradients (``ppo_update(..., gradient_surgery=True)``).
With one task it is that task's plain gradient.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def project_conflicting(grads: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """(tasks, params) gradients after surgery (the paper's Algorithm 1): for each task i and every other task j
    in a random order, if g_i . g_j < 0 then g_i <- g_i - (g_i . g_j) / |g_j|^2 g_j, with j's original gradient."""
    out = grads.clone()
    for i in range(len(grads)):
        for j in torch.randperm(len(grads), generator=generator).tolist():
            if j == i:
                continue
            dot = out[i] @ grads[j]
            if dot < 0:
                out[i] -= dot / (grads[j] @ grads[j]).clamp_min(1e-20) * grads[j]
    return out


def pcgrad_backward(model: nn.Module, task_losses: Sequence[torch.Tensor], generator: torch.Generator) -> None:
    """Set ``model``'s gradients to the mean over tasks of their surgered gradients (one backward per task)."""
    params = [p for p in model.parameters() if p.requires_grad]
    rows = []
    for loss in task_losses:
        grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
        rows.append(torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1)
                               for g, p in zip(grads, params, strict=True)]))
    combined = project_conflicting(torch.stack(rows), generator).mean(0)
    offset = 0
    for p in params:
        p.grad = combined[offset:offset + p.numel()].view_as(p).clone()
        offset += p.numel()
