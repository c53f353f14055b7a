"""Evaluation: mean episodic return (and success rate, where the env reports ``info['success']``) per task,
all episodes of all tasks stepped in one vectorised env."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from policygradex.rl.policy import ActorCritic
from policygradex.tasks.family import EnvFactory
from policygradex.tasks.vector import make_vector_env


@dataclass
class EvalResult:
    returns: np.ndarray
    """(tasks,) mean episodic return."""
    success: np.ndarray | None
    """(tasks,) share of episodes with ``info['success']`` at any step; None if the env never reports it."""


def _success(info: dict, n_envs: int) -> np.ndarray:
    """Per-env success flag of this step's info (NaN where the env reported none)."""
    out = np.full(n_envs, np.nan)
    if "success" in info:
        mask = info.get("_success", np.ones(n_envs, dtype=bool))
        out[mask] = np.asarray(info["success"], dtype=float)[mask]
    return out


@torch.no_grad()
def evaluate(policy: ActorCritic, factories: Sequence[EnvFactory], episodes: int, seed: int,
             deterministic: bool = True, task_ids: Sequence[int] | None = None) -> EvalResult:
    """``episodes`` episodes of each task; factory j is the policy's task ``task_ids[j]`` (default j).

    Episode e of task t starts from env seed ``seed + t * episodes + e`` and sampled actions come from a
    generator seeded with ``seed``, so a task gets the same episodes whichever other tasks are evaluated
    beside it (before/after comparisons pair up)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return _evaluate(policy, factories, episodes, seed, deterministic, task_ids)


def _evaluate(policy: ActorCritic, factories: Sequence[EnvFactory], episodes: int, seed: int,
              deterministic: bool, task_ids: Sequence[int] | None) -> EvalResult:
    env_task = np.repeat(np.arange(len(factories)), episodes)
    n = len(env_task)
    ids = np.asarray(task_ids if task_ids is not None else range(len(factories)))[env_task]
    envs = make_vector_env([factories[int(j)] for j in env_task])
    obs, _ = envs.reset(seed=[int(seed + t * episodes + e) for t, e in zip(ids, np.tile(np.arange(episodes),
                                                                                         len(factories)), strict=True)])
    task = torch.as_tensor(ids)
    returns, success = np.zeros(n), np.full(n, np.nan)
    active = np.ones(n, dtype=bool)
    while active.any():
        action = policy.act(torch.as_tensor(obs, dtype=torch.float32), task, deterministic)
        obs, reward, terminated, truncated, info = envs.step(policy.env_action(action))
        done = terminated | truncated
        # On the step that ends an episode, that step's info sits in final_info (same-step autoreset).
        step_success = _success(info, n)
        if "final_info" in info:
            step_success = np.where(done, _success(info["final_info"], n), step_success)
        seen = active & ~np.isnan(step_success)
        success[seen] = np.fmax(np.nan_to_num(success[seen], nan=0.0), step_success[seen])
        returns += reward * active
        active &= ~done
    envs.close()
    per_task = returns.reshape(len(factories), episodes).mean(axis=1)
    if np.isnan(success).all():
        return EvalResult(per_task, None)
    return EvalResult(per_task, np.nanmean(success.reshape(len(factories), episodes), axis=1))
