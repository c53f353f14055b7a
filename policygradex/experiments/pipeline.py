"""The pipeline, stage by stage, each stage cached in the run folder.

    1 meta-train theta*  ->  2 gradient features  ->  3 subset surrogates + affinity  ->  4 groups
    ->  5 one policy per group (PolicyGradEx and baselines)  ->  6 evaluation  ->  report

A stage whose artifact is already in the run folder is loaded instead of recomputed (the folder's
config.json guarantees it was made with the same settings).
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from policygradex import io
from policygradex.cluster.sdp import Grouping, partition
from policygradex.config import Config, PPOConfig
from policygradex.errors import PGXError
from policygradex.estimate.affinity import affinity_from_scores
from policygradex.estimate.features import collect_features
from policygradex.estimate.projection import make_projector
from policygradex.estimate.store import GradientStore
from policygradex.estimate.subsets import sample_subsets
from policygradex.estimate.surrogate import solve_subsets, subset_scores
from policygradex.experiments.groupings import random_groups, single_group
from policygradex.experiments.progress import StageProgress
from policygradex.experiments.run_folder import RunFolder
from policygradex.parallel import map_local
from policygradex.rl.evaluate import evaluate
from policygradex.rl.policy import ActorCritic, load_policy, save_policy
from policygradex.rl.ppo import train_ppo
from policygradex.tasks.family import EnvFactory, TaskFamily

A = TypeVar("A")
K = TypeVar("K")


def derive_seed(seed: int, *keys: int | str) -> int:
    """An independent, reproducible seed for one purpose (one stage, one group)."""
    ints = [k if isinstance(k, int) else zlib.crc32(k.encode()) for k in keys]
    return int(np.random.SeedSequence([seed, *ints]).generate_state(1)[0] % (2**31))


@dataclass
class AffinityResult:
    """What stages 1-3 produce: the n x n affinity and what it was computed from."""

    affinity: np.ndarray
    subsets: np.ndarray
    """(m, n) boolean membership of the sampled subsets."""
    scores: np.ndarray
    """(m, n) f(S, i), NaN where i is not in S."""
    task_names: list[str]
    feature_dim: int
    seconds: dict[str, float] = field(default_factory=dict)


@dataclass
class RunResult:
    out: Path | None
    affinity: np.ndarray
    grouping: Grouping
    metrics: dict[str, Any]

    @property
    def groups(self) -> list[list[int]]:
        return self.grouping.groups


@dataclass
class GroupJob:
    """One downstream unit: train a policy on a group's tasks, then evaluate it on each of them."""

    factories: list[EnvFactory]
    family: TaskFamily
    ppo: PPOConfig
    seed: int
    eval_seed: int
    eval_episodes: int
    deterministic: bool


def train_and_evaluate(job: GroupJob) -> dict[str, Any]:
    start = time.perf_counter()
    result = train_ppo(job.factories, job.family.observation_space, job.family.action_space, job.ppo, job.seed)
    ev = evaluate(result.policy, job.factories, job.eval_episodes, job.eval_seed, deterministic=job.deterministic)
    return {"returns": ev.returns.tolist(), "success": None if ev.success is None else ev.success.tolist(),
            "curve": result.curve, "seconds": time.perf_counter() - start}


