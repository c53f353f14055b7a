"""Groupings compared downstream: PolicyGradEx's own and the baselines, as lists of task indices."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from policygradex.estimate.store import GradientStore, TaskStats
from policygradex.estimate.surrogate import held_out_scores, newton_from_stats
from policygradex.registry import Registry


def single_group(n_tasks: int) -> list[list[int]]:
    """Multi-task training: every task in one policy (k = 1)."""
    return [list(range(n_tasks))]


def random_groups(n_tasks: int, k: int, rng: np.random.Generator) -> list[list[int]]:
    """A uniformly shuffled split into k groups of near-equal size."""
    order = rng.permutation(n_tasks)
    groups = [sorted(part.tolist()) for part in np.array_split(order, min(k, n_tasks))]
    return sorted(groups, key=lambda g: g[0])


def independent_groups(n_tasks: int) -> list[list[int]]:
    """One policy per task (k = n)."""
    return [[i] for i in range(n_tasks)]


def cosine_matrix(b: np.ndarray) -> np.ndarray:
    """Pairwise cosine similarity of the rows of ``b``, zero on the diagonal (the affinity convention)."""
    sim = _unit_rows(b) @ _unit_rows(b).T
    np.fill_diagonal(sim, 0.0)
    return sim


def route_by_cosine(test: GradientStore, train: TaskStats, groups: list[list[int]], ridge: float) -> list[int]:
    """For each test task, the group whose training tasks' mean projected policy gradient at theta* has the
    highest mean cosine with the test task's own."""
    test_b, train_b = test.stats.b.numpy(), train.b.numpy()
    cos = _unit_rows(test_b) @ _unit_rows(train_b).T  # (tests, tasks)
    return np.stack([cos[:, g].mean(axis=1) for g in groups], axis=1).argmax(axis=1).tolist()


def route_by_surrogate(test: GradientStore, train: TaskStats, groups: list[list[int]], ridge: float) -> list[int]:
    """For each test task, the group whose surrogate predicts the largest gain on the test task's own
    transitions at theta*: beta_G is stage 3's solution for the subset G (one Newton step from the training
    tasks' statistics), and f(G, t) = L_t(0) - L_t(beta_G) the score stage 3 gives a member of a subset, here
    on every transition the routing rollout of test task t saw. The same estimate that formed the groups
    decides where a new task belongs; cosines of mean gradients ignore how the transitions' gradients spread."""
    member = np.zeros((len(groups), len(train.b)), dtype=bool)
    for j, g in enumerate(groups):
        member[j, g] = True
    betas = newton_from_stats(train, member, ridge)
    task = test.read("task")
    scores = []
    for t in range(test.n_tasks):
        idx = np.flatnonzero(task == t)  # fit and held-out rows alike: a task's rows are contiguous
        rows = slice(int(idx[0]), int(idx[-1]) + 1)
        z = torch.as_tensor(test.read("z", rows))
        y, w = (torch.as_tensor(test.read(k, rows), dtype=torch.float64) for k in ("y", "w"))
        scores.append(held_out_scores(z, y, w, betas))
    return np.stack(scores).argmax(axis=1).tolist()


Router = Callable[[GradientStore, TaskStats, list[list[int]], float], list[int]]
"""(test tasks' features at theta*, training tasks' statistics, groups, ridge) -> each test task's group."""

# --adapt-route-rule chooses from these; adding one: a Router, one line here, its name in AdaptConfig.route_rule.
ROUTERS: Registry[Router] = Registry("adapt.route_rule", {
    "surrogate": route_by_surrogate,
    "cosine": route_by_cosine,
})


def route(rule: str, test: GradientStore, train: TaskStats, groups: list[list[int]], ridge: float) -> list[int]:
    """Each test task's group under ``rule`` (``ROUTERS``). Reads no test return: only theta*'s rollouts."""
    if len(groups) == 1:
        return [0] * test.n_tasks
    return ROUTERS.get(rule)(test, train, groups, ridge)


def _unit_rows(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
