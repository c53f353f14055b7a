"""Every built-in family: shared spaces, gymnasium's env checker, a quick end-to-end run, clear errors."""

import importlib
import json

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from typer.testing import CliRunner

import policygradex as pgx
from policygradex.cli import app
from policygradex.cluster.significance import nmi

# (family, n_tasks for the quick run): slow simulators get fewer tasks
FAMILIES = [("cartpole", 4), ("lunar_lander", 3), ("highway", 3), ("metaworld-mt10", 3),
            ("metaworld:reach-v3,push-v3", None), ("mo:deep-sea-treasure-v0", 3), ("mo:mo-lunar-lander-v3", 3),
            ("mo:mo-highway-fast-v0", 2),
            ("planted", 6), ("lottery", 6)]


def test_tasks_command_lists_every_family():
    result = CliRunner().invoke(app, ["tasks"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for name in ("cartpole", "lunar_lander", "highway", "metaworld-mt10", "metaworld:<envs>", "mo:<env id>",
                 "planted", "lottery"):
        assert name in result.output


@pytest.mark.parametrize("name,n", FAMILIES)
def test_family_envs_share_spaces_and_pass_the_env_checker(name, n):
    fam = pgx.make_family(name, n_tasks=n, seed=0)
    for task in fam.tasks[:2]:
        env = task.make()
        assert env.observation_space == fam.observation_space and env.action_space == fam.action_space
        check_env(env, skip_render_check=True)
        env.close()


@pytest.mark.parametrize("name,n", FAMILIES)
def test_quick_run_end_to_end(name, n, tmp_path):
    args = ["run", "--family", name, "--quick", "--no-progress", "--out", str(tmp_path / "run")]
    result = CliRunner().invoke(app, args + (["--n-tasks", str(n)] if n else []))
    assert result.exit_code == 0, result.output
    groups = json.loads((tmp_path / "run" / "groups.json").read_text())
    assert sorted(t for g in groups["groups"] for t in g) == sorted(groups["tasks"])
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert all(np.isfinite(res["mean"]) for res in metrics["groupings"].values())
    if name.startswith("metaworld"):
        assert all(0.0 <= res["success_rate"] <= 1.0 for res in metrics["groupings"].values())


@pytest.mark.parametrize("seed,options", [(0, []), (1, []), (2, []),
                                          (0, ["--estimate-projector", "gaussian", "--estimate-solver", "exact"]),
                                          (1, ["--downstream-trainer", "pcgrad"])])
def test_planted_quick_run_recovers_the_true_groups(seed, options, tmp_path):
    result = CliRunner().invoke(app, ["run", "--family", "planted", "--quick", "--no-progress", "--seed", str(seed),
                                      "--out", str(tmp_path / "run"), *options])
    assert result.exit_code == 0, result.output
    fam = pgx.make_family("planted", seed=seed)
    found = json.loads((tmp_path / "run" / "groups.json").read_text())
    groups = [[fam.task_names.index(t) for t in g] for g in found["groups"]]
    assert nmi(fam.true_groups, groups, fam.n_tasks) >= 0.9


@pytest.mark.parametrize("name", ["cartpole", "lunar_lander", "highway", "mo:deep-sea-treasure-v0"])
def test_meta_rl_families_have_a_seeded_test_split(name):
    a, b = pgx.make_family(name, n_tasks=2, seed=3), pgx.make_family(name, n_tasks=2, seed=3)
    assert len(a.test_tasks) == 50
    assert [t.params for t in a.test_tasks] == [t.params for t in b.test_tasks]
    assert [t.params for t in a.test_tasks] != [t.params for t in pgx.make_family(name, n_tasks=2, seed=4).test_tasks]


def test_mismatched_spaces_name_the_task_and_both_spaces():
    with pytest.raises(pgx.PGXError) as err:
        pgx.TaskFamily.from_envs("mixed", [lambda: gym.make("CartPole-v1"), lambda: gym.make("Acrobot-v1")],
                                 task_names=["cart", "acro"])
    message = str(err.value)
    assert "'acro'" in message and "'cart'" in message and "Box" in message and "Discrete(2)" in message


def test_missing_extra_says_which_to_install(monkeypatch):
    real = importlib.import_module

    def fake(name, *args):
        if name == "highway_env":
            raise ImportError("no", name="highway_env")
        return real(name, *args)

    monkeypatch.setattr(importlib, "import_module", fake)
    with pytest.raises(pgx.PGXError, match=r"pip install 'policygradex\[highway\]'"):
        pgx.make_family("highway", n_tasks=2)


def test_unknown_names_inside_parametrised_families():
    with pytest.raises(pgx.PGXError, match="unknown Meta-World env"):
        pgx.make_family("metaworld:reach-v3,fly-v3")
    with pytest.raises(pgx.PGXError, match="mo-gymnasium has no env"):
        pgx.make_family("mo:nothing-v0")


def test_user_factories_run_through_every_stage_in_worker_processes(tmp_path):
    def cartpole_with(length):  # closures: they reach the worker processes through cloudpickle
        def make():
            env = gym.make("CartPole-v1")
            env.unwrapped.length, env.unwrapped.polemass_length = length, env.unwrapped.masspole * length
            return env
        return make

    fam = pgx.TaskFamily.from_envs("mine", [cartpole_with(x) for x in (0.4, 0.6, 0.8)], task_names=["a", "b", "c"])
    cfg = pgx.Config.quick(workers=2)
    run = pgx.run(fam, cfg, out=tmp_path / "run", progress=False)
    assert sorted(i for g in run.groups for i in g) == [0, 1, 2]
    assert set(run.metrics.groupings["single"].per_task) == {"a", "b", "c"}
    res = pgx.estimate_affinity(fam, cfg, out=tmp_path / "run")  # reuses the run folder's stages
    assert np.array_equal(res.affinity, np.load(tmp_path / "run" / "affinity.npy"))


def test_lottery_pays_noise_whatever_the_action_then_planteds_rule():
    from policygradex.tasks import lottery, planted

    fam, twin = pgx.make_family("lottery", seed=3), pgx.make_family("planted", seed=3)
    assert fam.true_groups == twin.true_groups  # planted's clusters, the lottery on top
    env = fam.tasks[0].make()
    draws = []
    for action in range(planted.N_ACTIONS):
        obs, _ = env.reset(seed=7)
        assert obs[-1] == 1.0 and not obs[:-1].any()  # the lottery's flag, no context
        obs, reward, *_ = env.step(action)
        draws.append((reward, obs.tolist()))
    assert all(d == draws[0] for d in draws)  # same draw, same next context: the stream ignores the action
    rewards = [env.reset(seed=s)[0] is not None and env.step(0)[1] for s in range(200)]
    assert 0.8 * lottery.LOTTERY_SCALE < np.std(rewards) < 1.2 * lottery.LOTTERY_SCALE
    obs, _ = env.reset(seed=1)
    obs, *_ = env.step(0)
    assert obs[-1] == 0.0
    w = np.asarray(env.unwrapped.weights)[:, :planted.OBS_DIM]  # without the flag's zero column
    best = int(np.argmax(w @ obs[:-1]))
    assert env.step(best)[1] == 1.0
