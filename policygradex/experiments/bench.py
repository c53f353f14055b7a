"""Benchmarks of the estimator's hot paths. Each yields JSON-able dicts, one per measured setting, every
figure of a dict measured side by side in the same process. Run them with ``policygradex bench ...`` or
the scripts under ``benchmarks/``; they are never timed tests.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
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
    "lottery": (lambda n, seed: _builtin("lottery", seed), False),
    "cartpole": (lambda n, seed: _builtin("cartpole", seed), False),
    "lunar_lander": (lambda n, seed: _builtin("lunar_lander", seed), False),
}
"""name -> (seed -> family, whether the right answer is one group)."""


def _builtin(name: str, seed: int):
    from policygradex.tasks import make_family

    return make_family(name, seed=seed)


def bench_grouping(families: list[str], seeds: list[int], n_tasks: int = 8, quick: bool = False,
                   family_seed: int | None = None, out: str | Path | None = None) -> Iterator[dict[str, Any]]:
    """One row per (family, seed): the grouping the default configuration gives, against the known answer
    (a family's true groups, one group for the families with nothing to split, or cartpole's force split),
    with the null test's p-value, the bootstrap's stability, what the calibration cost and, for the families
    with a known answer, the NMI of gradient similarity's groups at the same k. The family is
    drawn with the run's seed, as ``policygradex run --seed S`` does, unless ``family_seed`` fixes it (as
    ``compare`` does)."""
    import dataclasses

    from policygradex.cluster.significance import nmi
    from policygradex.config import Config
    from policygradex.experiments.pipeline import Pipeline

    for name in families:
        build, one_group = GROUPING_FAMILIES[name]
        for seed in seeds:
            drawn_with = seed if family_seed is None else family_seed
            family = build(n_tasks, drawn_with)
            cfg = dataclasses.replace(Config.for_family(family, quick), seed=seed)
            truth = family.true_groups
            if truth is None and name == "cartpole":
                reversed_ = [i for i, t in enumerate(family.tasks) if t.params["reversed"]]
                truth = [[i for i in range(family.n_tasks) if i not in reversed_], reversed_]
            folder = None if out is None else Path(out) / f"{name}-family{drawn_with}-seed{seed}"
            start = time.perf_counter()
            with Pipeline(family, cfg, folder, progress=False) as pipe:
                est = pipe.estimate()
                grouping = pipe.group(est)
                gradsim = None if truth is None else pipe.gradient_similarity_groups(grouping.k)
            total = time.perf_counter() - start
            secs = pipe.seconds
            n = family.n_tasks
            conf = grouping.confidence
            yield {"bench": "grouping", "family": name, "seed": seed,
                   "family_seed": drawn_with, "n": n, "m": int(len(est.subsets)),
                   "k": grouping.k, "k_expected": 1 if one_group else (len(truth) if truth else None),
                   "nmi_true": None if truth is None else round(nmi(truth, grouping.groups, n), 4),
                   "nmi_gradient_similarity": None if gradsim is None else round(nmi(truth, gradsim, n), 4),
                   "null_p": None if grouping.null_p is None else round(grouping.null_p, 4),
                   "stability": None if conf is None else round(conf.stability, 4),
                   "estimate_seconds": round(sum(secs.get(k, 0.0) for k in ("meta_train", "features", "surrogate")),
                                             2),
                   "calibration_seconds": round(secs.get("calibration", 0.0) + secs.get("group", 0.0), 2),
                   "total_seconds": round(total, 2),
                   "groups": [[family.task_names[i] for i in g] for g in grouping.groups]}


PPO_ENVS: dict[str, tuple[int, float]] = {
    "CartPole-v1": (100_000, 2.5e-3),
    "LunarLander-v3": (200_000, 3e-4),
    "reach-v3": (50_000, 3e-4),
    "Pendulum-v1": (100_000, 3e-4),
}
"""Environments of ``bench ppo`` -> (default steps, learning rate); reach-v3 is Meta-World's (the metaworld extra),
Pendulum-v1 a cheap env with Gaussian actions (not in the default list)."""


def _ppo_env(name: str) -> Callable[[], Any]:
    """A factory of the env: CartPole-v1 as the cartpole family's factory with CartPole-v1's constants (our
    trainer then steps it batched; the same dynamics, tests/test_cartpole.py), the others through gymnasium."""
    import functools

    import gymnasium as gym

    if name == "CartPole-v1":
        from policygradex.tasks.cartpole import CartPoleFactory

        return CartPoleFactory()
    if name == "reach-v3":
        from policygradex.tasks import meta_world

        return functools.partial(meta_world.make_env, name, 0, 1, 0)
    return functools.partial(gym.make, name)


def _mean_return(act: Callable[[np.ndarray], Any], factory: Callable[[], Any], episodes: int, seed: int) -> float:
    """Mean return of ``episodes`` episodes (seeds seed, seed+1, ...) acting with ``act(obs)``."""
    env, total = factory(), 0.0
    for e in range(episodes):
        obs, _ = env.reset(seed=seed + e)
        done = False
        while not done:
            obs, reward, terminated, truncated, _ = env.step(act(obs))
            total += float(reward)
            done = terminated or truncated
    env.close()
    return total / episodes


def _ours(factory: Callable[[], Any], cfg: Any, seed: int,
          processes: int = 1) -> tuple[float, Callable[[np.ndarray], Any]]:
    """Train with ``train_ppo`` (``processes=2``: half of the env copies in a worker process, as stage 1 does
    for a slow env): (seconds, deterministic act(obs))."""
    from policygradex.rl.ppo import train_ppo

    probe = factory()
    start = time.perf_counter()
    policy = train_ppo([factory], probe.observation_space, probe.action_space, cfg, seed,
                       env_processes=processes).policy
    seconds = time.perf_counter() - start
    probe.close()
    task = torch.zeros(1, dtype=torch.long)

    def act(obs: np.ndarray) -> Any:
        with torch.no_grad():
            a = policy.act(torch.as_tensor(obs, dtype=torch.float32)[None], task, deterministic=True)
        return policy.env_action(a)[0]

    return seconds, act


def _sb3(factory: Callable[[], Any], cfg: Any, seed: int) -> tuple[float, Callable[[np.ndarray], Any]]:
    """Train with Stable-Baselines3's PPO at ``cfg``'s settings: (seconds, deterministic act(obs))."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env
    from torch import nn

    lr = cfg.learning_rate
    start = time.perf_counter()  # building the envs counts, as it does for ours
    model = PPO("MlpPolicy", make_vec_env(factory, n_envs=cfg.envs_per_task, seed=seed),
                learning_rate=lambda remaining: lr * remaining, n_steps=cfg.num_steps,
                batch_size=cfg.envs_per_task * cfg.num_steps // cfg.num_minibatches, n_epochs=cfg.update_epochs,
                gamma=cfg.gamma, gae_lambda=cfg.gae_lambda, clip_range=cfg.clip_coef, ent_coef=cfg.ent_coef,
                vf_coef=cfg.vf_coef, max_grad_norm=cfg.max_grad_norm, seed=seed, device="cpu",
                policy_kwargs={"net_arch": {"pi": list(cfg.hidden_sizes), "vf": list(cfg.hidden_sizes)},
                               "activation_fn": nn.Tanh})
    model.learn(total_timesteps=cfg.steps_per_task)
    return time.perf_counter() - start, lambda obs: model.predict(obs, deterministic=True)[0]


