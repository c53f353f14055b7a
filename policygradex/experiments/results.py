"""Typed records of what a run and a comparison produce, and the one place their JSON files (and stage 4's
groups.json) are written and read.

``RunMetrics`` is a run folder's ``metrics.json`` (one ``GroupingResult`` per grouping); ``CompareResults`` is a
``compare`` folder's ``results.json`` (one ``MethodResult`` per grouping, aggregated over seeds). The JSON layout
is the files' published one: ``to_json`` writes the same keys, nesting and value types as before these records
existed, so ``from_json(d).to_json() == d`` for every file the current code writes. A NaN is written as null
and read back as NaN.

Older files still read: a key added since (``meta_train_stats``, ``train_stats``, ``trainer``, ...) reads as its
default. A key is left out of the JSON only where the writer has always left it out (``routes`` outside the meta
protocol, ``per_task_success`` where the environment reports no success, ...); every other key is written, null
included.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import numpy as np

from policygradex import io
from policygradex.cluster.grouping import RULE_VERSION
from policygradex.cluster.sdp import Grouping
from policygradex.cluster.significance import Confidence
from policygradex.experiments.run_folder import Outdated

Curve = list[list[float]]
"""A learning curve: [environment steps per task, value] points, the value NaN where nothing was measured."""


def _float(x: Any) -> float:
    """A number read from JSON: null (how a NaN is written) back to NaN."""
    return math.nan if x is None else float(x)


def _floats(d: dict[str, Any]) -> dict[str, float]:
    return {k: _float(v) for k, v in d.items()}


def _curve(points: list[list[Any]]) -> Curve:
    return [[x, _float(y)] for x, y in points]


def _present(**optional: Any) -> dict[str, Any]:
    """The optional keys that have a value: the writer leaves the others out of the JSON."""
    return {k: v for k, v in optional.items() if v is not None}


# -- metrics.json ----------------------------------------------------------------------------------------------

@dataclass(kw_only=True)
class GroupingResult:
    """One grouping's results in a run: ``metrics.json``'s ``groupings[name]`` (``downstream.grouping_result``)."""

    groups: list[list[str]]
    """The grouping's groups, as training-task names."""
    k: int
    """Number of groups."""
    per_task: dict[str, float]
    """Mean evaluation return of each evaluated task: the training tasks (multi-task protocol) or the held-out
    test tasks, each adapted from its group's policy (meta protocol)."""
    mean: float
    """Mean of ``per_task`` over the tasks."""
    curve: Curve
    """Training episode return (mean over the groups) against environment steps per task."""
    train_stats: list[dict[str, float] | None] | None = None
    """How each group's training ended (mean of each statistic over its last 10% of updates), in ``groups``'
    order; None in run folders older than the statistics."""
    routed: list[int] | None = None
    """Meta protocol: the number of test tasks routed to each group; else None (absent from the JSON)."""
    routes: list[int] | None = None
    """Meta protocol: the group (index into ``groups``) each test task was routed to, in ``per_task``'s order;
    else None (absent from the JSON)."""
    per_task_success: dict[str, float] | None = None
    """Success rate (0-1) of each evaluated task where the environment reports success; else None (absent)."""
    success_rate: float | None = None
    """Mean of ``per_task_success`` over the tasks; None (absent) where it is."""

    def to_json(self) -> dict[str, Any]:
        return io.jsonable({
            "groups": self.groups, "k": self.k, "per_task": self.per_task, "mean": self.mean, "curve": self.curve,
            **_present(train_stats=self.train_stats, routed=self.routed, routes=self.routes,
                       per_task_success=self.per_task_success, success_rate=self.success_rate)})

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Self:
        stats = d.get("train_stats")
        success = d.get("per_task_success")
        rate = d.get("success_rate")
        return cls(groups=d["groups"], k=d["k"], per_task=_floats(d["per_task"]), mean=_float(d["mean"]),
                   curve=_curve(d["curve"]),
                   train_stats=None if stats is None else [None if s is None else _floats(s) for s in stats],
                   routed=d.get("routed"), routes=d.get("routes"),
                   per_task_success=None if success is None else _floats(success),
                   success_rate=None if rate is None else float(rate))


