"""MAML (Finn et al. 2017) for meta-RL: a policy meta-trained so that one policy-gradient step on a little
data of a new task adapts it to that task; and that adaptation, applied to held-out test tasks.

Inner rule (``inner_update``): theta' = theta - alpha * grad L_pg(theta; support), with
L_pg = -mean(log pi(a|s) * A) and A the GAE advantages (standardised) of a support rollout of ``steps``
environment steps. Outer objective: PPO's clipped surrogate of the *adapted* policy on a query rollout
collected with theta', differentiated w.r.t. theta. Exact MAML differentiates through the inner gradient
(``second_order``: ``create_graph=True``, a Hessian-vector product per task); first-order MAML treats the
inner gradient as a constant, so d L(theta') / d theta = d L / d theta'. Only the actor adapts; the critic
(no task input: test tasks are unseen) is fitted to the returns of both rollouts.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from torch.func import functional_call

from policygradex.config import AdaptConfig, PPOConfig
from policygradex.rl.policy import ActorCritic
from policygradex.rl.ppo import (
    Diverged,
    Progress,
    TrainingRecord,
    TrainResult,
    _mean_return_per_task,
    adam,
    check_finite,
)
from policygradex.rl.rollout import Rollout, TaskRunner, compute_gae, standardize
from policygradex.tasks.family import ActionSpace, EnvFactory

Params = dict[str, torch.Tensor]


def actor_params(policy: ActorCritic) -> Params:
    """The parameters an adaptation changes: the actor's (and a Gaussian policy's log std)."""
    return {k: v for k, v in policy.named_parameters() if k.startswith("actor.") or k == "log_std"}


def _advantages(rollout: Rollout, cfg: PPOConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat (standardised advantages, returns) of a rollout."""
    adv, ret = compute_gae(rollout.rewards, rollout.values, rollout.dones, rollout.last_value, cfg.gamma,
                           cfg.gae_lambda)
    return standardize(adv.reshape(-1)), ret.reshape(-1)


def pg_loss(policy: ActorCritic, params: Params, rollout: Rollout, adv: torch.Tensor) -> torch.Tensor:
    """-mean(log pi_params(a|s) * A): the vanilla policy-gradient loss of the inner update."""
    obs, task, actions = rollout.flat()
    dist = functional_call(policy, params, (obs, task))
    return -(policy.log_prob(dist, actions) * adv).mean()


def inner_update(policy: ActorCritic, params: Params, support: Rollout, adv: torch.Tensor, lr: float,
                 create_graph: bool) -> Params:
    """theta' = theta - lr * grad L_pg(theta). Without ``create_graph`` the gradient is a constant (first order)."""
    grads = torch.autograd.grad(pg_loss(policy, params, support, adv), list(params.values()),
                                create_graph=create_graph)
    return {k: p - lr * g for (k, p), g in zip(params.items(), grads, strict=True)}


def with_params(policy: ActorCritic, params: Params, into: ActorCritic | None = None) -> ActorCritic:
    """A detached copy of ``policy`` with ``params`` loaded (for collecting rollouts at theta'). With ``into``, a
    copy made earlier is overwritten instead (a deep copy per task and iteration was 6% of a MAML training)."""
    if into is None:
        moved = copy.deepcopy(policy)
        moved.load_state_dict({k: v.detach() for k, v in params.items()}, strict=False)
        return moved
    with torch.no_grad():
        for (name, theta), p in zip(policy.named_parameters(), into.parameters(), strict=True):
            p.copy_(params.get(name, theta))
    return into


def _support_steps(adapt: AdaptConfig, n_envs: int) -> int:
    return max(1, math.ceil(adapt.steps / (adapt.inner_updates * n_envs)))


def adapt(policy: ActorCritic, factory: EnvFactory, adapt_cfg: AdaptConfig, ppo: PPOConfig, seed: int,
          n_envs: int = 2) -> ActorCritic:
    """The policy after ``adapt_cfg.steps`` environment steps of one task spent on ``inner_updates`` inner
    updates (``policy`` itself is left as it is). Seeded: envs and action sampling."""
    runner = TaskRunner([factory] * n_envs, [0] * n_envs, seed=seed, gamma=ppo.gamma)
    current = copy.deepcopy(policy)
    for u in range(adapt_cfg.inner_updates):
        support = runner.collect(current, _support_steps(adapt_cfg, n_envs), seed=seed + u)
        adv, _ = _advantages(support, ppo)
        params = {k: v.detach().requires_grad_() for k, v in actor_params(current).items()}
        current = with_params(current, inner_update(current, params, support, adv, adapt_cfg.inner_lr, False))
    runner.close()
    return current


