"""Group trainers: how stage 5 trains one policy on a group's tasks (``--downstream-trainer``).

A trainer's ``train`` takes a ``GroupJob`` (the group's env factories, its family, the train/downstream/adapt
settings and a seed) and returns a ``TrainResult`` (the policy and its learning curve); ``train_and_evaluate``
(experiments/downstream.py) looks the trainer up in ``TRAINERS`` and evaluates what it returns.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from policygradex.registry import Registry
from policygradex.rl.maml import train_maml
from policygradex.rl.paco import MaskOut
from policygradex.rl.policy import Arch
from policygradex.rl.ppo import TrainResult, train_ppo

if TYPE_CHECKING:
    from policygradex.experiments.downstream import GroupJob


@dataclass(frozen=True)
class Trainer:
    train: Callable[[GroupJob], TrainResult]
    """Train one policy on ``job.factories`` with the job's settings and seed."""
    lower: str = "--train-learning-rate"
    """The settings the error asks to lower when this training diverges."""


def _train_ppo(job: GroupJob, arch: Arch, gradient_surgery: bool = False,
               context: np.ndarray | None = None, mask_out: MaskOut | None = None) -> TrainResult:
    """Multi-task PPO. Under the meta protocol without task ids: the held-out test tasks it adapts to have none."""
    ppo = job.ppo if job.downstream.protocol == "multi-task" else dataclasses.replace(job.ppo, task_conditioned=False)
    return train_ppo(job.factories, job.family.observation_space, job.family.action_space, ppo, job.seed, arch=arch,
                     log_dir=job.log_dir, gradient_surgery=gradient_surgery, context=context, mask_out=mask_out)


def ppo_group(job: GroupJob) -> TrainResult:
    """Multi-task PPO on a task-conditioned MLP."""
    return _train_ppo(job, "mlp")


def softmod_group(job: GroupJob) -> TrainResult:
    """Multi-task PPO on a Soft Modularization network (Yang et al. 2020)."""
    return _train_ppo(job, "softmod")


def paco_group(job: GroupJob) -> TrainResult:
    """Multi-task PPO on a PaCo network: K shared parameter sets, one learned composition per task, with the
    paper's loss mask-out and w-reset (rl/paco.py)."""
    return _train_ppo(job, "paco", mask_out=MaskOut())


def care_group(job: GroupJob) -> TrainResult:
    """Multi-task PPO on a CARE network: a mixture of encoders weighted by attention over the task's metadata
    (Sodhani et al. 2021, rl/care.py; without metadata, a learned embedding of the task id)."""
    return _train_ppo(job, "care", context=job.context)


def pcgrad_group(job: GroupJob) -> TrainResult:
    """Multi-task PPO with PCGrad's gradient surgery between the group's tasks (Yu et al. 2020, rl/pcgrad.py)."""
    return _train_ppo(job, "mlp", gradient_surgery=True)


def maml_group(job: GroupJob) -> TrainResult:
    """MAML (Finn et al. 2017): a meta-policy without task ids, for the meta protocol."""
    fam = job.family
    return train_maml(job.factories, fam.observation_space, fam.action_space, job.ppo, job.adapt, job.seed,
                      log_dir=job.log_dir)


# Adding a trainer (PaCo, say) touches one new module, with a function GroupJob -> TrainResult, plus one line
# here, plus its name in DownstreamConfig.trainer's Literal (config.py); tests/test_registry.py checks that
# these names and the Literal's agree.
TRAINERS: Registry[Trainer] = Registry("downstream.trainer", {
    "ppo": Trainer(ppo_group),
    "softmod": Trainer(softmod_group),
    "maml": Trainer(maml_group, lower="--train-learning-rate or --adapt-inner-lr"),
    "pcgrad": Trainer(pcgrad_group),
    "paco": Trainer(paco_group),
    "care": Trainer(care_group),
})
