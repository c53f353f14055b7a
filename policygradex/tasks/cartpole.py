"""CartPole-v1 variants that differ in their physics.

Each task draws its physical parameters uniformly from ``RANGES`` (deterministic in the seed). A share
of the tasks (``REVERSED_FRACTION``) also has its force direction reversed: action 1 pushes left. Those
tasks conflict with the rest (the same state calls for the opposite action), so training all tasks in one
network suffers negative transfer and grouping matters.

Rollouts step many variants at once through ``CartPoleBatch``, CartPole's dynamics on arrays (per-env
constants): 20 envs step in 20 us against 114 us in gymnasium's ``SyncVectorEnv`` (measured here).
``tests/test_cartpole.py`` checks it step for step against gymnasium's ``CartPoleEnv``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.envs.classic_control.cartpole import CartPoleEnv
from gymnasium.utils import seeding
from gymnasium.vector.utils import batch_space
from gymnasium.wrappers import TimeLimit

from policygradex.tasks.family import Task, TaskFamily, draw_params
from policygradex.tasks.vector import env_seeds

RANGES: dict[str, tuple[float, float]] = {
    "length": (0.3, 1.0),  # half the pole's length (m); CartPole-v1: 0.5
    "masspole": (0.05, 0.3),  # kg; CartPole-v1: 0.1
    "masscart": (0.5, 2.0),  # kg; CartPole-v1: 1.0
    "gravity": (7.0, 13.0),  # m/s^2; CartPole-v1: 9.8
    "force_mag": (6.0, 14.0),  # N; CartPole-v1: 10.0
}
REVERSED_FRACTION = 0.3
MAX_EPISODE_STEPS = 500


class CartPoleVariant(CartPoleEnv):
    """CartPoleEnv with its physical constants set; ``reversed=True`` flips the force direction."""

    def __init__(self, length: float, masspole: float, masscart: float, gravity: float,
                 force_mag: float, reversed: bool = False, render_mode: str | None = None) -> None:
        super().__init__(render_mode=render_mode)
        self.length, self.masspole, self.masscart, self.gravity = length, masspole, masscart, gravity
        self.total_mass = masspole + masscart
        self.polemass_length = masspole * length
        self.force_mag = -force_mag if reversed else force_mag


@dataclass(frozen=True)
class CartPoleFactory:
    """A variant's env factory (defaults: CartPole-v1 itself); a list of them runs as one ``CartPoleBatch``."""

    length: float = 0.5
    masspole: float = 0.1
    masscart: float = 1.0
    gravity: float = 9.8
    force_mag: float = 10.0
    reversed: bool = False

    def __call__(self) -> gym.Env:
        return TimeLimit(CartPoleVariant(**dataclasses.asdict(self)), max_episode_steps=MAX_EPISODE_STEPS)

    @classmethod
    def make_vector(cls, factories: Sequence[CartPoleFactory]) -> CartPoleBatch:
        return CartPoleBatch(factories)


