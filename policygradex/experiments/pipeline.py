"""The pipeline, stage by stage, each stage cached in the run folder.

    1 meta-train theta*  ->  2 gradient features  ->  3 subset surrogates + affinity  ->  4 groups
    ->  5 one policy per group (PolicyGradEx and baselines)  ->  6 evaluation  ->  report

A stage whose artifact is already in the run folder is loaded instead of recomputed (the folder's
config.json guarantees it was made with the same settings).
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from policygradex import io
from policygradex.cluster.grouping import group
from policygradex.cluster.sdp import Grouping, partition
from policygradex.cluster.significance import nmi, partition_values
from policygradex.config import Config, TrainerName, check_fits
from policygradex.errors import PGXError
from policygradex.estimate.features import check_features, collect_features
from policygradex.estimate.projection import make_projector
from policygradex.estimate.resample import calibrate
from policygradex.estimate.store import GradientStore
from policygradex.estimate.subsets import sample_subsets
from policygradex.estimate.surrogate import estimate_subsets
from policygradex.experiments.downstream import GroupJob, GroupUnit, grouping_result, train_and_evaluate
from policygradex.experiments.groupings import cosine_matrix, independent_groups, random_groups, route, single_group
from policygradex.experiments.progress import StageProgress
from policygradex.experiments.results import (
    EstimateSummary,
    GroupingResult,
    GroupingSummary,
    RunMetrics,
    StepBudget,
    read_groups,
    write_groups,
    write_run_metrics,
)
from policygradex.experiments.run_folder import MISSING, RunFolder
from policygradex.parallel import Executor, make_executor, resolve_device, torch_threads
from policygradex.rl.policy import ActorCritic, load_policy, save_policy
from policygradex.rl.ppo import stopping_divergence, train_ppo
from policygradex.rl.telemetry import summarize
from policygradex.seeds import derive_seed
from policygradex.tasks.family import TaskFamily
from policygradex.tasks.vector import env_processes

META_STATS = "tensorboard/meta_train/summary.json"
"""How theta*'s training ended (mean of each PPO statistic over its last 10% of updates)."""
A = TypeVar("A")
K = TypeVar("K")


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
    null_values: np.ndarray | None = None
    """(draws, K): value of the best k groups, k = 1..K, of the affinity on data resampled with the tasks
    exchangeable (``cluster/significance.py``)."""
    bootstrap: np.ndarray | None = None
    """(draws, n, n): affinities on bootstrap resamples of each task's transitions."""
    group_seed: int = 0
    """Seed of the rounding in stage 4, so that ``pgx.group_tasks(result)`` repeats the run's grouping."""


@dataclass
class RunResult:
    out: Path | None
    affinity: np.ndarray
    grouping: Grouping
    metrics: RunMetrics
    """What the run's ``metrics.json`` holds (``experiments/results.py``)."""

    @property
    def groups(self) -> list[list[int]]:
        return self.grouping.groups


