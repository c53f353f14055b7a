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
        env = cartpole.make_env(**params, reversed=reversed_)
        env.reset(seed=0)
        env.unwrapped.state = np.zeros(4)
        obs, *_ = env.step(1)
        moves.append(obs[1])  # cart velocity after pushing with action 1
    assert moves[0] > 0 > moves[1]


def test_task_env_passes_gymnasium_env_checker():
    from gymnasium.utils.env_checker import check_env

    fam = pgx.make_family("cartpole", n_tasks=2, seed=0)
    check_env(fam.tasks[0].make().unwrapped)


@pytest.mark.parametrize("name,n", [("nope", 4), ("cartpole", 1)])
def test_bad_family_requests_are_refused(name, n):
    with pytest.raises(pgx.PGXError):
        pgx.make_family(name, n_tasks=n)
