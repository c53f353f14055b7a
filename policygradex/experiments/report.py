"""The run report: figures under figures/, and one document rendered as report.md and report.html.

The document is a list of blocks (heading, text, table, figure, collapsed section) so that Markdown and HTML
never drift. Order: what was run and the groups, the summary table, the figures, then the long per-task tables.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from policygradex.experiments.results import (
    CompareResults,
    GroupingResult,
    GroupingSummary,
    RunMetrics,
    read_compare_results,
    read_run_metrics,
)
from policygradex.io import atomic_write, read_json, write_text

Block = tuple[str, Any]
"""("h1" | "h2" | "p", str), ("table", (header, rows)), ("img", (path, caption)) or
("details", (summary, blocks)): a section collapsed in HTML."""

LABELS = {"policygradex": "PolicyGradEx", "single": "single (k=1, multi-task)", "random": "random (same k)",
          "gradient-similarity": "gradient similarity (same k)", "independent": "independent (k=n)",
          "ppo": "Multi-Task Training (PPO, k=1)", "softmod": "Soft Modularization (k=1)", "paco": "PaCo (k=1)",
          "care": "CARE (k=1)", "pcgrad": "PCGrad (k=1)",
          "policygradex-mt": "PolicyGradEx's groups, multi-task PPO"}

MAIN = ("single", "random", "gradient-similarity", "independent", "policygradex")
"""Methods of compare's main table; the policygradex-kK rows form the k ablation."""
PAPER_MAIN = {  # the paper's main table (PAPER_NOTES.txt): Meta-World success %, control-task returns
    "metaworld-mt10": {"single": 71.3, "random": 58.2, "gradient-similarity": 69.6, "policygradex": 94.0},
    "cartpole": {"single": 145.9, "random": 144.1, "gradient-similarity": 142.0, "policygradex": 159.2},
    "highway": {"single": 140.0, "random": 143.4, "gradient-similarity": 135.6, "policygradex": 153.5},
    "lunar_lander": {"single": 53.8, "random": 73.1, "gradient-similarity": 80.8, "policygradex": 82.8},
}
TRAINER_ROWS = ("ppo", "softmod", "paco", "care", "pcgrad", "policygradex-mt")
"""Rows of compare's multi-task trainer table (``trainer_baselines``): each trainer with k = 1, and PolicyGradEx's
groups trained and evaluated the same way (meta families; elsewhere the main table's own PolicyGradEx row)."""
PAPER_TRAINERS = {  # the paper's multi-task optimiser rows; its "Multi-Task Training" is multi-task PPO here
    "metaworld-mt10": {"ppo": 71.3, "softmod": 82.0, "paco": 73.1, "care": 84.0},
    "cartpole": {"ppo": 145.9, "softmod": 139.3, "paco": 144.5},
    "highway": {"ppo": 140.0, "softmod": 141.3, "paco": 136.6},
    "lunar_lander": {"ppo": 53.8, "softmod": 66.1, "paco": 62.6},
}
PAPER_K = {1: 71.0, 2: 89.5, 3: 94.0, 4: 95.1}  # Meta-World success % against k (approximate for k = 1)

DPI = 110
MAX_FIG_WIDTH = 9.0
"""Inches: at ``DPI`` a figure is at most about 1000 px wide, readable at page width without scaling down."""
TASKS_PER_PANEL = 25
"""Rows of one panel of the per-task figure; more tasks wrap into further panels."""
CAPTIONS = {
    "affinity": "Left: task affinity U_ij, the predicted gain of task i from training with task j (blue helps, "
                "red hurts); right: the share of bootstrap groupings that put tasks i and j in one group. "
                "Tasks are ordered by PolicyGradEx group; black lines separate the groups.",
    "returns": "Mean evaluation return per task for every grouping (dashed lines: each grouping's mean over "
               "tasks); (G2) after a task name is the PolicyGradEx group it belongs or is routed to.",
    "curves": "Training episode return (mean over tasks) against environment steps per task.",
    "approx": "Relative error of the first-order approximation of log pi against the parameter distance.",
}


def label(method: str) -> str:
    if method.startswith("policygradex-k"):
        return f"PolicyGradEx, k = {method.rsplit('k', 1)[1]}"
    return LABELS.get(method, method)


def _fmt(x: float | None, spec: str = ".1f") -> str:
    return "n/a" if x is None or x != x else format(x, spec)


def relative_gain(value: float, base: float) -> str:
    """The change from ``base`` to ``value`` relative to |base| (so that higher is better for negative returns
    too), with the absolute difference beside it: ``"+1.7% (+19.1)"``."""
    rel = "n/a" if base == 0 else f"{100 * (value - base) / abs(base):+.1f}%"
    return f"{rel} ({value - base:+.1f})"


