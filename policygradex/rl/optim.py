"""PPO's optimiser: Adam (Kingma & Ba 2015) with the gradient's global norm clipped first.

The same arithmetic as ``torch.nn.utils.clip_grad_norm_`` followed by ``torch.optim.Adam(fused=True)``, to the
bit (tests/test_optim.py), without ``torch.optim``: the first ``torch.optim`` optimiser a process builds imports
``torch._dynamo`` (1.2 s here, a fifth of the demo's stage 1), and its per-step bookkeeping costs as much as
the fused kernel for a small policy.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch


class Adam:
    """Adam over ``params``: ``step()`` updates every parameter that has a gradient, with the fused kernel.

    ``param_groups[0]["lr"]`` is the learning rate (annealed in place, as with ``torch.optim``); betas
    (0.9, 0.999), no weight decay, ``eps`` 1e-5 by default (CleanRL's PPO).
    """

    def __init__(self, params: Iterable[torch.nn.Parameter], lr: float, eps: float = 1e-5,
                 betas: tuple[float, float] = (0.9, 0.999)) -> None:
        self.params = [p for p in params if p.requires_grad]
        self.param_groups = [{"lr": lr}]
        self.eps, self.betas = eps, betas
        # Each parameter's step count is one entry of a float32 vector (torch.optim keeps one 0-dim tensor
        # each), so that one op counts a step of all of them. Counts and moments are created at the first
        # step, as torch.optim does, on the device the parameters are on by then.
        self.steps: torch.Tensor | None = None
        self.step_of: list[torch.Tensor] = []
        self.moments: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def clip_grad_norm_(self, max_norm: float) -> torch.Tensor:
        """Scale the gradients by min(1, max_norm / (|g| + 1e-6)), |g| the norm of all of them as one vector
        (computed as ``clip_grad_norm_`` does: the norm of the per-tensor norms); returns |g|."""
        grads = [p.grad for p in self.params if p.grad is not None]
        if not grads:
            return torch.zeros(())
        total = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads, 2.0)), 2.0)
        torch._foreach_mul_(grads, torch.clamp(max_norm / (total + 1e-6), max=1.0))
        return total

    @torch.no_grad()
    def step(self) -> None:
        with_grad = [i for i, p in enumerate(self.params) if p.grad is not None]
        if not with_grad:
            return
        for i in with_grad:
            if i not in self.moments:
                p = self.params[i]
                self.moments[i] = (torch.zeros_like(p, memory_format=torch.preserve_format),
                                   torch.zeros_like(p, memory_format=torch.preserve_format))
        if self.steps is None:
            self.steps = torch.zeros(len(self.params), dtype=torch.float32, device=self.params[0].device)
            self.step_of = list(self.steps.unbind())
        if len(with_grad) == len(self.params):
            self.steps.add_(1)
        else:
            self.steps[with_grad] += 1
        params: list[torch.Tensor] = [self.params[i] for i in with_grad]
        grads: list[torch.Tensor] = [p.grad for p in params if p.grad is not None]
        torch._fused_adam_(params, grads, [self.moments[i][0] for i in with_grad],
                           [self.moments[i][1] for i in with_grad], [], [self.step_of[i] for i in with_grad],
                           lr=float(self.param_groups[0]["lr"]), beta1=self.betas[0], beta2=self.betas[1],
                           weight_decay=0.0, eps=self.eps, amsgrad=False, maximize=False)