class Pipeline:
    def __init__(self, family: TaskFamily, cfg: Config, out: str | Path | None = None,
                 progress: bool = True) -> None:
        torch.set_num_threads(1)
        self.family, self.cfg = family, cfg
        identity = {"family": family.spec, "config": cfg.identity()}
        self.folder = RunFolder.open(out, io.jsonable(identity)) if out is not None else None
        self.progress = StageProgress(progress)
        self.seconds: dict[str, float] = self.folder.timings() if self.folder else {}
        self._inner_seconds = 0.0

    # -- caching -------------------------------------------------------------------------------------
    def _stage(self, name: str, artifact: str, compute: Callable[[], A], save: Callable[[A, Path], None],
               load: Callable[[Path], A]) -> A:
        path = self.folder / artifact if self.folder else None
        if path is not None and path.exists():
            try:
                value = load(path)
                self.progress.note(f"[dim]{name}: reusing {path}[/dim]")
                return value
            except Exception as exc:  # truncated or corrupted: never used, recomputed
                self.progress.warn(f"{path} is damaged ({type(exc).__name__}); recomputing it")
        start, inner_before = time.perf_counter(), self._inner_seconds
        value = compute()
        # A stage may run the stages it depends on (surrogate -> features -> meta_train): keep its own time.
        self.seconds[name] = time.perf_counter() - start - (self._inner_seconds - inner_before)
        self._inner_seconds += self.seconds[name]
        if path is not None:
            save(value, path)
            self.folder.record_time(name, self.seconds[name])
        return value

    # -- stage 1 -------------------------------------------------------------------------------------
    def meta_policy(self) -> ActorCritic:
        fam, ppo = self.family, self.cfg.meta

        def compute() -> ActorCritic:
            with self.progress.stage("1/5 meta-train theta*", ppo.steps_per_task * fam.n_tasks) as advance:
                return train_ppo(fam.factories(range(fam.n_tasks)), fam.observation_space, fam.action_space,
                                 ppo, derive_seed(self.cfg.seed, "meta"), advance).policy

        return self._stage("meta_train", "meta_policy.pt", compute, save_policy,
                           lambda p: load_policy(p, fam.action_space))

    # -- stage 2 -------------------------------------------------------------------------------------
    def features(self, policy: ActorCritic) -> GradientStore:
        est = self.cfg.estimate

        def compute(path: Path | None) -> GradientStore:
            with self.progress.stage("2/5 gradient features", 1) as advance:
                projector = make_projector(est.projector, policy, est.proj_dim,
                                           derive_seed(self.cfg.seed, "projection"))
                store = collect_features(policy, self.family, projector, est, self.cfg.meta,
                                         derive_seed(self.cfg.seed, "features"), path)
                advance(1)
                return store

        path = self.folder / "store" if self.folder else None
        return self._stage("features", "store/meta.json", lambda: compute(path), lambda store, p: None,
                           lambda p: GradientStore.open(p.parent))

    # -- stage 3 -------------------------------------------------------------------------------------
    def estimate(self, policy: ActorCritic | None = None) -> AffinityResult:
        """Stages 1-3: theta* (or, in memory only, the given policy), features, subset surrogates, affinity."""
        if policy is not None and self.folder is not None:
            raise PGXError("estimate(policy=...) is computed in memory only; use a Pipeline without a run folder")
        est, n = self.cfg.estimate, self.family.n_tasks

        def compute() -> dict[str, np.ndarray]:
            store = self.features(policy or self.meta_policy())
            rng = np.random.default_rng(derive_seed(self.cfg.seed, "subsets"))
            subsets = sample_subsets(n, est.subset_size, est.pair_coverage, est.max_subsets, rng)
            with self.progress.stage("3/5 subset surrogates", len(subsets)) as advance:
                betas = solve_subsets(store, subsets, est.solver, est.ridge)
                scores = subset_scores(store, subsets, betas)
                advance(len(subsets))
            return {"subsets": subsets, "scores": scores, "affinity": affinity_from_scores(subsets, scores)}

        def load(path: Path) -> dict[str, np.ndarray]:
            with np.load(path) as f:
                return dict(f)

        out = self._stage("surrogate", "surrogate.npz", compute, lambda v, p: io.write_npz(p, **v), load)
        if self.folder:
            io.write_npy(self.folder / "affinity.npy", out["affinity"])
        return AffinityResult(out["affinity"], out["subsets"], out["scores"], self.family.task_names,
                              est.proj_dim, dict(self.seconds))

    # -- stage 4 -------------------------------------------------------------------------------------
    def group(self, affinity: np.ndarray) -> Grouping:
        c, names = self.cfg.cluster, self.family.task_names

        def compute() -> Grouping:
            return partition(affinity, c.k, c.trace_penalty, c.sdp_solver, derive_seed(self.cfg.seed, "group"))

        def save(g: Grouping, path: Path) -> None:
            io.write_json(path, {"tasks": names, "groups": [[names[i] for i in grp] for grp in g.groups],
                                 "k": g.k, "method": g.method})

        def load(path: Path) -> Grouping:
            data = io.read_json(path)
            return Grouping([[names.index(t) for t in grp] for grp in data["groups"]], data["method"])

        return self._stage("group", "groups.json", compute, save, load)

    # -- stages 5-6 ----------------------------------------------------------------------------------
    def groupings(self, grouping: Grouping) -> dict[str, list[list[int]]]:
        n = self.family.n_tasks
        out = {"policygradex": grouping.groups}
        if "single" in self.cfg.downstream.baselines:
            out["single"] = single_group(n)
        if "random" in self.cfg.downstream.baselines:
            out["random"] = random_groups(n, grouping.k, np.random.default_rng(derive_seed(self.cfg.seed, "random")))
        return out

    def downstream(self, groupings: dict[str, list[list[int]]]) -> dict[str, dict[str, Any]]:
        """Train one policy per distinct group (a group shared by two groupings trains once), evaluate."""
        ds, names = self.cfg.downstream, self.family.task_names
        units = sorted({tuple(g) for groups in groupings.values() for g in groups}, key=lambda g: -len(g))
        start = time.perf_counter()
        results, done = self.units(
            "4/5 train groups", units, self._unit_path, train_and_evaluate,
            lambda u: GroupJob(self.family.factories(u), self.family, self.cfg.train,
                               derive_seed(self.cfg.seed, "group", ",".join(map(str, u))),
                               derive_seed(self.cfg.seed, "eval", ",".join(map(str, u))), ds.eval_episodes,
                               ds.deterministic_eval),
            weight=len)
        if done:
            self.seconds["downstream"] = time.perf_counter() - start + self.seconds.get("downstream", 0.0)
            if self.folder:
                self.folder.record_time("downstream", self.seconds["downstream"])
        return {name: _grouping_result(groups, results, names) for name, groups in groupings.items()}

    def units(self, label: str, keys: list[K], path_of: Callable[[K], Path | None], fn: Callable[[Any], dict],
              job_of: Callable[[K], Any], weight: Callable[[K], int] = lambda key: 1) -> tuple[dict[K, dict], int]:
        """Independent units of work, resumable: a unit whose JSON (``path_of(key)``) exists is read back, the
        others run across the worker processes, each saved as it finishes. Returns (results by key, units run)."""
        results: dict[K, dict] = {}
        todo = []
        for key in keys:
            path = path_of(key)
            if path is not None and path.exists():
                results[key] = io.read_json(path)
            else:
                todo.append(key)
        with self.progress.stage(label, sum(weight(k) for k in keys)) as advance:
            advance(sum(weight(k) for k in results))

            def done(i: int, res: dict[str, Any]) -> None:
                results[todo[i]] = res
                if (path := path_of(todo[i])) is not None:
                    io.write_json(path, res)
                advance(weight(todo[i]))

            map_local(fn, [job_of(k) for k in todo], self.cfg.workers, done)
        return results, len(todo)

    def _unit_path(self, unit: tuple[int, ...]) -> Path | None:
        return self.folder / f"downstream/group-{'-'.join(map(str, unit))}.json" if self.folder else None

    # -- everything ----------------------------------------------------------------------------------
    def run(self) -> RunResult:
        total_start = time.perf_counter()
        est = self.estimate()
        grouping = self.group(est.affinity)
        self.progress.note(f"groups ({grouping.method}, k={grouping.k}): "
                           + "  ".join("{" + ", ".join(self.family.task_names[i] for i in g) + "}"
                                       for g in grouping.groups))
        results = self.downstream(self.groupings(grouping))
        metrics = {
            "family": self.family.spec,
            "task_names": self.family.task_names,
            "description": self.family.description,
            "seed": self.cfg.seed,
            "estimate": {"m": int(len(est.subsets)), "d": est.feature_dim, "solver": self.cfg.estimate.solver,
                         "transitions_per_task": self.cfg.estimate.transitions_per_task},
            "grouping": {"k": grouping.k, "method": grouping.method,
                         "nmi_true": None if self.family.true_groups is None
                         else nmi(self.family.true_groups, grouping.groups, self.family.n_tasks)},
            "budget_steps_per_task": {"meta": self.cfg.meta.steps_per_task, "train": self.cfg.train.steps_per_task},
            "stage_seconds": {k: round(v, 2) for k, v in self.seconds.items()},
            "run_seconds_this_call": round(time.perf_counter() - total_start, 2),
            "groupings": results,
        }
        if self.folder:
            from policygradex.experiments.report import write_report

            io.write_json(self.folder / "metrics.json", metrics)
            with self.progress.stage("5/5 report", 1) as advance:
                write_report(self.folder.path)
                advance(1)
            self.progress.note(f"report: {self.folder / 'report.html'}")
        return RunResult(self.folder.path if self.folder else None, est.affinity, grouping, metrics)


