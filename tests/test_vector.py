"""Vectorised envs: a second process for half of the envs changes nothing but the speed."""

import functools

import gymnasium as gym
import numpy as np

from policygradex.config import PPOConfig
from policygradex.rl.ppo import train_ppo
from policygradex.tasks import make_family
from policygradex.tasks.vector import ShardedVectorEnv, _merge_info, env_processes, make_vector_env


def test_sharded_env_steps_exactly_as_one_process():
    """Same observations, rewards, ends, final observations and (masked) infos as SyncVectorEnv, step for
    step, through autoresets; odd counts split 3 + 2."""
    factories = [functools.partial(gym.make, "CartPole-v1", max_episode_steps=40)] * 5
    one = make_vector_env(factories)
    two = make_vector_env(factories, processes=2)
    assert isinstance(two, ShardedVectorEnv) and two.cut == 3
    try:
        for a, b in zip(one.reset(seed=[3, 1, 4, 1, 5]), two.reset(seed=[3, 1, 4, 1, 5]), strict=True):
            if isinstance(a, np.ndarray):
                np.testing.assert_array_equal(a, b)
        rng = np.random.default_rng(0)
        ends = 0
        for _ in range(200):
            action = rng.integers(0, 2, 5)
            *arrays_a, info_a = one.step(action)
            *arrays_b, info_b = two.step(action)
            for x, y in zip(arrays_a, arrays_b, strict=True):
                np.testing.assert_array_equal(x, y)
            assert set(info_a) == set(info_b)
            if "final_obs" in info_a:
                done = info_a["_final_obs"]
                np.testing.assert_array_equal(done, info_b["_final_obs"])
                np.testing.assert_array_equal(np.stack(info_a["final_obs"][done]), np.stack(info_b["final_obs"][done]))
                ends += int(done.sum())
        assert ends >= 10
    finally:
        one.close()
        two.close()
    assert not two.proc.is_alive()


def _broken():
    raise ValueError("this env cannot be built")


def test_a_failing_env_in_the_worker_is_reported_and_the_worker_released():
    import pytest

    factories = [functools.partial(gym.make, "CartPole-v1"), _broken]
    with pytest.raises(RuntimeError, match="cannot be built"):
        make_vector_env(factories, processes=2)


def test_merge_info_masks_what_one_half_lacks():
    a = {"success": np.array([1.0, 0.0]), "_success": np.array([True, True])}
    b = {"final_info": {"success": np.array([1.0]), "_success": np.array([True])}}
    merged = _merge_info(a, b, 2, 1)
    np.testing.assert_array_equal(merged["_success"], [True, True, False])
    np.testing.assert_array_equal(merged["final_info"]["_success"], [False, False, True])
    np.testing.assert_array_equal(merged["final_info"]["success"], [0.0, 0.0, 1.0])


def test_ppo_with_a_second_env_process_learns_the_same_policy():
    fam = make_family("planted", n_tasks=3, seed=0)
    cfg = PPOConfig(steps_per_task=512, envs_per_task=2, num_steps=64, hidden_sizes=(16,))
    runs = [train_ppo(fam.factories(range(3)), fam.observation_space, fam.action_space, cfg, 7, env_processes=p)
            for p in (1, 2)]
    assert runs[0].curve == runs[1].curve
    for p, q in zip(runs[0].policy.parameters(), runs[1].policy.parameters(), strict=True):
        assert (p == q).all()


def test_a_second_process_only_for_slow_envs():
    cartpole = make_family("cartpole", n_tasks=2, seed=0)
    assert env_processes(cartpole.tasks[0].make, 20, 2) == 1  # batched: microseconds a step
    assert env_processes(functools.partial(gym.make, "CartPole-v1"), 20, 1) == 1  # no second core
    assert env_processes(functools.partial(gym.make, "CartPole-v1"), 20, 2) == 1  # ~10 us a step: the pipe costs more
    slow = functools.partial(_SlowEnv)
    assert env_processes(slow, 8, 2) == 2 and env_processes(slow, 1, 2) == 1


class _SlowEnv(gym.Env):
    """An env whose step takes 1 ms, as a simulator's might."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (2,))
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(2, np.float32), {}

    def step(self, action):
        import time

        time.sleep(1e-3)
        return np.zeros(2, np.float32), 0.0, False, False, {}
