"""policygradex: which RL tasks to train together, from projected policy gradients (PolicyGradEx).

    import policygradex as pgx
    fam = pgx.make_family("cartpole", n_tasks=10, seed=0)
    res = pgx.estimate_affinity(fam)        # the family's own defaults, as `policygradex run`
    groups = pgx.group_tasks(res)           # k tested against the affinity's own noise
    run = pgx.run(fam, out="runs/x")
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from policygradex.cluster.grouping import group
from policygradex.config import ClusterConfig, Config, DownstreamConfig, EstimateConfig, PPOConfig
from policygradex.errors import ConfigError, PGXError
from policygradex.experiments.pipeline import AffinityResult, Pipeline, RunResult
from policygradex.tasks import FAMILIES, TaskFamily, make_family

__version__ = "0.1.0"


def estimate_affinity(family: TaskFamily, cfg: Config | None = None, out: str | Path | None = None,
                      progress: bool = False) -> AffinityResult:
    """Stages 1-3: meta-train theta* (or load it from ``out``), gradient features, subset surrogates, and the
    null and bootstrap draws that stage 4 weighs the affinity against.

    ``result.affinity`` is the n x n task-affinity matrix. ``cfg=None`` takes the family's own defaults,
    as ``policygradex run --family F`` does.
    """
    with Pipeline(family, cfg or Config.for_family(family), out, progress) as pipe:
        return pipe.estimate()


def group_tasks(affinity: AffinityResult | np.ndarray, k: int | None = None, **cluster: Any) -> list[list[int]]:
    """Groups of task indices, by the same rule and defaults as ``policygradex run`` (``ClusterConfig``).

    Pass the ``AffinityResult`` of ``estimate_affinity``: k is then the number of splits that beat the
    affinity's own null (one group when none does). A bare matrix needs ``k=`` or ``trace_penalty=``.
    Other keywords are ``ClusterConfig`` fields (``alpha=0.01``, ...).
    """
    cfg = ClusterConfig(k=k, **cluster)
    if isinstance(affinity, AffinityResult):
        return group(affinity.affinity, cfg, affinity.group_seed, affinity.null_values).groups
    return group(np.asarray(affinity, dtype=float), cfg).groups


def run(family: TaskFamily, cfg: Config | None = None, out: str | Path | None = None,
        progress: bool = True) -> RunResult:
    """The whole pipeline: affinity, groups, one policy per group against the baselines, report.
    ``cfg=None`` takes the family's own defaults, as ``policygradex run --family F`` does."""
    return Pipeline(family, cfg or Config.for_family(family), out, progress).run()


__all__ = [
    "FAMILIES", "AffinityResult", "ClusterConfig", "Config", "ConfigError", "DownstreamConfig",
    "EstimateConfig", "PGXError", "PPOConfig", "RunResult", "TaskFamily", "estimate_affinity",
    "group_tasks", "make_family", "run",
]
