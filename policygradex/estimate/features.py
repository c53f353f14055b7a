"""Stage 2: roll out theta* on every task and turn each transition into (z_t, y_t, w_t).

Paper, "Reducing policy optimization to weighted logistic regression": with the first-order expansion
log pi_{theta*+dtheta}(a|s) - log pi_{theta*}(a|s) ~ g^T dtheta, a PPO step on a set of tasks becomes a
weighted binary classification of transitions with label y = sign(A), weight w = |A| and score
z^T beta, where z = P^T g is the projected gradient and dtheta = P beta.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from policygradex.config import EstimateConfig, PPOConfig
from policygradex.errors import PGXError
from policygradex.estimate.projection import Projector
from policygradex.estimate.store import GradientStore
from policygradex.parallel import Executor, LocalExecutor
from policygradex.rl.policy import ActorCritic
from policygradex.rl.rollout import TaskRunner, compute_gae, standardize
from policygradex.seeds import derive_seed
from policygradex.tasks.family import EnvFactory

CHUNK_TASKS = 16
"""Tasks rolled out together, one env each, so that one policy forward serves all of them. Chunks depend on
the number of tasks alone, never on the executor, so a store is the same whoever computes it."""
IN_PROCESS_BELOW = 50_000
"""Fewer transitions in all (tasks x transitions per task) are rolled out in this process: starting worker
processes (seconds each) would cost more than they save."""


@dataclass
class ChunkFeatureJob:
    """Stage 2 for a chunk of consecutive tasks (runs in this process or in a worker)."""

    policy: ActorCritic
    factories: list[EnvFactory]
    tasks: list[int]
    projector: Projector
    cfg: EstimateConfig
    ppo: PPOConfig
    seed: int
    batch_size: int = 4096
    device: str = "cpu"
    """Where the gradients are projected (the rollout itself stays on the CPU, fastest for small policies)."""
    unseen: bool = False
    """The tasks are new to the policy (held-out test tasks): it sees them with no task id (an all-zero
    one-hot), never with the id of the training task that shares their index."""


def chunk_rollout(policy: ActorCritic, factories: Sequence[EnvFactory], tasks: list[int], cfg: EstimateConfig,
                  ppo: PPOConfig, seed: int, unseen: bool = False) -> dict[str, torch.Tensor]:
    """Roll out theta* for ``transitions_per_task`` steps of every task of a chunk, one env per task (task i's
    env seeded from (seed, i)): task-major rows of obs, action, the task id the policy saw (``seen_as``), the
    task's own index, label y = sign(A), weight w = |A| and the hold-out flag."""
    steps = cfg.transitions_per_task
    policy_ids = [policy.n_tasks] * len(tasks) if unseen else tasks
    runner = TaskRunner(factories, policy_ids, seed=[derive_seed(seed, i) for i in tasks], gamma=ppo.gamma)
    roll = runner.collect(policy, steps, seed=derive_seed(seed, "actions", tasks[0]))
    runner.close()
    adv, _ = compute_gae(roll.rewards, roll.values, roll.dones, roll.last_value, ppo.gamma, ppo.gae_lambda)
    if cfg.standardize_advantages:
        adv = standardize(adv, dim=0)  # per task: one env per task
    # (steps, envs) -> task-major rows: all of task tasks[0]'s steps in order, then the next task's.
    obs, actions, a = (x.transpose(0, 1).reshape(steps * len(tasks), *x.shape[2:])
                       for x in (roll.obs, roll.actions, adv))
    holdout = torch.arange(steps) >= int(round(steps * (1 - cfg.holdout_fraction)))
    return {"obs": obs, "actions": actions, "seen_as": roll.task.repeat_interleave(steps),
            "task": torch.as_tensor(tasks).repeat_interleave(steps), "y": torch.where(a >= 0, 1.0, -1.0),
            "w": a.abs(), "holdout": holdout.repeat(len(tasks))}


