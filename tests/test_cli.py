"""The CLI end to end on tiny budgets, and its answers to bad input."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from policygradex.cli import app

QUICK = ["--quick", "--n-tasks", "4", "--no-progress"]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "quick"
    proc = subprocess.run([sys.executable, "-m", "policygradex.cli", "run", "--family", "cartpole", "--out", str(out),
                           *QUICK], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return out


def test_quick_run_writes_a_complete_run_folder(quick_run):
    for name in ("affinity.npy", "groups.json", "metrics.json", "report.md", "report.html", "config.json",
                 "figures/affinity.png", "figures/returns.png", "figures/curves.png"):
        assert (quick_run / name).is_file(), name
    groups = json.loads((quick_run / "groups.json").read_text())
    assert sorted(t for g in groups["groups"] for t in g) == sorted(groups["tasks"])
    assert groups["k"] == len(groups["groups"]) and groups["method"] in ("sdp-null-test", "null-test")
    assert 0.0 <= groups["null_p"] <= 1.0 and 0.0 <= groups["stability"] <= 1.0 and groups["reason"]
    affinity = np.load(quick_run / "affinity.npy")
    assert affinity.shape == (4, 4) and np.allclose(affinity, affinity.T)
    metrics = json.loads((quick_run / "metrics.json").read_text())
    assert set(metrics["groupings"]) == {"policygradex", "single", "random"}
    # cartpole is a meta-RL family: every grouping is scored on the same held-out test tasks (quick: 4)
    for res in metrics["groupings"].values():
        assert set(res["per_task"]) == {"test00", "test01", "test02", "test03"} and res["mean"] > 0
        assert sum(res["routed"]) == 4 and len(res["routed"]) == res["k"]
    assert metrics["groupings"]["random"]["k"] == groups["k"]
    seconds = metrics["stage_seconds"]
    assert set(seconds) == {"meta_train", "features", "surrogate", "calibration", "group", "route", "downstream"}
    assert seconds["surrogate"] < seconds["meta_train"]  # each stage's own time, not its dependencies'
    report = (quick_run / "report.md").read_text()
    assert "PolicyGradEx" in report and "single (k=1" in report and "figures/affinity.png" in report


def test_rerun_with_same_settings_resumes_without_recomputing(quick_run):
    stage_artifacts = ["meta_policy.pt", "store/z.npy", "store/stats.npz", "surrogate.npz", "groups.json",
                       *quick_run.glob("downstream/*")]
    before = {p: (quick_run / p).stat().st_mtime_ns for p in stage_artifacts}
    result = CliRunner().invoke(app, ["run", "--family", "cartpole", "--out", str(quick_run), *QUICK])
    assert result.exit_code == 0, result.output
    assert {p: (quick_run / p).stat().st_mtime_ns for p in stage_artifacts} == before


def _run(args):
    return CliRunner().invoke(app, ["run", *args])


def _assert_clean_error(result, *words):
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert "error" in result.output.lower()
    for w in words:
        assert w in result.output


def test_unknown_family_is_a_one_line_error(tmp_path):
    _assert_clean_error(_run(["--family", "nope", "--out", str(tmp_path / "x"), *QUICK]), "cartpole")


def test_too_few_tasks_is_a_one_line_error(tmp_path):
    _assert_clean_error(_run(["--out", str(tmp_path / "x"), "--quick", "--n-tasks", "1"]), "n_tasks")


def test_unwritable_out_is_a_one_line_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    _assert_clean_error(_run(["--out", str(blocker / "sub"), *QUICK]), "--out")
    _assert_clean_error(_run(["--out", str(blocker), *QUICK]), "--out")
    assert blocker.read_text() == "not a folder"


def test_bad_config_value_is_a_one_line_error(tmp_path):
    _assert_clean_error(_run(["--out", str(tmp_path / "x"), *QUICK, "--estimate-holdout-fraction", "2"]),
                        "holdout_fraction")


def test_existing_run_with_other_config_is_refused_and_kept(quick_run):
    snapshot = {p: p.read_bytes() for p in quick_run.rglob("*") if p.is_file()}
    _assert_clean_error(_run(["--out", str(quick_run), *QUICK, "--seed", "7"]), "seed")
    assert {p: p.read_bytes() for p in quick_run.rglob("*") if p.is_file()} == snapshot


def test_foreign_non_empty_folder_is_refused(tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    _assert_clean_error(_run(["--out", str(tmp_path), *QUICK]), "not empty")
    assert os.listdir(tmp_path) == ["mine.txt"]


def test_tasks_lists_cartpole():
    result = CliRunner().invoke(app, ["tasks"])
    assert result.exit_code == 0 and "cartpole" in result.output


def test_resumed_estimate_reproduces_the_uninterrupted_one(quick_run):
    affinity = np.load(quick_run / "affinity.npy")
    import shutil

    shutil.rmtree(quick_run / "store")  # stage 2 and 3 redone on top of the reused theta*
    (quick_run / "surrogate.npz").unlink()
    result = CliRunner().invoke(app, ["run", "--family", "cartpole", "--out", str(quick_run), *QUICK])
    assert result.exit_code == 0, result.output
    assert np.array_equal(np.load(quick_run / "affinity.npy"), affinity)


def test_damaged_artifact_is_recomputed_with_a_warning(quick_run):
    groups = (quick_run / "groups.json").read_text()
    (quick_run / "surrogate.npz").write_bytes(b"truncated")
    result = CliRunner().invoke(app, ["run", "--family", "cartpole", "--out", str(quick_run), *QUICK])
    assert result.exit_code == 0, result.output
    assert "damaged" in result.output
    assert np.load(quick_run / "surrogate.npz")["scores"].shape[1] == 4
    assert (quick_run / "groups.json").read_text() == groups


def test_more_groups_than_tasks_is_a_one_line_error(tmp_path):
    _assert_clean_error(_run(["--out", str(tmp_path / "x"), *QUICK, "--k", "9"]), "between 1 and 4")


@pytest.mark.parametrize("args,message", [(["--executor", "dask"], "executor must be one of local, ray"),
                                          (["--ray-address", "10.0.0.1:6379"], "--ray-address needs --executor ray")])
def test_bad_executor_settings_are_one_line_errors(tmp_path, args, message):
    _assert_clean_error(_run(["--out", str(tmp_path / "x"), *QUICK, *args]), message)
