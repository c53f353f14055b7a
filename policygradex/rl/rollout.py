"""Rollouts over many tasks at once, and GAE. Storage is shaped ``(steps, envs, ...)``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from policygradex.rl.policy import ActorCritic
from policygradex.tasks.family import EnvFactory
from policygradex.tasks.vector import make_vector_env


@dataclass
class Rollout:
    obs: torch.Tensor  # (steps, envs, obs_dim)
    actions: torch.Tensor  # (steps, envs) or (steps, envs, act_dim)
    logprobs: torch.Tensor  # (steps, envs)
    rewards: torch.Tensor  # (steps, envs); V(final obs) already added on truncation
    dones: torch.Tensor  # (steps, envs); 1 where an episode ended at this step
    values: torch.Tensor  # (steps, envs)
    last_value: torch.Tensor  # (envs,) V of the observation after the last step
    task: torch.Tensor  # (envs,) task index of each env
    episode_returns: list[tuple[int, float]] = field(default_factory=list)  # (task, return) of finished episodes

    def flat(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(obs, task, actions) with steps and envs merged into one batch axis, step-major."""
        steps, n_envs = self.rewards.shape
        return (self.obs.reshape(steps * n_envs, -1), self.task.repeat(steps),
                self.actions.reshape(steps * n_envs, *self.actions.shape[2:]))


def compute_gae(rewards: torch.Tensor, values: torch.Tensor, dones: torch.Tensor, last_value: torch.Tensor,
                gamma: float, gae_lambda: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016, eq. 16).

    A_t = sum_l (gamma*lambda)^l delta_{t+l}, with delta_t = r_t + gamma*V(s_{t+1})*(1-done_t) - V(s_t);
    the sum stops where an episode ends. Truncated episodes are bootstrapped by the caller, which adds
    gamma*V(final obs) to the last reward. Returns (advantages, returns = advantages + values).
    """
    # The recursion runs over steps in numpy: a torch op costs a few microseconds of dispatch, 128 steps x 6 ops
    # of them were 7% of a small policy's PPO iteration.
    r, v, d = (x.detach().cpu().numpy() for x in (rewards, values, dones))
    next_values = np.concatenate([v[1:], last_value.detach().cpu().numpy()[None]])
    not_done = 1.0 - d
    deltas = r + gamma * next_values * not_done - v
    decay = gamma * gae_lambda * not_done
    advantages = np.empty_like(deltas)
    running = np.zeros_like(deltas[0])
    for t in reversed(range(len(deltas))):
        running = deltas[t] + decay[t] * running
        advantages[t] = running
    adv = torch.as_tensor(advantages, device=rewards.device)
    return adv, adv + values


def standardize(x: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """(x - mean) / (std + 1e-8), over all of ``x`` or along ``dim``; the population std (CleanRL's choice)."""
    if dim is None:
        return (x - x.mean()) / (x.std(unbiased=False) + 1e-8)
    return (x - x.mean(dim, keepdim=True)) / (x.std(dim, unbiased=False, keepdim=True) + 1e-8)


class TaskRunner:
    """A vectorised env whose env ``e`` runs task ``task[e]``; keeps its state between rollouts. ``seed``: one
    seed for all (env e is reset with seed + e, gymnasium's rule) or one per env. ``processes=2`` steps half of
    the envs in a worker process (``tasks/vector.py``), with the same results."""

    def __init__(self, factories: Sequence[EnvFactory], task: Sequence[int] | np.ndarray, seed: int | Sequence[int],
                 gamma: float, processes: int = 1) -> None:
        self.envs = make_vector_env(factories, processes)
        self.task = torch.as_tensor(np.asarray(task), dtype=torch.long)
        self.gamma = gamma
        obs, _ = self.envs.reset(seed=seed if isinstance(seed, int) else list(seed))
        self.obs = torch.as_tensor(obs, dtype=torch.float32)
        self.running_return = np.zeros(len(factories))

    @torch.no_grad()
    def collect(self, policy: ActorCritic, num_steps: int, seed: int | None = None) -> Rollout:
        """``num_steps`` steps of every env. With ``seed``, actions are sampled from a generator seeded with it
        (torch's global one is left as it was), so that a one-off rollout is reproducible on its own."""
        if seed is None:
            return self._collect(policy, num_steps)
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            return self._collect(policy, num_steps)

    def _collect(self, policy: ActorCritic, num_steps: int) -> Rollout:
        n_envs = len(self.task)
        # the last row: what follows the rollout. Written through a numpy view (cheaper per step than torch
        # indexing) into torch's memory: a matrix product's last bits can depend on its operand's alignment, and
        # the critic reads this buffer whole.
        obs_t = torch.zeros((num_steps + 1, n_envs, *self.obs.shape[1:]))
        obs = obs_t.numpy()
        obs[0] = self.obs.numpy()
        actions, logprobs = [], []
        rewards, dones = np.zeros((num_steps, n_envs), np.float32), np.zeros((num_steps, n_envs), np.float32)
        cut = np.zeros((num_steps, n_envs), dtype=bool)  # episodes cut off by a time limit: bootstrapped below
        cut_obs: list[np.ndarray] = []  # their final observations, in the order np.nonzero(cut) lists them
        finished: list[tuple[int, float]] = []
        task_of = self.task.tolist()
        sample = policy.sampler()
        for t in range(num_steps):  # numpy bookkeeping, and only where an episode ended: this loop is hot
            action, logprob = sample(self.obs, self.task)
            actions.append(action)
            logprobs.append(logprob)
            next_obs, reward, terminated, truncated, info = self.envs.step(policy.env_action(action))
            rewards[t] = reward
            self.running_return += reward
            if truncated.any():
                cut[t] = truncated & ~terminated
                if cut[t].any():
                    cut_obs.append(np.stack(info["final_obs"][cut[t]]))
            done = terminated | truncated
            if done.any():
                dones[t] = done
                for e in np.flatnonzero(done):
                    finished.append((task_of[e], float(self.running_return[e])))
                    self.running_return[e] = 0.0
            obs[t + 1] = next_obs
            self.obs = torch.as_tensor(next_obs, dtype=torch.float32)  # its own memory, for the same reason
        # The critic once over the whole rollout, not once a step: the values do not depend on the sampling.
        values = policy.value(obs_t.flatten(0, 1), self.task.repeat(num_steps + 1)).reshape(num_steps + 1, n_envs)
        reward_t = torch.as_tensor(rewards)
        if cut_obs:
            t_of, e_of = (torch.as_tensor(i) for i in np.nonzero(cut))
            final = policy.value(torch.as_tensor(np.concatenate(cut_obs), dtype=torch.float32), self.task[e_of])
            reward_t[t_of, e_of] += self.gamma * final
        return Rollout(obs_t[:num_steps], torch.stack(actions), torch.stack(logprobs), reward_t, torch.as_tensor(dones),
                       values[:num_steps], values[num_steps], self.task, finished)

    def close(self) -> None:
        self.envs.close()
