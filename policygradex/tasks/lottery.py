"""planted's clusters plus a lottery: a family on which gradient similarity and PolicyGradEx's affinity disagree.

Every episode opens with a lottery step: the observation is a flag (the context half all zero), and the reward
is Gaussian noise of scale ``LOTTERY_SCALE``, whatever the action. The other ``EPISODE_STEPS - 1`` steps are
planted's: a context x ~ N(0, I) and reward 1 for the best action of the task's cluster. The lottery holds
no conflict (no action is better there, for any task), so the grouping worth having is planted's clusters
(``family.true_groups``; `validate ground-truth` checks them against fine-tuning).

Why the two methods part. Each task's mean gradient b_i (estimate/store.py) sums w y z over its transitions;
on the lottery step the advantage is pure noise, so b_i carries a noise term confined to the few gradient
directions of that one observation (z = grad log pi(a | flag) takes one value per action). Mean over N rows,
it shrinks only as 1 / sqrt(N), and it is large next to the clusters' signal. The cosine of b_i and b_j
reads it as much as the signal: in a space of a few dimensions two independent noise terms are far from
orthogonal, so the cosines, and gradient similarity's groups, are partly random. The surrogate's Newton step
beta_S = A_S^-1 b_S, with A_S = H_S / (4 N_S) + lam I and H = sum w z z^T the spread of the gradients, divides
each direction by its spread: the lottery's directions have the largest spread of all (|A| is largest there),
so its noise is whitened away and the clusters' conflict decides the affinity.

The lottery draws from the env's random stream whatever the action, so evaluations on the same episode seeds
(before and after a fine-tune in `validate ground-truth`) share its draws and its noise cancels from their
difference. The groups of a compare evaluate on episodes of their own, so the family's default is 100
evaluation episodes per task.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from policygradex.tasks import planted
from policygradex.tasks.family import TaskFamily

LOTTERY_SCALE = 30.0
"""Standard deviation of the lottery's reward. Measured with `bench grouping --families lottery`: at 30, seeds
0-9, PolicyGradEx NMI 1.0 in 8 of 10 and gradient similarity in 4 of 10; at 10 (seeds 0-2) the two nearly
agreed (PolicyGradEx 1.0, 1.0, 1.0; gradient similarity 1.0, 0.82, 1.0)."""


class LotteryEnv(planted.PlantedEnv):
    """A lottery step (flag observation, reward N(0, LOTTERY_SCALE^2)) then planted's contextual bandit. The
    best-action map gets a zero column for the flag, so planted's own step scores the other steps."""

    def __init__(self, weights: np.ndarray) -> None:
        super().__init__(np.pad(np.asarray(weights, dtype=np.float64), ((0, 0), (0, 1))))
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (planted.OBS_DIM + 1,), np.float32)
        self._x = np.zeros(planted.OBS_DIM + 1, dtype=np.float32)

    def _context(self) -> np.ndarray:
        self._x = np.zeros(planted.OBS_DIM + 1, dtype=np.float32)
        if self._t == 0:
            self._x[-1] = 1.0  # the lottery's flag
        else:
            self._x[:-1] = self.np_random.normal(size=planted.OBS_DIM)
        return self._x.copy()

    def step(self, action):
        if self._t > 0:
            return super().step(action)
        reward = LOTTERY_SCALE * float(self.np_random.normal())  # whatever the action
        self._t += 1
        return self._context(), reward, False, False, {"best_action": -1}


def make_env(weights: list[list[float]]) -> gym.Env:
    return LotteryEnv(np.array(weights))


def make_family(n_tasks: int = 12, seed: int = 0, n_clusters: int = planted.N_CLUSTERS) -> TaskFamily:
    """planted's tasks (the same clusters and maps for the same seed), each opening its episodes with the lottery."""
    return planted.clustered_family(
        "lottery", make_env, n_tasks, seed, n_clusters,
        "planted's {n_clusters} clusters, each episode opening with a pure-noise lottery step")
