"""Benchmarks of the estimator's hot paths. Each yields JSON-able dicts, one per measured setting, every
figure of a dict measured side by side in the same process. Run them with ``policygradex bench ...`` or
the scripts under ``benchmarks/``; they are never timed tests.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from policygradex.parallel import resolve_device, torch_threads  # light: the bench runs on a bare GPU machine

# Actor hidden widths for about 0.5M, 3M and 20M parameters with 64 observation numbers and 8 actions.
POLICY_SIZES = {"0.5M": (700, 700), "3M": (1220, 1220, 1220), "20M": (3150, 3150, 3150)}


def _rate(fn: Callable[[], Any], items: int, device: torch.device, min_seconds: float = 1.0,
          max_repeats: int = 20, warmup: bool = True) -> float:
    """Items per second of ``fn`` (after one warm-up call), repeated for at least ``min_seconds``."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if warmup:
        fn()
        sync()
    start, repeats = time.perf_counter(), 0
    while repeats < max_repeats and (repeats == 0 or time.perf_counter() - start < min_seconds):
        fn()
        repeats += 1
    sync()
    return items * repeats / (time.perf_counter() - start)


def _features_row(size: str, transitions: int, d: int, gaussian_transitions: int | None, dev: torch.device,
                  memory_bytes: int) -> dict[str, Any]:
    import gymnasium as gym

    from policygradex.estimate.projection import FactoredProjector, GaussianProjector
    from policygradex.rl.policy import ActorCritic

    torch.manual_seed(0)
    policy = ActorCritic(64, gym.spaces.Discrete(8), n_tasks=1, hidden_sizes=POLICY_SIZES[size],
                         task_conditioned=False).to(dev)
    params = sum(p.numel() for p in policy.actor.parameters())
    obs = torch.randn(transitions, 64, device=dev)
    task = torch.zeros(transitions, dtype=torch.long, device=dev)
    with torch.no_grad():
        actions = policy.policy(obs, task).sample()

    def floor() -> None:
        policy.zero_grad()
        policy.log_prob(policy.policy(obs, task), actions).sum().backward()

    row: dict[str, Any] = {"bench": "features", "device": str(dev), "size": size, "params": params,
                           "transitions": transitions, "d": d, "floor_tps": round(_rate(floor, transitions, dev))}
    factored = FactoredProjector(policy, d, seed=0)
    factored.mats = [(p.to(dev), q.to(dev)) for p, q in factored.mats]
    row["factored_tps"] = round(_rate(lambda: factored.features(policy, obs, task, actions), transitions, dev))
    row["factored_vs_floor"] = round(row["factored_tps"] / row["floor_tps"], 3)
    if params * 4 * 2 > memory_bytes:
        row["gaussian_tps"], row["note"] = None, "gaussian skipped: one per-sample gradient exceeds the budget"
        return row
    # The reference back-end runs on the CPU on one full batch (as many per-sample gradients as the memory
    # budget holds), since it regenerates P for every batch.
    policy = policy.cpu()
    gaussian = GaussianProjector(policy, d, seed=0, memory_bytes=memory_bytes)
    n = min(gaussian_transitions or gaussian.batch, transitions)
    args = (policy, obs[:n].cpu(), task[:n].cpu(), actions[:n].cpu())
    row["gaussian_tps"] = round(_rate(lambda: gaussian.features(*args), n, torch.device("cpu"), min_seconds=0.0,
                                      max_repeats=1, warmup=False), 3)
    row["gaussian_transitions"] = n
    row["factored_vs_gaussian"] = round(row["factored_tps"] / row["gaussian_tps"], 1)
    return row


def bench_features(sizes: list[str] | None = None, transitions: int = 2048, d: int = 400,
                   gaussian_transitions: int | None = None, device: str | None = None,
                   memory_bytes: int = 2 * 2**30) -> Iterator[dict[str, Any]]:
    """Transitions per second: floor (batched forward+backward of sum log pi), factored, gaussian."""
    dev = resolve_device(device)
    with torch_threads(os.cpu_count()):
        for size in sizes or list(POLICY_SIZES):
            yield _features_row(size, transitions, d, gaussian_transitions, dev, memory_bytes)


def bench_surrogate(m: int = 1000, d: int = 400, rows_per_task: int = 2048, n_tasks: int = 20, seed: int = 0,
                    device: str | None = None) -> Iterator[dict[str, Any]]:
    """newton-stats against exact on real cartpole features: wall time of all m subsets (solve and score;
    every subset solved, no deduplication), and how far the two agree. 20 tasks by default, so that the
    1000 subsets of half the tasks are distinct."""
    from scipy.stats import spearmanr

    from policygradex.config import Config, EstimateConfig
    from policygradex.estimate.subsets import sample_subsets
    from policygradex.estimate.surrogate import newton_from_stats, solve_mm, subset_scores
    from policygradex.experiments.pipeline import Pipeline
    from policygradex.tasks import make_family

    fam = make_family("cartpole", n_tasks=n_tasks, seed=seed)
    cfg = Config(seed=seed, estimate=EstimateConfig(transitions_per_task=rows_per_task, proj_dim=d))
    with Pipeline(fam, cfg, None, progress=False) as pipe:
        store = pipe.features(pipe.meta_policy())
    rng = np.random.default_rng(seed)
    subsets = sample_subsets(n_tasks, None, 10**9, m, rng)  # exactly m subsets (repeats allowed for small n)
    ridge = cfg.estimate.ridge
    start = time.perf_counter()
    stats = store.stats  # computed once when the store is built; timed here for completeness
    stats_s = time.perf_counter() - start
    start = time.perf_counter()
    fast = subset_scores(store, subsets, newton_from_stats(stats, subsets, ridge))
    newton_s = time.perf_counter() - start
    start = time.perf_counter()
    betas, iterations = solve_mm(store, subsets, ridge, device=device)
    exact = subset_scores(store, subsets, betas)
    exact_s = time.perf_counter() - start
    beta_fast = newton_from_stats(stats, subsets, ridge)
    rel = ((beta_fast - betas).norm(dim=1) / betas.norm(dim=1)).median()
    mask = subsets.astype(bool)
    yield {"bench": "surrogate", "device": str(resolve_device(device)), "m": m,
           "distinct_subsets": len(np.unique(subsets, axis=0)), "d": store.d, "rows_per_task": rows_per_task,
           "n_tasks": n_tasks, "newton_stats_s": round(newton_s, 3), "exact_s": round(exact_s, 2),
           "exact_iterations": iterations, "stats_s": round(stats_s, 3),
           "spearman": round(float(spearmanr(fast[mask], exact[mask]).statistic), 4),
           "beta_rel_error_median": round(float(rel), 4),
           "speedup": round(exact_s / newton_s, 1) if newton_s > 0 else math.inf}


