"""The estimator and PPO on a GPU: the same numbers as on the CPU (to float rounding). Skipped without a GPU;
run them wherever one is present (``pytest -m cuda``)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import policygradex as pgx
from policygradex.config import PPOConfig
from policygradex.estimate.projection import make_projector
from policygradex.estimate.resample import bootstrap_draw, make_blocks, resampled_affinities
from policygradex.estimate.subsets import sample_subsets
from policygradex.estimate.surrogate import solve_subsets, subset_scores
from policygradex.experiments.pipeline import Pipeline
from policygradex.rl.policy import ActorCritic
from policygradex.rl.ppo import adam, ppo_update
from policygradex.rl.rollout import TaskRunner

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU visible to torch")]
GPU = torch.device("cuda")


@pytest.fixture(scope="module")
def store():
    fam = pgx.make_family("planted", n_tasks=6)
    with Pipeline(fam, pgx.Config.quick(device="cpu"), progress=False) as pipe:
        return pipe.features(pipe.meta_policy())


def test_projector_on_the_gpu_matches_the_cpu():
    fam = pgx.make_family("planted", n_tasks=3)
    policy = ActorCritic(fam.observation_space.shape[0], fam.action_space, 3, (32, 32))
    projector = make_projector("factored", policy, 64, seed=0)
    obs, task, actions = torch.randn(256, 4), torch.randint(0, 3, (256,)), torch.randint(0, 4, (256,))
    cpu = projector.features(policy, obs, task, actions)
    gpu = projector.features(policy.to(GPU), obs.to(GPU), task.to(GPU), actions.to(GPU))
    assert gpu.device.type == "cuda" and torch.allclose(gpu.cpu(), cpu, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("solver", ["newton-stats", "exact"])
def test_subset_solves_and_scores_on_the_gpu_match_the_cpu(store, solver):
    subsets = sample_subsets(store.n_tasks, None, 5, 200, np.random.default_rng(0))
    cpu = solve_subsets(store, subsets, solver, 0.1)
    gpu = solve_subsets(store, subsets, solver, 0.1, GPU)
    assert gpu.device.type == "cpu" and torch.allclose(gpu, cpu, rtol=1e-6, atol=1e-9)
    assert np.allclose(subset_scores(store, subsets, gpu, GPU), subset_scores(store, subsets, cpu), equal_nan=True,
                       rtol=1e-4, atol=1e-7)


def test_null_draws_on_the_gpu_match_the_cpu(store):
    subsets = sample_subsets(store.n_tasks, None, 5, 200, np.random.default_rng(0))
    blocks = make_blocks(store, 64)
    draws = [bootstrap_draw(blocks, np.random.default_rng(s)) for s in range(3)]
    cpu = resampled_affinities(store, blocks, subsets, 0.1, draws)
    gpu = resampled_affinities(store, blocks, subsets, 0.1, draws, device=GPU)
    assert np.allclose(gpu, cpu, rtol=1e-3, atol=1e-5)


def test_one_ppo_update_on_the_gpu():
    fam = pgx.make_family("planted", n_tasks=2)
    cfg = PPOConfig(num_steps=64, hidden_sizes=(16,))
    policy = ActorCritic(fam.observation_space.shape[0], fam.action_space, 2, cfg.hidden_sizes)
    rollout = TaskRunner(fam.factories([0, 1]), [0, 1], seed=0, gamma=cfg.gamma).collect(policy, cfg.num_steps, seed=0)
    on_gpu = dataclasses.replace(rollout, **{f.name: getattr(rollout, f.name).to(GPU)
                                             for f in dataclasses.fields(rollout) if f.name != "episode_returns"})
    policy.to(GPU)
    stats = ppo_update(policy, adam(policy, cfg.learning_rate), on_gpu, cfg, torch.Generator().manual_seed(0))
    assert all(np.isfinite(v) for v in stats.values())
    assert all(p.device.type == "cuda" and torch.isfinite(p).all() for p in policy.parameters())