def task_counts(n_train: int, n_test: int) -> str:
    """"10 training tasks, 50 test tasks", the test tasks left out when there are none."""
    def count(n: int, what: str) -> str:
        return f"{n} {what} task{'' if n == 1 else 's'}"

    return count(n_train, "training") + (f", {count(n_test, 'test')}" if n_test else "")


def _figure(path: str, caption: str | None = None) -> Block:
    """A figure block, captioned from ``CAPTIONS`` unless ``caption`` is given."""
    return ("img", (path, CAPTIONS.get(Path(path).stem, "") if caption is None else caption))


def _group_of(groups: list[list[str]]) -> dict[str, int]:
    """Task name -> its 1-based group number."""
    return {t: i + 1 for i, g in enumerate(groups) for t in g}


def _pgx_groups_of_tasks(pgx: GroupingResult) -> dict[str, int]:
    """Each evaluated task's PolicyGradEx group (1-based): the one it is routed to (meta protocol) or in."""
    if pgx.routes is not None:
        return {t: g + 1 for t, g in zip(pgx.per_task, pgx.routes, strict=True)}
    return _group_of(pgx.groups)


def build_blocks(metrics: RunMetrics, figures: list[str]) -> list[Block]:
    """The run report of one run folder from its metrics.json and the paths of its figures."""
    groupings = metrics.groupings
    methods = list(groupings)
    pgx = groupings["policygradex"]
    names = list(pgx.per_task)  # training tasks, or test tasks (meta protocol)
    train_names = metrics.task_names or [t for g in pgx.groups for t in g]
    tests = [n for n in names if n not in set(train_names)]
    base = groupings.get("single")
    grouping = metrics.grouping
    blocks: list[Block] = [
        ("h1", f"policygradex run: {metrics.family['name']} "
               f"({task_counts(len(train_names), len(tests))}, seed {metrics.seed})"),
        ("p", metrics.description or ""),
        ("h2", f"Groups (method {grouping.method}, k = {grouping.k})"),
        *routing_blocks(groupings),
        ("p", trust_sentence(grouping)),
        ("p", "" if grouping.nmi_true is None else
         f"NMI against the family's true grouping: {grouping.nmi_true:.3f}"),
        ("h2", "Results"),
        ("p", f"Mean evaluation return per task after {metrics.budget_steps_per_task.train:,} environment "
              f"steps per training task for every grouping (one policy per group, trainer "
              f"{metrics.trainer}); evaluated on {metrics.evaluated_on}."
              + ("" if base is None else " vs single = (mean - single) / |single| (positive = better, also for "
                 "negative returns), absolute difference in brackets; a percentage of a single mean near zero "
                 "says little.")),
    ]
    rates = {m: g.success_rate for m, g in groupings.items() if g.success_rate is not None}
    has_success = len(rates) == len(methods)
    rows = []
    for m in methods:
        gain = [] if base is None else ["" if m == "single" else relative_gain(groupings[m].mean, base.mean)]
        success = [f"{100 * rates[m]:.1f}%"] if has_success else []
        rows.append([label(m), str(groupings[m].k), _fmt(groupings[m].mean), *gain, *success])
    header = (["grouping", "k", "mean return"] + ([] if base is None else ["vs single"])
              + (["success rate"] if has_success else []))
    blocks.append(("table", (header, rows)))
    blocks += [_figure(f) for f in figures]
    group_of = _pgx_groups_of_tasks(pgx)
    what = "test task" if tests else "task"
    per_task = [[n, str(group_of.get(n, ""))] + [_fmt(groupings[m].per_task.get(n)) for m in methods]
                for n in names]
    header = [what, "PolicyGradEx group"] + [label(m) for m in methods]
    blocks += [("h2", "Per task"),
               ("details", (f"Mean evaluation return per {what} ({len(names)} rows)", [("table", (header, per_task))]))]
    if has_success:
        success_of = {m: g.per_task_success or {} for m, g in groupings.items()}
        rows = [[n, str(group_of.get(n, ""))] + [f"{100 * success_of[m][n]:.0f}%" for m in methods] for n in names]
        blocks.append(("details", (f"Success rate per {what} ({len(names)} rows)", [("table", (header, rows))])))
    est = metrics.estimate
    blocks += [
        ("h2", "Estimator"),
        ("p", f"{est.m} random subsets, projected gradient dimension d = {est.d}, solver {est.solver}, "
              f"{est.transitions_per_task} transitions per task at theta* "
              f"(meta-trained for {metrics.budget_steps_per_task.meta:,} steps per task)."),
        ("h2", "Stage wall times"),
        ("table", (["stage", "seconds"], [[k, f"{v:.1f}"] for k, v in metrics.stage_seconds.items()])),
    ]
    return blocks


