"""A run folder's identity covers the environments behind a user's task names."""

from __future__ import annotations

import functools
import json

import gymnasium as gym
import pytest

import policygradex as pgx
from policygradex.experiments.pipeline import Pipeline


def pendulums(gravities: list[float]) -> pgx.TaskFamily:
    factories = [functools.partial(gym.make, "Pendulum-v1", g=g) for g in gravities]
    return pgx.TaskFamily.from_envs("gravity", factories, task_names=["a", "b", "c", "d"])


def test_fingerprints_change_with_the_environment_and_only_then():
    first, again = pendulums([2, 4, 10, 15]).fingerprints(), pendulums([2, 4, 10, 15]).fingerprints()
    assert first == again
    changed = pendulums([2, 4, 10, 16]).fingerprints()
    assert [name for name in first if first[name] != changed[name]] == ["d"]
    assert len(set(first.values())) == 4


def test_folder_of_other_environments_under_the_same_names_is_refused(tmp_path):
    out = tmp_path / "run"
    Pipeline(pendulums([2, 4, 10, 15]), pgx.Config.quick(), out, progress=False).close()
    Pipeline(pendulums([2, 4, 10, 15]), pgx.Config.quick(), out, progress=False).close()  # the same: resumes
    with pytest.raises(pgx.PGXError, match=r"other environments for task\(s\) a, b, c, d "):
        Pipeline(pendulums([20, 20, 1, 1]), pgx.Config.quick(), out, progress=False)
    with pytest.raises(pgx.PGXError, match=r"other environments for task\(s\) c \("):
        Pipeline(pendulums([2, 4, 11, 15]), pgx.Config.quick(), out, progress=False)


def test_built_in_families_are_identified_by_their_spec(tmp_path):
    fam = pgx.make_family("planted", n_tasks=4)
    Pipeline(fam, pgx.Config.quick(), tmp_path / "run", progress=False).close()
    assert "environments" not in json.loads((tmp_path / "run" / "config.json").read_text())
    assert fam._fingerprints is None  # never computed for a built-in family


def test_a_folder_that_predates_a_setting_resumes_while_the_setting_keeps_its_default(tmp_path):
    import dataclasses

    fam = pgx.make_family("planted", n_tasks=4)
    out = tmp_path / "run"
    Pipeline(fam, pgx.Config.quick(), out, progress=False).close()
    stored = json.loads((out / "config.json").read_text())
    del stored["config"]["downstream"]["trainer_baselines"]  # as written before the setting existed
    (out / "config.json").write_text(json.dumps(stored))
    Pipeline(fam, pgx.Config.quick(), out, progress=False).close()  # default (): the run it was
    cfg = pgx.Config.quick()
    cfg = dataclasses.replace(cfg, downstream=dataclasses.replace(cfg.downstream, trainer_baselines=("paco",)))
    with pytest.raises(pgx.PGXError, match="downstream.trainer_baselines"):
        Pipeline(fam, cfg, out, progress=False)
