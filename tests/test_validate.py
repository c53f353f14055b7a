"""Validation studies: the first-order error itself, and each study end to end on tiny budgets."""

import json

import gymnasium as gym
import pytest
import torch
from typer.testing import CliRunner

from policygradex.cli import app
from policygradex.estimate.projection import scale_to_distance
from policygradex.experiments.validate import first_order_error
from policygradex.rl.policy import ActorCritic


def test_first_order_error_vanishes_linearly_with_the_distance():
    torch.manual_seed(0)
    policy = ActorCritic(4, gym.spaces.Discrete(3), n_tasks=2, hidden_sizes=(16, 16))
    obs, task = torch.randn(64, 4), torch.randint(0, 2, (64,))
    with torch.no_grad():
        actions = policy.policy(obs, task).sample()
    direction = {k: torch.randn_like(v) for k, v in policy.state_dict().items() if k.startswith("actor.")}
    errors = [first_order_error(policy, scale_to_distance(policy, direction, r), obs, task, actions)
              for r in (1e-3, 1e-2, 1e-1)]
    assert errors[0] < 0.01
    assert errors[0] < errors[1] < errors[2]
    assert 3 < errors[1] / errors[0] < 30  # the remainder is second order: error/change grows about linearly


def _validate(study, out, *extra):
    return CliRunner().invoke(app, ["validate", study, "--family", "planted", "--quick", "--no-progress",
                                    "--out", str(out), *extra])


@pytest.fixture(scope="module")
def validated(tmp_path_factory):
    out = tmp_path_factory.mktemp("validate") / "run"
    for study in ("approx", "ground-truth", "ablate", "generalization"):
        result = _validate(study, out)
        assert result.exit_code == 0, result.output
    return out


def test_studies_write_their_json_and_report_sections(validated):
    approx = json.loads((validated / "approx.json").read_text())
    assert {(r["distance"], r["direction"]) for r in approx["rows"]} == {
        (d, k) for d in (0.001, 0.01, 0.1) for k in ("finetune", "random")}
    assert all(0 <= r["rel_error"] for r in approx["rows"])
    v = json.loads((validated / "validation.json").read_text())
    for key in ("family", "n_tasks", "m", "nmi", "nmi_random", "spearman", "estimate_seconds",
                "ground_truth_seconds", "speedup_wall", "speedup_flops"):
        assert key in v
    assert v["m_ground_truth"] == 4 and 0 <= v["nmi"] <= 1 and v["speedup_flops"] > 0
    gradsim = v["gradient_similarity_groups"]  # the same k as the estimate, every task once
    assert len(gradsim) == len(v["estimated_groups"]) and sorted(sum(gradsim, [])) == list(range(v["n_tasks"]))
    assert 0 <= v["nmi_gradient_similarity"] <= 1 and 0 <= v["nmi_truth_vs_design"] <= 1  # planted has a design
    ablation = json.loads((validated / "ablation.json").read_text())
    assert {r["setting"] for r in ablation["rows"]} == {"d", "pair_coverage", "projector", "depth"}
    gen = json.loads((validated / "generalization.json").read_text())
    assert len(gen["subsets"]) == 4
    for r in gen["subsets"]:
        assert r["trace_se"] > 0 and r["bound"] >= 0 and r["n"] > 0 and len(r["hessian_distance_per_layer"]) == 3
        assert r["gap_transitions"] == r["loss"]["held_out"] - r["loss"]["fit"]
    assert -1 <= gen["gap_transitions"]["spearman"] <= 1 and 0 <= gen["gap_transitions"]["within_10x"] <= 1
    report = (validated / "report.md").read_text()
    for section in ("first-order approximation", "ground-truth grouping", "ablation", "generalisation bound",
                    "NMI gradient similarity (same k) vs true", "the family's designed one"):
        assert section in report
    assert (validated / "figures" / "approx.png").is_file() and (validated / "figures" / "generalization.png").is_file()


def test_ground_truth_resumes_without_redoing_finished_subsets(validated):
    finished = sorted((validated / "ground_truth").glob("*/subset-*.json"))
    assert len(finished) == 4
    finished[0].unlink()
    kept = {p: p.stat().st_mtime_ns for p in finished[1:]}
    before = json.loads((validated / "validation.json").read_text())
    assert _validate("ground-truth", validated).exit_code == 0
    assert finished[0].exists()
    assert {p: p.stat().st_mtime_ns for p in finished[1:]} == kept
    after = json.loads((validated / "validation.json").read_text())
    assert after["nmi"] == before["nmi"] and after["true_groups"] == before["true_groups"]


def test_ablation_without_a_known_grouping_says_what_to_run(tmp_path):
    result = CliRunner().invoke(app, ["validate", "ablate", "--family", "cartpole", "--n-tasks", "3", "--quick",
                                      "--no-progress", "--out", str(tmp_path / "run")])
    assert result.exit_code == 2 and "validate ground-truth" in result.output and "Traceback" not in result.output