def bench_ppo(envs: list[str], seeds: list[int], steps: int | None = None,
              eval_episodes: int = 10) -> Iterator[dict[str, Any]]:
    """Our ``train_ppo`` against Stable-Baselines3's PPO (the ``bench`` extra), side by side in this process, at
    the same hyper-parameters (8 envs x 128 steps, 4 epochs x 4 minibatches, separate 64x64 tanh actor and
    critic, orthogonal init, lr annealed to 0, clip 0.2, entropy 0.01, one torch thread) and step count; each
    trainer's time includes building its envs, after one untimed rollout's training of each. Ours steps half of
    a slow env's copies in a second process, as stage 1 does (``env_processes`` in the row); Stable-Baselines3
    steps them in one (``DummyVecEnv``).
    One row per env: environment steps per second of training (means over seeds), and the mean return of the
    trained policies, deterministic, over the same ``eval_episodes`` seeded episodes."""
    import dataclasses
    import functools

    from policygradex.config import PPOConfig
    from policygradex.tasks.vector import env_processes

    for name in envs:
        default_steps, lr = PPO_ENVS[name]
        factory = _ppo_env(name)
        cfg = PPOConfig(steps_per_task=steps or default_steps, envs_per_task=8, num_steps=128, learning_rate=lr,
                        task_conditioned=False)
        processes = env_processes(factory, cfg.envs_per_task, min(2, os.cpu_count() or 1))
        seconds: dict[str, list[float]] = {"ours": [], "sb3": []}
        returns: dict[str, list[float]] = {"ours": [], "sb3": []}
        with torch_threads(1):
            # one untimed rollout's training of each first: the rates are of training, not of a process's
            # first use of torch, gymnasium and the env
            trainers = (("ours", functools.partial(_ours, processes=processes)), ("sb3", _sb3))
            for _, train in trainers:
                train(factory, dataclasses.replace(cfg, steps_per_task=cfg.envs_per_task * cfg.num_steps), seeds[0])
            for seed in seeds:
                for who, train in trainers:
                    took, act = train(factory, cfg, seed)
                    seconds[who].append(took)
                    returns[who].append(round(_mean_return(act, factory, eval_episodes, 10_000), 1))
        rate = {who: cfg.steps_per_task / float(np.mean(s)) for who, s in seconds.items()}
        yield {"bench": "ppo", "env": name, "steps": cfg.steps_per_task, "seeds": seeds, "env_processes": processes,
               "steps_per_s": round(rate["ours"]), "sb3_steps_per_s": round(rate["sb3"]),
               "ratio": round(rate["ours"] / rate["sb3"], 2), "final_return": round(float(np.mean(returns["ours"])), 1),
               "sb3_final_return": round(float(np.mean(returns["sb3"])), 1), "final_returns": returns["ours"],
               "sb3_final_returns": returns["sb3"]}