def nmi(groups_a: list[list[int]], groups_b: list[list[int]], n: int) -> float:
    """Normalised mutual information between two partitions of n tasks."""
    from sklearn.metrics import normalized_mutual_info_score

    labels = np.zeros((2, n), dtype=int)
    for row, groups in enumerate((groups_a, groups_b)):
        for c, g in enumerate(groups):
            labels[row, g] = c
    return float(normalized_mutual_info_score(labels[0], labels[1]))


def _grouping_result(groups: list[list[int]], results: dict[tuple[int, ...], dict[str, Any]],
                     names: list[str]) -> dict[str, Any]:
    per_task: dict[str, float] = {}
    success: dict[str, float] = {}
    curves = []
    for g in groups:
        res = results[tuple(g)]
        per_task.update({names[i]: float(r) for i, r in zip(g, res["returns"], strict=True)})
        if res.get("success") is not None:
            success.update({names[i]: float(r) for i, r in zip(g, res["success"], strict=True)})
        curves.append(res["curve"])
    out = {
        "groups": [[names[i] for i in g] for g in groups],
        "k": len(groups),
        "per_task": {n: per_task[n] for n in names if n in per_task},
        "mean": float(np.mean(list(per_task.values()))),
        "curve": _mean_curve(curves),
    }
    if success:
        out["per_task_success"] = {n: success[n] for n in names if n in success}
        out["success_rate"] = float(np.mean(list(success.values())))
    return out


def _mean_curve(curves: list[list]) -> list[list[float]]:
    """Task-averaged training return against env steps per task (groups share the same step grid)."""
    steps = [x for x, _ in curves[0]]
    out = []
    for j, x in enumerate(steps):
        vals = [v for curve in curves if j < len(curve) for v in curve[j][1] if v is not None and v == v]
        out.append([x, float(np.mean(vals)) if vals else float("nan")])
    return out

