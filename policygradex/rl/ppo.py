"""Multi-task PPO (Schulman et al. 2017): one task-conditioned policy trained on a set of tasks."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from policygradex.config import PPOConfig
from policygradex.errors import PGXError
from policygradex.rl import ppo_grad
from policygradex.rl.optim import Adam
from policygradex.rl.paco import MaskOut
from policygradex.rl.pcgrad import pcgrad_backward
from policygradex.rl.policy import ActorCritic, Arch
from policygradex.rl.rollout import Rollout, TaskRunner, compute_gae, standardize
from policygradex.rl.telemetry import ScalarWriter
from policygradex.tasks.family import ActionSpace, EnvFactory

Progress = Callable[[int], None]
"""Called with the number of environment steps just taken."""


class Diverged(PGXError):
    """Training made the policy's loss or parameters non-finite (a learning rate far too high, most often)."""


@contextlib.contextmanager
def stopping_divergence(stage: str, settings: str) -> Iterator[None]:
    """A diverged training becomes one line that names the stage and the settings most likely to blame."""
    try:
        yield
    except Diverged as exc:
        raise PGXError(f"{stage} diverged: {exc}; lower {settings}") from None


def check_finite(policy: nn.Module) -> None:
    """``Diverged`` as soon as a parameter is NaN or infinite: every later step would only sample from a broken
    distribution (and fail there with an error that names nothing the user set)."""
    if not all(torch.isfinite(p).all() for p in policy.parameters()):
        raise Diverged("the policy's parameters became non-finite")


@dataclass
class TrainResult:
    policy: ActorCritic
    curve: list[tuple[int, list[float]]]
    """(env steps per task so far, mean return of the episodes each task finished in that rollout; NaN if none)."""
    stats: list[dict[str, float]] = field(default_factory=list)
    """Per update: losses, approx KL, clip fraction, entropy, explained variance (``ppo_update``'s record)."""


class TrainingRecord:
    """The bookkeeping of a training loop, per iteration: the learning curve, the update statistics, their
    TensorBoard scalars (with ``log_dir``) and the progress bar, which stops at the budget even where the last
    iteration overshoots it."""

    def __init__(self, budget: int, steps_per_iter: int, n_tasks: int, progress: Progress | None = None,
                 log_dir: str | Path | None = None, stats_tag: str = "ppo/", returns_tag: str = "episode_return/"):
        self.budget, self.steps_per_iter, self.n_tasks, self.progress = budget, steps_per_iter, n_tasks, progress
        self.iterations = math.ceil(budget / steps_per_iter)
        self.stats_tag, self.returns_tag = stats_tag, returns_tag
        self.curve: list[tuple[int, list[float]]] = []
        self.stats: list[dict[str, float]] = []
        self.writer = ScalarWriter(log_dir) if log_dir is not None else None

    def anneal(self, optimizer: Adam, learning_rate: float, it: int) -> None:
        """Learning rate annealed linearly to zero over the iterations (CleanRL's schedule)."""
        optimizer.param_groups[0]["lr"] = learning_rate * (1.0 - it / self.iterations)

    def add(self, it: int, returns: dict[str, float], stats: dict[str, float]) -> None:
        """Iteration ``it`` (0-based) done: each task's mean episode return (NaN if none finished) and its stats."""
        steps = (it + 1) * self.steps_per_iter
        self.curve.append((steps, list(returns.values())))
        self.stats.append(stats)
        if self.writer is not None:
            self.writer.scalars(steps, stats, self.stats_tag)
            self.writer.scalars(steps, returns, self.returns_tag)
        if self.progress is not None:
            done = min(steps, self.budget) - min(it * self.steps_per_iter, self.budget)
            self.progress(done * self.n_tasks)

    def result(self, policy: ActorCritic) -> TrainResult:
        if self.writer is not None:
            self.writer.close()
        return TrainResult(policy, self.curve, self.stats)