@dataclass(kw_only=True)
class EstimateSummary:
    """How the affinity was estimated: ``metrics.json``'s ``estimate``."""

    m: int
    """Number of sampled task subsets."""
    d: int
    """Dimension of the projected gradient features."""
    solver: str
    """The subset solver (``estimate.solver``)."""
    transitions_per_task: int
    """Transitions per task collected at theta* for the features."""

    def to_json(self) -> dict[str, Any]:
        return io.jsonable({"m": self.m, "d": self.d, "solver": self.solver,
                            "transitions_per_task": self.transitions_per_task})

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Self:
        return cls(m=d["m"], d=d["d"], solver=d["solver"], transitions_per_task=d["transitions_per_task"])


@dataclass(kw_only=True)
class GroupingSummary:
    """PolicyGradEx's grouping of the run and how far to trust it: ``metrics.json``'s ``grouping``."""

    k: int
    """Number of groups."""
    method: str
    """How the groups were found (``Grouping.method``, e.g. ``sdp-null-test``)."""
    reason: str = ""
    """Why this many groups, in one sentence."""
    null_p: float | None = None
    """How likely noise alone makes splitting look this good, where tested; else None."""
    stability: float | None = None
    """Bootstrap stability of the groups (1 = every resample regroups the same way), where bootstrap draws were
    made; else None."""
    nmi_true: float | None = None
    """NMI against the family's true grouping, where the family has one; else None."""

    def to_json(self) -> dict[str, Any]:
        return io.jsonable({"k": self.k, "method": self.method, "reason": self.reason, "null_p": self.null_p,
                            "stability": self.stability, "nmi_true": self.nmi_true})

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Self:
        return cls(k=d["k"], method=d["method"], reason=d.get("reason") or "", null_p=d.get("null_p"),
                   stability=d.get("stability"), nmi_true=d.get("nmi_true"))


@dataclass(kw_only=True)
class StepBudget:
    """Environment steps per task of the two trainings: ``metrics.json``'s ``budget_steps_per_task``."""

    meta: int
    """Meta-training of theta* (stage 1)."""
    train: int
    """Training of each group's policy (stage 5)."""

    def to_json(self) -> dict[str, Any]:
        return io.jsonable({"meta": self.meta, "train": self.train})

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Self:
        return cls(meta=d["meta"], train=d["train"])


@dataclass(kw_only=True)
class RunMetrics:
    """What a run produces: its ``metrics.json`` (``Pipeline.run``'s ``RunResult.metrics``)."""

    family: dict[str, Any]
    """The task family's spec (``TaskFamily.spec``: name, task names, n_tasks, seed, ...)."""
    task_names: list[str]
    """The training tasks, in index order."""
    description: str = ""
    """The family's one-line description."""
    seed: int
    """The run's seed."""
    estimate: EstimateSummary
    """How the affinity was estimated."""
    grouping: GroupingSummary
    """PolicyGradEx's groups: k, method, why, and how far to trust them."""
    budget_steps_per_task: StepBudget
    """Environment steps per task of meta-training and of each group's training."""
    trainer: str = "ppo"
    """The downstream trainer (``downstream.trainer``); ``ppo`` in run folders older than the key."""
    evaluated_on: str = "the training tasks"
    """What the scores were measured on, in words (the training tasks, or adapted held-out test tasks)."""
    meta_train_stats: dict[str, float] | None = None
    """How theta*'s training ended (mean of each PPO statistic over its last 10% of updates); None without a
    run folder's record of it."""
    stage_seconds: dict[str, float]
    """Wall seconds of each stage, over every call that computed one (rounded to 0.01)."""
    run_seconds_this_call: float | None = None
    """Wall seconds of the call that wrote the file (stages reused from the folder cost nothing)."""
    groupings: dict[str, GroupingResult]
    """Each grouping's results by name: ``policygradex``, its fixed-k variants and the baselines."""

    def to_json(self) -> dict[str, Any]:
        return io.jsonable({
            "family": self.family, "task_names": self.task_names, "description": self.description,
            "seed": self.seed, "estimate": self.estimate.to_json(), "grouping": self.grouping.to_json(),
            "budget_steps_per_task": self.budget_steps_per_task.to_json(), "trainer": self.trainer,
            "evaluated_on": self.evaluated_on, "meta_train_stats": self.meta_train_stats,
            "stage_seconds": self.stage_seconds,
            **_present(run_seconds_this_call=self.run_seconds_this_call),
            "groupings": {name: g.to_json() for name, g in self.groupings.items()}})

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Self:
        groupings = {name: GroupingResult.from_json(g) for name, g in d["groupings"].items()}
        stats = d.get("meta_train_stats")
        return cls(
            family=d["family"],
            # older run folders: the training tasks from PolicyGradEx's groups
            task_names=d.get("task_names") or [t for g in groupings["policygradex"].groups for t in g],
            description=d.get("description") or "", seed=d["seed"],
            estimate=EstimateSummary.from_json(d["estimate"]), grouping=GroupingSummary.from_json(d["grouping"]),
            budget_steps_per_task=StepBudget.from_json(d["budget_steps_per_task"]),
            trainer=d.get("trainer", "ppo"), evaluated_on=d.get("evaluated_on", "the training tasks"),
            meta_train_stats=None if stats is None else _floats(stats), stage_seconds=d["stage_seconds"],
            run_seconds_this_call=d.get("run_seconds_this_call"), groupings=groupings)


