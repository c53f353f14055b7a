"""CARE (Sodhani et al. 2021, "Multi-Task Reinforcement Learning with Context-based Representations"): a
mixture of K state encoders, weighted per task by attention over an embedding of the task's context.

With c_t the task's context (its metadata, tasks/context.py), z_t = tanh(W_c c_t) its embedding, the
encoders' outputs e_k(s) = tanh(W_k s + b_k) and alpha_t = softmax(W_a z_t), the representation is
r = sum_k alpha_t[k] e_k(s), and a head reads [r, z_t]. Tasks with similar contexts mix the encoders alike,
which is how CARE shares what transfers and keeps apart what does not. The paper's context is a frozen
language model's encoding of each task's description; here it is the task's own parameters (a family
without metadata gets the one-hot task id, so that W_c is a learned embedding per task).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class CareNet(nn.Module):
    """Input ``[obs, one-hot task]`` (what ``ActorCritic.inputs`` builds); the context table maps the one-hot
    to the task's context, so the policy's interface is the same as every other network's."""

    def __init__(self, obs_dim: int, context: torch.Tensor, width: int, head: nn.Module, n_encoders: int = 4) -> None:
        super().__init__()
        self.obs_dim = obs_dim
        self.table: torch.Tensor
        self.register_buffer("table", context.to(torch.float32))  # (n_tasks, c), saved with the policy
        self.context_encoder = nn.Linear(context.shape[1], width)
        self.weights = nn.Parameter(torch.empty(n_encoders, width, obs_dim))
        self.biases = nn.Parameter(torch.zeros(n_encoders, width))
        for k in range(n_encoders):
            nn.init.orthogonal_(self.weights.data[k], np.sqrt(2))
        self.attention = nn.Linear(width, n_encoders)
        nn.init.orthogonal_(self.attention.weight, 0.01)  # near-uniform attention at the start
        nn.init.zeros_(self.attention.bias)
        self.head = head  # reads [r, z]: 2 * width numbers

    def embed(self, one_hot: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(alpha, z): each sample's attention over the encoders (..., K) and its context embedding (..., width)."""
        z = torch.tanh(self.context_encoder(one_hot @ self.table))
        return self.attention(z).softmax(-1), z

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        obs, one_hot = x[..., :self.obs_dim], x[..., self.obs_dim:]
        alpha, z = self.embed(one_hot)
        encoded = torch.tanh(torch.einsum("...i,koi->...ko", obs, self.weights) + self.biases)  # (..., K, width)
        r = torch.einsum("...ko,...k->...o", encoded, alpha)
        return self.head(torch.cat([r, z], dim=-1))
