"""Stage 2: roll out theta* on every task and turn each transition into (g_t, y_t, w_t).

Paper, "Reducing policy optimization to weighted logistic regression": with the first-order expansion
log pi_{theta*+dtheta}(a|s) - log pi_{theta*}(a|s) ~ g^T dtheta, a PPO step on a set of tasks becomes a
weighted binary classification of transitions with label y = sign(A), weight w = |A| and score
z = g^T dtheta.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from policygradex.config import EstimateConfig, PPOConfig
from policygradex.estimate.projection import Projector
from policygradex.rl.policy import ActorCritic
from policygradex.rl.rollout import TaskRunner, compute_gae
from policygradex.tasks.family import TaskFamily


@dataclass
class GradientFeatures:
    """One row per transition, tasks stacked: features z (N, d), labels y = +-1, weights w >= 0."""

    z: np.ndarray
    y: np.ndarray
    w: np.ndarray
    task: np.ndarray
    holdout: np.ndarray
    """True for transitions kept out of the fit and used to score subsets."""

    def arrays(self) -> dict[str, np.ndarray]:
        return {"z": self.z, "y": self.y, "w": self.w, "task": self.task, "holdout": self.holdout}


def collect_features(policy: ActorCritic, family: TaskFamily, projector: Projector, cfg: EstimateConfig,
                     ppo: PPOConfig, seed: int, batch_size: int = 4096) -> GradientFeatures:
    """``cfg.transitions_per_task`` transitions per task at theta*, GAE advantages from theta*'s critic.

    Advantages are standardised per task (``cfg.standardize_advantages``): a critic shared by all tasks is
    biased per task, and that bias, not the action's quality, would otherwise decide sign(A). The last
    ``cfg.holdout_fraction`` of each task's steps is held out (later steps, so that the fit and the
    held-out score share few episodes).
    """
    n, steps = family.n_tasks, cfg.transitions_per_task
    runner = TaskRunner(family.factories(range(n)), range(n), seed=seed, gamma=ppo.gamma)
    roll = runner.collect(policy, steps)
    runner.close()
    adv, _ = compute_gae(roll.rewards, roll.values, roll.dones, roll.last_value, ppo.gamma, ppo.gae_lambda)
    if cfg.standardize_advantages:
        adv = (adv - adv.mean(0)) / (adv.std(0) + 1e-8)
    # (steps, tasks) -> task-major rows, so that each task's transitions are contiguous.
    obs = roll.obs.transpose(0, 1).reshape(n * steps, -1)
    actions = roll.actions.transpose(0, 1).reshape(n * steps, *roll.actions.shape[2:])
    adv = adv.T.reshape(-1)
    task = np.repeat(np.arange(n), steps)
    z = torch.cat([projector.features(policy, obs[i:i + batch_size], torch.as_tensor(task[i:i + batch_size]),
                                      actions[i:i + batch_size])
                   for i in range(0, len(obs), batch_size)])
    holdout = np.tile(np.arange(steps) >= int(round(steps * (1 - cfg.holdout_fraction))), n)
    return GradientFeatures(
        z=z.numpy().astype(np.float32),
        y=np.where(adv.numpy() >= 0, 1.0, -1.0).astype(np.float32),
        w=adv.abs().numpy().astype(np.float32),
        task=task,
        holdout=holdout,
    )
