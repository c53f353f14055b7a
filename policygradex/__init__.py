"""policygradex: which RL tasks to train together, from projected policy gradients (PolicyGradEx).

    import policygradex as pgx
    fam = pgx.make_family("cartpole", n_tasks=10, seed=0)
    res = pgx.estimate_affinity(fam, pgx.Config(seed=0))
    groups = pgx.group_tasks(res.affinity)
    run = pgx.run(fam, pgx.Config(seed=0), out="runs/x")
"""

from __future__ import annotations

from pathlib import Path

from policygradex.cluster.sdp import group_tasks
from policygradex.config import ClusterConfig, Config, DownstreamConfig, EstimateConfig, PPOConfig
from policygradex.errors import ConfigError, PGXError
from policygradex.experiments.pipeline import AffinityResult, Pipeline, RunResult
from policygradex.tasks import FAMILIES, TaskFamily, make_family

__version__ = "0.1.0"


def estimate_affinity(family: TaskFamily, cfg: Config | None = None, out: str | Path | None = None,
                      progress: bool = False) -> AffinityResult:
    """Stages 1-3: meta-train theta* (or load it from ``out``), gradient features, subset surrogates.

    ``result.affinity`` is the n x n task-affinity matrix.
    """
    with Pipeline(family, cfg or Config(), out, progress) as pipe:
        return pipe.estimate()


def run(family: TaskFamily, cfg: Config | None = None, out: str | Path | None = None,
        progress: bool = True) -> RunResult:
    """The whole pipeline: affinity, groups, one policy per group against the baselines, report."""
    return Pipeline(family, cfg or Config(), out, progress).run()


__all__ = [
    "FAMILIES", "AffinityResult", "ClusterConfig", "Config", "ConfigError", "DownstreamConfig",
    "EstimateConfig", "PGXError", "PPOConfig", "RunResult", "TaskFamily", "estimate_affinity",
    "group_tasks", "make_family", "run",
]
