"""LunarLander-v3 (discrete actions) variants over gravity, wind, turbulence and engine power.

Gymnasium exposes gravity, wind and turbulence as constructor arguments; the engine powers are module
constants, so ``LunarLanderVariant`` swaps them in around its own ``step``.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium.envs.box2d import lunar_lander
from gymnasium.wrappers import TimeLimit

from policygradex.tasks.family import TaskFamily, describe_ranges, draw_params, sampled_family

RANGES: dict[str, tuple[float, float]] = {
    "gravity": (-11.5, -4.0),  # m/s^2; LunarLander-v3: -10
    "wind_power": (0.0, 15.0),  # LunarLander-v3 with wind: 15
    "turbulence_power": (0.0, 1.5),  # LunarLander-v3 with wind: 1.5
    "main_engine_power": (9.0, 17.0),  # LunarLander-v3: 13
    "side_engine_power": (0.3, 0.9),  # LunarLander-v3: 0.6
}
MAX_EPISODE_STEPS = 1000


class LunarLanderVariant(lunar_lander.LunarLander):
    def __init__(self, gravity: float, wind_power: float, turbulence_power: float, main_engine_power: float,
                 side_engine_power: float, render_mode: str | None = None) -> None:
        super().__init__(render_mode=render_mode, continuous=False, gravity=gravity,
                         enable_wind=wind_power > 0 or turbulence_power > 0, wind_power=wind_power,
                         turbulence_power=turbulence_power)
        self.engine_powers = (main_engine_power, side_engine_power)

    def step(self, action):
        saved = lunar_lander.MAIN_ENGINE_POWER, lunar_lander.SIDE_ENGINE_POWER
        lunar_lander.MAIN_ENGINE_POWER, lunar_lander.SIDE_ENGINE_POWER = self.engine_powers
        try:
            return super().step(action)
        finally:
            lunar_lander.MAIN_ENGINE_POWER, lunar_lander.SIDE_ENGINE_POWER = saved


def make_env(**params) -> gym.Env:
    return TimeLimit(LunarLanderVariant(**params), max_episode_steps=MAX_EPISODE_STEPS)


def make_family(n_tasks: int = 10, seed: int = 0, n_test_tasks: int = 50) -> TaskFamily:
    return sampled_family("lunar_lander", "ll", make_env, lambda rng: draw_params(rng, RANGES),
                          np.random.default_rng([seed, 0x1A2D]), n_tasks, n_test_tasks,
                          {"n_tasks": n_tasks, "seed": seed, "n_test_tasks": n_test_tasks},
                          "LunarLander-v3 variants: " + describe_ranges(RANGES))
