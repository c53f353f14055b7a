"""Stage 2: roll out theta* on every task and turn each transition into (z_t, y_t, w_t).

Paper, "Reducing policy optimization to weighted logistic regression": with the first-order expansion
log pi_{theta*+dtheta}(a|s) - log pi_{theta*}(a|s) ~ g^T dtheta, a PPO step on a set of tasks becomes a
weighted binary classification of transitions with label y = sign(A), weight w = |A| and score
z^T beta, where z = P^T g is the projected gradient and dtheta = P beta.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from policygradex.config import EstimateConfig, PPOConfig
from policygradex.estimate.projection import Projector
from policygradex.estimate.store import GradientStore
from policygradex.rl.policy import ActorCritic
from policygradex.rl.rollout import TaskRunner, compute_gae
from policygradex.tasks.family import TaskFamily


def collect_features(policy: ActorCritic, family: TaskFamily, projector: Projector, cfg: EstimateConfig,
                     ppo: PPOConfig, seed: int, path: str | Path | None = None,
                     batch_size: int = 2048) -> GradientStore:
    """``cfg.transitions_per_task`` transitions per task at theta*, GAE advantages from theta*'s critic,
    projected gradients streamed into a store (on disk at ``path``, else in memory).

    Advantages are standardised per task (``cfg.standardize_advantages``): a critic shared by all tasks is
    biased per task, and that bias, not the action's quality, would otherwise decide sign(A). The last
    ``cfg.holdout_fraction`` of each task's steps is held out (later steps, so that the fit and the
    held-out score share few episodes).
    """
    n, steps = family.n_tasks, cfg.transitions_per_task
    runner = TaskRunner(family.factories(range(n)), range(n), seed=seed, gamma=ppo.gamma)
    roll = runner.collect(policy, steps, seed=seed)
    runner.close()
    adv, _ = compute_gae(roll.rewards, roll.values, roll.dones, roll.last_value, ppo.gamma, ppo.gae_lambda)
    if cfg.standardize_advantages:
        adv = (adv - adv.mean(0)) / (adv.std(0) + 1e-8)
    holdout = np.arange(steps) >= int(round(steps * (1 - cfg.holdout_fraction)))
    writer = GradientStore.create(path, n * steps, projector.dim, n)
    for i in range(n):  # task-major rows
        task = torch.full((steps,), i, dtype=torch.long)
        for start in range(0, steps, batch_size):
            sl = slice(start, start + batch_size)
            z = projector.features(policy, roll.obs[sl, i], task[sl], roll.actions[sl, i])
            a = adv[sl, i].numpy()
            writer.write(i * steps + start, z=z.detach().numpy(), y=np.where(a >= 0, 1.0, -1.0), w=np.abs(a),
                         task=task[sl].numpy(), holdout=holdout[sl])
    return writer.close()
