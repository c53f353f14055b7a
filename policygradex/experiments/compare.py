"""``policygradex compare``: every grouping at an equal step budget per task, over several seeds, in one table
(the paper's main results), with the k ablation and learning curves.

DIR/seed-S/ is a complete run folder per seed (resumable on its own); DIR/results.json aggregates them:
``{"family", "budget_steps_per_task", "seeds", "metric", "methods": {name: {"mean", "std", "per_task",
"per_seed", "k"}}, "gains": {baseline: percent}}`` (``CompareResults`` in ``experiments/results.py``), and
DIR/report.{md,html} shows it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from policygradex import io
from policygradex.config import GROUPINGS, MULTI_TASK_TRAINERS, Config
from policygradex.errors import PGXError
from policygradex.experiments.downstream import mean_curve
from policygradex.experiments.pipeline import Pipeline
from policygradex.experiments.progress import StageProgress
from policygradex.experiments.report import MAIN, write_compare_report
from policygradex.experiments.results import (
    CompareResults,
    GroupingResult,
    MethodResult,
    RunMetrics,
    write_compare_results,
)
from policygradex.experiments.run_folder import RunFolder
from policygradex.parallel import make_executor
from policygradex.tasks.family import TaskFamily

ABLATE_K = (1, 2, 3, 4)


def compare_config(cfg: Config, n_tasks: int) -> Config:
    """``cfg`` with every baseline grouping, the k ablation (k <= n) and the multi-task optimisers (unless given
    a list of them) switched on."""
    ds = cfg.downstream
    ks = tuple(k for k in (ds.ablate_k or ABLATE_K) if k <= n_tasks)
    return dataclasses.replace(cfg, downstream=dataclasses.replace(
        ds, baselines=GROUPINGS, ablate_k=ks, trainer_baselines=ds.trainer_baselines or MULTI_TASK_TRAINERS))


@dataclass
class SeedJob:
    """One seed of a comparison: a whole pipeline run in its own folder."""

    family: TaskFamily
    cfg: Config
    out: Path
    progress: bool


def run_seed(job: SeedJob) -> RunMetrics:
    return Pipeline(job.family, job.cfg, job.out, job.progress).run().metrics


def compare(family: TaskFamily, cfg: Config, seeds: int, out: str | Path,
            progress: bool = True) -> CompareResults:
    """Run the pipeline for seeds cfg.seed .. cfg.seed + seeds - 1 into DIR/seed-S and aggregate them.

    With several workers the seeds are the executor's items (each seed's pipeline then runs in one process):
    whole runs in parallel keep every worker busy, the serial meta-training included."""
    if seeds < 1:
        raise PGXError(f"--seeds must be at least 1, got {seeds}")
    cfg = compare_config(cfg, family.n_tasks)
    folder = RunFolder.open(out, io.jsonable({"family": family.spec, "config": {**cfg.identity(), "seed": None}}))
    seed_list = list(range(cfg.seed, cfg.seed + seeds))
    if seeds > 1 and (cfg.workers > 1 or cfg.executor == "ray"):
        inner = dataclasses.replace(cfg, workers=1, executor="local", ray_address=None)  # one process per seed
        jobs = [SeedJob(family, dataclasses.replace(inner, seed=s), folder / f"seed-{s}", False) for s in seed_list]
        with make_executor(cfg.executor, cfg.workers, cfg.ray_address) as executor, \
                StageProgress(progress).stage(f"compare: {seeds} seeds on {cfg.workers} workers", seeds) as advance:
            runs = executor.map(run_seed, jobs, lambda i, r: advance(1))
    else:
        runs = [run_seed(SeedJob(family, dataclasses.replace(cfg, seed=s), folder / f"seed-{s}", progress))
                for s in seed_list]
    results = aggregate(runs, family.name, cfg)
    write_compare_results(folder / "results.json", results)
    write_compare_report(folder.path)
    return results


def aggregate(runs: list[RunMetrics], family: str, cfg: Config) -> CompareResults:
    """Mean and spread over seeds of each grouping's task-mean score (success rate in % where the env reports
    success, else return)."""
    use_success = all(g.success_rate is not None for r in runs for g in r.groupings.values())
    scale = 100.0 if use_success else 1.0

    def score(g: GroupingResult) -> float:
        return g.success_rate if use_success and g.success_rate is not None else g.mean

    def task_scores(g: GroupingResult) -> dict[str, float]:
        return g.per_task_success if use_success and g.per_task_success is not None else g.per_task

    methods: dict[str, MethodResult] = {}
    for name in runs[0].groupings:
        per_seed = [scale * score(r.groupings[name]) for r in runs]
        tasks = task_scores(runs[0].groupings[name])
        methods[name] = MethodResult(
            mean=float(np.mean(per_seed)),
            std=float(np.std(per_seed, ddof=1)) if len(per_seed) > 1 else 0.0,
            per_task={t: float(np.mean([scale * task_scores(r.groupings[name])[t] for r in runs])) for t in tasks},
            per_seed=per_seed,
            k=[r.groupings[name].k for r in runs],
            groups=[r.groupings[name].groups for r in runs],
            curve=mean_curve([[[x, [y]] for x, y in r.groupings[name].curve] for r in runs]),
        )
    pgx = methods["policygradex"].mean
    return CompareResults(
        family=family,
        budget_steps_per_task=cfg.train.steps_per_task,
        seeds=[r.seed for r in runs],
        metric="success rate (%)" if use_success else "return",
        protocol=cfg.downstream.protocol,
        trainer=cfg.downstream.trainer,
        evaluated_on=runs[0].evaluated_on,
        meta_budget_steps_per_task=cfg.meta.steps_per_task,
        methods=methods,
        gains={m: 100.0 * (pgx - v.mean) / abs(v.mean) if v.mean else None
               for m, v in methods.items() if m in MAIN and m != "policygradex"},
        differences={m: pgx - v.mean for m, v in methods.items() if m in MAIN and m != "policygradex"},
        grouping_stability=_stability(runs),
        nmi_true=[r.grouping.nmi_true for r in runs],
        null_p=[r.grouping.null_p for r in runs],
        bootstrap_stability=[r.grouping.stability for r in runs],
        stage_seconds=[r.stage_seconds for r in runs],
    )


def _stability(runs: list[RunMetrics]) -> float | None:
    """Mean NMI between the PolicyGradEx groupings of every two seeds (1 = the same groups every time)."""
    from policygradex.cluster.significance import nmi

    names = runs[0].task_names
    labels = [[[names.index(t) for t in g] for g in r.groupings["policygradex"].groups] for r in runs]
    pairs = [(a, b) for i, a in enumerate(labels) for b in labels[i + 1:]]
    return float(np.mean([nmi(a, b, len(names)) for a, b in pairs])) if pairs else None
