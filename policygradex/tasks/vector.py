"""One vectorised env for a list of env factories: the factories' own batched implementation where they share
one, else gymnasium's ``SyncVectorEnv``, or two of them, one in a worker process (``ShardedVectorEnv``).

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


def env_seeds(seed: int | Sequence[int | None] | None, n_envs: int) -> list[int | None] | None:
    """Per-env reset seeds by gymnasium's rule: one int seeds env e with seed + e; a list gives each env its own."""
    if seed is None:
        return None
    return [seed + e for e in range(n_envs)] if isinstance(seed, int) else list(seed)


SHARD_ABOVE = 300e-6
"""A second process pays off when the envs it would take over cost more than this per step together (seconds):
well above the price of sending actions and observations across a pipe and back each step, about 130 us
here. Measured per step of 8 envs, one process / two: gymnasium CartPole 68 / 161 us, LunarLander 211 / 269
us (20 envs: 511 / 504), Meta-World reach 1,491 / 1,096 us."""


def env_processes(factory: EnvFactory, n_envs: int, available: int, probe_steps: int = 64) -> int:
    """2 when a second process would step half of ``n_envs`` envs like ``factory``'s faster than the pipe costs,
    else 1: never for a batched family (its whole step costs microseconds), nor with fewer than 2 processes
    ``available``. Times ``probe_steps`` random-action steps of one env."""
    import time

    if available < 2 or n_envs < 2 or hasattr(type(factory), "make_vector"):
        return 1
    env = factory()
    env.reset(seed=0)
    env.action_space.seed(0)
    actions = [env.action_space.sample() for _ in range(probe_steps)]
    start = time.perf_counter()
    for action in actions:
        _, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            env.reset()
    per_step = (time.perf_counter() - start) / probe_steps
    env.close()
    return 2 if per_step * (n_envs // 2) > SHARD_ABOVE else 1


def make_vector_env(factories: Sequence[EnvFactory], processes: int = 1) -> VectorEnv:
    """The factories' envs, stepped together: batched where their class has ``make_vector``, else in this
    process, or with ``processes=2`` half of them in a worker process (``ShardedVectorEnv``; for slow envs)."""
    kinds = {type(f) for f in factories}
    batched = getattr(next(iter(kinds)), "make_vector", None) if len(kinds) == 1 else None
    if batched is not None:
        return cast(VectorEnv, batched(list(factories)))
    if processes > 1 and len(factories) > 1:
        return ShardedVectorEnv(factories)
    return cast(VectorEnv, _sync(factories))


def _sync(factories: Sequence[EnvFactory]) -> gym.vector.SyncVectorEnv:
    return gym.vector.SyncVectorEnv(list(factories), autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)


def _shard_worker(conn: Any, blob: bytes) -> None:
    """A worker process's loop: build its envs, then answer ("reset", seeds) and ("step", actions) until
    ("close", None). A failure is sent back as ("error", traceback) for the main process to raise."""
    import traceback

    import cloudpickle

    try:
        envs = _sync(cloudpickle.loads(blob))
        conn.send(("ok", None))
        while True:
            command, arg = conn.recv()
            if command == "close":
                envs.close()
                return
            conn.send(("ok", envs.reset(seed=arg) if command == "reset" else envs.step(arg)))
    except Exception:
        conn.send(("error", traceback.format_exc()))


def _merge_info(a: dict[str, Any], b: dict[str, Any], n_a: int, n_b: int) -> dict[str, Any]:
    """Two vector infos (gymnasium's layout: per key an array over envs, ``_key`` its mask, dicts nested) as
    one over the n_a + n_b envs; a key only one side has is masked out on the other."""
    out: dict[str, Any] = {}
    for key in a.keys() | b.keys():
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) or isinstance(vb, dict):
            out[key] = _merge_info(va or {}, vb or {}, n_a, n_b)
            continue
        ref = np.asarray(va if va is not None else vb)
        fill = None if ref.dtype == object else 0
        pad = {n: np.full((n, *ref.shape[1:]), fill, dtype=ref.dtype) for n in (n_a, n_b)}
        out[key] = np.concatenate([np.asarray(va) if va is not None else pad[n_a],
                                   np.asarray(vb) if vb is not None else pad[n_b]])
    return out


class ShardedVectorEnv:
    """The factories' envs in two halves stepped at once: the first here, the second in a worker process. An
    env that costs far more than a policy step (Box2D, MuJoCo, highway) then runs on two cores. Every env is
    the same gymnasium env with the same seed as in ``SyncVectorEnv``, so results are the same to the bit."""

    def __init__(self, factories: Sequence[EnvFactory]) -> None:
        import multiprocessing as mp

        import cloudpickle

        from policygradex.parallel import _main_not_rerun

        self.num_envs = len(factories)
        self.cut = (self.num_envs + 1) // 2
        spawn = mp.get_context("spawn")
        self.conn, child = spawn.Pipe()
        with _main_not_rerun():  # the worker must not re-run the user's script (parallel.py says why)
            self.proc = spawn.Process(
                target=_shard_worker, args=(child, cloudpickle.dumps(list(factories[self.cut:]))), daemon=True)
            self.proc.start()
        child.close()
        self.local: gym.vector.SyncVectorEnv | None = None
        try:  # the local half is built while the worker builds its own
            self.local = _sync(factories[:self.cut])
            self._receive()
        except BaseException:
            self.close()
            raise

    def _receive(self) -> Any:
        try:
            status, value = self.conn.recv()
        except EOFError:
            raise RuntimeError("the env worker process ended unexpectedly") from None
        if status == "error":
            raise RuntimeError(f"an env in the worker process failed:\n{value}")
        return value

    def reset(self, *, seed: int | Sequence[int] | None = None,
              options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        if options is not None:
            raise ValueError("ShardedVectorEnv.reset takes no options")
        return self._both("reset", env_seeds(seed, self.num_envs))

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        return self._both("step", actions)

    def _both(self, command: str, arg: Any) -> Any:
        """``command`` on both halves at once: the worker's half sent first, this process's stepped meanwhile,
        the results joined in env order."""
        assert self.local is not None, "this ShardedVectorEnv is closed"
        self.conn.send((command, None if arg is None else arg[self.cut:]))
        try:
            here = (self.local.reset(seed=None if arg is None else list(arg[:self.cut])) if command == "reset"
                    else self.local.step(arg[:self.cut]))
        except BaseException:
            self.close()  # the worker's reply would otherwise answer the next call
            raise
        there = self._receive()
        arrays = [np.concatenate([x, y]) for x, y in zip(here[:-1], there[:-1], strict=True)]
        return (*arrays, _merge_info(here[-1], there[-1], self.cut, self.num_envs - self.cut))

    def close(self) -> None:
        try:
            if self.proc.is_alive():
                self.conn.send(("close", None))
                self.proc.join(timeout=10)
        except OSError:  # the worker is gone already
            pass
        finally:
            if self.proc.is_alive():
                self.proc.kill()
            self.conn.close()
            if self.local is not None:
                self.local.close()
                self.local = None
