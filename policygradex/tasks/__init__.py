"""Task families, by name. ``make_family`` is the one entry point; ``FAMILIES`` lists what it knows."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from policygradex.errors import PGXError
from policygradex.tasks import cartpole
from policygradex.tasks.family import Task, TaskFamily


@dataclass(frozen=True)
class FamilyInfo:
    build: Callable[..., TaskFamily]
    summary: str
    varies: str


FAMILIES: dict[str, FamilyInfo] = {
    "cartpole": FamilyInfo(
        cartpole.make_family,
        "CartPole-v1 physics variants, some with reversed force direction",
        ", ".join(f"{k} {lo}-{hi}" for k, (lo, hi) in cartpole.RANGES.items())
        + f"; reversed force in {cartpole.REVERSED_FRACTION:.0%} of tasks",
    ),
}


def make_family(name: str, n_tasks: int = 10, seed: int = 0, **kwargs) -> TaskFamily:
    """A built-in family of ``n_tasks`` tasks, deterministic in ``seed``."""
    if name not in FAMILIES:
        raise PGXError(f"unknown family {name!r}; choose one of: {', '.join(FAMILIES)}")
    if n_tasks < 2:
        raise PGXError(f"n_tasks must be at least 2 (grouping needs several tasks), got {n_tasks}")
    return FAMILIES[name].build(n_tasks=n_tasks, seed=seed, **kwargs)


__all__ = ["FAMILIES", "Task", "TaskFamily", "make_family"]
