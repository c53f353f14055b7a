"""``policygradex compare`` end to end on tiny budgets: results.json's contract, the report, bad input."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from policygradex.cli import app

ARGS = ["--family", "planted", "--n-tasks", "6", "--quick", "--no-progress"]


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    out = tmp_path_factory.mktemp("cmp") / "planted"
    result = CliRunner().invoke(app, ["compare", "--out", str(out), "--seeds", "2", *ARGS])
    assert result.exit_code == 0, result.output
    return out, result.output


def test_results_json_holds_every_grouping_over_the_seeds(compared):
    out, _ = compared
    res = json.loads((out / "results.json").read_text())
    assert res["family"] == "planted" and res["seeds"] == [0, 1] and res["budget_steps_per_task"] == 1_024
    expected = {"single", "random", "gradient-similarity", "independent", "policygradex",
                "policygradex-k1", "policygradex-k2", "policygradex-k3", "policygradex-k4",
                "ppo", "softmod", "paco", "care", "pcgrad"}  # the multi-task optimisers, k = 1 each
    assert set(res["methods"]) == expected
    for m in res["methods"].values():
        assert np.isclose(m["mean"], np.mean(m["per_seed"])) and np.isclose(m["std"], np.std(m["per_seed"], ddof=1))
        assert len(m["per_task"]) == 6 and np.isclose(np.mean(list(m["per_task"].values())), m["mean"])
    assert res["methods"]["single"]["k"] == [1, 1] and res["methods"]["independent"]["k"] == [6, 6]
    assert [res["methods"][f"policygradex-k{k}"]["k"] for k in (1, 2, 3, 4)] == [[1, 1], [2, 2], [3, 3], [4, 4]]
    assert res["methods"]["policygradex-k1"]["per_seed"] == res["methods"]["single"]["per_seed"]  # trained once
    assert res["methods"]["ppo"]["per_seed"] == res["methods"]["single"]["per_seed"]  # planted's own trainer: ppo
    assert all(res["methods"][m]["k"] == [1, 1] for m in ("softmod", "paco", "care", "pcgrad"))
    assert res["methods"]["random"]["k"] == res["methods"]["policygradex"]["k"]
    pgx = res["methods"]["policygradex"]["mean"]
    for name, gain in res["gains"].items():
        assert np.isclose(gain, 100 * (pgx - res["methods"][name]["mean"]) / abs(res["methods"][name]["mean"]))
    assert all(s["downstream"] > 0 for s in res["stage_seconds"])


def test_compare_writes_tables_and_curves_and_resumes(compared):
    out, output = compared
    report = (out / "report.md").read_text()
    assert "PolicyGradEx gain" in report and "Ablation: number of groups k" in report and "± " in report
    assert "Multi-task optimisers" in report and "CARE (k=1)" in report and "PaCo (k=1)" in report
    assert (out / "figures/curves.png").stat().st_size > 1000 and (out / "report.html").is_file()
    assert (out / "seed-0/groups.json").is_file() and (out / "seed-1/report.md").is_file()
    assert "PolicyGradEx" in output
    before = (out / "seed-1/meta_policy.pt").stat().st_mtime_ns
    results = json.loads((out / "results.json").read_text())
    again = CliRunner().invoke(app, ["compare", "--out", str(out), "--seeds", "2", *ARGS])
    assert again.exit_code == 0, again.output
    assert (out / "seed-1/meta_policy.pt").stat().st_mtime_ns == before  # resumed, nothing retrained
    assert json.loads((out / "results.json").read_text())["methods"] == results["methods"]


@pytest.mark.parametrize("args,message", [
    (["--seeds", "0"], "--seeds"),
    (["--downstream-protocol", "meta"], "test tasks"),
    (["--downstream-trainer", "maml"], "--downstream-protocol must be 'meta'"),
])
def test_compare_refuses_bad_input_in_one_line(tmp_path, args, message):
    result = CliRunner().invoke(app, ["compare", "--out", str(tmp_path / "x"), *ARGS, *args])
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output


def test_summary_draws_one_panel_per_compare_folder_and_refuses_other_folders(compared, tmp_path):
    out, _ = compared
    figure = tmp_path / "summary.png"
    result = CliRunner().invoke(app, ["summary", str(out), str(out), "--out", str(figure)])
    assert result.exit_code == 0, result.output
    assert figure.stat().st_size > 5000
    bad = CliRunner().invoke(app, ["summary", str(tmp_path), "--out", str(figure)])
    assert bad.exit_code == 2 and "no results.json" in bad.output and "Traceback" not in bad.output
