"""CartPole-v1 variants that differ in their physics.

Each task draws its physical parameters uniformly from ``RANGES`` (deterministic in the seed). A share
of the tasks (``REVERSED_FRACTION``) also has its force direction reversed: action 1 pushes left. Those
tasks conflict with the rest (the same state calls for the opposite action), so training all tasks in one
network suffers negative transfer and grouping matters.
"""

from __future__ import annotations

import functools

import gymnasium as gym
import numpy as np
from gymnasium.envs.classic_control.cartpole import CartPoleEnv
from gymnasium.wrappers import TimeLimit

from policygradex.tasks.family import Task, TaskFamily, draw_params

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


def make_env(**params) -> gym.Env:
    return TimeLimit(CartPoleVariant(**params), max_episode_steps=MAX_EPISODE_STEPS)


def _draw(rng: np.random.Generator, count: int, prefix: str) -> list[Task]:
    n_rev = int(round(REVERSED_FRACTION * count))
    reversed_ids = set(rng.choice(count, size=n_rev, replace=False).tolist())
    tasks = []
    for i in range(count):
        params: dict = draw_params(rng, RANGES)
        params["reversed"] = i in reversed_ids
        name = f"{prefix}{i:02d}{'-rev' if params['reversed'] else ''}"
        tasks.append(Task(name, functools.partial(make_env, **params), params))
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