def routing_blocks(groupings: dict[str, GroupingResult]) -> list[Block]:
    """PolicyGradEx's groups as a table; in the meta protocol with the test tasks routed to each group, and how
    the other groupings split the test tasks."""
    pgx = groupings["policygradex"]
    if pgx.routes is None:
        return [("table", (["group", "training tasks"], [[str(i + 1), ", ".join(g)] for i, g in
                                                          enumerate(pgx.groups)]))]
    tests = list(pgx.per_task)
    routed: list[list[str]] = [[] for _ in pgx.groups]
    for t, g in zip(tests, pgx.routes, strict=True):
        routed[g].append(t)
    rows = [[str(i + 1), ", ".join(g), str(len(routed[i])), ", ".join(routed[i]) or "none"]
            for i, g in enumerate(pgx.groups)]
    others = [f"{label(m)}: {' / '.join(str(c) for c in res.routed)}" for m, res in groupings.items()
              if m != "policygradex" and res.routed is not None and len(res.routed) > 1]
    return [("table", (["group", "training tasks", "test tasks routed", "routed test tasks"], rows)),
            ("p", "Each test task is adapted from the policy of the group its policy gradient at theta* is routed "
                  "to." + ("" if not others else " Test tasks per group under the other groupings: "
                           + "; ".join(others) + "."))]


def _render_md(blocks: list[Block]) -> list[str]:
    out = []
    for kind, payload in blocks:
        if kind == "h1":
            out.append(f"# {payload}")
        elif kind == "h2":
            out.append(f"## {payload}")
        elif kind == "p" and payload:
            out.append(payload)
        elif kind == "table":
            header, rows = payload
            out.append("\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
                                 + ["| " + " | ".join(r) + " |" for r in rows]))
        elif kind == "img":
            path, caption = payload
            out.append(f"![{Path(path).stem}]({path})" + (f"\n\n*{caption}*" if caption else ""))
        elif kind == "details":
            summary, inner = payload
            out += [f"### {summary}", *_render_md(inner)]
    return out


def to_markdown(blocks: list[Block]) -> str:
    return "\n\n".join(_render_md(blocks)) + "\n"


def _render_html(blocks: list[Block]) -> list[str]:
    body = []
    for kind, payload in blocks:
        if kind in ("h1", "h2"):
            body.append(f"<{kind}>{html.escape(payload)}</{kind}>")
        elif kind == "p" and payload:
            body.append(f"<p>{html.escape(payload)}</p>")
        elif kind == "table":
            header, rows = payload
            head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
            trs = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{trs}</tbody></table>")
        elif kind == "img":
            path, caption = payload
            cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
            body.append(f'<figure><img src="{html.escape(path)}" alt="{html.escape(Path(path).stem)}">{cap}</figure>')
        elif kind == "details":
            summary, inner = payload
            body.append(f"<details><summary>{html.escape(summary)}</summary>{''.join(_render_html(inner))}</details>")
    return body


def to_html(blocks: list[Block]) -> str:
    style = ("body{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;"
             "text-align:right}td:first-child,th:first-child{text-align:left}img{max-width:100%}"
             "figure{margin:1.5em 0}figcaption{font-size:90%;color:#444}summary{cursor:pointer;margin:1em 0}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>policygradex report</title>"
            f"<style>{style}</style></head><body>{''.join(_render_html(blocks))}</body></html>\n")


def trust_sentence(grouping: GroupingSummary) -> str:
    """How much to trust the groups, in one sentence, from the null test and the bootstrap."""
    why = (grouping.reason or "").rstrip(".")
    stability = grouping.stability
    if stability is None:
        return why + "."
    if grouping.k == 1:
        return f"{why}; {100 * stability:.0f}% agreement across bootstrap resamples of the transitions."
    verdict = ("the groups are reliable" if stability >= 0.8 else
               "the main split is reliable, the membership of some tasks less so" if stability >= 0.5 else
               "treat the groups as tentative")
    return f"{why}. Bootstrap stability {stability:.2f} (1 = every resample regroups the same way): {verdict}."


def _save(fig: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=DPI, bbox_inches="tight"))
    plt.close(fig)


AFFINITY_BAR = ("affinity U_ij: predicted gain of task i from\ntraining with task j (change of i's standardised\n"
                "surrogate score f(S, i), in SDs; + helps, - hurts)")
CO_MEMBERSHIP_BAR = "share of bootstrap groupings\nputting tasks i and j together"


