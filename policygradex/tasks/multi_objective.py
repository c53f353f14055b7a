"""A multi-objective env (mo-gymnasium) whose tasks are scalarisations of its vector reward. Needs the ``mo``
extra.

Task i rewards w_i . r for a weight vector w_i drawn uniformly from the simplex (Dirichlet(1, ..., 1)),
seeded. Observations are flattened to float32.
"""

from __future__ import annotations

import functools

import gymnasium as gym
import numpy as np

from policygradex.errors import PGXError
from policygradex.tasks.family import FlatFloatObservation, TaskFamily, require, sampled_family

EXAMPLES = ["mo-lunar-lander-v3", "deep-sea-treasure-v0", "mo-highway-fast-v0"]


class ScalarisedReward(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Reward w . r of the env's vector reward r; r itself goes to ``info['vector_reward']`` (a fresh copy
    each step, unlike mo-gymnasium's LinearReward, whose shared weight array fails ``check_env``)."""

    def __init__(self, env: gym.Env, weights: list[float]) -> None:
        gym.utils.RecordConstructorArgs.__init__(self, weights=weights)
        gym.Wrapper.__init__(self, env)
        self.weights = np.asarray(weights, dtype=np.float64)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        vector = np.array(reward, dtype=np.float64)
        return obs, float(vector @ self.weights), terminated, truncated, {**info, "vector_reward": vector}


def make_env(env_id: str, weights: list[float]) -> gym.Env:
    mo = require("mo_gymnasium", "mo", f"mo:{env_id}")
    return FlatFloatObservation(ScalarisedReward(mo.make(env_id), weights))


def reward_dim(env_id: str) -> int:
    mo = require("mo_gymnasium", "mo", f"mo:{env_id}")
    try:
        env = mo.make(env_id)
    except gym.error.Error as exc:
        raise PGXError(f"mo-gymnasium has no env {env_id!r} ({exc}); for example {', '.join(EXAMPLES)}") from None
    dim = int(np.prod(env.unwrapped.reward_space.shape))
    env.close()
    return dim


def make_family(env_id: str, n_tasks: int = 10, seed: int = 0, n_test_tasks: int = 50) -> TaskFamily:
    dim = reward_dim(env_id)
    return sampled_family(f"mo:{env_id}", "w", functools.partial(make_env, env_id),
                          lambda rng: {"weights": np.round(rng.dirichlet(np.ones(dim)), 4).tolist()},
                          np.random.default_rng([seed, 0x30]), n_tasks, n_test_tasks,
                          {"n_tasks": n_tasks, "seed": seed, "n_test_tasks": n_test_tasks},
                          f"{env_id} with {n_tasks} reward weightings drawn from the {dim}-objective simplex")