def _mild_cartpole(n_tasks: int, seed: int):
    """CartPole-v1 with only the pole's half-length drawn from 0.4-0.6 m: tasks that differ mildly and never
    conflict, so the right answer is one group."""
    from policygradex.tasks import cartpole
    from policygradex.tasks.family import TaskFamily

    lengths = np.random.default_rng([seed, 0x3117]).uniform(0.4, 0.6, n_tasks).round(3)
    factories = [cartpole.CartPoleFactory(length=float(x)) for x in lengths]
    return TaskFamily.from_envs("mild-cartpole", factories, [f"len{x:.3f}-{i}" for i, x in enumerate(lengths)])


def _copies(n_tasks: int, seed: int):
    """The same CartPole-v1 n times (only the seeds of its episodes differ): nothing to split."""
    import functools

    import gymnasium as gym

    from policygradex.tasks.family import TaskFamily

    return TaskFamily.from_envs("copies", [functools.partial(gym.make, "CartPole-v1") for _ in range(n_tasks)],
                                [f"copy{i}" for i in range(n_tasks)])


def _planted_100(n_tasks: int, seed: int):
    """planted with 100 tasks in 10 hidden clusters, with planted's defaults."""
    from policygradex.tasks import FAMILIES, planted

    family = planted.make_family(100, seed, n_clusters=10)
    family.defaults = FAMILIES["planted"].defaults
    return family


GROUPING_FAMILIES: dict[str, tuple[Callable[[int, int], Any], bool]] = {
    "copies": (_copies, True),
    "mild-cartpole": (_mild_cartpole, True),
    "planted": (lambda n, seed: _builtin("planted", seed), False),
    "planted-100x10": (_planted_100, False),
    "cartpole": (lambda n, seed: _builtin("cartpole", seed), False),
    "lunar_lander": (lambda n, seed: _builtin("lunar_lander", seed), False),
}
"""name -> (seed -> family, whether the right answer is one group)."""


def _builtin(name: str, seed: int):
    from policygradex.tasks import make_family

    return make_family(name, seed=seed)


def bench_grouping(families: list[str], seeds: list[int], n_tasks: int = 8, quick: bool = False,
                   family_seed: int | None = None) -> Iterator[dict[str, Any]]:
    """One row per (family, seed): the grouping the default configuration gives, against the known answer
    (a family's true groups, one group for the families with nothing to split, or cartpole's force split),
    with the null test's p-value, the bootstrap's stability and what the calibration cost. The family is
    drawn with the run's seed, as ``policygradex run --seed S`` does, unless ``family_seed`` fixes it (as
    ``compare`` does)."""
    import dataclasses

    from policygradex.cluster.significance import nmi
    from policygradex.config import Config
    from policygradex.experiments.pipeline import Pipeline

    for name in families:
        build, one_group = GROUPING_FAMILIES[name]
        for seed in seeds:
            family = build(n_tasks, seed if family_seed is None else family_seed)
            cfg = dataclasses.replace(Config.for_family(family, quick), seed=seed)
            start = time.perf_counter()
            with Pipeline(family, cfg, None, progress=False) as pipe:
                est = pipe.estimate()
                grouping = pipe.group(est)
            total = time.perf_counter() - start
            secs = pipe.seconds
            truth = family.true_groups
            if truth is None and name == "cartpole":
                reversed_ = [i for i, t in enumerate(family.tasks) if t.params["reversed"]]
                truth = [[i for i in range(family.n_tasks) if i not in reversed_], reversed_]
            n = family.n_tasks
            conf = grouping.confidence
            yield {"bench": "grouping", "family": name, "seed": seed,
                   "family_seed": seed if family_seed is None else family_seed, "n": n, "m": int(len(est.subsets)),
                   "k": grouping.k, "k_expected": 1 if one_group else (len(truth) if truth else None),
                   "nmi_true": None if truth is None else round(nmi(truth, grouping.groups, n), 4),
                   "null_p": None if grouping.null_p is None else round(grouping.null_p, 4),
                   "stability": None if conf is None else round(conf.stability, 4),
                   "estimate_seconds": round(sum(secs.get(k, 0.0) for k in ("meta_train", "features", "surrogate")),
                                             2),
                   "calibration_seconds": round(secs.get("calibration", 0.0) + secs.get("group", 0.0), 2),
                   "total_seconds": round(total, 2),
                   "groups": [[family.task_names[i] for i in g] for g in grouping.groups]}
