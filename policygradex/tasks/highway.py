"""highway-env ``highway-fast-v0`` variants: each task weights the reward terms differently and drives in
its own traffic. Needs the ``highway`` extra.

``highway-fast-v0`` (about 15 ms a step here) rather than ``highway-v0`` (about 160 ms): same task,
coarser simulation. Observations (5 vehicles x 5 kinematic features) are flattened to 25 numbers.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from policygradex.tasks.family import (
    FlatFloatObservation,
    TaskFamily,
    describe_ranges,
    draw_params,
    require,
    sampled_family,
)

RANGES: dict[str, tuple[float, float]] = {
    "collision_reward": (-1.5, -0.2),  # highway-env default: -1
    "high_speed_reward": (0.0, 0.8),  # default 0.4
    "right_lane_reward": (0.0, 0.5),  # default 0.1
    "lane_change_reward": (-0.3, 0.3),  # default 0
    "vehicles_density": (0.6, 1.8),  # default 1
    "vehicles_count": (10, 35),  # default 20 (rounded to an integer)
}


def make_env(**config) -> gym.Env:
    require("highway_env", "highway", "highway")
    return FlatFloatObservation(gym.make("highway-fast-v0", config=config))


def _draw(rng: np.random.Generator) -> dict:
    params: dict = draw_params(rng, RANGES)
    params["vehicles_count"] = int(round(params["vehicles_count"]))
    return params


def make_family(n_tasks: int = 10, seed: int = 0, n_test_tasks: int = 50) -> TaskFamily:
    require("highway_env", "highway", "highway")
    return sampled_family("highway", "hw", make_env, _draw, np.random.default_rng([seed, 0x416]), n_tasks,
                          n_test_tasks, {"n_tasks": n_tasks, "seed": seed, "n_test_tasks": n_test_tasks},
                          "highway-fast-v0 variants: " + describe_ranges(RANGES))