class Pipeline:
    def __init__(self, family: TaskFamily, cfg: Config, out: str | Path | None = None,
                 progress: bool = True) -> None:
        self.family, self.cfg = family, cfg
        check_fits(cfg, family.n_tasks)  # before any work, and before a folder records settings that cannot run
        self.device = resolve_device(cfg.device)
        """Where the estimator's linear algebra runs (projection, subset solves, null draws); RL stays on the CPU."""
        self.folder: RunFolder | None = None
        if out is not None:
            identity = {"family": family.spec, "config": cfg.identity()}
            if not family.builtin:
                identity["environments"] = family.fingerprints()
            self.folder = RunFolder.open(out, io.jsonable(identity))
        self.progress = StageProgress(progress)
        self.seconds: dict[str, float] = self.folder.timings() if self.folder else {}
        self._inner_seconds = 0.0
        self._values: dict[str, Any] = {}
        """Each stage's value once computed or loaded: later stages that need it again get it from here."""
        self.executor: Executor = make_executor(cfg.executor, cfg.workers, cfg.ray_address)
        """Runs the independent items of every stage; its workers start at first use, ``close()`` ends them."""

    def close(self) -> None:
        self.executor.close()

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def run_folder(self) -> RunFolder:
        """``folder`` where there is one by construction: a Pipeline made with ``out``, or a stage that has an
        artifact path (only a run folder gives one)."""
        assert self.folder is not None, "this pipeline was made without a run folder (out=None)"
        return self.folder

    # -- caching -------------------------------------------------------------------------------------
    def _stage(self, name: str, artifact: str, compute: Callable[[Path | None], A], load: Callable[[Path], A],
               save: Callable[[A, Path], None] | None = None) -> A:
        """The stage's value: loaded from ``artifact`` (a file or a folder of the run folder) when it is there and
        matches its checksum, else computed and sealed.

        ``compute`` gets the artifact's path (None without a run folder). A stage that streams its artifact
        (the features) writes it there itself; the others return their value and ``save`` writes it."""
        if name in self._values:  # asked again by a later stage of this pipeline
            return self._values[name]
        path = self.folder / artifact if self.folder else None
        if self.folder and (value := self.folder.reuse(artifact, load, self.progress.warn)) is not MISSING:
            self.progress.note(f"[dim]{name}: reusing {path}[/dim]")
            self._values[name] = value
            return value
        start, inner_before = time.perf_counter(), self._inner_seconds
        with torch_threads(1):  # small policies: one thread is fastest; a stage that gains from more asks for them
            value = compute(path)
        # A stage may run the stages it depends on (surrogate -> features -> meta_train): keep its own time.
        self.seconds[name] = time.perf_counter() - start - (self._inner_seconds - inner_before)
        self._inner_seconds += self.seconds[name]
        if path is not None:  # a run folder's
            if save is not None:
                save(value, path)
            self.run_folder.seal(artifact)
            self.run_folder.record_time(name, self.seconds[name])
        self._values[name] = value
        return value

    # -- stage 1 -------------------------------------------------------------------------------------
    def meta_policy(self) -> ActorCritic:
        fam, ppo = self.family, self.cfg.meta

        def compute(_: Path | None) -> ActorCritic:
            factories = fam.factories(range(fam.n_tasks))
            # stage 1 runs alone: the worker processes' cores are free for half of a slow family's envs
            local_cores = min(self.cfg.workers, os.cpu_count() or 1) if self.cfg.executor == "local" else 1
            processes = env_processes(factories[0], fam.n_tasks * ppo.envs_per_task, local_cores)
            with (self.progress.stage("1/5 meta-train theta*", ppo.steps_per_task * fam.n_tasks) as advance,
                  stopping_divergence("meta-training theta* (stage 1)", "--meta-learning-rate")):
                result = train_ppo(factories, fam.observation_space, fam.action_space, ppo,
                                   derive_seed(self.cfg.seed, "meta"), advance, log_dir=self._log_dir("meta_train"),
                                   env_processes=processes)
            if self.folder:  # how theta*'s training ended, for metrics.json (a resumed run reads it back)
                io.write_json(self.folder / META_STATS, summarize(result.stats))
            return result.policy

        return self._stage("meta_train", "meta_policy.pt", compute, lambda p: load_policy(p, fam.action_space),
                           save_policy)

    def _log_dir(self, name: str) -> str | None:
        """Where a training writes its TensorBoard events: ``tensorboard/<name>`` in the run folder."""
        return str(self.folder / "tensorboard" / name) if self.folder else None

    # -- stage 2 -------------------------------------------------------------------------------------
    def features(self, policy: ActorCritic) -> GradientStore:
        est = self.cfg.estimate

        def compute(folder: Path | None) -> GradientStore:  # streams the store into its folder
            n = self.family.n_tasks
            with self.progress.stage("2/5 gradient features", n) as advance:
                projector = make_projector(est.projector, policy, est.proj_dim,
                                           derive_seed(self.cfg.seed, "projection"))
                return collect_features(policy, self.family.factories(range(n)), projector, est, self.cfg.meta,
                                        derive_seed(self.cfg.seed, "features"), folder,
                                        self.executor, advance, str(self.device))

        return self._stage("features", "store", compute, GradientStore.open)

    # -- stage 3 -------------------------------------------------------------------------------------
    def estimate(self, policy: ActorCritic | None = None) -> AffinityResult:
        """Stages 1-3: theta* (or, in memory only, the given policy), features, subset surrogates, affinity."""
        if policy is not None and self.folder is not None:
            raise PGXError("estimate(policy=...) is computed in memory only; use a Pipeline without a run folder")
        est, n = self.cfg.estimate, self.family.n_tasks

        def compute(_: Path | None) -> dict[str, np.ndarray]:
            store = self.features(policy or self.meta_policy())
            check_features(store, self.family.task_names)
            rng = np.random.default_rng(derive_seed(self.cfg.seed, "subsets"))
            subsets = sample_subsets(n, est.subset_size, est.pair_coverage, est.max_subsets, rng)
            with self.progress.stage("3/5 subset surrogates", len(subsets)) as advance:
                out = estimate_subsets(store, subsets, est.solver, est.ridge, self.device)
                advance(len(subsets))
            return out

        out = self._stage("surrogate", "surrogate.npz", compute, _read_npz, lambda v, p: io.write_npz(p, **v))
        if self.folder:
            io.write_npy(self.folder / "affinity.npy", out["affinity"])
        cal = self.calibration(policy, out["subsets"])
        return AffinityResult(out["affinity"], out["subsets"], out["scores"], self.family.task_names,
                              est.proj_dim, dict(self.seconds), cal["null_values"], cal["bootstrap"],
                              derive_seed(self.cfg.seed, "group"))

    def calibration(self, policy: ActorCritic | None, subsets: np.ndarray) -> dict[str, np.ndarray]:
        """Stage 3b: the partition values of null draws' affinities, and bootstrap affinities (estimate/resample.py)."""
        c, ridge = self.cfg.cluster, self.cfg.estimate.ridge

        def compute(_: Path | None) -> dict[str, np.ndarray]:
            store = self.features(policy or self.meta_policy())
            draws = c.null_draws + c.bootstrap_draws
            with self.progress.stage("3/5 null and bootstrap draws", draws) as advance, torch_threads(os.cpu_count()):
                null, boot = calibrate(store, subsets, ridge, c.null_draws, c.bootstrap_draws, c.block_length,
                                       derive_seed(self.cfg.seed, "null"), derive_seed(self.cfg.seed, "bootstrap"),
                                       self.device)
                advance(draws)
            return {"null_values": np.stack([partition_values(U) for U in null]), "bootstrap": boot}

        return self._stage("calibration", "calibration.npz", compute, _read_npz, lambda v, p: io.write_npz(p, **v))

    # -- stage 4 -------------------------------------------------------------------------------------
    def group(self, est: AffinityResult) -> Grouping:
        """Stage 4: k (fixed, or tested against the null), the SDP's groups, their bootstrap confidence."""
        names = self.family.task_names

        def compute(_: Path | None) -> Grouping:
            return group(est.affinity, self.cfg.cluster, est.group_seed, est.null_values, est.bootstrap)

        return self._stage("group", "groups.json", compute, lambda p: read_groups(p, names),
                           lambda g, p: write_groups(p, g, names))

    # -- stages 5-6 ----------------------------------------------------------------------------------
    def groupings(self, grouping: Grouping, affinity: np.ndarray) -> dict[str, list[list[int]]]:
        """PolicyGradEx's groups, its fixed-k variants (``ablate_k``) and the baselines, as task indices."""
        n, ds, c = self.family.n_tasks, self.cfg.downstream, self.cfg.cluster
        out = {"policygradex": grouping.groups}
        for k in ds.ablate_k:
            out[f"policygradex-k{k}"] = partition(affinity, k, 0.0, c.sdp_solver,
                                                  derive_seed(self.cfg.seed, "group")).groups
        k = grouping.k
        for name in ds.baselines:
            if name == "single":
                out[name] = single_group(n)
            elif name == "random":
                out[name] = random_groups(n, k, np.random.default_rng(derive_seed(self.cfg.seed, "random")))
            elif name == "independent":
                out[name] = independent_groups(n)
            elif name == "gradient-similarity":
                out[name] = self.gradient_similarity_groups(k)
        return out

    def gradient_similarity_groups(self, k: int) -> list[list[int]]:
        """The gradient-similarity baseline: the cosines of the tasks' mean projected gradients at theta*,
        partitioned into k groups by the same SDP as PolicyGradEx's affinity."""
        sim = cosine_matrix(self.features(self.meta_policy()).stats.b.numpy())
        return partition(sim, k, 0.0, self.cfg.cluster.sdp_solver, derive_seed(self.cfg.seed, "gradsim")).groups

    def test_features(self) -> GradientStore:
        """Each test task's projected policy gradients at theta* (``route_steps`` transitions), what routing reads."""
        est, adapt_cfg = self.cfg.estimate, self.cfg.adapt
        n_tests = len(self.family.test_tasks)
        if n_tests < adapt_cfg.test_tasks:
            raise PGXError(f"the meta protocol evaluates {adapt_cfg.test_tasks} held-out test tasks but family "
                           f"{self.family.name!r} has {n_tests}; lower --adapt-test-tasks or use "
                           "--downstream-protocol multi-task")

        def compute(folder: Path | None) -> GradientStore:  # streams the store into its folder
            policy = self.meta_policy()
            projector = make_projector(est.projector, policy, est.proj_dim, derive_seed(self.cfg.seed, "projection"))
            factories = [t.make for t in self.family.test_tasks[:adapt_cfg.test_tasks]]
            route_cfg = dataclasses.replace(est, transitions_per_task=adapt_cfg.route_steps)
            return collect_features(policy, factories, projector, route_cfg, self.cfg.meta,
                                    derive_seed(self.cfg.seed, "route"), folder, self.executor,
                                    device=str(self.device), unseen=True)

        return self._stage("route", "test_store", compute, GradientStore.open)

    def routes(self, groupings: dict[str, list[list[int]]]) -> dict[str, list[int]]:
        """Each grouping's group of every test task (meta protocol), by ``adapt.route_rule``."""
        train = self.features(self.meta_policy()).stats
        test = self.test_features()
        return {name: route(self.cfg.adapt.route_rule, test, train, groups, self.cfg.estimate.ridge)
                for name, groups in groupings.items()}

    def trainer_rows(self, grouping: Grouping) -> dict[str, tuple[list[list[int]], TrainerName]]:
        """The multi-task trainer baselines (``trainer_baselines``), name -> (groups, trainer): each trainer on every
        task as one policy; under the meta protocol also PolicyGradEx's groups by multi-task PPO, their comparison."""
        ds = self.cfg.downstream
        rows: dict[str, tuple[list[list[int]], TrainerName]] = {
            trainer: (single_group(self.family.n_tasks), trainer) for trainer in ds.trainer_baselines}
        if rows and ds.protocol == "meta":
            rows["policygradex-mt"] = (grouping.groups, "ppo")
        return rows

    def downstream(self, groupings: dict[str, list[list[int]]],
                   trainer_rows: dict[str, tuple[list[list[int]], TrainerName]] | None = None,
                   ) -> dict[str, GroupingResult]:
        """Train one policy per distinct group (a group shared by two groupings trains once), evaluate. The
        ``trainer_rows`` (``trainer_rows()``) train under the multi-task protocol with their own trainers."""
        ds, names = self.cfg.downstream, self.family.task_names
        routes: dict[str, list[int]] = {}
        tests_of: dict[tuple[int, ...], list[int]] = {}
        if ds.protocol == "meta":
            routes = self.routes(groupings)
            for name, groups in groupings.items():
                for t, g in enumerate(routes[name]):
                    tests_of.setdefault(tuple(groups[g]), []).append(t)
        rows: dict[str, tuple[list[list[int]], TrainerName | None]] = {n: (g, None) for n, g in groupings.items()}
        for name, (groups, trainer) in (trainer_rows or {}).items():
            own = trainer == ds.trainer and ds.protocol == "multi-task"  # the run's own units: trained once
            rows[name] = (groups, None if own else trainer)
        units = sorted({GroupUnit(tuple(g), () if trainer else tuple(sorted(set(tests_of.get(tuple(g), [])))), trainer)
                        for groups, trainer in rows.values() for g in groups}, key=lambda u: -len(u.tasks))
        start = time.perf_counter()

        def job(u: GroupUnit) -> GroupJob:
            seed, eval_seed = u.seeds(self.cfg.seed)
            ds_u, train = ds, self.cfg.train
            if u.trainer is not None:  # a trainer baseline: task ids on, evaluated on its training tasks
                ds_u = dataclasses.replace(ds, trainer=u.trainer, protocol="multi-task")
                train = dataclasses.replace(train, task_conditioned=True)
            return GroupJob(list(u.tasks), self.family, train, ds_u, self.cfg.adapt, seed,
                            eval_seed, [(t, derive_seed(self.cfg.seed, "test", t)) for t in u.tests],
                            self._log_dir(u.name))

        results, done = self.units(
            "4/5 train groups", units,
            lambda u: self.folder / "downstream" / u.file_name if self.folder else None,
            train_and_evaluate, job, weight=lambda u: len(u.tasks))
        if done:
            self.seconds["downstream"] = time.perf_counter() - start + self.seconds.get("downstream", 0.0)
            if self.folder:
                self.folder.record_time("downstream", self.seconds["downstream"])
        test_names = [t.name for t in self.family.test_tasks]
        out = {}
        for name, (groups, of) in rows.items():
            by_group = {u.tasks: res for u, res in results.items() if u.trainer == of}
            out[name] = grouping_result(groups, by_group, names, routes.get(name) if of is None else None, test_names)
        return out

    def units(self, label: str, keys: list[K], path_of: Callable[[K], Path | None], fn: Callable[[Any], dict],
              job_of: Callable[[K], Any], weight: Callable[[K], int] = lambda key: 1) -> tuple[dict[K, dict], int]:
        """Independent units of work, resumable: a unit whose JSON (``path_of(key)``) exists is read back, the
        others run across the worker processes, each saved as it finishes. Returns (results by key, units run)."""
        results: dict[K, dict] = {}
        todo = []
        for key in keys:
            path = path_of(key)
            if path is not None and (res := self.run_folder.reuse(self._relative(path), io.read_json,
                                                                  self.progress.warn)) is not MISSING:
                results[key] = res
            else:
                todo.append(key)
        with self.progress.stage(label, sum(weight(k) for k in keys)) as advance:
            advance(sum(weight(k) for k in results))

            def done(i: int, res: dict[str, Any]) -> None:
                results[todo[i]] = res
                if (path := path_of(todo[i])) is not None:
                    io.write_json(path, res)
                    self.run_folder.seal(self._relative(path))
                advance(weight(todo[i]))

            self.executor.map(fn, [job_of(k) for k in todo], done)
        return results, len(todo)

    def _relative(self, path: Path) -> str:
        return path.relative_to(self.run_folder.path).as_posix()

    # -- everything ----------------------------------------------------------------------------------
    def run(self) -> RunResult:
        """Every stage, then the report; the executor's workers are released at the end."""
        with self, torch_threads(1):
            return self._run()

    def _run(self) -> RunResult:
        total_start = time.perf_counter()
        est = self.estimate()
        grouping = self.group(est)
        self.progress.note(describe(grouping, self.family.task_names))
        results = self.downstream(self.groupings(grouping, est.affinity), self.trainer_rows(grouping))
        metrics = RunMetrics(
            family=self.family.spec,
            task_names=self.family.task_names,
            description=self.family.description,
            seed=self.cfg.seed,
            estimate=EstimateSummary(m=int(len(est.subsets)), d=est.feature_dim, solver=self.cfg.estimate.solver,
                                     transitions_per_task=self.cfg.estimate.transitions_per_task),
            grouping=GroupingSummary(
                k=grouping.k, method=grouping.method, reason=grouping.reason, null_p=grouping.null_p,
                stability=None if grouping.confidence is None else grouping.confidence.stability,
                nmi_true=None if self.family.true_groups is None
                else nmi(self.family.true_groups, grouping.groups, self.family.n_tasks)),
            budget_steps_per_task=StepBudget(meta=self.cfg.meta.steps_per_task, train=self.cfg.train.steps_per_task),
            trainer=self.cfg.downstream.trainer,
            evaluated_on=(f"{self.cfg.adapt.test_tasks} held-out test tasks, each adapted for "
                          f"{self.cfg.adapt.steps} environment steps from the policy of the group it is routed to"
                          if self.cfg.downstream.protocol == "meta" else "the training tasks"),
            meta_train_stats=io.read_json(self.folder / META_STATS)
            if self.folder and (self.folder / META_STATS).exists() else None,
            stage_seconds={k: round(v, 2) for k, v in self.seconds.items()},
            run_seconds_this_call=round(time.perf_counter() - total_start, 2),
            groupings=results,
        )
        if self.folder:
            from policygradex.experiments.report import write_report

            write_run_metrics(self.folder / "metrics.json", metrics)
            with self.progress.stage("5/5 report", 1) as advance:
                write_report(self.folder.path)
                advance(1)
            self.progress.note(f"report: {self.folder / 'report.html'}")
        return RunResult(self.folder.path if self.folder else None, est.affinity, grouping, metrics)


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as f:
        return dict(f)


def describe(grouping: Grouping, names: list[str]) -> str:
    """One line for the terminal: the groups, and why this many."""
    groups = "  ".join("{" + ", ".join(names[i] for i in g) + "}" for g in grouping.groups)
    trust = "" if grouping.confidence is None else f"; bootstrap stability {grouping.confidence.stability:.2f}"
    return f"groups (k={grouping.k}): {groups}\n{grouping.reason}{trust}"
