"""`bench ppo`, `bench routing` and `bench grouping` at tiny budgets: their rows hold what they promise."""

import json

from typer.testing import CliRunner

from policygradex.cli import app
from policygradex.experiments.bench import bench_grouping, bench_ppo


def test_bench_ppo_trains_both_and_reports_rates_and_returns():
    (row,) = bench_ppo(["CartPole-v1"], [0], steps=2048, eval_episodes=2)
    assert row["env"] == "CartPole-v1" and row["steps"] == 2048
    assert row["steps_per_s"] > 0 and row["sb3_steps_per_s"] > 0
    assert abs(row["ratio"] - row["steps_per_s"] / row["sb3_steps_per_s"]) < 0.02 * row["ratio"] + 0.01
    for key in ("final_returns", "sb3_final_returns"):  # CartPole: 1 to 500 per episode
        assert len(row[key]) == 1 and 1 <= row[key][0] <= 500


def test_bench_ppo_refuses_an_unknown_env():
    res = CliRunner().invoke(app, ["bench", "ppo", "--envs", "Pong-v5"])
    assert res.exit_code == 2 and "CartPole-v1" in res.output


def test_bench_routing_counts_misrouted_test_tasks_per_rule():
    res = CliRunner().invoke(app, ["bench", "routing", "--seeds", "0", "--quick"])
    assert res.exit_code == 0, res.output
    row = json.loads(res.output.strip().splitlines()[-1])
    n = row["test_tasks"]
    for grouping in ("policygradex", "gradient-similarity"):
        assert 1 <= row[f"{grouping}_k"] <= 4
        for rule in ("surrogate", "cosine"):
            assert 0 <= row[f"{grouping}_misrouted_{rule}"] <= n


def test_bench_grouping_scores_both_methods_against_the_known_answer():
    (row,) = bench_grouping(["lottery"], [0], quick=True)
    assert row["family"] == "lottery" and row["k_expected"] == 3 and row["n"] == 12
    assert 0 <= row["nmi_true"] <= 1 and 0 <= row["nmi_gradient_similarity"] <= 1
    assert sorted(sum(([int(t[1:3]) for t in g] for g in row["groups"]), [])) == list(range(12))


def test_bench_grouping_keeps_its_run_folders_and_resumes_from_them(tmp_path):
    (first,) = bench_grouping(["planted"], [1], quick=True, family_seed=2, out=tmp_path)
    folder = tmp_path / "planted-family2-seed1"
    assert (folder / "groups.json").exists() and first["family_seed"] == 2
    (folder / "groups.json").unlink()  # a new grouping rule: stage 4 alone is computed again
    (again,) = bench_grouping(["planted"], [1], quick=True, family_seed=2, out=tmp_path)
    assert (folder / "groups.json").exists()
    answer = [{k: v for k, v in row.items() if not k.endswith("seconds")} for row in (first, again)]
    assert answer[0] == answer[1]
    assert again["total_seconds"] < first["total_seconds"]
