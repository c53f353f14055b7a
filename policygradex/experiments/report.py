"""The run report: figures under figures/, and one document rendered as report.md and report.html.

The document is a list of blocks (heading, text, table, image) so that Markdown and HTML never drift.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import numpy as np

from policygradex.io import atomic_write, read_json, write_text

Block = tuple[str, Any]  # ("h1" | "h2" | "p" | "table" | "img", payload)

LABELS = {"policygradex": "PolicyGradEx", "single": "single (k=1, multi-task)", "random": "random (same k)",
          "gradient-similarity": "gradient similarity (same k)", "independent": "independent (k=n)"}

PAPER_MAIN = {  # the paper's main table (PAPER_NOTES.txt): Meta-World success %, control-task returns
    "metaworld-mt10": {"single": 71.3, "random": 58.2, "gradient-similarity": 69.6, "policygradex": 94.0},
    "cartpole": {"single": 145.9, "random": 144.1, "gradient-similarity": 142.0, "policygradex": 159.2},
    "highway": {"single": 140.0, "random": 143.4, "gradient-similarity": 135.6, "policygradex": 153.5},
    "lunar_lander": {"single": 53.8, "random": 73.1, "gradient-similarity": 80.8, "policygradex": 82.8},
}
PAPER_K = {1: 71.0, 2: 89.5, 3: 94.0, 4: 95.1}  # Meta-World success % against k (approximate for k = 1)


def label(method: str) -> str:
    if method.startswith("policygradex-k"):
        return f"PolicyGradEx, k = {method.rsplit('k', 1)[1]}"
    return LABELS.get(method, method)


def _fmt(x: float | None) -> str:
    return "n/a" if x is None or x != x else f"{x:.1f}"


def build_blocks(metrics: dict[str, Any], figures: list[str]) -> list[Block]:
    groupings = metrics["groupings"]
    methods = list(groupings)
    names = list(groupings["policygradex"]["per_task"])  # training tasks, or test tasks (meta protocol)
    pgx = groupings["policygradex"]
    base = groupings.get("single")
    blocks: list[Block] = [
        ("h1", f"policygradex run: {metrics['family']['name']} ({len(names)} tasks, seed {metrics['seed']})"),
        ("p", metrics.get("description") or ""),
        ("h2", f"Groups (method {metrics['grouping']['method']}, k = {metrics['grouping']['k']})"),
        ("table", (["group", "tasks"], [[str(i + 1), ", ".join(g)] for i, g in enumerate(pgx["groups"])])),
        ("p", trust_sentence(metrics["grouping"])),
        ("p", "" if metrics["grouping"].get("nmi_true") is None else
         f"NMI against the family's true grouping: {metrics['grouping']['nmi_true']:.3f}"),
        ("h2", "Results"),
        ("p", f"Mean evaluation return per task after {metrics['budget_steps_per_task']['train']:,} environment "
              f"steps per training task for every grouping (one policy per group, trainer "
              f"{metrics.get('trainer', 'ppo')}); evaluated on {metrics.get('evaluated_on', 'the training tasks')}."),
    ]
    has_success = all("success_rate" in groupings[m] for m in methods)
    rows = []
    for m in methods:
        gain = "" if base is None or m == "single" else relative_gain(groupings[m]["mean"], base["mean"])
        success = [f"{100 * groupings[m]['success_rate']:.1f}%"] if has_success else []
        rows.append([label(m), str(groupings[m]["k"]), _fmt(groupings[m]["mean"]), gain, *success])
    header = ["grouping", "k", "mean return", "vs single"] + (["success rate"] if has_success else [])
    blocks.append(("table", (header, rows)))
    per_task = [[n] + [_fmt(groupings[m]["per_task"].get(n)) for m in methods] for n in names]
    blocks.append(("table", (["task"] + [label(m) for m in methods], per_task)))
    if has_success:
        blocks.append(("p", "Success rate per task:"))
        rows = [[n] + [f"{100 * groupings[m]['per_task_success'][n]:.0f}%" for m in methods] for n in names]
        blocks.append(("table", (["task"] + [label(m) for m in methods], rows)))
    blocks += [("img", f) for f in figures]
    est = metrics["estimate"]
    blocks += [
        ("h2", "Estimator"),
        ("p", f"{est['m']} random subsets, projected gradient dimension d = {est['d']}, solver {est['solver']}, "
              f"{est['transitions_per_task']} transitions per task at theta* "
              f"(meta-trained for {metrics['budget_steps_per_task']['meta']:,} steps per task)."),
        ("h2", "Stage wall times"),
        ("table", (["stage", "seconds"], [[k, f"{v:.1f}"] for k, v in metrics["stage_seconds"].items()])),
    ]
    return blocks


def to_markdown(blocks: list[Block]) -> str:
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
            out.append(f"![{Path(payload).stem}]({payload})")
    return "\n\n".join(out) + "\n"


def to_html(blocks: list[Block]) -> str:
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
            body.append(f'<img src="{html.escape(payload)}" alt="{html.escape(Path(payload).stem)}">')
    style = ("body{font-family:system-ui,sans-serif;max-width:960px;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;"
             "text-align:right}td:first-child,th:first-child{text-align:left}img{max-width:100%}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>policygradex report</title>"
            f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n")


def relative_gain(value: float, base: float) -> str:
    """The change from ``base`` to ``value`` relative to |base| (so that higher is better for negative returns
    too), with the absolute difference beside it."""
    rel = "n/a" if base == 0 else f"{100 * (value - base) / abs(base):+.1f}%"
    return f"{rel} ({value - base:+.1f})"


def trust_sentence(grouping: dict[str, Any]) -> str:
    """How much to trust the groups, in one sentence, from the null test and the bootstrap."""
    why = (grouping.get("reason") or "").rstrip(".")
    stability = grouping.get("stability")
    if stability is None:
        return why + "."
    if grouping["k"] == 1:
        return f"{why}; {100 * stability:.0f}% agreement across bootstrap resamples of the transitions."
    verdict = ("the groups are reliable" if stability >= 0.8 else
               "the main split is reliable, the membership of some tasks less so" if stability >= 0.5 else
               "treat the groups as tentative")
    return f"{why}. Bootstrap stability {stability:.2f} (1 = every resample regroups the same way): {verdict}."


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=110, bbox_inches="tight"))
    plt.close(fig)


def plot_affinity(path: Path, affinity: np.ndarray, names: list[str], groups: list[list[str]],
                  co_membership: np.ndarray | None = None) -> None:
    """The affinity heatmap and, beside it, the bootstrap co-membership, tasks ordered by group."""
    import matplotlib.pyplot as plt

    order = [names.index(t) for g in groups for t in g]
    panels = [(affinity, "Task affinity U", "RdBu", "U_ij: effect of task j joining a subset on task i's\n"
                                                      "standardised predicted gain (symmetrised)")]
    if co_membership is not None:
        panels.append((co_membership, "Bootstrap co-membership", "Greens", "share of resamples that put\n"
                                                                         "tasks i and j in one group"))
    side = 1.0 + 0.3 * len(names)
    fig, axes = plt.subplots(1, len(panels), figsize=(min(16.0, side * len(panels) + 2.5), min(8.0, side)),
                             squeeze=False, layout="constrained")
    labels = [names[i] for i in order]
    for j, (ax, (M, title, cmap, bar)) in enumerate(zip(axes[0], panels, strict=True)):
        A = M[np.ix_(order, order)]
        lim = float(np.abs(A).max()) or 1.0
        im = ax.imshow(A, cmap=cmap, vmin=-lim if cmap == "RdBu" else 0.0, vmax=lim if cmap == "RdBu" else 1.0)
        if len(names) <= 40:
            ax.set_xticks(range(len(order)), labels, rotation=90, fontsize=8)
            ax.set_yticks(range(len(order)), labels if j == 0 else [], fontsize=8)
        else:
            ax.set_xlabel("tasks, ordered by group")
        edge = -0.5
        for g in groups[:-1]:
            edge += len(g)
            ax.axhline(edge, color="k", lw=1.2)
            ax.axvline(edge, color="k", lw=1.2)
        ax.set_title(title + " (ordered by PolicyGradEx group)", fontsize=10)
        fig.colorbar(im, ax=ax, fraction=0.046, label=bar)
    _save(fig, path)


def plot_returns(path: Path, metrics: dict[str, Any]) -> None:
    import matplotlib.pyplot as plt

    groupings = metrics["groupings"]
    names = list(groupings["policygradex"]["per_task"])
    labels = names + ["mean"]
    width = 0.8 / len(groupings)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.7 * len(labels)), 3.6))
    for j, (m, res) in enumerate(groupings.items()):
        vals = [res["per_task"].get(n) or 0.0 for n in names] + [res["mean"]]
        ax.bar(np.arange(len(labels)) + (j - (len(groupings) - 1) / 2) * width, vals, width,
               label=f"{label(m)}: {res['mean']:.1f}")
    ax.set_xticks(range(len(labels)), labels, rotation=60)
    ax.set_ylabel("evaluation return")
    ax.set_title("Per-task return by grouping (equal steps per task)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    _save(fig, path)


def plot_curves(path: Path, curves: dict[str, list], title: str = "Learning curves") -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.0, 3.6))
    for m, points in curves.items():
        curve = np.array([[x, np.nan if y is None else y] for x, y in points], dtype=float)
        if len(curve):
            ax.plot(curve[:, 0], curve[:, 1], label=label(m))
    ax.set_xlabel("environment steps per task")
    ax.set_ylabel("training episode return (task mean)")
    ax.set_title(title)
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
                   ("img", "figures/approx.png")]
    if (out / "validation.json").exists():
        v = read_json(out / "validation.json")
        p = v["paper"]
        rows = [["NMI estimated vs true grouping", f"{v['nmi']:.3f}", f"{p['nmi'][0]}-{p['nmi'][1]}"],
                ["NMI random grouping vs true", f"{v['nmi_random']:.3f}", f"about {p['nmi_random']}"],
                ["Spearman f(S, i) vs true gain, within task (mean)", f"{v['spearman']:.3f}", ""],
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
    if (out / "ablation.json").exists():
        a = read_json(out / "ablation.json")
        rows = [[r["setting"], str(r["value"]), str(r["m"]), str(r["k"]), f"{r['nmi']:.3f}",
                 f"{r['estimate_seconds']:.2f}"] for r in a["rows"]]
        blocks += [("h2", "Validation: ablation"),
                   ("p", f"NMI against {a['reference']}; estimation = features + surrogates + grouping. Paper: NMI "
                         "0.76 at 2, 4 and 8 layers (Meta-World), 21x-26x speedup."),
                   ("table", (["setting", "value", "m", "k", "NMI", "seconds"], rows))]
    return blocks


def plot_approx(path: Path, approx: dict[str, Any]) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for kind in sorted({r["direction"] for r in approx["rows"]}):
        rows = [r for r in approx["rows"] if r["direction"] == kind]
        ax.plot([100 * r["distance"] for r in rows], [100 * r["rel_error"] for r in rows], "o-", label=f"ours: {kind}")
    for env, errs in approx["paper_percent"].items():
        ax.plot([0.1, 0.5, 1.0], errs, "x:", alpha=0.6, label=f"paper: {env}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("relative parameter distance (%)")
    ax.set_ylabel("first-order error (%)")
    ax.legend(fontsize=7)
    _save(fig, path)


def compare_blocks(results: dict[str, Any], figures: list[str]) -> list[Block]:
    """The main-results table (mean +- std over seeds, gain of PolicyGradEx), the paper's row, the k ablation."""
    from policygradex.experiments.compare import MAIN

    methods, metric = results["methods"], results["metric"]
    paper = PAPER_MAIN.get(results["family"], {})
    unit = "%" if metric.startswith("success") else ""

    def cell(m: str) -> str:
        return f"{methods[m]['mean']:.1f}{unit} ± {methods[m]['std']:.1f}"

    rows = []
    for m in [m for m in MAIN if m in methods]:
        gain, diff = results["gains"].get(m), results.get("differences", {}).get(m)
        rows.append([label(m), "/".join(sorted({str(k) for k in methods[m]["k"]})), cell(m),
                     "" if gain is None else f"{gain:+.1f}% ({diff:+.1f})",
                     f"{paper[m]:.1f}{unit}" if m in paper else ""])
    seeds = results["seeds"]
    blocks: list[Block] = [
        ("h1", f"policygradex compare: {results['family']}"),
        ("p", f"{metric.capitalize()} per task, mean ± std over {len(seeds)} seeds ({', '.join(map(str, seeds))}); "
              f"every grouping trained with {results['budget_steps_per_task']:,} environment steps per task "
              f"(trainer {results['trainer']}), theta* with {results['meta_budget_steps_per_task']:,}; evaluated on "
              f"{results['evaluated_on']}. Gain = PolicyGradEx relative to the row (absolute difference in "
              "brackets; a percentage of a baseline near zero or below it says little). The paper's numbers come "
              "from its own (larger) budgets and are beside ours for reference, not as a like-for-like comparison."),
        ("p", "" if results.get("grouping_stability") is None else
              f"PolicyGradEx's groups across seeds: mean pairwise NMI {results['grouping_stability']:.2f} "
              "(1 = the same groups from every seed's theta*)."),
        ("p", "" if not any(p is not None for p in results.get("null_p", [])) else
              "Per seed, against the null (p of anything to split) and bootstrap stability: " + "; ".join(
                  f"seed {s}: k = {k}, p = {p:.2f}, stability {st:.2f}" for s, k, p, st in zip(
                      seeds, methods["policygradex"]["k"], results["null_p"], results["bootstrap_stability"],
                      strict=True) if p is not None and st is not None) + "."),
        ("table", (["grouping", "k", metric, "PolicyGradEx gain", "paper"], rows)),
    ]
    ks = sorted((m for m in methods if m.startswith("policygradex-k")), key=lambda m: int(m.rsplit("k", 1)[1]))
    if ks:
        rows = [[m.rsplit("k", 1)[1], cell(m), f"{PAPER_K[int(m.rsplit('k', 1)[1])]:.1f}%"
                 if int(m.rsplit("k", 1)[1]) in PAPER_K else ""] for m in ks]
        blocks += [("h2", "Ablation: number of groups k"),
                   ("p", "PolicyGradEx's affinity partitioned into exactly k groups (paper: Meta-World success rate)."),
                   ("table", (["k", metric, "paper (Meta-World)"], rows))]
    tasks = list(methods["policygradex"]["per_task"])
    shown = [m for m in MAIN if m in methods]
    blocks += [("h2", "Per task (mean over seeds)"),
               ("table", (["task"] + [label(m) for m in shown],
                          [[t] + [_fmt(methods[m]["per_task"].get(t)) for m in shown] for t in tasks]))]
    blocks += [("img", f) for f in figures]
    return blocks


