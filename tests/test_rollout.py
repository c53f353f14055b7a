"""TaskRunner.collect samples exactly what a plain loop of ``policy.sample`` over the env's observations does."""

import gymnasium as gym
import numpy as np
import torch

from policygradex.rl.policy import ActorCritic
from policygradex.rl.rollout import TaskRunner


class NoiseEnv(gym.Env):
    """42 float64 observations (Meta-World's width, rows not a multiple of 64 bytes) drawn from the env's seed."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (42,), np.float64)
    action_space = gym.spaces.Box(-1.0, 1.0, (4,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self.np_random.normal(size=42), {}

    def step(self, action):
        self.t += 1
        reward = float(np.asarray(action, dtype=np.float64).sum())
        return self.np_random.normal(size=42) + reward, reward, False, self.t >= 7, {}


def test_collect_matches_a_plain_sampling_loop_to_the_bit():
    torch.manual_seed(0)
    policy = ActorCritic(42, NoiseEnv.action_space, 3, task_conditioned=False)
    seeds, steps = [3, 4, 5], 20
    rollout = TaskRunner([NoiseEnv] * 3, [0, 1, 2], seed=seeds, gamma=0.99).collect(policy, steps, seed=9)

    envs = gym.vector.SyncVectorEnv([NoiseEnv] * 3, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    obs, _ = envs.reset(seed=seeds)
    task = torch.arange(3)
    with torch.random.fork_rng(), torch.no_grad():
        torch.manual_seed(9)
        for t in range(steps):
            x = torch.as_tensor(obs, dtype=torch.float32)
            assert torch.equal(rollout.obs[t], x), t
            action, logprob = policy.sample(x, task)
            assert torch.equal(rollout.actions[t], action) and torch.equal(rollout.logprobs[t], logprob), t
            obs, *_ = envs.step(policy.env_action(action))
