"""``policygradex validate``: the paper's claims as the project's own measurements, in the run folder.

- ``approx``: error of the first-order expansion log pi_{theta*+dtheta}(a|s) ~ log pi_{theta*}(a|s) + g^T dtheta
  at relative distances ||dtheta|| / ||theta*||, along fine-tuning and random directions -> approx.json.
- ``ground_truth``: fine-tune theta* with PPO on the estimator's subsets, measure each member task's
  real return gain, cluster those gains the same way, compare with the estimate -> validation.json.
- ``ablate``: NMI and estimation time against d, m, depth of theta* and projection back-end -> ablation.json.
- ``generalization``: for fine-tunes of theta* on a sample of subsets, the Hessian trace of the surrogate loss,
  the Hessian-weighted distance from theta* per layer, the bound of Ju et al. (2022) it implies and the
  observed generalisation gaps (experiments/hessian.py) -> generalization.json.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.stats import spearmanr
from torch.func import functional_call, jvp

from policygradex import io
from policygradex.cluster.grouping import group
from policygradex.cluster.significance import nmi, partition_values
from policygradex.config import Config
from policygradex.errors import PGXError
from policygradex.estimate.affinity import affinity_from_scores
from policygradex.estimate.features import chunk_rollout, feature_chunks
from policygradex.estimate.projection import PROJECTORS, actor_layers, apply_step, scale_to_distance
from policygradex.experiments.groupings import random_groups
from policygradex.experiments.hessian import hessian_bound, hutchinson_trace, layer_quadratic_forms, surrogate_loss
from policygradex.experiments.pipeline import Pipeline, derive_seed
from policygradex.parallel import torch_threads
from policygradex.rl.evaluate import evaluate
from policygradex.rl.policy import ActorCritic
from policygradex.rl.ppo import stopping_divergence, train_ppo
from policygradex.rl.rollout import TaskRunner
from policygradex.tasks.family import TaskFamily

# The paper's first-order error table (relative error, %) at parameter distances 0.1%, 0.5%, 1%.
PAPER_APPROX = {"MT10": (0.01, 0.43, 0.32), "CartPole": (0.12, 0.73, 0.98), "Highway": (0.02, 0.11, 2.04),
                "LunarLander": (0.06, 0.03, 0.48)}
PAPER_NMI, PAPER_NMI_RANDOM, PAPER_SPEEDUP = (0.73, 0.76), 0.2, 26.0


# -- first-order approximation -------------------------------------------------------------------------------
def first_order_error(policy: ActorCritic, step: dict[str, torch.Tensor], obs: torch.Tensor, task: torch.Tensor,
                      actions: torch.Tensor, relative_to: str = "change") -> float:
    """Remainder of the first-order expansion over the given transitions, ||r|| with
    r = log pi_{theta*+step}(a|s) - log pi_{theta*}(a|s) - g^T step, relative to the exact change
    (``relative_to="change"``, the strict measure) or to ||log pi_{theta*+step}(a|s)|| (``"logp"``)."""
    params = {k: v.detach() for k, v in policy.actor.named_parameters()}
    tangent = {k: step.get(f"actor.{k}", torch.zeros_like(v)) for k, v in params.items()}

    def logp(p: dict[str, torch.Tensor]) -> torch.Tensor:
        return policy.log_prob(policy.distribution(functional_call(policy.actor, p, (policy.inputs(obs, task),))),
                               actions)

    with torch.no_grad():
        # torch annotates jvp's result as a pair or, with has_aux, a triple: one type for both
        before, linear = jvp(logp, (params,), (tangent,))  # type: ignore[misc]
        moved = apply_step(policy, step)
        after = moved.log_prob(moved.policy(obs, task), actions)
    scale = (after - before) if relative_to == "change" else after
    return float((after - before - linear).norm() / scale.norm().clamp_min(1e-12))


def _finetune(policy: ActorCritic, family: TaskFamily, subset: list[int], cfg: Config, seed: int) -> ActorCritic:
    v = cfg.validate
    ppo = dataclasses.replace(cfg.meta, steps_per_task=v.finetune_steps_per_task,
                              learning_rate=v.finetune_learning_rate)
    tuned = copy.deepcopy(policy)
    with stopping_divergence("fine-tuning theta* on a subset", "--validate-finetune-learning-rate"):
        train_ppo(family.factories(subset), family.observation_space, family.action_space, ppo, seed, policy=tuned,
                  task_ids=subset)
    return tuned


def validate_approx(pipe: Pipeline) -> dict[str, Any]:
    family, cfg, v = pipe.family, pipe.cfg, pipe.cfg.validate
    policy = pipe.meta_policy()
    runner = TaskRunner(family.factories(range(family.n_tasks)), range(family.n_tasks),
                        seed=derive_seed(cfg.seed, "approx"), gamma=cfg.meta.gamma)
    roll = runner.collect(policy, v.transitions_per_task, seed=derive_seed(cfg.seed, "approx"))
    runner.close()
    obs, task, actions = roll.flat()
    rng = np.random.default_rng(derive_seed(cfg.seed, "approx-directions"))
    size = max(1, family.n_tasks // 2)
    directions: dict[str, list[dict[str, torch.Tensor]]] = {"finetune": [], "random": []}
    with pipe.progress.stage("approx: directions", 2 * v.directions) as advance:
        for j in range(v.directions):
            subset = sorted(rng.choice(family.n_tasks, size, replace=False).tolist())
            tuned = _finetune(policy, family, subset, cfg, derive_seed(cfg.seed, "approx-finetune", j)).state_dict()
            directions["finetune"].append({k: tuned[k] - v_ for k, v_ in policy.state_dict().items()
                                           if k.startswith("actor.")})
            advance(1)
            gen = torch.Generator().manual_seed(derive_seed(cfg.seed, "approx-random", j))
            directions["random"].append({k: torch.randn(v_.shape, generator=gen)
                                         for k, v_ in policy.state_dict().items() if k.startswith("actor.")})
            advance(1)
    rows = []
    for kind, steps in directions.items():
        for distance in v.distances:
            scaled = [scale_to_distance(policy, s, distance) for s in steps]
            errors = [first_order_error(policy, s, obs, task, actions) for s in scaled]
            of_logp = [first_order_error(policy, s, obs, task, actions, relative_to="logp") for s in scaled]
            rows.append({"distance": distance, "direction": kind, "rel_error": float(np.mean(errors)),
                         "rel_error_max": float(np.max(errors)), "rel_error_of_logp": float(np.mean(of_logp)),
                         "directions": len(errors)})
    return {"family": family.name, "transitions": len(obs), "rows": rows, "paper_percent": PAPER_APPROX}


# -- ground truth ----------------------------------------------------------------------------------------------
@dataclasses.dataclass
class FinetuneJob:
    policy: ActorCritic
    family: TaskFamily
    subset: list[int]
    cfg: Config
    seed: int
    eval_seed: int


def finetune_and_evaluate(job: FinetuneJob) -> dict[str, Any]:
    start = time.perf_counter()
    tuned = _finetune(job.policy, job.family, job.subset, job.cfg, job.seed)
    v = job.cfg.validate
    after = evaluate(tuned, job.family.factories(job.subset), v.eval_episodes, job.eval_seed,
                     deterministic=v.deterministic_eval, task_ids=job.subset)
    return {"subset": job.subset, "after": after.returns.tolist(), "seconds": time.perf_counter() - start}


def _estimate_flops(pipe: Pipeline, policy: ActorCritic, m_est: int, subset_sizes: float) -> float:
    """FLOP ratio ground truth / estimation, from parameter counts (2 FLOPs per weight per forward pass,
    4 more per backward). Ground truth: PPO steps (forward of actor and critic) plus update_epochs passes of
    forward+backward, per member task; estimation: rollouts, one forward+backward of the actor and the
    projection per transition, per-task statistics, one d x d Cholesky per subset."""
    cfg = pipe.cfg
    actor = sum(p.numel() for p in policy.actor.parameters())
    total = sum(p.numel() for p in policy.parameters())
    d, n, T = cfg.estimate.proj_dim, pipe.family.n_tasks, cfg.estimate.transitions_per_task
    widths = [(mm.in_features + 1 + mm.out_features) for mm in actor_layers(policy)]
    per_step = 2 * total + cfg.meta.update_epochs * 6 * total
    gt_per_subset = subset_sizes * cfg.validate.finetune_steps_per_task * per_step
    est = n * T * (2 * total + 6 * actor + 2 * d * sum(widths) + 2 * d * d) + m_est * (n * d * d + d**3 / 3)
    return gt_per_subset * m_est / est


def validate_ground_truth(pipe: Pipeline) -> dict[str, Any]:
    family, cfg, v = pipe.family, pipe.cfg, pipe.cfg.validate
    est = pipe.estimate()
    grouping = pipe.group(est)
    policy = pipe.meta_policy()
    estimate_seconds = sum(pipe.seconds.get(k, 0.0) for k in ("features", "surrogate", "calibration", "group"))
    m_est = len(est.subsets)
    chosen = np.arange(m_est)
    if v.max_subsets is not None and v.max_subsets < m_est:
        rng = np.random.default_rng(derive_seed(cfg.seed, "ground-truth-sample"))
        chosen = np.sort(rng.choice(m_est, v.max_subsets, replace=False))
    eval_seed = derive_seed(cfg.seed, "ground-truth-eval")
    before = evaluate(policy, family.factories(range(family.n_tasks)), v.eval_episodes, eval_seed,
                      deterministic=v.deterministic_eval).returns
    # Finished fine-tunings are kept per protocol, so that other validation settings never reuse them.
    protocol = {k: getattr(v, k) for k in ("finetune_steps_per_task", "finetune_learning_rate", "eval_episodes",
                                           "deterministic_eval")}
    key = zlib.crc32(json.dumps(protocol, sort_keys=True).encode())
    folder = pipe.folder.path / "ground_truth" / f"{key:08x}" if pipe.folder else None
    results, _ = pipe.units(
        "ground truth: fine-tune subsets", [int(s) for s in chosen],
        lambda s: folder / f"subset-{s:04d}.json" if folder else None, finetune_and_evaluate,
        lambda s: FinetuneJob(policy, family, np.flatnonzero(est.subsets[s]).tolist(), cfg,
                              derive_seed(cfg.seed, "ground-truth", s), eval_seed))
    subsets = est.subsets[chosen]
    gains = np.full(subsets.shape, np.nan)
    for row, s in enumerate(chosen):
        res = results[int(s)]
        gains[row, res["subset"]] = np.asarray(res["after"]) - before[res["subset"]]
    true_affinity = affinity_from_scores(subsets, gains)
    null = shuffled_gains_null(subsets, gains, cfg.cluster.null_draws,
                               np.random.default_rng(derive_seed(cfg.seed, "ground-truth-null")))
    truth = group(true_affinity, cfg.cluster, derive_seed(cfg.seed, "group"), null)
    n = family.n_tasks
    rng = np.random.default_rng(derive_seed(cfg.seed, "nmi-random"))
    nmi_random = float(np.mean([nmi(random_groups(n, grouping.k, rng), truth.groups, n) for _ in range(200)]))
    gradsim = pipe.gradient_similarity_groups(grouping.k)
    designed = family.true_groups
    member = subsets.astype(bool)
    gt_seconds = float(sum(results[int(s)]["seconds"] for s in chosen))
    gt_for_all = gt_seconds * m_est / len(chosen)
    if folder is not None:
        io.write_npy(folder / "true_affinity.npy", true_affinity)
    return {
        "family": family.name, "n_tasks": n, "m": m_est, "m_ground_truth": len(chosen),
        "nmi": nmi(grouping.groups, truth.groups, n), "nmi_random": nmi_random,
        "nmi_gradient_similarity": nmi(gradsim, truth.groups, n), "gradient_similarity_groups": gradsim,
        "nmi_truth_vs_design": None if designed is None else nmi(designed, truth.groups, n),
        "spearman": _within_task_spearman(est.scores[chosen], gains),
        "spearman_pooled": float(spearmanr(est.scores[chosen][member], gains[member]).statistic),
        "estimate_seconds": estimate_seconds, "ground_truth_seconds": gt_seconds,
        "ground_truth_seconds_all_subsets": gt_for_all,
        "speedup_wall": gt_for_all / estimate_seconds if estimate_seconds > 0 else None,
        "speedup_flops": _estimate_flops(pipe, policy, m_est, float(member.sum(1).mean())),
        "estimated_groups": grouping.groups, "true_groups": truth.groups,
        **protocol,
        "paper": {"nmi": PAPER_NMI, "nmi_random": PAPER_NMI_RANDOM, "speedup": PAPER_SPEEDUP},
    }


def shuffled_gains_null(subsets: np.ndarray, gains: np.ndarray, draws: int, rng: np.random.Generator) -> np.ndarray:
    """(draws, K) partition values of the true affinity when each task's measured gains are shuffled among the
    subsets that hold it: what the ground truth's affinity looks like if a task's gain did not depend on its
    partners. The true grouping takes its k from this null, as the estimate takes its own from the data's."""
    shuffled = np.repeat(gains[None], draws, axis=0)
    for draw in shuffled:
        for i in range(gains.shape[1]):
            rows = np.flatnonzero(~np.isnan(gains[:, i]))
            draw[rows, i] = gains[rng.permutation(rows), i]
    # One call for every draw: each task's regression is solved once and shared.
    return np.stack([partition_values(U) for U in affinity_from_scores(subsets.astype(bool), shuffled)])