def write_compare_report(out: Path) -> None:
    """report.md, report.html and figures/curves.png of a ``compare`` folder, from its results.json."""
    import matplotlib

    matplotlib.use("Agg")
    from policygradex.experiments.compare import MAIN

    results = read_json(out / "results.json")
    figure = "figures/curves.png"
    plot_curves(out / figure, {m: results["methods"][m]["curve"] for m in MAIN if m in results["methods"]},
                f"Learning curves, mean over {len(results['seeds'])} seeds")
    blocks = compare_blocks(results, [figure])
    write_text(out / "report.md", to_markdown(blocks))
    write_text(out / "report.html", to_html(blocks))


def write_report(out: Path) -> None:
    """Render report.md and report.html from whatever the run folder holds."""
    import matplotlib

    matplotlib.use("Agg")
    blocks: list[Block] = []
    if (out / "metrics.json").exists():
        metrics = read_json(out / "metrics.json")
        figures = ["figures/affinity.png", "figures/returns.png", "figures/curves.png"]
        co = out / "co_membership.npy"
        plot_affinity(out / figures[0], np.load(out / "affinity.npy"), metrics["task_names"],
                      metrics["groupings"]["policygradex"]["groups"], np.load(co) if co.exists() else None)
        plot_returns(out / figures[1], metrics)
        plot_curves(out / figures[2], {m: g["curve"] for m, g in metrics["groupings"].items()})
        blocks = build_blocks(metrics, figures)
    else:
        blocks = [("h1", f"policygradex validation: {out.name}")]
    if (out / "approx.json").exists():
        plot_approx(out / "figures/approx.png", read_json(out / "approx.json"))
    blocks += validation_blocks(out)
    write_text(out / "report.md", to_markdown(blocks))
    write_text(out / "report.html", to_html(blocks))
