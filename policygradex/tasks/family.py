"""TaskFamily: n gymnasium tasks that share one observation space and one action space."""

from __future__ import annotations

import functools
import hashlib
import importlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import gymnasium as gym
import numpy as np

from policygradex.errors import PGXError

EnvFactory = Callable[[], gym.Env]
ActionSpace = gym.spaces.Discrete | gym.spaces.Box
"""The action spaces a family may have (``TaskFamily._check_spaces``) and policies support."""


@dataclass
class Task:
    """One task: a name, a factory for its environment and the parameters that define it."""

    name: str
    make: EnvFactory
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class TaskFamily:
    """Training tasks (grouped by the pipeline) and held-out test tasks (for meta-RL evaluation).

    All tasks must share one observation space and one action space; this is checked once, when the
    family is built, by making one env of each task.
    """

    name: str
    tasks: list[Task]
    test_tasks: list[Task] = field(default_factory=list)
    true_groups: list[list[int]] | None = None
    """The planted grouping where the family knows it (synthetic families), else None."""
    spec: dict[str, Any] = field(default_factory=dict)
    """What rebuilds the family (name, n_tasks, seed, ...); part of a run folder's identity."""
    description: str = ""
    builtin: bool = False
    """Made by ``make_family``: its ``spec`` (name, size, seed) defines its environments, no fingerprint needed."""
    defaults: dict[str, Any] = field(default_factory=dict, repr=False)
    """Config overrides that suit this family (``Config.for_family``); ``make_family`` fills them in."""
    quick_defaults: dict[str, Any] = field(default_factory=dict, repr=False)
    """The same on top of ``Config.quick()``."""
    context_keys: tuple[str, ...] | None = None
    """The keys of each ``Task.params`` that describe the task to a trainer reading task metadata (CARE): None for
    all of them, () for none (CARE then learns an embedding per task)."""
    observation_space: gym.spaces.Box = field(init=False)
    action_space: ActionSpace = field(init=False)
    _fingerprints: dict[str, str] | None = field(init=False, default=None, repr=False)

    def __post_init__(self) -> None:
        if len(self.tasks) < 2:
            raise PGXError(f"family {self.name!r} needs at least 2 tasks, got {len(self.tasks)}")
        names = [t.name for t in self.tasks]
        if len(set(names)) != len(names):
            raise PGXError(f"family {self.name!r}: task names must be unique, got {names}")
        self.observation_space, self.action_space = self._check_spaces()
        self.spec = {"name": self.name, "task_names": names, **self.spec}

    def _check_spaces(self) -> tuple[gym.spaces.Box, ActionSpace]:
        ref_obs = ref_act = None
        for task in self.tasks + self.test_tasks:
            env = task.make()
            obs_space, act_space = env.observation_space, env.action_space
            env.close()
            if ref_obs is None:
                ref_obs, ref_act, ref_name = obs_space, act_space, task.name
            elif obs_space != ref_obs or act_space != ref_act:
                raise PGXError(
                    f"task {task.name!r} has observation space {obs_space} and action space {act_space}, "
                    f"but task {ref_name!r} has {ref_obs} and {ref_act}; all tasks of a family must share both"
                )
        if not isinstance(ref_act, gym.spaces.Discrete | gym.spaces.Box):
            raise PGXError(f"action space {ref_act} is not supported; use Discrete or Box")
        if not isinstance(ref_obs, gym.spaces.Box) or len(ref_obs.shape) != 1:
            raise PGXError(f"observation space {ref_obs} is not supported; use a flat Box")
        return ref_obs, ref_act

    @property
    def n_tasks(self) -> int:
        return len(self.tasks)

    @property
    def task_names(self) -> list[str]:
        return [t.name for t in self.tasks]

    def fingerprints(self) -> dict[str, str]:
        """Per task name (training, then test tasks): a short hash of what its environment is, part of the run
        folder's identity of a user's family (``from_envs``), so that a folder never hands back results of other
        environments under the same names. It changes with the env's spaces, its registered id and kwargs, and
        what a short seeded rollout with fixed actions observes (observations, rewards, ends); computed once."""
        if self._fingerprints is None:
            self._fingerprints = {t.name: env_fingerprint(t.make) for t in self.tasks + self.test_tasks}
        return self._fingerprints

    def factories(self, task_ids: Sequence[int]) -> list[EnvFactory]:
        return [self.tasks[i].make for i in task_ids]

    def context(self) -> np.ndarray | None:
        """(n_tasks, c): the training tasks' metadata (``context_keys`` of their params) as standardised numbers
        (tasks/context.py), or None where the family has none."""
        from policygradex.tasks.context import context_matrix

        try:
            return context_matrix([t.params for t in self.tasks], self.context_keys)
        except ValueError as exc:
            raise PGXError(f"family {self.name!r}: {exc}") from None

    @classmethod
    def from_envs(
        cls,
        name: str,
        factories: Sequence[EnvFactory],
        task_names: Sequence[str] | None = None,
        test_factories: Sequence[EnvFactory] | None = None,
        metadata: Sequence[dict[str, Any]] | None = None,
    ) -> TaskFamily:
        """A family from the user's own gymnasium env factories (zero-argument callables). ``metadata``: one dict
        per task of what defines it (numbers, lists of numbers, text), which CARE reads as the task's context."""
        names = list(task_names) if task_names is not None else [f"task{i}" for i in range(len(factories))]
        if len(names) != len(factories):
            raise PGXError(f"got {len(factories)} factories but {len(names)} task names")
        if metadata is not None and len(metadata) != len(factories):
            raise PGXError(f"got {len(factories)} factories but {len(metadata)} metadata dicts")
        meta = list(metadata) if metadata is not None else [{} for _ in factories]
        tasks = [Task(n, f, dict(m)) for n, f, m in zip(names, factories, meta, strict=True)]
        tests = [Task(f"test{i}", f) for i, f in enumerate(test_factories or [])]
        return cls(name=name, tasks=tasks, test_tasks=tests)


