"""Task-conditioned actor-critic: separate MLPs for pi(a|s, task) and V(s, task), as in CleanRL's PPO.

The actor is a plain ``nn.Sequential`` of ``Linear`` and ``Tanh`` layers: the gradient-feature code
walks its ``Linear`` layers to build per-sample gradients without materialising them.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn
from torch.distributions import Categorical, Distribution, Normal


def _layer(n_in: int, n_out: int, gain: float) -> nn.Linear:
    layer = nn.Linear(n_in, n_out)
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.zeros_(layer.bias)
    return layer


def mlp(n_in: int, hidden: tuple[int, ...], n_out: int, out_gain: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [_layer(n_in, width, np.sqrt(2)), nn.Tanh()]
        n_in = width
    layers.append(_layer(n_in, n_out, out_gain))
    return nn.Sequential(*layers)


class ActorCritic(nn.Module):
    """pi(a|s, task) and V(s, task) for Discrete (categorical) or Box (diagonal Gaussian) actions."""

    def __init__(self, obs_dim: int, action_space: gym.Space, n_tasks: int,
                 hidden_sizes: tuple[int, ...] = (64, 64), task_conditioned: bool = True) -> None:
        super().__init__()
        self.obs_dim, self.n_tasks, self.task_conditioned = obs_dim, n_tasks, task_conditioned
        self.hidden_sizes = tuple(hidden_sizes)
        self.action_space = action_space
        self.continuous = isinstance(action_space, gym.spaces.Box)
        n_out = int(np.prod(action_space.shape)) if self.continuous else int(action_space.n)
        n_in = obs_dim + (n_tasks if task_conditioned else 0)
        self.actor = mlp(n_in, self.hidden_sizes, n_out, out_gain=0.01)
        self.critic = mlp(n_in, self.hidden_sizes, 1, out_gain=1.0)
        if self.continuous:
            self.log_std = nn.Parameter(torch.zeros(n_out))

    def inputs(self, obs: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        """Observation with a one-hot task id appended (when task-conditioned)."""
        if not self.task_conditioned:
            return obs
        one_hot = (task[..., None] == torch.arange(self.n_tasks)).to(obs.dtype)  # vmap-safe, unlike F.one_hot
        return torch.cat([obs, one_hot], dim=-1)

    def distribution(self, actor_out: torch.Tensor) -> Distribution:
        if self.continuous:
            return Normal(actor_out, self.log_std.exp().expand_as(actor_out), validate_args=False)
        return Categorical(logits=actor_out, validate_args=False)

    def log_prob(self, dist: Distribution, action: torch.Tensor) -> torch.Tensor:
        lp = dist.log_prob(action)
        return lp.sum(-1) if self.continuous else lp

    def policy(self, obs: torch.Tensor, task: torch.Tensor) -> Distribution:
        return self.distribution(self.actor(self.inputs(obs, task)))

    def value(self, obs: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        return self.critic(self.inputs(obs, task)).squeeze(-1)

    def act(self, obs: torch.Tensor, task: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        dist = self.policy(obs, task)
        if deterministic:
            return dist.mean if self.continuous else dist.probs.argmax(-1)
        return dist.sample()

    def env_action(self, action: torch.Tensor) -> np.ndarray:
        """The action as the env takes it (Gaussian samples clipped to the Box bounds)."""
        a = action.cpu().numpy()
        if self.continuous:
            return np.clip(a, self.action_space.low, self.action_space.high)
        return a

    def spec(self) -> dict[str, Any]:
        return {"obs_dim": self.obs_dim, "n_tasks": self.n_tasks, "hidden_sizes": list(self.hidden_sizes),
                "task_conditioned": self.task_conditioned}


def save_policy(policy: ActorCritic, path) -> None:
    from policygradex.io import atomic_torch_save

    atomic_torch_save({"spec": policy.spec(), "state_dict": policy.state_dict()}, path)


def load_policy(path, action_space: gym.Space) -> ActorCritic:
    blob = torch.load(path, map_location="cpu", weights_only=True)
    spec = blob["spec"]
    policy = ActorCritic(spec["obs_dim"], action_space, spec["n_tasks"], tuple(spec["hidden_sizes"]),
                         spec["task_conditioned"])
    policy.load_state_dict(blob["state_dict"])
    return policy