def write_run_metrics(path: str | Path, m: RunMetrics) -> None:
    """Write ``metrics.json`` (atomically; NaN as null)."""
    io.write_json(path, m.to_json())


def read_run_metrics(path: str | Path) -> RunMetrics:
    """Read ``metrics.json``."""
    return RunMetrics.from_json(io.read_json(path))


# -- results.json ----------------------------------------------------------------------------------------------

@dataclass(kw_only=True)
class MethodResult:
    """One grouping over the seeds of a comparison: ``results.json``'s ``methods[name]``."""

    mean: float
    """Mean over seeds of each seed's task-mean score (``CompareResults.metric``)."""
    std: float
    """Sample standard deviation of that score over seeds (0 with one seed)."""
    per_task: dict[str, float]
    """Each evaluated task's score, mean over seeds."""
    per_seed: list[float]
    """Each seed's task-mean score, in ``CompareResults.seeds``' order."""
    k: list[int]
    """Each seed's number of groups."""
    groups: list[list[list[str]]] | None = None
    """Each seed's groups (training-task names); None (absent) in files older than the key."""
    curve: Curve
    """Training episode return (mean over tasks, then over seeds) against environment steps per task."""

    def to_json(self) -> dict[str, Any]:
        return io.jsonable({"mean": self.mean, "std": self.std, "per_task": self.per_task,
                            "per_seed": self.per_seed, "k": self.k, **_present(groups=self.groups),
                            "curve": self.curve})

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Self:
        return cls(mean=_float(d["mean"]), std=_float(d["std"]), per_task=_floats(d["per_task"]),
                   per_seed=[_float(x) for x in d["per_seed"]], k=d["k"], groups=d.get("groups"),
                   curve=_curve(d["curve"]))


