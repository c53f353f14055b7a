"""Training telemetry: the event-file encoding itself, and what PPO and MAML write."""

from __future__ import annotations

import math

import numpy as np

import policygradex as pgx
from policygradex.config import AdaptConfig, PPOConfig
from policygradex.rl.maml import train_maml
from policygradex.rl.ppo import train_ppo
from policygradex.rl.telemetry import ScalarWriter, crc32c, masked_crc, read_scalars, summarize


def test_crc32c_matches_the_castagnoli_check_value():
    assert crc32c(b"123456789") == 0xE3069283  # the standard check value of CRC-32C
    assert crc32c(b"") == 0
    assert masked_crc(b"123456789") != crc32c(b"123456789")


def test_scalars_round_trip_and_non_finite_values_are_skipped(tmp_path):
    writer = ScalarWriter(tmp_path)
    writer.scalars(3, {"a": 1.5, "b": -2.25, "nan": math.nan, "inf": math.inf}, "x/")
    writer.scalars(300_000, {"a": 0.125})
    writer.close()
    assert read_scalars(writer.path) == [(3, "x/a", 1.5), (3, "x/b", -2.25), (300_000, "a", 0.125)]
    damaged = bytearray(writer.path.read_bytes())
    damaged[-6] ^= 0xFF
    writer.path.write_bytes(bytes(damaged))
    try:
        read_scalars(writer.path)
        raise AssertionError("a damaged record must fail its checksum")
    except ValueError as exc:
        assert "checksum" in str(exc)


def test_ppo_writes_every_update_and_returns_its_statistics(tmp_path):
    fam = pgx.make_family("planted", n_tasks=2)
    cfg = PPOConfig(steps_per_task=512, envs_per_task=1, num_steps=128, hidden_sizes=(16,))
    res = train_ppo(fam.factories([0, 1]), fam.observation_space, fam.action_space, cfg, 0, log_dir=tmp_path / "tb")
    assert len(res.stats) == len(res.curve) == 4
    for s in res.stats:
        assert 0.0 <= s["clip_frac"] <= 1.0 and s["entropy"] > 0 and np.isfinite(s["explained_var"])
    rows = read_scalars(next((tmp_path / "tb").glob("events.out.tfevents.*")))
    kl = [(step, v) for step, tag, v in rows if tag == "ppo/approx_kl"]
    assert [step for step, _ in kl] == [128, 256, 384, 512]
    assert np.allclose([v for _, v in kl], [s["approx_kl"] for s in res.stats], rtol=1e-6, atol=1e-9)
    assert {"episode_return/task0", "episode_return/task1"} <= {tag for _, tag, _ in rows}
    assert summarize(res.stats, last=0.5)["clip_frac"] == np.mean([s["clip_frac"] for s in res.stats[2:]])


def test_maml_writes_its_outer_loss_and_query_returns(tmp_path):
    fam = pgx.make_family("planted", n_tasks=2)
    ppo = PPOConfig(steps_per_task=256, envs_per_task=1, num_steps=64, hidden_sizes=(16,))
    res = train_maml(fam.factories([0, 1]), fam.observation_space, fam.action_space, ppo, AdaptConfig(steps=64), 0,
                     log_dir=tmp_path)
    tags = {tag for _, tag, _ in read_scalars(next(tmp_path.glob("events.out.tfevents.*")))}
    assert {"maml/outer_loss", "maml/query_return", "query_return/task0", "query_return/task1"} <= tags
    assert len(res.stats) == len(res.curve) and all(np.isfinite(s["outer_loss"]) for s in res.stats)


def test_summary_of_a_statistic_never_finite_is_nan_without_a_warning():
    import math
    import warnings

    from policygradex.rl.telemetry import summarize

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = summarize([{"kl": float("nan"), "loss": 1.0}, {"kl": float("nan"), "loss": 3.0}], last=1.0)
    assert math.isnan(out["kl"]) and out["loss"] == 2.0