def ppo_update(policy: ActorCritic, optimizer: Adam, rollout: Rollout,
               cfg: PPOConfig, generator: torch.Generator, gradient_surgery: bool = False,
               mask_out: MaskOut | None = None) -> dict[str, float]:
    """Clipped-surrogate PPO update on one rollout (CleanRL's ``ppo.py``, multi-task inputs). With
    ``gradient_surgery``, each minibatch's gradient is PCGrad's combination of its tasks' own (rl/pcgrad.py);
    with ``mask_out`` (PaCo), the tasks whose loss diverges are left out of the update (rl/paco.py)."""
    advantages, returns = compute_gae(rollout.rewards, rollout.values, rollout.dones, rollout.last_value,
                                      cfg.gamma, cfg.gae_lambda)
    b_obs, b_task, b_actions = rollout.flat()
    b_logprobs, b_adv = rollout.logprobs.reshape(-1), advantages.reshape(-1)
    b_returns, b_values = returns.reshape(-1), rollout.values.reshape(-1)
    if mask_out is not None and (skip := mask_out(policy, rollout.task, returns, rollout.values)) is not None:
        keep = ~skip[b_task]
        b_obs, b_task, b_actions, b_logprobs, b_adv, b_returns, b_values = (
            x[keep] for x in (b_obs, b_task, b_actions, b_logprobs, b_adv, b_returns, b_values))
    b_inputs = policy.inputs(b_obs, b_task)
    batch = len(b_obs)
    mb_size = max(1, batch // cfg.num_minibatches)
    record: dict[str, list[torch.Tensor]] = {k: [] for k in ("pg_loss", "v_loss", "entropy", "approx_kl", "clip_frac")}
    layers = None if gradient_surgery else ppo_grad.layers_of(policy)  # rl/ppo_grad.py; else autograd
    for _ in range(cfg.update_epochs):
        order = torch.randperm(batch, generator=generator).to(b_obs.device)  # the generator lives on the CPU
        for start in range(0, batch, mb_size):
            mb = order[start:start + mb_size]
            optimizer.zero_grad()
            minibatch = (b_inputs[mb], b_actions[mb], b_logprobs[mb], standardize(b_adv[mb]), b_returns[mb])
            if layers is not None:  # the same loss and gradients to the bit, in two thirds of autograd's time
                parts = ppo_grad.loss_and_grad(policy, layers, *minibatch, cfg.clip_coef, cfg.ent_coef, cfg.vf_coef)
            else:
                parts = _loss_and_backward(policy, *minibatch, cfg, b_task[mb] if gradient_surgery else None,
                                           generator)
            if not torch.isfinite(parts["loss"]):
                raise Diverged("the PPO loss became non-finite")
            optimizer.clip_grad_norm_(cfg.max_grad_norm)
            optimizer.step()
            with torch.no_grad():  # kept as tensors: one sync per update, not per minibatch
                ratio, logratio = parts["ratio"], parts["logratio"]
                for k, v in (("pg_loss", parts["pg_loss"]), ("v_loss", parts["v_loss"]), ("entropy", parts["entropy"]),
                             ("approx_kl", ((ratio - 1) - logratio).mean()),
                             ("clip_frac", ((ratio - 1).abs() > cfg.clip_coef).float().mean())):
                    record[k].append(v.detach())
    explained = 1 - (b_returns - b_values).var() / (b_returns.var() + 1e-8)
    return {**{k: torch.stack(v).mean().item() for k, v in record.items()}, "explained_var": explained.item()}


def _loss_and_backward(policy: ActorCritic, x: torch.Tensor, actions: torch.Tensor, old_logprob: torch.Tensor,
                       adv: torch.Tensor, returns: torch.Tensor, cfg: PPOConfig, pcgrad_tasks: torch.Tensor | None,
                       generator: torch.Generator) -> dict[str, torch.Tensor]:
    """The clipped-surrogate loss with value and entropy terms (Schulman et al. 2017, eq. 9) of one minibatch,
    its gradient set by autograd; with ``pcgrad_tasks`` (each row's task), PCGrad's combination of the tasks'
    own gradients. Returns the parts ``ppo_update`` records, as ``ppo_grad.loss_and_grad`` does."""
    logprob, entropy_b, value = policy.evaluate_actions(x, actions)
    logratio = logprob - old_logprob
    ratio = logratio.exp()
    pg = torch.max(-adv * ratio, -adv * ratio.clamp(1 - cfg.clip_coef, 1 + cfg.clip_coef))
    v_sq = (value - returns).pow(2)
    pg_loss, v_loss, entropy = pg.mean(), 0.5 * v_sq.mean(), entropy_b.mean()
    loss = pg_loss - cfg.ent_coef * entropy + cfg.vf_coef * v_loss
    if pcgrad_tasks is None:
        loss.backward()
    else:
        pcgrad_backward(policy, [pg[m].mean() - cfg.ent_coef * entropy_b[m].mean() + cfg.vf_coef * 0.5 * v_sq[m].mean()
                                 for m in (pcgrad_tasks == t for t in pcgrad_tasks.unique())], generator)
    return {"loss": loss.detach(), "pg_loss": pg_loss, "v_loss": v_loss, "entropy": entropy, "logratio": logratio,
            "ratio": ratio}


def adam(policy: nn.Module, learning_rate: float) -> Adam:
    """PPO's optimiser (eps 1e-5, CleanRL's), with the fused kernel (rl/optim.py)."""
    return Adam(policy.parameters(), learning_rate)


def train_ppo(factories: Sequence[EnvFactory], observation_space: gym.spaces.Box, action_space: ActionSpace,
              cfg: PPOConfig, seed: int, progress: Progress | None = None, policy: ActorCritic | None = None,
              task_ids: Sequence[int] | None = None, arch: Arch = "mlp",
              log_dir: str | Path | None = None, env_processes: int = 1,
              gradient_surgery: bool = False, context: np.ndarray | None = None,
              mask_out: MaskOut | None = None) -> TrainResult:
    """Train one policy on the tasks behind ``factories``.

    By default a new policy whose task j is factories[j]. To fine-tune, pass ``policy`` (trained further in
    place) and ``task_ids``, each factory's task index in that policy's task space. ``arch`` picks the
    network of a new policy (``ARCHS`` in policy.py; ``context``, the tasks' metadata, for CARE). With
    ``log_dir``, every update's statistics and each task's episode return go to a TensorBoard event file there
    (``rl/telemetry.py``). With ``env_processes=2`` half of the envs step in a worker process (slow envs; the
    results do not change).
    ``gradient_surgery`` combines the tasks' gradients by PCGrad (rl/pcgrad.py); ``mask_out`` leaves diverging
    tasks out of each update (PaCo's stabilisers, rl/paco.py; its resets are logged as ``paco_resets``).
    """
    n_tasks = len(factories)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    if policy is None:
        policy = ActorCritic(observation_space.shape[0], action_space, n_tasks, cfg.hidden_sizes,
                             cfg.task_conditioned, arch, context)
    ids = np.asarray(task_ids if task_ids is not None else range(n_tasks))
    optimizer = adam(policy, cfg.learning_rate)
    local = np.repeat(np.arange(n_tasks), cfg.envs_per_task)
    runner = TaskRunner([factories[int(j)] for j in local], ids[local], seed=seed, gamma=cfg.gamma,
                        processes=env_processes)
    record = TrainingRecord(cfg.steps_per_task, cfg.num_steps * cfg.envs_per_task, n_tasks, progress, log_dir)
    try:  # the envs (and an env worker process) are released whatever happens
        for it in range(record.iterations):
            record.anneal(optimizer, cfg.learning_rate, it)
            rollout = runner.collect(policy, cfg.num_steps)
            try:
                stats = ppo_update(policy, optimizer, rollout, cfg, generator, gradient_surgery, mask_out)
                check_finite(policy)
            except Diverged as exc:
                raise Diverged(f"{exc} at update {it + 1} of {record.iterations} (learning rate "
                               f"{cfg.learning_rate:g})") from None
            returns = _mean_return_per_task(rollout, ids)
            if mask_out is not None:
                stats["paco_resets"] = mask_out.resets
            record.add(it, {f"task{int(t)}": r for t, r in zip(ids, returns, strict=True)},
                       {**stats, "learning_rate": optimizer.param_groups[0]["lr"]})
    finally:
        runner.close()
    return record.result(policy)


def _mean_return_per_task(rollout: Rollout, ids: np.ndarray) -> list[float]:
    """Mean return of the finished episodes of each factory's task, in factory order."""
    position = {int(t): j for j, t in enumerate(ids)}
    sums, counts = np.zeros(len(ids)), np.zeros(len(ids))
    for task, ret in rollout.episode_returns:
        sums[position[task]] += ret
        counts[position[task]] += 1
    with np.errstate(invalid="ignore"):
        return (sums / counts).tolist()