class CartPoleBatch(gym.vector.VectorEnv):
    """``len(variants)`` CartPoles stepped as arrays, same-step autoreset (``tasks/vector.py``'s rule). The same
    Euler step, thresholds, 500-step limit and reset draws as gymnasium's ``CartPoleEnv`` in a ``TimeLimit``."""

    TAU, X_LIMIT, THETA_LIMIT = 0.02, 2.4, 12 * 2 * math.pi / 360

    def __init__(self, variants: Sequence[CartPoleFactory]) -> None:
        self.num_envs = n = len(variants)
        def column(name: str) -> np.ndarray:
            return np.array([getattr(v, name) for v in variants], dtype=np.float64)

        self.length, self.masspole, self.gravity = column("length"), column("masspole"), column("gravity")
        self.total_mass = self.masspole + column("masscart")
        self.polemass_length = self.masspole * self.length
        self.force = np.where(column("reversed") > 0, -1.0, 1.0) * column("force_mag")
        self.neg_force = -self.force
        self.rewards = np.ones(n)
        self.rewards.flags.writeable = False  # returned by every step, so nobody may write into it
        reference = CartPoleEnv()
        self.single_observation_space, self.single_action_space = reference.observation_space, reference.action_space
        self.observation_space = batch_space(self.single_observation_space, n)
        self.action_space = batch_space(self.single_action_space, n)
        self.metadata = {"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP}
        self.state = np.zeros((n, 4))
        self.elapsed = np.zeros(n, dtype=np.int64)
        self.rngs = [seeding.np_random()[0] for _ in range(n)]

    def reset(self, *, seed: int | Sequence[int | None] | None = None,
              options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        if options is not None:
            raise ValueError("CartPoleBatch.reset takes no options (CartPole's reset bounds stay +-0.05)")
        if (seeds := env_seeds(seed, self.num_envs)) is not None:
            if len(seeds) != self.num_envs:
                raise ValueError(f"{len(seeds)} seeds for {self.num_envs} envs")
            for e, s in enumerate(seeds):  # None keeps the env's generator, as gymnasium does
                if s is not None:
                    self.rngs[e] = seeding.np_random(s)[0]
        for e in range(self.num_envs):
            self._draw_state(e)
        self.elapsed[:] = 0
        return self.state.astype(np.float32), {}

    def _draw_state(self, e: int) -> None:
        """A new episode's state for env e, from its own generator (gymnasium's CartPole draw)."""
        self.state[e] = self.rngs[e].uniform(-0.05, 0.05, size=4)

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        x, x_dot, theta, theta_dot = self.state.T
        force = np.where(np.asarray(actions) == 1, self.force, self.neg_force)
        cos, sin = np.cos(theta), np.sin(theta)
        temp = (force + self.polemass_length * theta_dot**2 * sin) / self.total_mass
        theta_acc = (self.gravity * sin - cos * temp) / (
            self.length * (4.0 / 3.0 - self.masspole * cos**2 / self.total_mass))
        x_acc = temp - self.polemass_length * theta_acc * cos / self.total_mass
        state = np.empty_like(self.state)  # column by column: a third of np.stack's time for a few envs
        state[:, 0], state[:, 1] = x + self.TAU * x_dot, x_dot + self.TAU * x_acc
        state[:, 2], state[:, 3] = theta + self.TAU * theta_dot, theta_dot + self.TAU * theta_acc
        self.state = state
        self.elapsed += 1
        terminated = (np.abs(self.state[:, 0]) > self.X_LIMIT) | (np.abs(self.state[:, 2]) > self.THETA_LIMIT)
        truncated = self.elapsed >= MAX_EPISODE_STEPS
        obs = self.state.astype(np.float32)
        info: dict[str, Any] = {}
        if (done := terminated | truncated).any():
            # final_obs: a dense (n, 4) array (rows of unfinished envs are their current observation), where
            # SyncVectorEnv gives an object array; callers read the rows _final_obs marks
            info = {"final_obs": obs.copy(), "_final_obs": done, "final_info": {}, "_final_info": done.copy()}
            for e in np.flatnonzero(done):
                self._draw_state(int(e))
            self.elapsed[done] = 0
            obs[done] = self.state[done]
        return obs, self.rewards, terminated, truncated, info


def _draw(rng: np.random.Generator, count: int, prefix: str) -> list[Task]:
    n_rev = int(round(REVERSED_FRACTION * count))
    reversed_ids = set(rng.choice(count, size=n_rev, replace=False).tolist())
    tasks = []
    for i in range(count):
        params: dict = draw_params(rng, RANGES)
        params["reversed"] = i in reversed_ids
        name = f"{prefix}{i:02d}{'-rev' if params['reversed'] else ''}"
        tasks.append(Task(name, CartPoleFactory(**params), params))
    return tasks


def make_family(n_tasks: int = 10, seed: int = 0, n_test_tasks: int = 50) -> TaskFamily:
    """``n_tasks`` training variants and ``n_test_tasks`` held-out variants from the same ranges."""
    rng = np.random.default_rng([seed, 0xCA27])
    tasks = _draw(rng, n_tasks, "cp")
    tests = _draw(rng, n_test_tasks, "test")
    rev = [i for i, t in enumerate(tasks) if t.params["reversed"]]
    fwd = [i for i, t in enumerate(tasks) if not t.params["reversed"]]
    return TaskFamily(
        name="cartpole",
        tasks=tasks,
        test_tasks=tests,
        true_groups=None,
        spec={"n_tasks": n_tasks, "seed": seed, "n_test_tasks": n_test_tasks},
        description=(f"CartPole-v1 physics variants; {len(rev)} of {n_tasks} with reversed force "
                     f"(tasks {rev}); the others {fwd}"),
    )