def train_maml(factories: Sequence[EnvFactory], observation_space: gym.spaces.Box, action_space: ActionSpace,
               ppo: PPOConfig, adapt_cfg: AdaptConfig, seed: int, progress: Progress | None = None,
               log_dir: str | Path | None = None) -> TrainResult:
    """Meta-train one policy (no task input) on the tasks behind ``factories``.

    Each iteration, per task: a support rollout of ``adapt_cfg.steps`` steps at theta, the inner update to
    theta', a query rollout of ``ppo.num_steps`` steps per env at theta'; then ``ppo.update_epochs`` Adam steps
    on the summed outer loss (the inner update recomputed each time, as it depends on theta). The budget
    ``ppo.steps_per_task`` counts both rollouts. The curve records the query (post-adaptation) returns; with
    ``log_dir`` the outer loss and each task's support and query returns go to a TensorBoard event file.
    """
    n_tasks, n_envs = len(factories), ppo.envs_per_task
    torch.manual_seed(seed)
    policy = ActorCritic(observation_space.shape[0], action_space, 1, ppo.hidden_sizes, task_conditioned=False)
    optimizer = adam(policy, ppo.learning_rate)
    adapted_policy = copy.deepcopy(policy)  # theta' of the task at hand, for its query rollout
    runners = [TaskRunner([f] * n_envs, [0] * n_envs, seed=seed + 7919 * j, gamma=ppo.gamma)
               for j, f in enumerate(factories)]
    support_steps = _support_steps(adapt_cfg, n_envs)
    record = TrainingRecord(ppo.steps_per_task, n_envs * (support_steps + ppo.num_steps), n_tasks, progress, log_dir,
                            stats_tag="maml/", returns_tag="query_return/")
    for it in range(record.iterations):
        record.anneal(optimizer, ppo.learning_rate, it)
        batches, query_returns, support_returns = [], [], []
        for runner in runners:
            support = runner.collect(policy, support_steps)
            s_adv, s_ret = _advantages(support, ppo)
            adapted = inner_update(policy, actor_params(policy), support, s_adv, adapt_cfg.inner_lr, False)
            query = runner.collect(with_params(policy, adapted, into=adapted_policy), ppo.num_steps)
            q_adv, q_ret = _advantages(query, ppo)
            batches.append((support, s_adv, s_ret, query, q_adv, q_ret))
            query_returns.append(_mean_return_per_task(query, np.zeros(1, dtype=int))[0])
            support_returns.append(_mean_return_per_task(support, np.zeros(1, dtype=int))[0])
        losses = []
        for _ in range(ppo.update_epochs):
            loss = sum((_outer_loss(policy, b, ppo, adapt_cfg) for b in batches), torch.zeros(())) / n_tasks
            optimizer.zero_grad()
            loss.backward()
            optimizer.clip_grad_norm_(ppo.max_grad_norm)
            optimizer.step()
            losses.append(loss.detach())
        try:
            check_finite(policy)
        except Diverged as exc:
            raise Diverged(f"{exc} at MAML iteration {it + 1} of {record.iterations} (learning rate "
                           f"{ppo.learning_rate:g}, inner step {adapt_cfg.inner_lr:g})") from None
        stats = {"outer_loss": torch.stack(losses).mean().item(), "support_return": _nanmean(support_returns),
                 "query_return": _nanmean(query_returns)}
        record.add(it, {f"task{j}": r for j, r in enumerate(query_returns)}, stats)
    for runner in runners:
        runner.close()
    return record.result(policy)


def _nanmean(values: list[float]) -> float:
    """Mean of the finite values; NaN, without numpy's warning, when no rollout finished an episode."""
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


def _outer_loss(policy: ActorCritic, batch: tuple, ppo: PPOConfig, adapt_cfg: AdaptConfig) -> torch.Tensor:
    """Clipped surrogate of theta'(theta) on the query rollout, plus value loss on both rollouts and entropy."""
    support, s_adv, s_ret, query, q_adv, q_ret = batch
    adapted = inner_update(policy, actor_params(policy), support, s_adv, adapt_cfg.inner_lr, adapt_cfg.second_order)
    obs, task, actions = query.flat()
    dist = functional_call(policy, adapted, (obs, task))
    ratio = (policy.log_prob(dist, actions) - query.logprobs.reshape(-1)).exp()
    clipped = ratio.clamp(1 - ppo.clip_coef, 1 + ppo.clip_coef)
    pg = torch.max(-q_adv * ratio, -q_adv * clipped).mean()
    entropy = dist.entropy()
    entropy = (entropy.sum(-1) if policy.continuous else entropy).mean()
    s_obs, s_task, _ = support.flat()
    v_loss = 0.5 * ((policy.value(obs, task) - q_ret).pow(2).mean()
                    + (policy.value(s_obs, s_task) - s_ret).pow(2).mean())
    return pg - ppo.ent_coef * entropy + ppo.vf_coef * v_loss
