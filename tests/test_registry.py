"""Registries of trainers, solvers, projectors, executors and architectures, and the Literal fields that pick
from them: the same names on both sides, one error form for an unknown name, and room for new entries."""

import typing

import gymnasium as gym
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from policygradex.cli import app, flag_for
from policygradex.config import AdaptConfig, Config, DownstreamConfig, EstimateConfig, literal_choices, with_overrides
from policygradex.errors import ConfigError
from policygradex.estimate import surrogate
from policygradex.estimate.projection import PROJECTORS
from policygradex.estimate.surrogate import SOLVERS, solve_subsets
from policygradex.experiments import downstream as stage5
from policygradex.experiments.groupings import ROUTERS
from policygradex.parallel import EXECUTORS, make_executor
from policygradex.registry import Registry
from policygradex.rl.policy import ARCHS, ActorCritic, Arch
from policygradex.rl.ppo import TrainResult
from policygradex.rl.trainers import TRAINERS, Trainer
from policygradex.tasks import make_family

# (registry, the config section class holding its field, the field)
BOUND = [(TRAINERS, DownstreamConfig, "trainer"), (SOLVERS, EstimateConfig, "solver"),
         (PROJECTORS, EstimateConfig, "projector"), (EXECUTORS, Config, "executor"),
         (ROUTERS, AdaptConfig, "route_rule")]
ALL = [r for r, _, _ in BOUND] + [ARCHS]


@pytest.mark.parametrize("registry,cls,name", BOUND, ids=lambda x: getattr(x, "field", None))
def test_registry_names_are_the_values_of_its_config_literal(registry, cls, name):
    assert registry.names() == literal_choices(cls)[name]
    assert flag_for(registry.field) == "--" + registry.field.replace(".", "-").replace("_", "-")  # a real option


def test_arch_registry_names_are_the_values_of_the_arch_literal():
    assert ARCHS.names() == typing.get_args(Arch)


@pytest.mark.parametrize("registry", ALL, ids=lambda r: r.field)
def test_unknown_name_is_a_config_error_listing_the_choices(registry):
    with pytest.raises(ConfigError) as err:
        registry.get("nope")
    assert err.value.field == registry.field
    assert err.value.reason == f"must be one of {', '.join(registry.names())}; got 'nope'"


def test_config_checks_every_literal_field_the_same_way():
    with pytest.raises(ConfigError, match=r"^solver must be one of newton-stats, exact; got 'foo'$"):
        EstimateConfig(solver="foo")
    with pytest.raises(ConfigError, match=r"^estimate\.projector must be one of factored, gaussian; got 'dense'$"):
        with_overrides(Config(), {"estimate": {"projector": "dense"}})
    with pytest.raises(ConfigError, match=r"^protocol must be one of multi-task, meta; got 'x'$"):
        DownstreamConfig(protocol="x")
    with pytest.raises(ConfigError, match=r"^executor must be one of local, ray; got 'dask'$"):
        Config(executor="dask")


def test_unknown_names_outside_the_config_are_config_errors_too():
    with pytest.raises(ConfigError, match="executor must be one of local, ray; got 'dask'"):
        make_executor("dask", 1)
    with pytest.raises(ConfigError, match="arch must be one of mlp, softmod, paco, care; got 'cnn'"):
        ActorCritic(4, gym.spaces.Discrete(2), 2, arch="cnn")


def test_cli_literal_option_is_a_one_line_error_naming_the_choices(tmp_path):
    result = CliRunner().invoke(app, ["run", "--out", str(tmp_path / "x"), "--quick", "--no-progress",
                                      "--estimate-solver", "foo"])
    assert result.exit_code == 2, result.output
    assert "--estimate-solver must be one of newton-stats, exact; got 'foo'" in result.output
    assert result.output.strip().count("\n") == 0 and not (tmp_path / "x").exists()


def test_added_entry_is_found_in_a_copy_only():
    def dummy(job):
        raise AssertionError("not called")

    extended = TRAINERS.copy()
    extended.add("moore", Trainer(dummy))
    assert extended.get("moore").train is dummy and extended.names()[-1] == "moore"
    assert "moore" not in TRAINERS
    with pytest.raises(ValueError, match="registered already"):
        extended.add("ppo", Trainer(dummy))


def test_solve_subsets_dispatches_through_the_solver_registry(monkeypatch):
    seen = []

    def dummy(store, subsets, ridge, device):
        seen.append((store, subsets.copy(), ridge))
        assert device == torch.device("cpu")  # the default
        return torch.arange(len(subsets), dtype=torch.float64)[:, None].repeat(1, 3)

    solvers = SOLVERS.copy()
    solvers.add("dummy", dummy)
    monkeypatch.setattr(surrogate, "SOLVERS", solvers)
    subsets = np.array([[1, 1, 0], [0, 1, 1], [1, 1, 0]], dtype=bool)
    betas = solve_subsets("store", subsets, "dummy", 0.5)
    (store, distinct, ridge), = seen
    assert store == "store" and ridge == 0.5 and len(distinct) == 2  # the repeated subset is solved once
    assert betas.shape == (3, 3) and torch.equal(betas[0], betas[2]) and not torch.equal(betas[0], betas[1])


def test_train_and_evaluate_dispatches_through_the_trainer_registry(monkeypatch):
    fam = make_family("cartpole", n_tasks=2, seed=0)
    cfg = Config.quick()
    calls = []

    def dummy(job):
        calls.append(job)
        policy = ActorCritic(fam.observation_space.shape[0], fam.action_space, len(job.factories), (8,))
        return TrainResult(policy, [(0, [0.0])])

    monkeypatch.setattr(stage5, "TRAINERS", Registry("downstream.trainer", {"ppo": Trainer(dummy)}))
    downstream = DownstreamConfig(trainer="ppo", eval_episodes=1)
    job = stage5.GroupJob([0, 1], fam, cfg.train, downstream, cfg.adapt, seed=1, eval_seed=2)
    out = stage5.train_and_evaluate(job)
    assert calls == [job] and len(out["returns"]) == 2 and out["curve"] == [(0, [0.0])]