FINGERPRINT_STEPS = 32
FINGERPRINT_SEED = 20_251_129


def env_fingerprint(make: EnvFactory) -> str:
    """16 hex digits: the env's spaces, registered id and kwargs, and a seeded rollout of
    ``FINGERPRINT_STEPS`` fixed actions (rounded observations, rewards, ends). An env whose seeded reset does not
    repeat (it ignores the seed) is fingerprinted by the rest alone."""
    env = make()
    try:
        spec = env.spec
        kwargs = json.dumps(spec.kwargs, sort_keys=True, default=lambda o: type(o).__name__) if spec else ""
        static = f"{env.observation_space!r}|{env.action_space!r}|{spec.id if spec else type(env.unwrapped)}|{kwargs}"
        seen = _probe(env)
        repeats = _reset_obs(env) == _reset_obs(env)
    finally:
        env.close()
    digest = hashlib.blake2b(static.encode(), digest_size=8)
    if repeats:
        digest.update(seen)
    return digest.hexdigest()


def _reset_obs(env: gym.Env) -> bytes:
    return np.round(np.asarray(env.reset(seed=FINGERPRINT_SEED)[0], dtype=np.float64), 4).tobytes()


def _probe(env: gym.Env) -> bytes:
    """What a seeded rollout of fixed actions observes, as bytes (4 decimals: machine-level noise ignored)."""
    space = env.action_space
    if isinstance(space, gym.spaces.Box):
        low = np.where(np.isfinite(space.low), space.low, -1.0)
        high = np.where(np.isfinite(space.high), space.high, 1.0)
        fractions = np.random.default_rng(0).uniform(size=(FINGERPRINT_STEPS, *space.shape))
        actions = [(low + f * (high - low)).astype(space.dtype) for f in fractions]
    elif isinstance(space, gym.spaces.Discrete):
        actions = [space.start + t % space.n for t in range(FINGERPRINT_STEPS)]
    else:  # families accept Box and Discrete only
        actions = []
    seen = [_reset_obs(env)]
    for t, action in enumerate(actions):
        obs, reward, terminated, truncated, _ = env.step(action)
        seen.append(np.round(np.asarray(obs, dtype=np.float64), 4).tobytes())
        seen.append(f"{float(reward):.4f}|{bool(terminated)}|{bool(truncated)}".encode())
        if terminated or truncated:
            obs, _ = env.reset(seed=FINGERPRINT_SEED + t + 1)
    return b"".join(seen)


def sampled_family(name: str, prefix: str, make_env: Callable[..., gym.Env],
                   draw: Callable[[np.random.Generator], dict[str, Any]], rng: np.random.Generator, n_tasks: int,
                   n_test_tasks: int, spec: dict[str, Any], description: str) -> TaskFamily:
    """Training then test tasks, each ``make_env(**draw(rng))``, named prefix00, prefix01, ... and test00, ..."""

    def tasks(count: int, label: str) -> list[Task]:
        out = []
        for i in range(count):
            params = draw(rng)
            out.append(Task(f"{label}{i:02d}", functools.partial(make_env, **params), params))
        return out

    return TaskFamily(name=name, tasks=tasks(n_tasks, prefix), test_tasks=tasks(n_test_tasks, "test"), spec=spec,
                      description=description)


def describe_ranges(ranges: dict[str, tuple[float, float]]) -> str:
    return ", ".join(f"{k} {lo}..{hi}" for k, (lo, hi) in ranges.items())


def draw_params(rng: np.random.Generator, ranges: dict[str, tuple[float, float]]) -> dict[str, float]:
    """One task's parameters, each uniform in its range (rounded so that names and reports stay short)."""
    return {k: round(float(rng.uniform(lo, hi)), 3) for k, (lo, hi) in ranges.items()}


def require(module: str, extra: str, family: str) -> ModuleType:
    """Import an optional dependency, or say which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise PGXError(f"family {family!r} needs the {extra!r} extra ({exc.name} is missing): "
                       f"pip install 'policygradex[{extra}]'") from None


class FlatFloatObservation(gym.ObservationWrapper, gym.utils.RecordConstructorArgs):
    """Flatten the observation to float32; ``unbounded`` for envs whose observations leave their declared bounds."""

    def __init__(self, env: gym.Env, unbounded: bool = False) -> None:
        gym.utils.RecordConstructorArgs.__init__(self, unbounded=unbounded)
        gym.ObservationWrapper.__init__(self, env)
        space = env.observation_space
        if not isinstance(space, gym.spaces.Box):
            raise PGXError(f"observation space {space} is not supported; FlatFloatObservation flattens a Box")
        low, high = np.asarray(space.low, np.float32).ravel(), np.asarray(space.high, np.float32).ravel()
        if unbounded:
            low, high = np.full_like(low, -np.inf), np.full_like(high, np.inf)
        self.observation_space = gym.spaces.Box(low, high, dtype=np.float32)

    def observation(self, observation):
        return np.asarray(observation, dtype=np.float32).ravel()
