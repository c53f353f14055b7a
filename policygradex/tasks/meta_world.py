"""Meta-World v3 manipulation tasks (MT10 or any list of env names). Needs the ``metaworld`` extra.

Each task is one Meta-World env with a one-hot task id appended to its 39 observation numbers (Meta-World's
own ``OneHotWrapper``); its goal is redrawn from the env's 50 variations at every reset, as in MT10. Success
is ``info['success']``. Meta-World's observations leave their declared bounds (goal coordinates), so the
observation space is declared unbounded and float32.
"""

from __future__ import annotations

import functools

import gymnasium as gym

from policygradex.errors import PGXError
from policygradex.tasks.family import FlatFloatObservation, Task, TaskFamily, require

MT10 = ["reach-v3", "push-v3", "pick-place-v3", "door-open-v3", "drawer-open-v3", "drawer-close-v3",
        "button-press-topdown-v3", "peg-insert-side-v3", "window-open-v3", "window-close-v3"]
DESCRIPTIONS = {
    "reach-v3": "reach a goal position with the gripper",
    "push-v3": "push the puck to a goal position",
    "pick-place-v3": "pick up the puck and place it at a goal position",
    "door-open-v3": "open a door with a revolving joint",
    "drawer-open-v3": "pull a drawer open",
    "drawer-close-v3": "push a drawer closed",
    "button-press-topdown-v3": "press a button from the top",
    "peg-insert-side-v3": "insert a peg sideways into a hole",
    "window-open-v3": "slide a window open",
    "window-close-v3": "slide a window closed",
}
"""What each MT10 task asks, in a few words (task metadata for CARE; other envs are described by their name)."""


class SeededReset(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Meta-World's envs ignore ``reset(seed=...)``; reseed their generator here so that a seed fixes the
    goal drawn and the episode (gymnasium's contract, checked by ``check_env``)."""

    def __init__(self, env: gym.Env) -> None:
        gym.utils.RecordConstructorArgs.__init__(self)
        gym.Wrapper.__init__(self, env)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            self.env.unwrapped.np_random, _ = gym.utils.seeding.np_random(seed)
        return self.env.reset(seed=seed, options=options)


def make_env(env_name: str, env_id: int, n_tasks: int, seed: int) -> gym.Env:
    metaworld = require("metaworld", "metaworld", "metaworld")
    env = metaworld.make_mt_envs(env_name, seed=seed, use_one_hot=True, env_id=env_id, num_tasks=n_tasks)
    return FlatFloatObservation(SeededReset(env), unbounded=True)


def make_family(env_names: list[str] | None = None, n_tasks: int | None = None, seed: int = 0) -> TaskFamily:
    """MT10 (its first ``n_tasks`` tasks when given) or the named envs (``metaworld:reach-v3,push-v3``)."""
    metaworld = require("metaworld", "metaworld", "metaworld")
    names = list(env_names) if env_names else MT10[: n_tasks or len(MT10)]
    if env_names and n_tasks is not None and n_tasks != len(names):
        raise PGXError(f"metaworld:{','.join(names)} has {len(names)} tasks, not --n-tasks {n_tasks}; drop --n-tasks")
    if n_tasks is not None and not env_names and n_tasks > len(MT10):
        raise PGXError(f"metaworld-mt10 has 10 tasks; --n-tasks {n_tasks} is too many")
    known = set(metaworld.ALL_V3_ENVIRONMENTS)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise PGXError(f"unknown Meta-World env(s) {unknown}; for example {', '.join(MT10[:3])}")
    tasks = [Task(n, functools.partial(make_env, n, i, len(names), seed + i),
                  {"env_name": n, "description": DESCRIPTIONS.get(n, n)}) for i, n in enumerate(names)]
    label = "metaworld-mt10" if not env_names else "metaworld:" + ",".join(names)
    return TaskFamily(name=label, tasks=tasks, spec={"n_tasks": len(names), "seed": seed},
                      description=f"Meta-World v3 tasks {', '.join(names)} (success rate from info['success'])")
