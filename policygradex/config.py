"""Configuration: one dataclass per pipeline stage, every field documented.

The docstring under each field is the help text of its CLI option (``policygradex run --help``):
the CLI is generated from these classes, never written twice. ``Config.quick()`` is the tiny
preset used by tests and ``--quick``.

A choice between implementations (trainer, solver, projector, executor, routing rule) is a ``Literal[...]``
field: every section checks its Literal fields the same way (``_check_choices``), and the names are those of
the registry that holds the implementations (``TRAINERS`` in rl/trainers.py, ``SOLVERS`` in
estimate/surrogate.py, ``PROJECTORS`` in estimate/projection.py, ``EXECUTORS`` in parallel.py, ``ROUTERS`` in
experiments/groupings.py; tests/test_registry.py keeps them equal).
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import textwrap
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

from policygradex.errors import ConfigError


@dataclass
class PPOConfig:
    """Multi-task PPO (Schulman et al. 2017) with a task-conditioned actor-critic."""

    steps_per_task: int = 40_000
    """Environment steps per task (the budget; a group of g tasks trains for g times this)."""
    envs_per_task: int = 2
    """Parallel environments per task inside one vectorised env."""
    num_steps: int = 128
    """Rollout length per environment between two PPO updates."""
    learning_rate: float = 2.5e-3
    """Adam learning rate, annealed linearly to zero."""
    gamma: float = 0.99
    """Discount factor."""
    gae_lambda: float = 0.95
    """GAE lambda (Schulman et al. 2016)."""
    update_epochs: int = 4
    """Passes over each rollout per update."""
    num_minibatches: int = 4
    """Minibatches per pass."""
    clip_coef: float = 0.2
    """PPO ratio clipping."""
    ent_coef: float = 0.01
    """Entropy bonus."""
    vf_coef: float = 0.5
    """Value-loss weight."""
    max_grad_norm: float = 0.5
    """Global gradient-norm clip."""
    hidden_sizes: tuple[int, ...] = (64, 64)
    """Hidden layer widths of the actor and of the critic MLP."""
    task_conditioned: bool = True
    """Append a one-hot task id to the observation of the policy."""

    def __post_init__(self) -> None:
        _check_choices(self)
        _positive(self, "steps_per_task", "envs_per_task", "num_steps", "learning_rate",
                  "update_epochs", "num_minibatches", "clip_coef", "max_grad_norm")
        _within(self, "gamma", 0, 1, low_open=True)
        _within(self, "gae_lambda", 0, 1)
        _within(self, "ent_coef", 0, None)
        _within(self, "vf_coef", 0, None)
        if not self.hidden_sizes or min(self.hidden_sizes) < 1:
            raise ConfigError("hidden_sizes", "must list at least one positive width, for example 64,64")


@dataclass
class EstimateConfig:
    """Stages 2-3: gradient features at theta*, subset surrogates, affinity."""

    transitions_per_task: int = 2048
    """Transitions rolled out at theta* per task for the gradient features."""
    proj_dim: int = 400
    """Target dimension d of the random projection of grad log pi."""
    projector: Literal["factored", "gaussian"] = "factored"
    """Projection back-end: 'factored' (no per-sample gradients) or 'gaussian' (the paper's dense matrix)."""
    holdout_fraction: float = 0.25
    """Share of each task's transitions kept out of the fit and used to score subsets."""
    subset_size: int | None = None
    """Tasks per random subset; default: half the tasks (at least 2)."""
    pair_coverage: int = 20
    """Sample subsets until every pair of tasks shares at least this many of them."""
    max_subsets: int = 2000
    """Upper bound on the number of subsets m."""
    solver: Literal["newton-stats", "exact"] = "newton-stats"
    """Surrogate solver: 'newton-stats' (one Newton step from per-task sufficient statistics) or 'exact'."""
    ridge: float = 0.1
    """L2 strength of the logistic regression, relative to the mean diagonal of its Hessian."""
    standardize_advantages: bool = True
    """Standardise advantages per task before they become labels sign(A) and weights |A|."""

    def __post_init__(self) -> None:
        _check_choices(self)
        _positive(self, "transitions_per_task", "proj_dim", "pair_coverage", "max_subsets")
        if not 0.0 < self.holdout_fraction < 1.0:
            raise ConfigError("holdout_fraction", f"must lie strictly between 0 and 1, got {self.holdout_fraction}")
        if self.subset_size is not None and self.subset_size < 2:
            raise ConfigError("subset_size", f"must be at least 2, got {self.subset_size}")
        if self.ridge <= 0:
            raise ConfigError("ridge", f"must be positive, got {self.ridge}")


@dataclass
class ClusterConfig:
    """Stage 4: how many groups the data supports, the SDP relaxation that forms them, and how sure they are."""

    k: int | None = field(default=None, metadata={"flag": "k"})
    """Number of groups; default: as many as beat the null at --cluster-alpha (one group when none does)."""
    alpha: float = 0.05
    """Level of the null test: a further group is accepted only if noise alone (tasks' transitions dealt among
    them at random) would give its gain with probability at most this."""
    trace_penalty: float | None = None
    """Let the SDP's trace penalty choose k instead (the paper's rule), pricing one more group at this many
    mean absolute off-diagonal affinities; default: off, k comes from the null test."""
    null_draws: int = 49
    """Null data sets (tasks' blocks of transitions dealt among them at random) the test compares against."""
    bootstrap_draws: int = 20
    """Bootstrap data sets (each task's blocks drawn with replacement) behind the groups' confidence."""
    min_stability: float = 0.5
    """A split chosen by the null test must also replicate: no more groups than the bootstrap draws choose most
    often, and mean NMI between it and the draws' groupings at least this, else one group (0 turns both checks
    off). Measured (bench grouping): spurious splits of identical or mildly different CartPoles scored
    0.00-0.17, real splits (planted, cartpole) 0.5-1."""
    block_length: int = 128
    """Consecutive transitions resampled together (they are correlated; single rows would understate noise)."""
    sdp_solver: str = "SCS"
    """cvxpy solver for the SDP."""

    def __post_init__(self) -> None:
        _check_choices(self)
        if self.k is not None and self.k < 1:
            raise ConfigError("k", f"must be at least 1, got {self.k}")
        if not 0.0 < self.alpha < 1.0:
            raise ConfigError("alpha", f"must lie strictly between 0 and 1, got {self.alpha}")
        if self.trace_penalty is not None and self.trace_penalty < 0:
            raise ConfigError("trace_penalty", f"must be at least 0, got {self.trace_penalty}")
        _positive(self, "null_draws", "block_length")
        _within(self, "min_stability", 0, 1)
        if self.bootstrap_draws < 0:
            raise ConfigError("bootstrap_draws", f"must be at least 0, got {self.bootstrap_draws}")


EXECUTION = ("workers", "executor", "ray_address", "device")
"""Top-level settings that say where work runs; results never depend on them."""
GROUPINGS = ("single", "random", "gradient-similarity", "independent")
TrainerName = Literal["ppo", "softmod", "maml", "pcgrad", "paco", "care"]
MULTI_TASK_TRAINERS: tuple[TrainerName, ...] = ("ppo", "softmod", "paco", "care", "pcgrad")
"""The multi-task optimisers ``compare`` trains as baselines of their own (``trainer_baselines``)."""


@dataclass
class DownstreamConfig:
    """Stages 5-6: one policy per group, evaluated per task, against baselines."""

    trainer: TrainerName = "ppo"
    """Group trainer: 'ppo' (multi-task PPO, task-conditioned MLP), 'softmod' (PPO on a Soft Modularization
    network, Yang et al. 2020), 'maml' (Finn et al. 2017; meta-RL, a policy without task ids), 'pcgrad'
    (multi-task PPO with PCGrad's gradient surgery between tasks, Yu et al. 2020), 'paco' (PPO on a
    parameter-compositional network, Sun et al. 2022) or 'care' (PPO on a mixture of encoders attending to
    the task's metadata, Sodhani et al. 2021)."""
    protocol: Literal["multi-task", "meta"] = "multi-task"
    """'multi-task': evaluate each group's policy on its own training tasks. 'meta': adapt on the family's
    held-out test tasks (see the adapt section), each routed to one group, then evaluate."""
    eval_episodes: int = 10
    """Evaluation episodes per task."""
    deterministic_eval: bool = True
    """Evaluate the greedy action instead of sampling."""
    baselines: tuple[str, ...] = ("single", "random")
    """Groupings trained beside PolicyGradEx's: 'single' (k = 1), 'random' (same k), 'gradient-similarity'
    (cosine of the tasks' projected policy gradients at theta*, clustered by the same SDP, same k) and
    'independent' (k = n)."""
    ablate_k: tuple[int, ...] = ()
    """Also train PolicyGradEx's affinity partitioned into exactly these numbers of groups (``compare``: 1,2,3,4)."""
    trainer_baselines: tuple[TrainerName, ...] = ()
    """Multi-task optimisers trained on every task as one policy (k = 1), each a row of its own (``compare``:
    ppo, softmod, paco, care, pcgrad). They run under the multi-task protocol, evaluated on the training tasks,
    whatever ``protocol`` says; under the meta protocol PolicyGradEx's groups are then also trained by
    multi-task PPO and evaluated the same way (row 'policygradex-mt'), so that they have a comparison."""

    def __post_init__(self) -> None:
        _check_choices(self)
        _positive(self, "eval_episodes")
        unknown = set(self.baselines) - set(GROUPINGS)
        if unknown:
            raise ConfigError("baselines", f"has unknown {sorted(unknown)}; choose from {', '.join(GROUPINGS)}")
        if unknown_trainers := set(self.trainer_baselines) - set(MULTI_TASK_TRAINERS):
            raise ConfigError("trainer_baselines", f"has unknown {sorted(unknown_trainers)}; choose from "
                              f"{', '.join(MULTI_TASK_TRAINERS)}")
        if self.ablate_k and min(self.ablate_k) < 1:
            raise ConfigError("ablate_k", "lists numbers of groups, each at least 1")


@dataclass
class AdaptConfig:
    """Meta-RL: MAML's inner loop, and the adaptation to a held-out test task before it is evaluated.

    One adaptation step is one environment step of the test task: ``steps`` of them are collected with the
    group's meta-policy and spent on ``inner_updates`` policy-gradient updates (the MAML inner rule; MAML
    meta-trains with the same rule and batch). The paper adapts for 200 steps."""

    steps: int = 200
    """Environment steps of a test task seen by its adaptation (and by each inner loop of MAML training)."""
    inner_updates: int = 1
    """Policy-gradient updates those steps are split into."""
    inner_lr: float = 0.1
    """Step size of the inner (adaptation) update, plain gradient descent."""
    second_order: bool = False
    """MAML: differentiate through the inner update (exact second order) instead of first-order MAML."""
    test_tasks: int = 50
    """Held-out test tasks evaluated (the first ones of the family's test split)."""
    route_steps: int = 256
    """Steps of theta* on a test task, whose projected gradients decide the group it is routed to."""
    route_rule: Literal["surrogate", "cosine"] = "surrogate"
    """How a test task picks its group: 'surrogate' (the group whose stage-3 surrogate predicts the largest gain
    on the test task's transitions) or 'cosine' (the highest mean cosine of mean projected gradients). Test
    returns are never looked at."""

    def __post_init__(self) -> None:
        _check_choices(self)
        _positive(self, "steps", "inner_updates", "inner_lr", "test_tasks", "route_steps")


@dataclass
class ValidateConfig:
    """``policygradex validate``: the paper's claims measured. Not part of a run folder's identity."""

    distances: tuple[float, ...] = (0.001, 0.005, 0.01, 0.05, 0.1)
    """Relative parameter distances ||dtheta|| / ||theta*|| at which the first-order error is measured."""
    directions: int = 3
    """Directions of each kind (fine-tuning on a random subset; random) for the approximation study."""
    transitions_per_task: int = 256
    """Transitions per task at theta* on which the approximation error is measured."""
    finetune_steps_per_task: int = 4_096
    """PPO steps per task when fine-tuning theta* on a subset (ground truth and fine-tuning directions)."""
    finetune_learning_rate: float = 1e-3
    """Adam learning rate of those fine-tunings."""
    max_subsets: int | None = None
    """Ground truth on at most this many of the estimator's subsets (a seeded sample); default all."""
    eval_episodes: int = 10
    """Evaluation episodes per task before and after each fine-tuning."""
    deterministic_eval: bool = False
    """Greedy actions in those evaluations; sampled by default, since greedy returns saturate at the episode
    cap (CartPole: 500) and hide gains."""
    ablate_dims: tuple[int, ...] = (100, 200, 400, 800)
    """Projection dimensions d of the ablation."""
    ablate_coverages: tuple[int, ...] = (2, 5, 10, 20)
    """Pair coverages (hence numbers of subsets m) of the ablation."""
    ablate_depths: tuple[int, ...] = (2, 4, 8)
    """Hidden layers of theta* in the ablation (theta* is meta-trained again for each)."""
    generalization_subsets: int = 20
    """Subsets (a seeded sample of the estimator's) fine-tuned for the generalisation study."""
    hutchinson_probes: int = 64
    """Rademacher probes of Hutchinson's trace estimator (its standard error falls as 1 / sqrt(probes))."""

    def __post_init__(self) -> None:
        _check_choices(self)
        _positive(self, "directions", "transitions_per_task", "finetune_steps_per_task", "eval_episodes",
                  "finetune_learning_rate", "generalization_subsets", "hutchinson_probes")
        if not self.distances or min(self.distances) <= 0:
            raise ConfigError("distances", "must be positive, for example 0.001,0.01,0.1")
        if self.max_subsets is not None and self.max_subsets < 2:
            raise ConfigError("max_subsets", f"must be at least 2, got {self.max_subsets}")


@dataclass
class Config:
    """Everything a run needs; every knob has a default."""

    seed: int = 0
    """Seed of every random choice (policies, environments, projections, subsets, baselines)."""
    workers: int = 2
    """Worker processes for independent work: per-task rollouts, group trainings, fine-tunes (one torch thread
    each). With --executor ray and a --ray-address, the cluster's size sets the parallelism instead."""
    executor: Literal["local", "ray"] = "local"
    """Where independent work runs: 'local' (a process pool on this machine) or 'ray' (a Ray cluster)."""
    device: str | None = None
    """torch device of the estimator's linear algebra (gradient projection, subset solves, null draws): 'cpu',
    'cuda', 'cuda:1'; default cuda when one is visible. Rollouts and RL training stay on the CPU, where small
    policies run fastest. Results agree across devices to float rounding."""
    ray_address: str | None = None
    """Ray cluster to join (what `ray start --head` prints); default: start a local Ray instance on loopback."""
    meta: PPOConfig = field(default_factory=lambda: PPOConfig(task_conditioned=False))
    """Stage 1, the meta-policy theta*. Not task-conditioned by default: like MAML's meta-policy it is shared,
    so tasks that conflict pull its gradients in opposite directions, which is what the estimator reads
    (cartpole, seeds 0-1: the reversed-force tasks come out as one group; a task-conditioned theta* scored
    NMI 0.2-0.6 against that split)."""
    train: PPOConfig = field(default_factory=lambda: PPOConfig(steps_per_task=12_000))
    """Stage 5, one policy per group; every grouping gets this same budget per task."""
    estimate: EstimateConfig = field(default_factory=EstimateConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    downstream: DownstreamConfig = field(default_factory=DownstreamConfig)
    adapt: AdaptConfig = field(default_factory=AdaptConfig)
    validate: ValidateConfig = field(default_factory=ValidateConfig)

    def __post_init__(self) -> None:
        _check_choices(self)
        _within(self, "seed", 0, 2**32 - 1)
        _positive(self, "workers")
        if self.ray_address is not None and self.executor != "ray":
            raise ConfigError("ray_address", "needs the ray executor (--executor ray)")
        for trainer in ("softmod", "paco", "care"):  # each picks its network's path by the task id
            if self.downstream.trainer == trainer and not self.train.task_conditioned:
                raise ConfigError("train.task_conditioned", f"must be on for the {trainer} trainer, which reads the "
                                  "task id")
        if self.downstream.trainer in ("paco", "care") and self.downstream.protocol != "multi-task":
            raise ConfigError("downstream.protocol", f"must be 'multi-task' for the {self.downstream.trainer} "
                              "trainer (the meta protocol adapts a policy without task inputs to held-out tasks)")
        if self.downstream.trainer == "maml" and self.downstream.protocol != "meta":
            raise ConfigError("downstream.protocol", "must be 'meta' for the maml trainer (it meta-trains to adapt)")

    def identity(self) -> dict[str, Any]:
        """The settings that define a run folder's artifacts (validation settings and where work runs do not)."""
        return {k: v for k, v in self.to_dict().items() if k not in EXECUTION + ("validate",)}

    @classmethod
    def quick(cls, **overrides: Any) -> Config:
        """Tiny budgets: seconds per stage, for tests and smoke runs."""
        cfg = cls(
            meta=PPOConfig(steps_per_task=2_048, envs_per_task=1, num_steps=64, hidden_sizes=(32, 32),
                           task_conditioned=False),
            train=PPOConfig(steps_per_task=1_024, envs_per_task=1, num_steps=64, hidden_sizes=(32, 32)),
            estimate=EstimateConfig(transitions_per_task=256, proj_dim=64, pair_coverage=3),
            downstream=DownstreamConfig(eval_episodes=2),
            adapt=AdaptConfig(steps=64, test_tasks=4, route_steps=64),
            validate=ValidateConfig(distances=(0.001, 0.01, 0.1), directions=1, transitions_per_task=64,
                                    finetune_steps_per_task=256, max_subsets=4, eval_episodes=2, ablate_dims=(16, 64),
                                    ablate_coverages=(2, 3), ablate_depths=(1, 2), generalization_subsets=4,
                                    hutchinson_probes=8),
            workers=1,
        )
        return dataclasses.replace(cfg, **overrides)

    @classmethod
    def for_family(cls, family: str | Any, quick: bool = False) -> Config:
        """Defaults (or the quick preset) with the budgets that suit a family: a built-in family's name, or a
        TaskFamily (``make_family`` ones carry their family's budgets; ``TaskFamily.from_envs`` ones get the
        plain defaults). The CLI and the Python API both start from this."""
        if isinstance(family, str):
            from policygradex.tasks import family_info

            info = family_info(family)
            overrides = info.quick if quick else info.defaults
        else:
            overrides = family.quick_defaults if quick else family.defaults
        return with_overrides(cls.quick() if quick else cls(), overrides)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Config:
        kwargs = dict(data)
        for f in dataclasses.fields(cls):
            if isinstance(kwargs.get(f.name), dict) and f.default_factory is not dataclasses.MISSING:  # a section
                kwargs[f.name] = _from_plain(type(f.default_factory()), kwargs[f.name])
        return cls(**kwargs)


def check_fits(cfg: Config, n_tasks: int) -> None:
    """The settings that depend on the family's size, checked before any work starts."""
    if cfg.cluster.k is not None and cfg.cluster.k > n_tasks:
        raise ConfigError("cluster.k", f"is {cfg.cluster.k} but the family has {n_tasks} tasks; choose 1 to {n_tasks}")
    if too_many := [k for k in cfg.downstream.ablate_k if k > n_tasks]:
        raise ConfigError("downstream.ablate_k", f"asks for {too_many} groups of {n_tasks} tasks; choose 1 to "
                          f"{n_tasks}")
    if cfg.estimate.subset_size is not None and cfg.estimate.subset_size > n_tasks:
        raise ConfigError("estimate.subset_size",
                          f"is {cfg.estimate.subset_size} but the family has {n_tasks} tasks; choose 2 to {n_tasks}")


def with_overrides(cfg: Config, overrides: dict[str, Any]) -> Config:
    """A copy of ``cfg`` with {section: {field: value}} and {top_level_field: value} applied (and validated)."""
    changes = {}
    for key, value in overrides.items():
        if isinstance(value, dict):
            try:
                changes[key] = dataclasses.replace(getattr(cfg, key), **value)
            except ConfigError as exc:
                raise exc.within(key) from None
        else:
            changes[key] = value
    return dataclasses.replace(cfg, **changes)


def _from_plain(section_cls: type, data: dict[str, Any]) -> Any:
    """Rebuild a section from JSON, turning lists back into the tuples the dataclass declares."""
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
    return section_cls(**kwargs)


@functools.cache
def literal_choices(cls: type) -> dict[str, tuple[Any, ...]]:
    """The ``Literal[...]``-typed fields of a config dataclass, with the values each allows."""
    hints = typing.get_type_hints(cls)
    return {f.name: typing.get_args(hints[f.name]) for f in dataclasses.fields(cls)
            if typing.get_origin(hints[f.name]) is Literal}


def _check_choices(obj: Any) -> None:
    # A class is hashable; mypy checks type[X] against Hashable through X's instances (python/typeshed#4638).
    for name, allowed in literal_choices(type(obj)).items():  # type: ignore[arg-type]
        value = getattr(obj, name)
        if value not in allowed:
            raise ConfigError(name, f"must be one of {', '.join(map(str, allowed))}; got {value!r}")


def _within(obj: Any, name: str, low: float, high: float | None, low_open: bool = False) -> None:
    """low <= value <= high (low < value with ``low_open``); ``high`` None for no upper bound."""
    value = getattr(obj, name)
    if (value <= low if low_open else value < low) or (high is not None and value > high):
        shown = f"{'(' if low_open else '['}{low}, {'inf)' if high is None else f'{high}]'}"
        raise ConfigError(name, f"must lie in {shown}, got {value}")


def _positive(obj: Any, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if value <= 0:
            raise ConfigError(name, f"must be positive, got {value}")


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """The docstring written under each field of a dataclass (what ``--help`` shows)."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for stmt, nxt in zip(body, body[1:], strict=False):
        if (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)
                and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)):
            docs[stmt.target.id] = " ".join(nxt.value.value.split())
    return docs


def diff(a: dict[str, Any], b: dict[str, Any], prefix: str = "", defaults: dict[str, Any] | None = None) -> list[str]:
    """Dotted names of the settings that differ between two nested config dicts. With ``defaults`` (a default
    config's dict), a setting that ``a`` predates (absent there) counts as unchanged while ``b`` has its default:
    a folder written before the setting existed ran without it."""
    out = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        default = (defaults or {}).get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += diff(va, vb, f"{prefix}{key}.", default if isinstance(default, dict) else None)
        elif key not in a and defaults is not None and key in defaults and vb == default:
            continue
        elif va != vb:
            out.append(f"{prefix}{key} ({va!r} there, {vb!r} now)")
    return out
