"""Evaluation: mean episodic return per task, all episodes of all tasks stepped in one vectorised env."""

from __future__ import annotations

from collections.abc import Sequence

import gymnasium as gym
import numpy as np
import torch

from policygradex.rl.policy import ActorCritic
from policygradex.tasks.family import EnvFactory


@torch.no_grad()
def evaluate(policy: ActorCritic, factories: Sequence[EnvFactory], episodes: int, seed: int,
             deterministic: bool = True) -> np.ndarray:
    """Mean return of ``episodes`` episodes for each task (task j = factories[j], as the policy knows it)."""
    env_task = np.repeat(np.arange(len(factories)), episodes)
    envs = gym.vector.SyncVectorEnv([factories[j] for j in env_task],
                                    autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    obs, _ = envs.reset(seed=seed)
    task = torch.as_tensor(env_task)
    returns = np.zeros(len(env_task))
    active = np.ones(len(env_task), dtype=bool)
    while active.any():
        action = policy.act(torch.as_tensor(obs, dtype=torch.float32), task, deterministic)
        obs, reward, terminated, truncated, _ = envs.step(policy.env_action(action))
        returns += reward * active
        active &= ~(terminated | truncated)
    envs.close()
    return returns.reshape(len(factories), episodes).mean(axis=1)