def chunk_features(job: ChunkFeatureJob) -> dict[str, np.ndarray]:
    """``chunk_rollout``'s transitions turned into store rows (z, y, w, task, holdout); z is the projected
    gradient of log pi(a|s) at theta*, for the id the policy saw (the store keeps the tasks' own)."""
    rows = chunk_rollout(job.policy, job.factories, job.tasks, job.cfg, job.ppo, job.seed, job.unseen)
    obs, seen_as, actions = rows["obs"], rows["seen_as"], rows["actions"]
    dev = torch.device(job.device)
    policy = job.policy if dev.type == "cpu" else copy.deepcopy(job.policy).to(dev)
    z = torch.cat([job.projector.features(policy, obs[sl].to(dev), seen_as[sl].to(dev), actions[sl].to(dev)).detach()
                   .cpu() for sl in (slice(s, s + job.batch_size) for s in range(0, len(obs), job.batch_size))])
    return {"z": z.numpy(), **{k: rows[k].numpy() for k in ("y", "w", "task", "holdout")}}


def feature_chunks(n_tasks: int) -> list[list[int]]:
    """The chunks of ``CHUNK_TASKS`` consecutive tasks that stage 2 rolls out together."""
    return [c.tolist() for c in np.array_split(np.arange(n_tasks), -(-n_tasks // CHUNK_TASKS))]


def collect_features(policy: ActorCritic, factories: Sequence[EnvFactory], projector: Projector, cfg: EstimateConfig,
                     ppo: PPOConfig, seed: int, path: str | Path | None = None,
                     executor: Executor | None = None, progress: Callable[[int], None] | None = None,
                     device: str = "cpu", unseen: bool = False) -> GradientStore:
    """``cfg.transitions_per_task`` transitions per task (one per factory) at theta*, GAE advantages from
    theta*'s critic, projected gradients streamed into a store (on disk at ``path``, else in memory). Chunks
    of ``CHUNK_TASKS`` tasks are independent items of ``executor`` (in this process when there is one chunk or
    fewer than ``IN_PROCESS_BELOW`` transitions, or no executor); seeds derive
    from (seed, task), so the store does not depend on the executor or its workers. ``progress`` counts tasks;
    ``device`` is where the gradients are projected; ``unseen``: tasks the policy was not trained on (the
    held-out test tasks), which a task-conditioned policy then sees with no task id.

    Advantages are standardised per task (``cfg.standardize_advantages``): a critic shared by all tasks is
    biased per task, and that bias, not the action's quality, would otherwise decide sign(A). The last
    ``cfg.holdout_fraction`` of each task's steps is held out (later steps, so that the fit and the
    held-out score share few episodes).
    """
    n, steps = len(factories), cfg.transitions_per_task
    writer = GradientStore.create(path, n * steps, projector.dim, n)
    chunks = feature_chunks(n)
    jobs = [ChunkFeatureJob(policy, [factories[i] for i in c], c, projector, cfg, ppo, seed, device=device,
                            unseen=unseen) for c in chunks]

    def write(j: int, rows: dict[str, np.ndarray]) -> None:  # task-major rows, as each chunk arrives
        writer.write(chunks[j][0] * steps, **rows)
        if progress is not None:
            progress(len(chunks[j]))

    small = len(chunks) == 1 or n * steps < IN_PROCESS_BELOW
    (LocalExecutor(1) if executor is None or small else executor).map(chunk_features, jobs, write)
    return writer.close()


def check_features(store: GradientStore, names: Sequence[str]) -> None:
    """Refuse features that no subset could move: all zero (theta* deterministic on the task, the mark of a
    diverged or saturated meta-training) or non-finite."""
    H = store.stats.H
    trace = torch.diagonal(H, dim1=-2, dim2=-1).sum(-1)
    dead = [names[i] for i in range(len(H)) if not (torch.isfinite(H[i]).all() and trace[i] > 0)]
    if dead:
        raise PGXError(f"the gradient features of task(s) {', '.join(dead[:6])}{' ...' if len(dead) > 6 else ''} "
                       "are all zero or non-finite: theta* acts deterministically there (meta-training diverged or "
                       "saturated); lower --meta-learning-rate or --meta-steps-per-task")
