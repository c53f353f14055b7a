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
                        "--estimate-holdout-fraction must lie strictly between 0 and 1")


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


def test_more_groups_than_tasks_is_refused_before_any_work(tmp_path):
    _assert_clean_error(_run(["--out", str(tmp_path / "x"), *QUICK, "--k", "9"]), "--k is 9 but the family has 4 tasks")
    assert not (tmp_path / "x").exists()  # nothing recorded: the same folder then takes --k 2


def test_diverging_meta_training_stops_with_one_line(tmp_path):
    result = _run(["--out", str(tmp_path / "x"), *QUICK, "--meta-learning-rate", "1e30"])
    _assert_clean_error(result, "meta-training theta* (stage 1) diverged")
    assert "--meta-learning-rate" in result.output


def test_saturated_meta_policy_is_refused_before_the_surrogates(tmp_path):
    # lr 1000 keeps the parameters finite but makes theta* deterministic: zero gradient features
    result = _run(["--out", str(tmp_path / "x"), *QUICK, "--meta-learning-rate", "1000"])
    _assert_clean_error(result, "are all zero or non-finite")
    assert "--meta-learning-rate" in result.output


def test_artifacts_are_readable_as_the_umask_allows(quick_run):
    mask = os.umask(0o022)
    os.umask(mask)
    for name in ("groups.json", "affinity.npy", "report.html", "meta_policy.pt"):
        assert (quick_run / name).stat().st_mode & 0o777 == 0o666 & ~mask, name


@pytest.mark.parametrize("args,message", [(["--executor", "dask"], "--executor must be one of local, ray"),
                                          (["--ray-address", "10.0.0.1:6379"], "--ray-address needs the ray executor")])
def test_bad_executor_settings_are_one_line_errors(tmp_path, args, message):
    _assert_clean_error(_run(["--out", str(tmp_path / "x"), *QUICK, *args]), message)


@pytest.mark.parametrize("args,message", [
    (["--meta-gamma", "7"], "error: --meta-gamma must lie in (0, 1], got 7"),
    (["--k", "0"], "error: --k must be at least 1, got 0"),
    (["--seed", "-1"], "error: --seed must lie in"),
    (["--workers", "0"], "error: --workers must be positive"),
    (["--downstream-trainer", "softmod", "--no-train-task-conditioned"], "error: --train-task-conditioned must be on"),
    (["--downstream-trainer", "maml", "--downstream-protocol", "multi-task"], "error: --downstream-protocol must be"),
])
def test_config_errors_name_the_flag_on_one_line(tmp_path, args, message):
    result = _run(["--out", str(tmp_path / "x"), *QUICK, *args])
    _assert_clean_error(result, message)
    assert result.output.strip().count("\n") == 0, result.output
    assert not (tmp_path / "x").exists()


def test_flag_for_maps_dotted_fields_to_their_options():
    from policygradex.cli import flag_for

    assert flag_for("meta.gamma") == "--meta-gamma" and flag_for("estimate.proj_dim") == "--estimate-proj-dim"
    assert flag_for("cluster.k") == "--k" and flag_for("seed") == "--seed"
    assert flag_for("ray_address") == "--ray-address"
    assert flag_for("train.task_conditioned") == "--train-task-conditioned"
    assert flag_for("nowhere.field") == "nowhere.field"


NARROW = {"env": {"COLUMNS": "80"}, "terminal_width": 80}


def _help(*args):
    result = CliRunner().invoke(app, [*args, "--help"], **NARROW)
    assert result.exit_code == 0, result.output
    return result.output


def _cut(text):
    """Lines over 80 columns, or that end cut short (rich's '…', click's '...' after a command's help)."""
    return [line for line in text.splitlines() if len(line) > 80 or "…" in line
            or (line.endswith("...") and not line.startswith("Usage:"))]


def _flags(text):
    import re

    return set(re.findall(r"(?<![\w-])--[a-z][\w-]*", text))


@pytest.mark.parametrize("command", [["run"], ["compare"], ["validate", "approx"], ["validate", "ablate"]])
def test_help_shows_every_flag_in_full_at_80_columns(command):
    from policygradex.cli import config_options

    text = _help(*command)
    expected = {o.flag for o in config_options() if command[0] == "validate" or o.section != "validate"}
    assert expected <= _flags(text), sorted(expected - _flags(text))
    assert not _cut(text)
    for section in ("General options:", "Meta options:", "Estimate options:", "Cluster options:"):
        assert section in text  # still grouped by config section


def test_top_level_and_group_help_fit_80_columns_uncut():
    for command in ([], ["validate"], ["bench"], ["bench", "grouping"], ["bench", "ppo"], ["bench", "routing"],
                    ["tasks"]):
        text = _help(*command)
        assert not _cut(text), command
    assert "train groups and baselines, report." in " ".join(_help().split())


