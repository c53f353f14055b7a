"""Task families, by name. ``make_family`` is the one entry point; ``FAMILIES`` lists what it knows.

Each family also says which budgets suit it (``defaults``) and which make a smoke run (``quick``): a
highway step costs 15 ms, a planted one microseconds. ``Config.for_family`` applies them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from policygradex.errors import PGXError
from policygradex.tasks import cartpole, highway, lottery, lunar_lander, meta_world, multi_objective, planted
from policygradex.tasks.family import Task, TaskFamily, describe_ranges


@dataclass(frozen=True)
class FamilyInfo:
    build: Callable[[str, int | None, int], TaskFamily]
    """(full name, n_tasks or None for the family's default, seed) -> TaskFamily."""
    summary: str
    varies: str
    extra: str | None = None
    """The pip extra the family needs, if any."""
    defaults: dict[str, Any] = field(default_factory=dict)
    """Config overrides for full runs, as {section: {field: value}}."""
    quick: dict[str, Any] = field(default_factory=dict)
    """Config overrides on top of ``Config.quick()`` for ``--quick``."""


# The paper's protocols: Meta-World is multi-task RL with Soft Modularization, evaluated on its training
# tasks; the control families are meta-RL with MAML, evaluated on held-out test tasks after adaptation.
_MW = {"downstream": {"trainer": "softmod", "protocol": "multi-task"}}
_META_RL = {"downstream": {"trainer": "maml", "protocol": "meta"}}
_MW_DEFAULTS = {"meta": {"steps_per_task": 100_000, "num_steps": 500},
                "train": {"steps_per_task": 100_000, "num_steps": 500}, **_MW}
_MW_QUICK = {"meta": {"steps_per_task": 1_000, "num_steps": 500}, "train": {"steps_per_task": 500, "num_steps": 500},
             "downstream": {**_MW["downstream"], "eval_episodes": 1}}
_SLOW_QUICK = {"meta": {"steps_per_task": 128}, "train": {"steps_per_task": 64},
               "estimate": {"transitions_per_task": 64},
               "downstream": {**_META_RL["downstream"], "eval_episodes": 1}, "adapt": {"steps": 32, "route_steps": 32}}
# Planted steps cost microseconds, and with 2,048 transitions per task the data's noise, not the subsets, limited
# the affinity (NMI 0.65-0.82 in 4 of 10 seeds, at any number of subsets); 8,192 gave 1.0. lottery is planted's.
_PLANTED = {"estimate": {"transitions_per_task": 8_192}}
_PLANTED_QUICK = {"meta": {"steps_per_task": 2_048}, "estimate": {"transitions_per_task": 2_048, "pair_coverage": 10}}

FAMILIES: dict[str, FamilyInfo] = {
    "cartpole": FamilyInfo(
        lambda name, n, seed: cartpole.make_family(n or 10, seed),
        "CartPole-v1 physics variants, some with reversed force direction",
        describe_ranges(cartpole.RANGES) + f"; reversed force in {cartpole.REVERSED_FRACTION:.0%} of tasks",
        # 4,096 transitions per task, not 2,048: measured on seeds 0-9 (bench grouping), the forward / reversed
        # split in 6 of 10 own-family seeds and 4 of 5 on family 0, against 4 of 10 and 2 of 5, and no seed
        # without a split; a batched CartPole step costs about a microsecond, so it adds ~0.7 s to stage 2.
        defaults={**_META_RL, "estimate": {"transitions_per_task": 4_096}},
        quick=_META_RL,
    ),
    "lunar_lander": FamilyInfo(
        lambda name, n, seed: lunar_lander.make_family(n or 10, seed),
        "LunarLander-v3 (discrete) variants",
        describe_ranges(lunar_lander.RANGES),
        defaults={"meta": {"steps_per_task": 100_000}, "train": {"steps_per_task": 100_000}, **_META_RL},
        quick=_META_RL,
    ),
    "highway": FamilyInfo(
        lambda name, n, seed: highway.make_family(n or 10, seed),
        "highway-fast-v0 variants with their own reward weights and traffic",
        describe_ranges(highway.RANGES),
        extra="highway",
        defaults={"meta": {"steps_per_task": 4_000, "num_steps": 64},
                  "train": {"steps_per_task": 4_000, "num_steps": 64},
                  "estimate": {"transitions_per_task": 512},
                  "downstream": {**_META_RL["downstream"], "eval_episodes": 5}},
        quick=_SLOW_QUICK,
    ),
    "metaworld-mt10": FamilyInfo(
        lambda name, n, seed: meta_world.make_family(None, n, seed),
        "Meta-World MT10 manipulation tasks, one-hot task ids, success rate",
        "the task itself: " + ", ".join(meta_world.MT10),
        extra="metaworld",
        defaults=_MW_DEFAULTS,
        quick=_MW_QUICK,
    ),
    "metaworld:<envs>": FamilyInfo(
        lambda name, n, seed: meta_world.make_family(name.split(":", 1)[1].split(","), n, seed),
        "any comma-separated Meta-World v3 envs, e.g. metaworld:reach-v3,push-v3",
        "the task itself",
        extra="metaworld",
        defaults=_MW_DEFAULTS,
        quick=_MW_QUICK,
    ),
    "mo:<env id>": FamilyInfo(
        lambda name, n, seed: multi_objective.make_family(name.split(":", 1)[1], n or 10, seed),
        "a mo-gymnasium env, tasks = reward weightings, e.g. " + ", ".join(f"mo:{e}" for e in multi_objective.EXAMPLES),
        "weight vector over the objectives, uniform on the simplex",
        extra="mo",
        defaults=_META_RL,
        quick=_SLOW_QUICK,
    ),
    "planted": FamilyInfo(
        lambda name, n, seed: planted.make_family(n or 12, seed),
        "synthetic contextual bandits with a known grouping (family.true_groups)",
        f"hidden cluster ({planted.N_CLUSTERS} clusters) and a per-task perturbation of its best-action map",
        defaults=_PLANTED,
        quick=_PLANTED_QUICK,
    ),
    "lottery": FamilyInfo(
        lambda name, n, seed: lottery.make_family(n or 12, seed),
        "planted plus a pure-noise lottery step per episode: gradient similarity and the surrogate disagree",
        f"as planted; the lottery (reward noise of scale {lottery.LOTTERY_SCALE:g}) is the same for every task",
        # The lottery adds noise of scale 30 / sqrt(episodes) to each task's evaluated return, and every group
        # evaluates on episodes of its own: 100 episodes bring it to 3 per task (a bandit episode costs ~1 ms).
        defaults={**_PLANTED, "downstream": {"eval_episodes": 100}},
        quick=_PLANTED_QUICK,
    ),
}


def family_info(name: str) -> FamilyInfo:
    if name in FAMILIES:
        return FAMILIES[name]
    for key, info in FAMILIES.items():
        prefix = key.split("<")[0]
        if "<" in key and name.startswith(prefix) and len(name) > len(prefix):
            return info
    raise PGXError(f"unknown family {name!r}; choose one of: {', '.join(FAMILIES)}")


def make_family(name: str, n_tasks: int | None = None, seed: int = 0) -> TaskFamily:
    """A built-in family, deterministic in ``seed``; ``n_tasks=None`` takes the family's default size."""
    info = family_info(name)
    if n_tasks is not None and n_tasks < 2:
        raise PGXError(f"n_tasks must be at least 2 (grouping needs several tasks), got {n_tasks}")
    family = info.build(name, n_tasks, seed)
    family.builtin, family.defaults, family.quick_defaults = True, info.defaults, info.quick
    return family


__all__ = ["FAMILIES", "FamilyInfo", "Task", "TaskFamily", "family_info", "make_family"]