def bench_routing(seeds: list[int], family_seed: int = 0, quick: bool = False) -> Iterator[dict[str, Any]]:
    """Routing of the cartpole family's test tasks by each rule (``ROUTERS``), one row per seed of the run, the
    family drawn with ``family_seed`` (as ``compare`` draws it): how many of the test tasks go to a group whose
    training tasks mostly have the other force direction (misrouted; a group of exactly half reversed tasks
    counts as forward), for PolicyGradEx's groups and the gradient-similarity baseline's. Reads no returns;
    stages 1-4 at the family's defaults."""
    import dataclasses

    from policygradex.config import Config
    from policygradex.experiments.groupings import ROUTERS, route
    from policygradex.experiments.pipeline import Pipeline
    from policygradex.tasks import make_family

    family = make_family("cartpole", seed=family_seed)
    train_rev = np.array([t.params["reversed"] for t in family.tasks])
    for seed in seeds:
        base = Config.for_family(family, quick)
        cfg = dataclasses.replace(base, seed=seed,
                                  downstream=dataclasses.replace(base.downstream, baselines=("gradient-similarity",)))
        with Pipeline(family, cfg, None, progress=False) as pipe:
            est = pipe.estimate()
            groupings = pipe.groupings(pipe.group(est), est.affinity)
            test, train = pipe.test_features(), pipe.features(pipe.meta_policy()).stats
        test_rev = np.array([t.params["reversed"] for t in family.test_tasks[:test.n_tasks]])
        row: dict[str, Any] = {"bench": "routing", "family": "cartpole", "family_seed": family_seed, "seed": seed,
                               "test_tasks": int(test.n_tasks)}
        for name, groups in groupings.items():
            majority = [train_rev[g].mean() > 0.5 for g in groups]
            row[f"{name}_k"] = len(groups)
            for rule in ROUTERS.names():
                to = route(rule, test, train, groups, cfg.estimate.ridge)
                row[f"{name}_misrouted_{rule}"] = int(sum(majority[g] != r for g, r in zip(to, test_rev, strict=True)))
        yield row