def _shown_default(text, flag):
    """The [default: ...] of ``flag``'s entry in help ``text`` (None if it shows none)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:1] and line.split()[0] == flag)
    end = next((i for i in range(start + 1, len(lines)) if lines[i].lstrip().startswith("--") or not lines[i].strip()),
               len(lines))
    entry = " ".join(" ".join(lines[start:end]).split())
    return entry.split("[default: ")[1].split("]")[0] if "[default: " in entry else None


def test_help_shows_the_defaults_of_the_family_named():
    from policygradex.config import Config

    planted, cartpole = Config.for_family("planted"), Config.for_family("cartpole")
    assert planted.estimate.transitions_per_task == 8192 != cartpole.estimate.transitions_per_task
    flag = "--estimate-transitions-per-task"
    for args, cfg in ((["--family", "planted"], planted), (["--family=planted"], planted), ([], cartpole),
                      (["--family", "cartpole"], cartpole), (["--family", "no-such-family"], cartpole)):
        for command in ("run", "compare"):
            text = _help(command, *args)
            assert _shown_default(text, flag) == str(cfg.estimate.transitions_per_task), (command, args)
            assert _shown_default(text, "--downstream-trainer") == cfg.downstream.trainer
            assert _shown_default(text, "--meta-steps-per-task") == str(cfg.meta.steps_per_task)
    # --help before --family, and the quick preset
    early = CliRunner().invoke(app, ["run", "--help", "--family", "planted"], **NARROW)
    assert early.exit_code == 0 and _shown_default(early.output, flag) == "8192"
    quick = Config.for_family("planted", quick=True).estimate.transitions_per_task
    assert _shown_default(_help("run", "--quick", "--family", "planted"), flag) == str(quick)
    text = _help("validate", "ground-truth", "--family", "planted")
    assert _shown_default(text, flag) == "8192"
    assert _shown_default(text, "--validate-finetune-steps-per-task") == str(planted.validate.finetune_steps_per_task)


def test_validate_options_only_under_validate(tmp_path):
    from policygradex.cli import config_options

    validate_flags = {o.flag for o in config_options() if o.section == "validate"}
    assert {"--validate-distances", "--validate-finetune-steps-per-task", "--validate-ablate-dims"} <= validate_flags
    for command in ("run", "compare"):
        text = _help(command)
        assert not _flags(text) & (validate_flags | {"--no-validate-deterministic-eval"}), command
        assert "Validate options" not in text
        result = CliRunner().invoke(app, [command, "--out", str(tmp_path / "x"), *QUICK, "--validate-directions", "2"])
        assert result.exit_code == 2 and "No such option" in result.output and not (tmp_path / "x").exists()
    for study in ("approx", "ground-truth", "ablate"):
        assert validate_flags <= _flags(_help("validate", study)), study


def test_tasks_is_readable_at_80_columns():
    from policygradex.tasks import FAMILIES

    result = CliRunner().invoke(app, ["tasks"], **NARROW)
    assert result.exit_code == 0
    assert not _cut(result.output)
    squeezed = "".join(result.output.split())
    for name, info in FAMILIES.items():
        for text in (name, info.summary, info.varies):
            assert "".join(text.split()) in squeezed, text
    assert "mo:mo-lunar-lander-v3" in result.output and "metaworld:reach-v3,push-v3" in result.output


def test_run_folder_holds_training_telemetry(quick_run):
    from policygradex.rl.telemetry import read_scalars

    events = list((quick_run / "tensorboard" / "meta_train").glob("events.out.tfevents.*"))
    assert events and any(tag == "ppo/approx_kl" for _, tag, _ in read_scalars(events[0]))
    assert any((quick_run / "tensorboard").glob("group-*/events.out.tfevents.*"))
    metrics = json.loads((quick_run / "metrics.json").read_text())
    assert 0.0 <= metrics["meta_train_stats"]["clip_frac"] <= 1.0
    stats = metrics["groupings"]["policygradex"]["train_stats"]
    assert len(stats) == metrics["groupings"]["policygradex"]["k"] and all(s for s in stats)


@pytest.mark.parametrize("device,message", [("nonsense", "--device is not a torch device"),
                                            ("cuda", "--device is 'cuda' but torch sees no GPU here")])
def test_bad_device_is_a_one_line_error(tmp_path, device, message):
    import torch

    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("a GPU is visible here")
    result = _run(["--out", str(tmp_path / "x"), *QUICK, "--device", device])
    _assert_clean_error(result, message)
    assert not (tmp_path / "x").exists()


def test_groups_of_an_older_grouping_rule_are_regrouped_not_reused(quick_run):
    from policygradex.experiments.run_folder import RunFolder

    path = quick_run / "groups.json"
    current = json.loads(path.read_text())
    older = {**current, "groups": [current["tasks"]], "k": 1, "reason": "an older rule's answer"}
    del older["rule"]  # what groups.json held before the rule was versioned
    path.write_text(json.dumps(older))
    RunFolder(quick_run).seal("groups.json")  # intact, only older
    result = CliRunner().invoke(app, ["run", "--family", "cartpole", "--out", str(quick_run), *QUICK])
    assert result.exit_code == 0, result.output
    assert "grouping rule 1" in result.output
    assert json.loads(path.read_text()) == current