def _within_task_spearman(scores: np.ndarray, gains: np.ndarray) -> float:
    """Mean over tasks of the rank correlation, across the subsets holding the task, of f(S, i) with the real
    gain: what the affinity uses (scores are standardised per task, so only within-task ranks matter)."""
    rhos = []
    for i in range(scores.shape[1]):
        rows = ~np.isnan(gains[:, i])
        if rows.sum() > 2 and np.ptp(gains[rows, i]) > 0:
            rhos.append(spearmanr(scores[rows, i], gains[rows, i]).statistic)
    return float(np.mean(rhos)) if rhos else float("nan")


# -- ablation -------------------------------------------------------------------------------------------------
def _reference_groups(pipe: Pipeline) -> tuple[list[list[int]], str]:
    if pipe.family.true_groups is not None:
        return pipe.family.true_groups, "family.true_groups"
    path = pipe.folder.path / "validation.json" if pipe.folder else None
    if path is not None and path.exists():
        return io.read_json(path)["true_groups"], "ground truth (validation.json)"
    raise PGXError(f"family {pipe.family.name!r} has no known grouping; run `policygradex validate ground-truth` "
                   "with the same --out first")


def validate_ablate(pipe: Pipeline) -> dict[str, Any]:
    family, cfg, v = pipe.family, pipe.cfg, pipe.cfg.validate
    reference, source = _reference_groups(pipe)
    policy = pipe.meta_policy()
    width = cfg.meta.hidden_sizes[0]
    variants: list[tuple[str, Any, Config]] = []
    variants += [("d", d, _with(cfg, "estimate", proj_dim=d)) for d in v.ablate_dims]
    variants += [("pair_coverage", c, _with(cfg, "estimate", pair_coverage=c)) for c in v.ablate_coverages]
    variants += [("projector", p, _with(cfg, "estimate", projector=p)) for p in PROJECTORS.names()]
    variants += [("depth", L, _with(cfg, "meta", hidden_sizes=(width,) * L)) for L in v.ablate_depths]
    rows = []
    with pipe.progress.stage("ablation", len(variants)) as advance:
        for name, value, variant in variants:
            with Pipeline(family, variant, None, progress=False) as sub:
                start = time.perf_counter()
                theta = policy if name != "depth" else sub.meta_policy()
                meta_seconds = time.perf_counter() - start
                start = time.perf_counter()
                est = sub.estimate(theta)
                groups = sub.group(est).groups
            rows.append({"setting": name, "value": value, "m": int(len(est.subsets)), "k": len(groups),
                         "nmi": nmi(groups, reference, family.n_tasks),
                         "estimate_seconds": time.perf_counter() - start,
                         **({"meta_train_seconds": meta_seconds} if name == "depth" else {})})
            advance(1)
    return {"family": family.name, "reference": source, "rows": rows,
            "paper": {"nmi_by_depth": {"2": 0.76, "4": 0.76, "8": 0.76},
                      "speedup_by_depth": {"2": 21, "4": 24, "8": 26}}}