@dataclass(kw_only=True)
class CompareResults:
    """What ``policygradex compare`` produces: its ``results.json`` (``compare.aggregate``)."""

    family: str
    """The task family's name."""
    budget_steps_per_task: int
    """Environment steps per task of every grouping's training."""
    seeds: list[int]
    """The seeds, one run folder ``seed-S`` each."""
    metric: str
    """What the scores are: ``success rate (%)`` where every run reports success, else ``return``."""
    protocol: str
    """The downstream protocol (``multi-task`` or ``meta``)."""
    trainer: str
    """The downstream trainer."""
    evaluated_on: str
    """What the scores were measured on, in words."""
    meta_budget_steps_per_task: int
    """Environment steps per task of theta*'s meta-training."""
    methods: dict[str, MethodResult]
    """Each grouping's results by name."""
    gains: dict[str, float | None]
    """PolicyGradEx's gain over each main baseline in percent, (pgx - baseline) / |baseline|; None where the
    baseline's mean is 0."""
    differences: dict[str, float] | None = None
    """PolicyGradEx's mean minus each main baseline's."""
    grouping_stability: float | None = None
    """Mean NMI between the PolicyGradEx groupings of every two seeds; None with one seed."""
    nmi_true: list[float | None] | None = None
    """Each seed's NMI against the family's true grouping (None where it has none)."""
    null_p: list[float | None] | None = None
    """Each seed's null-test p-value (None where untested); None (absent) in files older than the key."""
    bootstrap_stability: list[float | None] | None = None
    """Each seed's bootstrap stability (None without bootstrap draws); None (absent) in files older than the
    key."""
    stage_seconds: list[dict[str, float]] | None = None
    """Each seed's stage wall seconds."""

    def to_json(self) -> dict[str, Any]:
        return io.jsonable({
            "family": self.family, "budget_steps_per_task": self.budget_steps_per_task, "seeds": self.seeds,
            "metric": self.metric, "protocol": self.protocol, "trainer": self.trainer,
            "evaluated_on": self.evaluated_on, "meta_budget_steps_per_task": self.meta_budget_steps_per_task,
            "methods": {name: m.to_json() for name, m in self.methods.items()}, "gains": self.gains,
            **_present(differences=self.differences), "grouping_stability": self.grouping_stability,
            **_present(nmi_true=self.nmi_true, null_p=self.null_p, bootstrap_stability=self.bootstrap_stability,
                       stage_seconds=self.stage_seconds)})

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Self:
        differences = d.get("differences")
        return cls(
            family=d["family"], budget_steps_per_task=d["budget_steps_per_task"], seeds=d["seeds"],
            metric=d["metric"], protocol=d["protocol"], trainer=d["trainer"], evaluated_on=d["evaluated_on"],
            meta_budget_steps_per_task=d["meta_budget_steps_per_task"],
            methods={name: MethodResult.from_json(m) for name, m in d["methods"].items()}, gains=d["gains"],
            differences=None if differences is None else _floats(differences),
            grouping_stability=d.get("grouping_stability"), nmi_true=d.get("nmi_true"), null_p=d.get("null_p"),
            bootstrap_stability=d.get("bootstrap_stability"), stage_seconds=d.get("stage_seconds"))


def write_compare_results(path: str | Path, r: CompareResults) -> None:
    """Write ``results.json`` (atomically; NaN as null)."""
    io.write_json(path, r.to_json())


def read_compare_results(path: str | Path) -> CompareResults:
    """Read ``results.json``."""
    return CompareResults.from_json(io.read_json(path))


# -- groups.json -----------------------------------------------------------------------------------------------

def write_groups(path: Path, g: Grouping, names: list[str]) -> None:
    """Stage 4's artifact: groups.json (tasks by name) and, with a bootstrap, co_membership.npy beside it."""
    conf = g.confidence
    if conf is not None:
        io.write_npy(path.with_name("co_membership.npy"), conf.co_membership)
    io.write_json(path, {
        "tasks": names, "groups": [[names[i] for i in grp] for grp in g.groups], "k": g.k, "method": g.method,
        # Unrounded: a resumed run reads these back and must report what the first one did.
        "confidence": None if conf is None else {names[i]: float(c) for i, c in enumerate(conf.confidence)},
        "stability": None if conf is None else conf.stability,
        "null_p": g.null_p,
        "p_values": g.p_values,
        "bootstrap_k": None if conf is None else conf.draw_k,
        "reason": g.reason, "rule": RULE_VERSION})


def read_groups(path: Path, names: list[str]) -> Grouping:
    """The ``Grouping`` that ``write_groups`` wrote (task indices in ``names``' order); ``Outdated`` when an
    older grouping rule wrote it."""
    data = io.read_json(path)
    if (rule := data.get("rule", 1)) != RULE_VERSION:
        raise Outdated(f"was made by grouping rule {rule}, this version's is {RULE_VERSION}")
    co = path.with_name("co_membership.npy")
    conf = None if data.get("confidence") is None or not co.exists() else Confidence(
        np.load(co), np.array([data["confidence"][t] for t in names]), data["stability"], data["bootstrap_k"])
    return Grouping([[names.index(t) for t in grp] for grp in data["groups"]], data["method"],
                    null_p=data.get("null_p"), p_values=data.get("p_values"), reason=data.get("reason", ""),
                    confidence=conf)
