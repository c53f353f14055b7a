"""The run and compare reports from small synthetic inputs (no RL): gains, titles, figure sizes, order, routing,
labelled axes and colour bars."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")
import matplotlib.image as mpimg  # noqa: E402

from policygradex.experiments import report  # noqa: E402
from policygradex.experiments.results import RunMetrics  # noqa: E402
from policygradex.io import write_json  # noqa: E402

MAX_PX = 1100
"""Widest figure allowed: readable at a ~1000 px page width."""
TRAIN = [f"pd{i:02d}" for i in range(10)]
TESTS = [f"test{i:02d}" for i in range(50)]
GROUPS = [TRAIN[:6], TRAIN[6:]]


def _grouping(groups: list[list[str]], per_task: dict[str, float], mean: float,
              routes: list[int] | None) -> dict[str, Any]:
    out = {"groups": groups, "k": len(groups), "per_task": per_task, "mean": mean,
           "curve": [[256 * (s + 1), mean + s] for s in range(8)]}
    if routes is not None:
        out["routes"] = routes
        out["routed"] = [routes.count(j) for j in range(len(groups))]
    return out


def make_metrics(meta: bool = True) -> dict[str, Any]:
    """A Pendulum-like run: negative returns, single -1108.8, PolicyGradEx -1089.7, random -792.0."""
    tasks = TESTS if meta else TRAIN
    means = {"policygradex": -1089.7, "single": -1108.8, "random": -792.0}
    groups = {"policygradex": GROUPS, "single": [TRAIN], "random": [TRAIN[::2], TRAIN[1::2]]}
    groupings = {}
    for m, mean in means.items():
        per_task = {t: mean + (5.0 if i % 2 else -5.0) for i, t in enumerate(tasks)}
        routes = [int(i % 5 == 0) if len(groups[m]) > 1 else 0 for i in range(len(tasks))] if meta else None
        groupings[m] = _grouping(groups[m], per_task, mean, routes)
    return {
        "family": {"name": "pendulum", "task_names": TRAIN},
        "task_names": TRAIN,
        "description": "synthetic",
        "seed": 0,
        "estimate": {"m": 40, "d": 64, "solver": "newton-stats", "transitions_per_task": 256},
        "grouping": {"k": 2, "method": "sdp-null-test", "reason": "2 groups beat the null", "null_p": 0.01,
                     "stability": 0.9, "nmi_true": None},
        "budget_steps_per_task": {"meta": 4096, "train": 2048},
        "trainer": "ppo",
        "evaluated_on": "50 held-out test tasks" if meta else "the training tasks",
        "stage_seconds": {"meta_train": 1.0, "downstream": 2.0},
        "groupings": groupings,
    }


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report")
    rng = np.random.default_rng(0)
    a = rng.normal(size=(10, 10))
    np.save(out / "affinity.npy", (a + a.T) / 2)
    np.save(out / "co_membership.npy", rng.uniform(size=(10, 10)))
    write_json(out / "metrics.json", make_metrics())
    report.write_report(out)
    return out


def test_relative_gain_is_relative_to_the_absolute_baseline():
    assert report.relative_gain(-1089.7, -1108.8) == "+1.7% (+19.1)"
    assert report.relative_gain(-792.0, -1108.8) == "+28.6% (+316.8)"
    assert report.relative_gain(90.0, 100.0) == "-10.0% (-10.0)"
    assert report.relative_gain(1.0, 0.0) == "n/a (+1.0)"


def test_run_report_gains_have_the_right_sign_for_negative_returns(run_folder):
    text = (run_folder / "report.md").read_text()
    assert "+1.7% (+19.1)" in text and "+28.6% (+316.8)" in text
    assert "-1.7%" not in text and "-28.6%" not in text


def test_titles_count_training_and_test_tasks_separately(run_folder):
    title = (run_folder / "report.md").read_text().splitlines()[0]
    assert "10 training tasks, 50 test tasks" in title
    blocks = report.build_blocks(RunMetrics.from_json(make_metrics(meta=False)), [])
    assert blocks[0][1] == "policygradex run: pendulum (10 training tasks, seed 0)"


def test_figures_fit_page_width(run_folder):
    for name in ("affinity", "returns", "curves"):
        height, width = mpimg.imread(run_folder / "figures" / f"{name}.png").shape[:2]
        assert 300 <= width <= MAX_PX, (name, width)
        assert height <= 2000, (name, height)


def test_many_tasks_affinity_stays_narrow(tmp_path):
    names = [f"t{i:02d}" for i in range(50)]
    a = np.random.default_rng(1).normal(size=(50, 50))
    path = tmp_path / "affinity.png"
    report.plot_affinity(path, a + a.T, names, [names[:20], names[20:]], np.eye(50))
    assert mpimg.imread(path).shape[1] <= MAX_PX


def test_summary_then_figures_then_per_task_tables(run_folder):
    text = (run_folder / "report.md").read_text()
    summary = text.index("| grouping | k | mean return | vs single |")
    first_figure = text.index("![")
    per_task = text.index("| test task | PolicyGradEx group |")
    assert summary < first_figure < per_task
    assert text.rindex("![") < per_task
    html = (run_folder / "report.html").read_text()
    assert html.index("<img") < html.index("<details>") < html.index("<th>test task</th>")


def test_routing_of_test_tasks_is_shown(run_folder):
    text = (run_folder / "report.md").read_text()
    # test tasks 0, 5, 10, ... go to group 2 of PolicyGradEx, the others to group 1
    row = next(line for line in text.splitlines() if line.startswith("| 2 | pd06"))
    assert "| 10 | test00, test05, test10," in row and "test01" not in row
    assert "| test05 | 2 |" in text and "| test01 | 1 |" in text


def test_every_axis_and_colour_bar_is_labelled(monkeypatch, tmp_path):
    figures = []
    save = report._save

    def keep(fig, path):
        figures.append((path.name, [(ax.get_xlabel(), ax.get_ylabel(), ax.get_label()) for ax in fig.axes]))
        save(fig, path)

    monkeypatch.setattr(report, "_save", keep)
    metrics = RunMetrics.from_json(make_metrics())
    report.plot_affinity(tmp_path / "affinity.png", np.eye(10), TRAIN, GROUPS, np.eye(10))
    report.plot_returns(tmp_path / "returns.png", metrics)
    report.plot_curves(tmp_path / "curves.png", {m: g.curve for m, g in metrics.groupings.items()})
    by_name = dict(figures)
    bars = [y for x, y, lab in by_name["affinity.png"] if lab == "<colorbar>"]
    assert len(bars) == 2
    assert "predicted gain of task i" in bars[0] and "task j" in bars[0]
    assert "share of bootstrap groupings" in bars[1]
    for name, axes in figures:
        for x, y, lab in axes:
            if lab != "<colorbar>":
                assert x and y, (name, lab)
    assert any("return" in x for x, _, _ in by_name["returns.png"])
    assert by_name["curves.png"][0][0].startswith("environment steps")


def test_compare_report(tmp_path):
    methods = {m: {"mean": v, "std": 3.0, "per_task": {t: v for t in TESTS}, "per_seed": [v, v], "k": [k, k],
                   "groups": [[TRAIN] if k == 1 else GROUPS] * 2, "curve": [[256, v], [512, v + 1]]}
               for m, v, k in (("single", -1108.8, 1), ("random", -1400.0, 2), ("policygradex", -1089.7, 2))}
    write_json(tmp_path / "results.json", {
        "family": "pendulum", "budget_steps_per_task": 2048, "seeds": [0, 1], "metric": "return",
        "protocol": "meta", "trainer": "ppo", "evaluated_on": "50 held-out test tasks",
        "meta_budget_steps_per_task": 4096, "methods": methods,
        # stale, signed-division gains: the report must derive its gains from the means, not trust these
        "gains": {"single": -1.72, "random": -22.2}})
    report.write_compare_report(tmp_path)
    text = (tmp_path / "report.md").read_text()
    assert text.splitlines()[0] == "# policygradex compare: pendulum (10 training tasks, 50 test tasks, 2 seeds)"
    assert "+1.7% (+19.1)" in text and "+22.2% (+310.3)" in text and "-1.7%" not in text
    assert text.index("![") < text.index("| task |")
    assert mpimg.imread(tmp_path / "figures/returns.png").shape[1] <= MAX_PX
