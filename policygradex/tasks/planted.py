"""A synthetic family with a known answer: tasks in hidden clusters whose best actions conflict.

Each step shows a context x ~ N(0, I); the reward is 1 for the best action argmax_a (W x)_a and 0 otherwise.
Every cluster c has its own random W_c; a task of cluster c uses W_c plus a small perturbation. Tasks of
one cluster agree on most contexts, tasks of different clusters mostly disagree, and nothing in the
observation says which task is running: a single shared policy must compromise, so the right grouping is
the clusters, exposed as ``family.true_groups``. Steps cost microseconds, so the whole pipeline runs in
seconds: this family is the project's own check that the estimator finds real structure.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import gymnasium as gym
import numpy as np

from policygradex.tasks.family import Task, TaskFamily

OBS_DIM = 4
N_ACTIONS = 4
EPISODE_STEPS = 16
N_CLUSTERS = 3
TASK_NOISE = 0.3  # perturbation of a task's W around its cluster's, relative to the cluster's scale


class PlantedEnv(gym.Env):
    """Contextual bandit in episodes of ``EPISODE_STEPS`` steps; reward 1 for the best action of ``weights``."""

    metadata = {"render_modes": []}

    def __init__(self, weights: np.ndarray) -> None:
        self.weights = np.asarray(weights, dtype=np.float64)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (OBS_DIM,), np.float32)
        self.action_space = gym.spaces.Discrete(N_ACTIONS)
        self._x = np.zeros(OBS_DIM, dtype=np.float32)
        self._t = 0

    def _context(self) -> np.ndarray:
        self._x = self.np_random.normal(size=OBS_DIM).astype(np.float32)
        return self._x

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._t = 0
        return self._context(), {}

    def step(self, action):
        best = int(np.argmax(self.weights @ self._x))
        reward = 1.0 if int(action) == best else 0.0
        self._t += 1
        return self._context(), reward, False, self._t >= EPISODE_STEPS, {"best_action": best}


def make_env(weights: list[list[float]]) -> gym.Env:
    return PlantedEnv(np.array(weights))


def clustered_family(name: str, make_task_env: Callable[[list[list[float]]], gym.Env], n_tasks: int, seed: int,
                     n_clusters: int, description: str) -> TaskFamily:
    """``n_tasks`` tasks dealt round-robin into ``n_clusters`` hidden clusters (then shuffled), task i's env
    ``make_task_env(W_i)`` with W_i its cluster's best-action map plus ``TASK_NOISE``; ``description`` may
    name ``{n_clusters}``. planted's tasks, and those of the families built on them (lottery)."""
    rng = np.random.default_rng([seed, 0x9A4])
    n_clusters = max(1, min(n_clusters, n_tasks))
    centres = rng.normal(size=(n_clusters, N_ACTIONS, OBS_DIM))
    cluster_of = rng.permutation(np.arange(n_tasks) % n_clusters)
    tasks = []
    for i, c in enumerate(cluster_of):
        w = centres[c] + TASK_NOISE * rng.normal(size=(N_ACTIONS, OBS_DIM))
        tasks.append(Task(f"{name[0]}{i:02d}-c{c}", functools.partial(make_task_env, np.round(w, 4).tolist()),
                          {"cluster": int(c)}))
    return TaskFamily(
        name=name,
        tasks=tasks,
        true_groups=[np.flatnonzero(cluster_of == c).tolist() for c in range(n_clusters)],
        spec={"n_tasks": n_tasks, "seed": seed, "n_clusters": n_clusters},
        description=description.format(n_clusters=n_clusters),
        context_keys=(),  # a task's one param is its hidden cluster: metadata would hand CARE the answer
    )


def make_family(n_tasks: int = 12, seed: int = 0, n_clusters: int = N_CLUSTERS) -> TaskFamily:
    """``n_tasks`` tasks dealt round-robin into ``n_clusters`` hidden clusters (then shuffled)."""
    return clustered_family(
        "planted", make_env, n_tasks, seed, n_clusters,
        "synthetic contextual bandits in {n_clusters} hidden clusters with conflicting best actions")