def plot_affinity(path: Path, affinity: np.ndarray, names: list[str], groups: list[list[str]],
                  co_membership: np.ndarray | None = None) -> None:
    """The affinity heatmap and the bootstrap co-membership, tasks ordered by group: side by side for a few
    tasks, one above the other for many, never wider than ``MAX_FIG_WIDTH``."""
    import matplotlib.pyplot as plt

    n = len(names)
    order = [names.index(t) for g in groups for t in g]
    panels = [(affinity, "Task affinity U", "RdBu", AFFINITY_BAR)]
    if co_membership is not None:
        panels.append((co_membership, "Bootstrap co-membership", "Greens", CO_MEMBERSHIP_BAR))
    cols = len(panels) if n <= 16 else 1
    width = MAX_FIG_WIDTH - 0.3  # room for savefig's padding
    side = max(2.0, min(0.5 + 0.16 * n, width / cols - 2.3, 6.0))  # heatmap edge, inches
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(min(width, (side + 2.3) * cols), (side + 1.3) * rows),
                             squeeze=False, layout="constrained")
    labels = [names[i] for i in order]
    fontsize = float(np.clip(0.8 * side * 72 / n, 5.0, 8.0))
    for ax, (M, title, cmap, bar) in zip(axes.flat, panels, strict=True):
        A = M[np.ix_(order, order)]
        signed = cmap == "RdBu"
        lim = float(np.abs(A).max()) or 1.0
        im = ax.imshow(A, cmap=cmap, vmin=-lim if signed else 0.0, vmax=lim if signed else 1.0)
        if n <= 60:
            ax.set_xticks(range(n), labels, rotation=90, fontsize=fontsize)
            ax.set_yticks(range(n), labels, fontsize=fontsize)
        else:
            ax.set_xticks([])
            ax.set_yticks([])
        ax.set_xlabel("task j (ordered by PolicyGradEx group)", fontsize=9)
        ax.set_ylabel("task i", fontsize=9)
        edge = -0.5
        for g in groups[:-1]:
            edge += len(g)
            ax.axhline(edge, color="k", lw=1.2)
            ax.axvline(edge, color="k", lw=1.2)
        ax.set_title(title, fontsize=10)
        cb = fig.colorbar(im, ax=ax, fraction=0.046)
        cb.set_label(bar, fontsize=8)
        cb.ax.tick_params(labelsize=8)
    _save(fig, path)


