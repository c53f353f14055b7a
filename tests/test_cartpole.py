import numpy as np
import pytest

import policygradex as pgx
from policygradex.tasks import cartpole


def test_family_is_deterministic_in_the_seed_and_has_conflicting_tasks():
    a, b, c = (pgx.make_family("cartpole", n_tasks=10, seed=s) for s in (0, 0, 1))
    assert [t.params for t in a.tasks] == [t.params for t in b.tasks]
    assert [t.params for t in a.tasks] != [t.params for t in c.tasks]
    assert sum(t.params["reversed"] for t in a.tasks) == 3
    assert len(a.test_tasks) == 50
    assert not {t.name for t in a.test_tasks} & set(a.task_names)
    for t in a.tasks + a.test_tasks:
        for key, (lo, hi) in cartpole.RANGES.items():
            assert lo <= t.params[key] <= hi


def test_reversed_force_pushes_the_other_way():
    params = {"length": 0.5, "masspole": 0.1, "masscart": 1.0, "gravity": 9.8, "force_mag": 10.0}
    moves = []
    for reversed_ in (False, True):
        env = cartpole.CartPoleFactory(**params, reversed=reversed_)()
        env.reset(seed=0)
        env.unwrapped.state = np.zeros(4)
        obs, *_ = env.step(1)
        moves.append(obs[1])  # cart velocity after pushing with action 1
    assert moves[0] > 0 > moves[1]


def test_batch_steps_as_gymnasium_cartpoles_do_step_for_step():
    """CartPoleBatch against gymnasium's CartPoleEnv (with the variants' constants, in a TimeLimit, same-step
    autoreset): from the same state each step (re-synced, so that last-digit float differences do not grow),
    the same rewards, ends and reset draws, and observations and final observations within 1e-5, through
    many episode ends and the 500-step limit."""
    import gymnasium as gym

    fam = pgx.make_family("cartpole", n_tasks=6, seed=3)
    factories = fam.factories(range(6)) * 2
    batch = cartpole.CartPoleFactory.make_vector(factories)
    ref = gym.vector.SyncVectorEnv(factories, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    seeds = [7 * e + 1 for e in range(len(factories))]
    obs_b, _ = batch.reset(seed=seeds)
    obs_r, _ = ref.reset(seed=seeds)
    np.testing.assert_array_equal(obs_b, obs_r)
    rng = np.random.default_rng(0)
    ends = truncations = 0
    for t in range(1500):
        if t == 700:  # near the time limit: the next steps cross it
            batch.elapsed[:] = 490
            for env in ref.envs:
                env._elapsed_steps = 490
        # mostly the action that rights the pole, so that some episodes live long
        lean = obs_b[:, 2] + 0.5 * obs_b[:, 3] > 0
        push = np.array([f.reversed for f in factories]) ^ lean
        action = np.where(rng.random(len(factories)) < 0.8, push, rng.integers(0, 2, len(factories))).astype(int)
        obs_b, rew_b, term_b, trunc_b, info_b = batch.step(action)
        obs_r, rew_r, term_r, trunc_r, info_r = ref.step(action)
        np.testing.assert_allclose(obs_b, obs_r, rtol=0, atol=1e-5)
        np.testing.assert_array_equal(rew_b, rew_r)
        np.testing.assert_array_equal(term_b, term_r)
        np.testing.assert_array_equal(trunc_b, trunc_r)
        if (done := term_b | trunc_b).any():
            final_r = np.stack(info_r["final_obs"][done])
            np.testing.assert_allclose(info_b["final_obs"][done], final_r, rtol=0, atol=1e-5)
            ends += int(done.sum())
            truncations += int(trunc_b.sum())
        obs_b = obs_r  # any last-digit difference is not carried on
        batch.state = np.stack([env.unwrapped.state for env in ref.envs]).astype(np.float64)
    assert ends > 30 and truncations >= len(factories) // 2


def test_task_env_passes_gymnasium_env_checker():
    from gymnasium.utils.env_checker import check_env

    fam = pgx.make_family("cartpole", n_tasks=2, seed=0)
    check_env(fam.tasks[0].make().unwrapped)


@pytest.mark.parametrize("name,n", [("nope", 4), ("cartpole", 1)])
def test_bad_family_requests_are_refused(name, n):
    with pytest.raises(pgx.PGXError):
        pgx.make_family(name, n_tasks=n)
