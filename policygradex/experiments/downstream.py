"""Stages 5-6: one policy per distinct group, trained and evaluated; and how a grouping's results are read.

A *unit* is one group's training tasks plus the test tasks routed to it (meta protocol); a group shared by
two groupings with the same routed tests trains once. ``train_and_evaluate`` runs one unit (in a worker),
``grouping_result`` assembles one grouping's per-task results from its units.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from policygradex.config import AdaptConfig, DownstreamConfig, PPOConfig, TrainerName
from policygradex.experiments.results import GroupingResult
from policygradex.rl.evaluate import evaluate
from policygradex.rl.maml import adapt
from policygradex.rl.ppo import stopping_divergence
from policygradex.rl.telemetry import summarize
from policygradex.rl.trainers import TRAINERS
from policygradex.seeds import derive_seed
from policygradex.tasks.family import EnvFactory, TaskFamily


@dataclass(frozen=True)
class GroupUnit:
    """One downstream unit: a group's training tasks and the test tasks routed to it (meta protocol)."""

    tasks: tuple[int, ...]
    tests: tuple[int, ...] = ()
    trainer: TrainerName | None = None
    """A multi-task trainer baseline's trainer (trained and evaluated under the multi-task protocol); None for the
    run's own trainer and protocol."""

    @property
    def name(self) -> str:
        """``group-0-3-4``, with a trainer of its own that trainer's name (``group-0-1-2.paco``)."""
        return f"group-{'-'.join(map(str, self.tasks))}{f'.{self.trainer}' if self.trainer else ''}"

    @property
    def file_name(self) -> str:
        """``name`` + ``.json``; with routed test tasks a checksum of their list before the suffix."""
        tests = f".tests-{zlib.crc32(repr(self.tests).encode()):08x}" if self.tests else ""
        return f"{self.name}{tests}.json"

    def seeds(self, run_seed: int) -> tuple[int, int]:
        """(training seed, evaluation seed) of the group: set by its tasks alone, whichever groupings share it."""
        key = ",".join(map(str, self.tasks))
        return derive_seed(run_seed, "group", key), derive_seed(run_seed, "eval", key)


@dataclass
class GroupJob:
    """One downstream unit: train a policy on a group's tasks, then evaluate it on each of them (multi-task
    protocol) or adapt it to each test task routed to the group and evaluate that (meta protocol)."""

    tasks: list[int]
    """The group's training tasks (indices into ``family.tasks``); the policy's task j is tasks[j]."""
    family: TaskFamily
    ppo: PPOConfig
    downstream: DownstreamConfig
    adapt: AdaptConfig
    seed: int
    eval_seed: int
    tests: list[tuple[int, int]] = field(default_factory=list)
    """(test task index, its seed) of the test tasks to adapt to (meta protocol)."""
    log_dir: str | None = None
    """Folder of the training's TensorBoard event file (in the run folder), or None."""

    @property
    def factories(self) -> list[EnvFactory]:
        return self.family.factories(self.tasks)

    @property
    def context(self) -> np.ndarray | None:
        """The group's tasks' metadata, standardised over the whole family (what CARE reads), or None."""
        table = self.family.context()
        return None if table is None else table[self.tasks]


def train_and_evaluate(job: GroupJob) -> dict[str, Any]:
    start = time.perf_counter()
    ds, fam = job.downstream, job.family
    trainer = TRAINERS.get(ds.trainer)
    with stopping_divergence("group training (stage 4)", trainer.lower):
        result = trainer.train(job)
    out: dict[str, Any] = {"curve": result.curve, "train_stats": summarize(result.stats)}
    if ds.protocol == "multi-task":
        ev = evaluate(result.policy, job.factories, ds.eval_episodes, job.eval_seed, ds.deterministic_eval)
        out.update(returns=ev.returns.tolist(), success=None if ev.success is None else ev.success.tolist())
    else:
        out["test_returns"], out["test_success"] = {}, {}
        for t, seed in job.tests:
            factory = fam.test_tasks[t].make
            adapted = adapt(result.policy, factory, job.adapt, job.ppo, seed)
            ev = evaluate(adapted, [factory], ds.eval_episodes, seed, deterministic=ds.deterministic_eval)
            out["test_returns"][str(t)] = float(ev.returns[0])
            if ev.success is not None:
                out["test_success"][str(t)] = float(ev.success[0])
    out["seconds"] = time.perf_counter() - start
    return out


def grouping_result(groups: list[list[int]], results: dict[tuple[int, ...], dict[str, Any]], names: list[str],
                     routes: list[int] | None = None, test_names: Sequence[str] = ()) -> GroupingResult:
    """Per-task results of one grouping: its training tasks (multi-task protocol) or, with ``routes`` (the group
    each test task went to), the adapted test tasks (meta protocol)."""
    per_task: dict[str, float] = {}
    success: dict[str, float] = {}
    if routes is None:
        for g in groups:
            res = results[tuple(g)]
            per_task.update({names[i]: float(r) for i, r in zip(g, res["returns"], strict=True)})
            if res.get("success") is not None:
                success.update({names[i]: float(r) for i, r in zip(g, res["success"], strict=True)})
    else:
        for t, to in enumerate(routes):
            res = results[tuple(groups[to])]
            per_task[test_names[t]] = res["test_returns"][str(t)]
            if str(t) in res.get("test_success", {}):
                success[test_names[t]] = res["test_success"][str(t)]
    return GroupingResult(
        groups=[[names[i] for i in g] for g in groups],
        k=len(groups),
        per_task=per_task,
        mean=float(np.mean(list(per_task.values()))),
        curve=mean_curve([results[tuple(g)]["curve"] for g in groups]),
        train_stats=[results[tuple(g)].get("train_stats") for g in groups],  # how each group's training ended
        routed=None if routes is None else [routes.count(j) for j in range(len(groups))],
        routes=routes,
        per_task_success=success or None,
        success_rate=float(np.mean(list(success.values()))) if success else None)


def mean_curve(curves: list[list]) -> list[list[float]]:
    """Pointwise mean of curves of (env steps per task, [values]) on one step grid (NaN and None skipped): the
    task mean of a grouping's groups, or the mean over seeds."""
    steps = [x for x, _ in curves[0]]
    out = []
    for j, x in enumerate(steps):
        vals = [v for curve in curves if j < len(curve) for v in curve[j][1] if v is not None and v == v]
        out.append([x, float(np.mean(vals)) if vals else float("nan")])
    return out