# -- generalisation ---------------------------------------------------------------------------------------------
def validate_generalization(pipe: Pipeline) -> dict[str, Any]:
    """Per subset of a seeded sample of the estimator's: theta* fine-tuned on it exactly as ``ground-truth`` does
    (same seeds, so the same fine-tunes), then on stage 2's own transitions at theta* (same seeds; rebuilt with
    observations and actions), the surrogate loss of the fine-tuned actor: on the subset's fit rows (its
    training data, n rows), on their held-out rows (same tasks, later steps) and on the other tasks' rows
    (held-out tasks). The Hessian is that of the mean loss on the fit rows, at the fine-tuned parameters."""
    family, cfg, v = pipe.family, pipe.cfg, pipe.cfg.validate
    est = pipe.estimate()
    policy = pipe.meta_policy()
    seed = derive_seed(cfg.seed, "features")
    chunks = [chunk_rollout(policy, family.factories(c), c, cfg.estimate, cfg.meta, seed)
              for c in feature_chunks(family.n_tasks)]
    data = {k: torch.cat([c[k] for c in chunks]) for k in chunks[0]}
    with torch.no_grad():
        data["logp_star"] = policy.log_prob(policy.policy(data["obs"], data["seen_as"]), data["actions"])
    layers = [[f"{name}.weight", f"{name}.bias"] for name, m in policy.actor.named_modules()
              if isinstance(m, torch.nn.Linear)]
    rng = np.random.default_rng(derive_seed(cfg.seed, "generalization-sample"))
    m_est = len(est.subsets)
    chosen = np.sort(rng.choice(m_est, min(v.generalization_subsets, m_est), replace=False))
    gen = torch.Generator().manual_seed(derive_seed(cfg.seed, "hutchinson"))
    star = {k: p.detach() for k, p in policy.actor.named_parameters()}
    rows = []
    with pipe.progress.stage("generalization: fine-tune, Hessian", len(chosen)) as advance:
        for s in chosen:
            subset = np.flatnonzero(est.subsets[s]).tolist()
            tuned = _finetune(policy, family, subset, cfg, derive_seed(cfg.seed, "ground-truth", int(s)))
            inside = torch.isin(data["task"], torch.as_tensor(subset))
            parts = {"fit": inside & ~data["holdout"], "held_out": inside & data["holdout"], "other_tasks": ~inside}
            losses = {name: _surrogate_loss(tuned, data, rows_) for name, rows_ in parts.items() if rows_.any()}
            params = {k: p.detach() for k, p in tuned.actor.named_parameters()}
            move = {k: params[k] - star[k] for k in params}

            def mean_fit(p: dict[str, torch.Tensor], fit=losses["fit"]) -> torch.Tensor:
                return fit(p).mean()

            trace = hutchinson_trace(mean_fit, params, v.hutchinson_probes, gen)
            forms = layer_quadratic_forms(losses["fit"], params, move, layers)
            with torch.no_grad():
                per_row = {name: f(params) for name, f in losses.items()}
            observed = {name: float(values.mean()) for name, values in per_row.items()}
            loss_bound = float(per_row["fit"].max())
            n_fit = int(parts["fit"].sum())
            rows.append({
                "subset": subset, "n": n_fit, "loss_bound": loss_bound,
                "trace": trace["total"][0], "trace_se": trace["total"][1],
                "trace_per_layer": [sum(trace[k][0] for k in names) for names in layers],
                "distance_per_layer": [float(torch.cat([move[k].ravel() for k in names]).norm()) for names in layers],
                "hessian_distance_per_layer": [float(q.mean()) for q in forms],
                "hessian_distance_max_per_layer": [float(q.max()) for q in forms],
                "bound": hessian_bound(forms, loss_bound, n_fit),
                "loss": observed,
                "gap_transitions": observed["held_out"] - observed["fit"],
                "gap_tasks": observed["other_tasks"] - observed["fit"] if "other_tasks" in observed else None,
            })
            advance(1)
    return {"family": family.name, "subsets": rows, **_bound_against_gaps(rows),
            "hutchinson_probes": v.hutchinson_probes, "finetune_steps_per_task": v.finetune_steps_per_task}


