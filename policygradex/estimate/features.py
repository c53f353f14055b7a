"""Stage 2: roll out theta* on every task and turn each transition into (z_t, y_t, w_t).

Paper, "Reducing policy optimization to weighted logistic regression": with the first-order expansion
log pi_{theta*+dtheta}(a|s) - log pi_{theta*}(a|s) ~ g^T dtheta, a PPO step on a set of tasks becomes a
weighted binary classification of transitions with label y = sign(A), weight w = |A| and score
z^T beta, where z = P^T g is the projected gradient and dtheta = P beta.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from policygradex.config import EstimateConfig, PPOConfig
from policygradex.estimate.projection import Projector
from policygradex.estimate.store import GradientStore
from policygradex.parallel import Executor, LocalExecutor
from policygradex.rl.policy import ActorCritic
from policygradex.rl.rollout import TaskRunner, compute_gae
from policygradex.seeds import derive_seed
from policygradex.tasks.family import EnvFactory


@dataclass
class TaskFeatureJob:
    """One task's share of stage 2 (runs in a worker)."""

    policy: ActorCritic
    factory: EnvFactory
    task: int
    projector: Projector
    cfg: EstimateConfig
    ppo: PPOConfig
    seed: int
    batch_size: int = 2048


def task_features(job: TaskFeatureJob) -> dict[str, np.ndarray]:
    """Roll out theta* for ``transitions_per_task`` steps of one task (its own env and action seeds) and turn
    every transition into its row (z, y, w, task, holdout)."""
    cfg, steps = job.cfg, job.cfg.transitions_per_task
    runner = TaskRunner([job.factory], [job.task], seed=job.seed, gamma=job.ppo.gamma)
    roll = runner.collect(job.policy, steps, seed=job.seed)
    runner.close()
    adv, _ = compute_gae(roll.rewards, roll.values, roll.dones, roll.last_value, job.ppo.gamma, job.ppo.gae_lambda)
    adv = adv[:, 0]
    if cfg.standardize_advantages:
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    task = torch.full((steps,), job.task, dtype=torch.long)
    z = torch.cat([job.projector.features(job.policy, roll.obs[sl, 0], task[sl], roll.actions[sl, 0]).detach()
                   for sl in (slice(s, s + job.batch_size) for s in range(0, steps, job.batch_size))])
    a = adv.numpy()
    return {"z": z.numpy(), "y": np.where(a >= 0, 1.0, -1.0), "w": np.abs(a), "task": task.numpy(),
            "holdout": np.arange(steps) >= int(round(steps * (1 - cfg.holdout_fraction)))}


def collect_features(policy: ActorCritic, factories: Sequence[EnvFactory], projector: Projector, cfg: EstimateConfig,
                     ppo: PPOConfig, seed: int, path: str | Path | None = None,
                     executor: Executor | None = None, progress: Callable[[int], None] | None = None) -> GradientStore:
    """``cfg.transitions_per_task`` transitions per task (one per factory) at theta*, GAE advantages from
    theta*'s critic, projected gradients streamed into a store (on disk at ``path``, else in memory). Tasks
    are independent items of ``executor`` (default: in this process); task i's env and action seeds derive
    from (seed, i) alone, so the store does not depend on the executor or its workers.

    Advantages are standardised per task (``cfg.standardize_advantages``): a critic shared by all tasks is
    biased per task, and that bias, not the action's quality, would otherwise decide sign(A). The last
    ``cfg.holdout_fraction`` of each task's steps is held out (later steps, so that the fit and the
    held-out score share few episodes).
    """
    n, steps = len(factories), cfg.transitions_per_task
    writer = GradientStore.create(path, n * steps, projector.dim, n)
    jobs = [TaskFeatureJob(policy, f, i, projector, cfg, ppo, derive_seed(seed, i)) for i, f in enumerate(factories)]

    def write(i: int, rows: dict[str, np.ndarray]) -> None:  # task-major rows, as each task arrives
        writer.write(i * steps, **rows)
        if progress is not None:
            progress(1)

    (executor or LocalExecutor(1)).map(task_features, jobs, write)
    return writer.close()
