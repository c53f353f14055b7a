"""One vectorised env for a list of env factories: the factories' own batched implementation where they share
one, else gymnasium's ``SyncVectorEnv``.

Every rollout here relies on same-step autoreset: the step that ends an episode returns the next episode's
first observation, with the last one in ``info["final_obs"]`` (masked by ``info["_final_obs"]``). A factory
class that has a batched implementation defines ``make_vector(factories) -> gym.vector.VectorEnv`` (a
classmethod, given factories of that class only) that keeps this rule, seeds env ``e`` as gymnasium does
(``reset(seed=s)``: env e gets s + e; a list: one seed per env), and is tested step for step against the
factories' own envs (``tasks/cartpole.py``'s ``CartPoleBatch`` is the example).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, cast

import gymnasium as gym
import numpy as np

from policygradex.tasks.family import EnvFactory


class VectorEnv(Protocol):
    """What rollouts and evaluation use of a vectorised env (gymnasium's, or a family's batched one)."""

    num_envs: int

    def reset(self, *, seed: int | Sequence[int] | None = None,
              options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]: ...

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]: ...

    def close(self) -> None: ...


def make_vector_env(factories: Sequence[EnvFactory]) -> VectorEnv:
    """The factories' envs, stepped together."""
    kinds = {type(f) for f in factories}
    batched = getattr(next(iter(kinds)), "make_vector", None) if len(kinds) == 1 else None
    if batched is not None:
        return cast(VectorEnv, batched(list(factories)))
    return cast(VectorEnv, gym.vector.SyncVectorEnv(list(factories), autoreset_mode=gym.vector.AutoresetMode.SAME_STEP))