def _surrogate_loss(policy: ActorCritic, data: dict[str, torch.Tensor], rows: torch.Tensor):
    return surrogate_loss(policy, data["obs"][rows], data["seen_as"][rows], data["actions"][rows], data["y"][rows],
                          data["w"][rows], data["logp_star"][rows])


def _bound_against_gaps(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Spearman of the bound with each observed gap over the subsets, and how far above the gap the bound sits
    (ratio bound / |gap|; the paper calls its bound non-vacuous where it is of the gap's order)."""
    out: dict[str, Any] = {}
    bound = np.array([r["bound"] for r in rows])
    for gap in ("gap_transitions", "gap_tasks"):
        pairs = [(b, r[gap]) for b, r in zip(bound, rows, strict=True) if r[gap] is not None]
        if len(pairs) < 3:
            continue
        b, g = np.array(pairs).T
        ratio = b / np.maximum(np.abs(g), 1e-12)
        out[gap] = {"spearman": float(spearmanr(b, g).statistic), "median_ratio": float(np.median(ratio)),
                    "within_10x": float(np.mean(ratio <= 10)), "bound_above_gap": float(np.mean(b >= g))}
    return out


def _with(cfg: Config, section: str, **changes: Any) -> Config:
    return dataclasses.replace(cfg, **{section: dataclasses.replace(getattr(cfg, section), **changes)})


STUDIES = {"approx": (validate_approx, "approx.json"), "ground-truth": (validate_ground_truth, "validation.json"),
           "ablate": (validate_ablate, "ablation.json"),
           "generalization": (validate_generalization, "generalization.json")}


def run_study(study: str, family: TaskFamily, cfg: Config, out: str | Path, progress: bool = True) -> dict[str, Any]:
    """Run one study in the run folder ``out``, write its JSON and refresh the report."""
    from policygradex.experiments.report import write_report

    fn, filename = STUDIES[study]
    with Pipeline(family, cfg, out, progress) as pipe, torch_threads(1):
        result = fn(pipe)
    io.write_json(pipe.run_folder / filename, result)
    write_report(pipe.run_folder.path)
    return result