def plot_per_task(path: Path, values: Mapping[str, Mapping[str, float | None]], xlabel: str, title: str,
                  group_of: dict[str, int] | None = None, ylabel: str = "task") -> None:
    """Per-task scores of every method as a dot plot, tasks down the y axis, wrapping into panels of at most
    ``TASKS_PER_PANEL`` tasks (two side by side), so that 50 tasks stay readable at page width.

    ``values`` maps a method to {task: score}; ``group_of`` adds each task's group to its label."""
    import matplotlib.pyplot as plt

    tasks = list(next(iter(values.values())))
    panels = math.ceil(len(tasks) / TASKS_PER_PANEL)
    per_panel = math.ceil(len(tasks) / panels)
    cols = min(2, panels)
    rows = math.ceil(panels / cols)
    width = min(MAX_FIG_WIDTH, 3.0 + 3.5 * cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width, 1.4 + rows * (0.6 + 0.2 * per_panel)), squeeze=False,
                             layout="constrained")
    markers = "oDs^vP*X"
    dodge = 0.6 / max(1, len(values) - 1)
    for p, ax in enumerate(axes.flat):
        chunk = tasks[p * per_panel:(p + 1) * per_panel]
        if not chunk:
            ax.set_visible(False)
            continue
        y = np.arange(len(chunk))
        for j, (m, scores) in enumerate(values.items()):
            x = np.array([np.nan if scores.get(t) is None else scores[t] for t in chunk], dtype=float)
            mean = float(np.nanmean(list(v for v in scores.values() if v is not None)))
            color = f"C{j}"
            ax.scatter(x, y + (j - (len(values) - 1) / 2) * dodge, s=16, marker=markers[j % len(markers)],
                       color=color, label=f"{label(m)} (mean {mean:.1f})" if p == 0 else None, zorder=3)
            ax.axvline(mean, color=color, lw=0.8, ls="--", alpha=0.6)
        names = [f"{t} (G{group_of[t]})" if group_of and t in group_of else t for t in chunk]
        ax.set_yticks(y, names, fontsize=7)
        ax.set_ylim(len(chunk) - 0.5, -0.5)  # first task on top
        ax.grid(axis="y", color="#ddd", lw=0.5)
        ax.tick_params(axis="x", labelsize=8)
        ax.set_xlabel(xlabel, fontsize=9)
        ax.set_ylabel(ylabel, fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.legend(loc="outside lower center", ncols=min(len(values), 3), fontsize=8, frameon=False)
    _save(fig, path)


def plot_returns(path: Path, metrics: RunMetrics) -> None:
    """The per-task figure of one run: every grouping's mean evaluation return on every evaluated task."""
    groupings = metrics.groupings
    pgx = groupings["policygradex"]
    meta = pgx.routes is not None
    plot_per_task(path, {m: res.per_task for m, res in groupings.items()},
                  "mean evaluation return per episode", "Return per task by grouping (equal steps per task)",
                  _pgx_groups_of_tasks(pgx),
                  "test task (G = PolicyGradEx group routed to)" if meta else "training task (G = PolicyGradEx group)")


def plot_curves(path: Path, curves: dict[str, list], title: str = "Learning curves") -> None:
    """Training return against environment steps of every grouping."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.8), layout="constrained")
    for m, points in curves.items():
        curve = np.array([[x, np.nan if y is None else y] for x, y in points], dtype=float)
        if len(curve):
            ax.plot(curve[:, 0], curve[:, 1], label=label(m))
    ax.set_xlabel("environment steps per task (training)")
    ax.set_ylabel("training episode return\n(mean over tasks)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    _save(fig, path)


def validation_blocks(out: Path) -> list[Block]:
    """Sections for the validation studies whose JSON is in the run folder."""
    blocks: list[Block] = []
    if (out / "approx.json").exists():
        approx = read_json(out / "approx.json")
        paper = approx["paper_percent"]
        at = {0.001: 0, 0.005: 1, 0.01: 2}
        rows = [[f"{100 * r['distance']:g}%", r["direction"], f"{100 * r['rel_error']:.2f}%",
                 f"{100 * r['rel_error_of_logp']:.3f}%"]
                + [f"{paper[e][at[r['distance']]]:.2f}%" if r["distance"] in at else "" for e in paper]
                for r in approx["rows"]]
        blocks += [("h2", "Validation: first-order approximation"),
                   ("p", f"Remainder r = log pi(theta* + dtheta) - log pi(theta*) - g^T dtheta over "
                         f"{approx['transitions']} transitions at theta*, mean over directions: ||r|| relative to the "
                         "exact change of log pi (strict) and to ||log pi(theta* + dtheta)||; the paper's figures "
                         "beside (its normalisation is not stated in our notes)."),
                   ("table", (["distance", "direction", "vs change", "vs log pi"] + [f"paper {e}" for e in paper],
                              rows)),
                   _figure("figures/approx.png")]
    if (out / "validation.json").exists():
        v = read_json(out / "validation.json")
        p = v["paper"]
        rows = [["NMI estimated vs true grouping", f"{v['nmi']:.3f}", f"{p['nmi'][0]}-{p['nmi'][1]}"],
                ["NMI random grouping vs true", f"{v['nmi_random']:.3f}", f"about {p['nmi_random']}"]]
        if "nmi_gradient_similarity" in v:  # folders from before this row keep their table
            rows.append(["NMI gradient similarity (same k) vs true", f"{v['nmi_gradient_similarity']:.3f}", ""])
        if v.get("nmi_truth_vs_design") is not None:
            rows.append(["NMI true grouping vs the family's designed one", f"{v['nmi_truth_vs_design']:.3f}", ""])
        rows += [["Spearman f(S, i) vs true gain, within task (mean)", f"{v['spearman']:.3f}", ""],
                ["Spearman f(S, i) vs true gain, pooled", f"{v.get('spearman_pooled', float('nan')):.3f}", ""],
                ["estimation seconds (stages 2-4)", f"{v['estimate_seconds']:.1f}", ""],
                ["ground-truth seconds (measured subsets)", f"{v['ground_truth_seconds']:.1f}", ""],
                ["speedup, wall (all subsets)", f"{v['speedup_wall']:.0f}x", f"up to {p['speedup']:.0f}x"],
                ["speedup, FLOPs", f"{v['speedup_flops']:.0f}x", ""]]
        blocks += [("h2", "Validation: estimated against ground-truth grouping"),
                   ("p", f"{v['m_ground_truth']} of the estimator's {v['m']} subsets fine-tuned from theta* "
                         f"({v['finetune_steps_per_task']:,} PPO steps per task, {v['eval_episodes']} evaluation "
                         f"episodes before and after). Estimated groups {v['estimated_groups']}, "
                         f"true groups {v['true_groups']}."),
                   ("table", (["measure", "ours", "paper"], rows))]
    if (out / "generalization.json").exists():
        g = read_json(out / "generalization.json")
        rows = [[", ".join(map(str, r["subset"])), f"{r['trace']:.3g} ± {r['trace_se']:.2g}", f"{r['bound']:.4f}",
                 f"{r['gap_transitions']:+.4f}", _fmt(r["gap_tasks"], "+.4f")] for r in g["subsets"]]
        summary = [f"{name}: Spearman {s['spearman']:.2f} with the bound, bound / |gap| median "
                   f"{s['median_ratio']:.1f}, within 10x in {100 * s['within_10x']:.0f}% of subsets, bound >= gap in "
                   f"{100 * s['bound_above_gap']:.0f}%" for name, s in
                   (("gap to held-out transitions", g.get("gap_transitions")),
                    ("gap to held-out tasks", g.get("gap_tasks"))) if s]
        blocks += [("h2", "Validation: Hessian-based generalisation bound"),
                   ("p", f"theta* fine-tuned on {len(g['subsets'])} sampled subsets ({g['finetune_steps_per_task']:,} "
                         "PPO steps per task, the ground truth's fine-tunes). Loss: the surrogate's weighted logistic "
                         "loss on stage 2's transitions at theta*; trace of its Hessian on the subset's fit rows by "
                         f"Hutchinson ({g['hutchinson_probes']} probes, ± standard error); bound: Ju et al. (2022), "
                         "sum over layers of sqrt(C max_x v^T H(x) v / n), without lower-order terms; gaps: mean "
                         "loss on held-out rows of the same tasks, and on the other tasks' rows, minus the fit rows'. "
                         + "; ".join(summary) + "."),
                   ("table", (["subset", "Hessian trace", "bound", "gap (held-out transitions)",
                               "gap (held-out tasks)"], rows)),
                   _figure("figures/generalization.png")]
    if (out / "ablation.json").exists():
        a = read_json(out / "ablation.json")
        rows = [[r["setting"], str(r["value"]), str(r["m"]), str(r["k"]), f"{r['nmi']:.3f}",
                 f"{r['estimate_seconds']:.2f}"] for r in a["rows"]]
        blocks += [("h2", "Validation: ablation"),
                   ("p", f"NMI against {a['reference']}; estimation = features + surrogates + grouping. Paper: NMI "
                         "0.76 at 2, 4 and 8 layers (Meta-World), 21x-26x speedup."),
                   ("table", (["setting", "value", "m", "k", "NMI", "seconds"], rows))]
    return blocks


def plot_summary(path: Path, results: Sequence[CompareResults]) -> None:
    """One panel per ``compare`` folder: each method's score per seed (dots) and its mean +- std over seeds (bar),
    the groupings of the main table first, then the multi-task optimisers; PolicyGradEx's mean as a line."""
    import matplotlib.pyplot as plt

    cols = min(3, len(results))
    rows = math.ceil(len(results) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(min(MAX_FIG_WIDTH, 3.2 * cols), 3.4 * rows), squeeze=False,
                             layout="constrained")
    for ax, res in zip(axes.flat, results, strict=False):
        methods = [m for m in (*MAIN, *TRAINER_ROWS) if m in res.methods]
        x = np.arange(len(methods))
        means = [res.methods[m].mean for m in methods]
        ax.bar(x, means, yerr=[res.methods[m].std for m in methods], capsize=2,
               color=["C3" if m.startswith("policygradex") else ("C0" if m in MAIN else "C2") for m in methods],
               alpha=0.6)
        for i, m in enumerate(methods):
            ax.scatter(np.full(len(res.methods[m].per_seed), i), res.methods[m].per_seed, s=8, color="k", zorder=3)
        ax.axhline(res.methods["policygradex"].mean, color="C3", lw=0.8, ls="--")
        split = sum(m in MAIN for m in methods)
        if split < len(methods):  # the optimisers: k = 1, scored on their training tasks
            ax.axvline(split - 0.5, color="grey", lw=0.8)
        ax.set_xticks(x, [SHORT.get(m, m) for m in methods], rotation=60, ha="right", fontsize=7)
        n = len(res.seeds)
        # a run from another base seed (compare --seed S) also drew another family: say which seeds
        seeds = f"{n} seed{'s' * (n > 1)}" if res.seeds[0] == 0 else f"seeds {res.seeds[0]}-{res.seeds[-1]}"
        where = ("\nleft: held-out test tasks | right: training tasks"
                 if res.protocol == "meta" and split < len(methods) else "")
        ax.set_title(f"{res.family}: {res.budget_steps_per_task:,} steps/task, {seeds}{where}", fontsize=8)
        ax.set_ylabel(res.metric, fontsize=8)
    for ax in list(axes.flat)[len(results):]:
        ax.set_visible(False)
    _save(fig, path)


SHORT = {"policygradex": "PolicyGradEx", "single": "single", "random": "random", "gradient-similarity": "grad. sim.",
         "independent": "independent", "ppo": "MTT (PPO)", "softmod": "SoftMod", "paco": "PaCo", "care": "CARE",
         "pcgrad": "PCGrad", "policygradex-mt": "PGX groups, MT PPO"}
"""Method names short enough for a figure's axis (groupings blue, optimisers green, PolicyGradEx red)."""


def plot_generalization(path: Path, gen: dict[str, Any]) -> None:
    """The bound against each observed gap, one point per subset, with the lines gap = bound and gap = bound / 10."""
    import matplotlib.pyplot as plt

    rows = gen["subsets"]
    fig, ax = plt.subplots(figsize=(5.5, 3.8), layout="constrained")
    bound = np.array([r["bound"] for r in rows])
    for key, name, marker in (("gap_transitions", "held-out transitions", "o"), ("gap_tasks", "held-out tasks", "s")):
        pts = [(b, r[key]) for b, r in zip(bound, rows, strict=True) if r[key] is not None]
        if pts:
            rho = gen.get(key, {}).get("spearman")
            ax.scatter(*np.array(pts).T, marker=marker, alpha=0.75,
                       label=f"gap to {name}" + (f" (Spearman {rho:.2f})" if rho is not None else ""))
    line = np.linspace(0, bound.max() * 1.05, 2)
    ax.plot(line, line, "k--", lw=1, label="gap = bound")
    ax.plot(line, line / 10, "k:", lw=1, label="gap = bound / 10")
    ax.axhline(0, color="grey", lw=0.5)
    ax.set_xlabel("Hessian bound (Ju et al. 2022)")
    ax.set_ylabel("observed generalisation gap\n(surrogate loss)")
    ax.legend(fontsize=8)
    _save(fig, path)


def plot_approx(path: Path, approx: dict[str, Any]) -> None:
    """First-order remainder against the parameter distance, ours beside the paper's."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.6), layout="constrained")
    for kind in sorted({r["direction"] for r in approx["rows"]}):
        rows = [r for r in approx["rows"] if r["direction"] == kind]
        ax.plot([100 * r["distance"] for r in rows], [100 * r["rel_error"] for r in rows], "o-", label=f"ours: {kind}")
    for env, errs in approx["paper_percent"].items():
        ax.plot([0.1, 0.5, 1.0], errs, "x:", alpha=0.6, label=f"paper: {env}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("relative parameter distance ||dtheta|| / ||theta*|| (%)")
    ax.set_ylabel("first-order remainder\n(% of the exact change of log pi)")
    ax.legend(fontsize=7)
    _save(fig, path)


def compare_title(results: CompareResults) -> str:
    """"policygradex compare: cartpole (10 training tasks, 50 test tasks, 5 seeds)"."""
    pgx = results.methods["policygradex"]
    train = {t for g in pgx.groups[0] for t in g} if pgx.groups else set()
    tests = [t for t in pgx.per_task if t not in train]
    n_train = len(train) or len(pgx.per_task)
    seeds = len(results.seeds)
    return (f"policygradex compare: {results.family} "
            f"({task_counts(n_train, len(tests))}, {seeds} seed{'' if seeds == 1 else 's'})")


def compare_blocks(results: CompareResults, figures: list[str]) -> list[Block]:
    """The main-results table (mean +- std over seeds, gain of PolicyGradEx), the paper's row, the k ablation,
    the figures, then the per-task table."""
    methods, metric = results.methods, results.metric
    paper = PAPER_MAIN.get(results.family, {})
    unit = "%" if metric.startswith("success") else ""
    pgx = methods["policygradex"].mean

    def cell(m: str) -> str:
        return f"{methods[m].mean:.1f}{unit} ± {methods[m].std:.1f}"

    rows = []
    for m in [m for m in MAIN if m in methods]:
        rows.append([label(m), "/".join(sorted({str(k) for k in methods[m].k})), cell(m),
                     "" if m == "policygradex" else relative_gain(pgx, methods[m].mean),
                     f"{paper[m]:.1f}{unit}" if m in paper else ""])
    seeds = results.seeds
    blocks: list[Block] = [
        ("h1", compare_title(results)),
        ("p", f"{metric.capitalize()} per task, mean ± std over {len(seeds)} seeds ({', '.join(map(str, seeds))}); "
              f"every grouping trained with {results.budget_steps_per_task:,} environment steps per task "
              f"(trainer {results.trainer}), theta* with {results.meta_budget_steps_per_task:,}; evaluated on "
              f"{results.evaluated_on}. PolicyGradEx gain = (PolicyGradEx - row) / |row| (positive = "
              "PolicyGradEx better, also for negative returns), absolute difference in brackets; a percentage of a "
              "baseline near zero says little. The paper's numbers come from its own (larger) budgets and are "
              "beside ours for reference, not as a like-for-like comparison."),
        ("p", "" if results.grouping_stability is None else
              f"PolicyGradEx's groups across seeds: mean pairwise NMI {results.grouping_stability:.2f} "
              "(1 = the same groups from every seed's theta*)."),
        ("p", "" if not any(p is not None for p in results.null_p or []) else
              "Per seed, against the null (p of anything to split) and bootstrap stability: " + "; ".join(
                  f"seed {s}: k = {k}, p = {p:.2f}, stability {st:.2f}" for s, k, p, st in zip(
                      seeds, methods["policygradex"].k, results.null_p or [], results.bootstrap_stability or [],
                      strict=True) if p is not None and st is not None) + "."),
        ("table", (["grouping", "k", metric, "PolicyGradEx gain", "paper"], rows)),
    ]
    trainers = [m for m in TRAINER_ROWS if m in methods]
    if trainers:
        ref = "policygradex-mt" if "policygradex-mt" in methods else "policygradex"
        paper_t = PAPER_TRAINERS.get(results.family, {})
        rows = [[label(m), "/".join(sorted({str(k) for k in methods[m].k})), cell(m),
                 "" if m == ref else relative_gain(methods[ref].mean, methods[m].mean),
                 f"{paper_t[m]:.1f}{unit}" if m in paper_t else ""] for m in [m for m in trainers if m != ref] + [ref]]
        blocks += [("h2", "Multi-task optimisers"),
                   ("p", "Each optimiser trains one policy on every task (k = 1) with the same budget per task, "
                         "task ids on, and is evaluated on its training tasks (the multi-task protocol, also in "
                         "meta-RL families, where the main table scores held-out test tasks); the last row is "
                         "PolicyGradEx's groups trained and scored the same way. Gain = (that row - optimiser) / "
                         "|optimiser|. CARE's task context is each task's own parameters (tasks/context.py), not "
                         "the paper's language-model encoding of a description."),
                   ("table", (["optimiser", "k", metric, "PolicyGradEx gain", "paper"], rows))]
    ks = sorted((m for m in methods if m.startswith("policygradex-k")), key=lambda m: int(m.rsplit("k", 1)[1]))
    if ks:
        rows = [[m.rsplit("k", 1)[1], cell(m), f"{PAPER_K[int(m.rsplit('k', 1)[1])]:.1f}%"
                 if int(m.rsplit("k", 1)[1]) in PAPER_K else ""] for m in ks]
        blocks += [("h2", "Ablation: number of groups k"),
                   ("p", "PolicyGradEx's affinity partitioned into exactly k groups (paper: Meta-World success rate)."),
                   ("table", (["k", metric, "paper (Meta-World)"], rows))]
    captions = {"returns": f"{metric.capitalize()} per task, mean over seeds, for every grouping (dashed lines: "
                           "each grouping's mean over tasks)."}
    blocks += [("h2", "Figures"), *(_figure(f, captions.get(Path(f).stem)) for f in figures)]
    tasks = list(methods["policygradex"].per_task)
    shown = [m for m in MAIN if m in methods]
    table = (["task"] + [label(m) for m in shown],
             [[t] + [_fmt(methods[m].per_task.get(t)) for m in shown] for t in tasks])
    blocks += [("h2", "Per task (mean over seeds)"),
               ("details", (f"{metric.capitalize()} per task, mean over seeds ({len(tasks)} rows)",
                            [("table", table)]))]
    return blocks


def write_compare_report(out: Path) -> None:
    """report.md, report.html and figures/{returns,curves}.png of a ``compare`` folder, from its results.json."""
    import matplotlib

    matplotlib.use("Agg")
    results = read_compare_results(out / "results.json")
    shown = [m for m in MAIN if m in results.methods]
    seeds = len(results.seeds)
    figures = ["figures/returns.png", "figures/curves.png"]
    metric = results.metric
    plot_per_task(out / figures[0], {m: results.methods[m].per_task for m in shown},
                  f"{metric}, mean over {seeds} seeds", f"{metric.capitalize()} per task by grouping",
                  ylabel="evaluated task")
    plot_curves(out / figures[1], {m: results.methods[m].curve for m in shown},
                f"Learning curves, mean over {seeds} seeds")
    blocks = compare_blocks(results, figures)
    write_text(out / "report.md", to_markdown(blocks))
    write_text(out / "report.html", to_html(blocks))


def write_report(out: Path) -> None:
    """Render report.md and report.html from whatever the run folder holds."""
    import matplotlib

    matplotlib.use("Agg")
    blocks: list[Block] = []
    if (out / "metrics.json").exists():
        metrics = read_run_metrics(out / "metrics.json")
        figures = ["figures/affinity.png", "figures/returns.png", "figures/curves.png"]
        co = out / "co_membership.npy"
        plot_affinity(out / figures[0], np.load(out / "affinity.npy"), metrics.task_names,
                      metrics.groupings["policygradex"].groups, np.load(co) if co.exists() else None)
        plot_returns(out / figures[1], metrics)
        plot_curves(out / figures[2], {m: g.curve for m, g in metrics.groupings.items()})
        blocks = build_blocks(metrics, figures)
    else:
        blocks = [("h1", f"policygradex validation: {out.name}")]
    if (out / "approx.json").exists():
        plot_approx(out / "figures/approx.png", read_json(out / "approx.json"))
    if (out / "generalization.json").exists():
        plot_generalization(out / "figures/generalization.png", read_json(out / "generalization.json"))
    blocks += validation_blocks(out)
    write_text(out / "report.md", to_markdown(blocks))
    write_text(out / "report.html", to_html(blocks))
