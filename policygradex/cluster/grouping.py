"""Stage 4 as one rule: how many groups (fixed, priced by the trace penalty, or tested against the null),
the SDP that forms them, and their bootstrap confidence. The CLI, ``pgx.group_tasks`` and the pipeline all
call ``group``, so that one affinity gives one grouping whichever way it is asked for."""

from __future__ import annotations

import numpy as np

from policygradex.cluster.sdp import Grouping, partition
from policygradex.cluster.significance import KChoice, choose_k, confidence, partition_values
from policygradex.config import ClusterConfig
from policygradex.errors import PGXError

RULE_VERSION = 2
"""Version of the rule that turns an affinity and its draws into groups, written into groups.json. Bump it when
``group`` changes what it answers for the same inputs: a run folder then regroups instead of reusing the
groups an older rule chose. 2: the replication cap by the bootstrap draws' modal k."""


def group(affinity: np.ndarray, cfg: ClusterConfig, seed: int = 0, null_values: np.ndarray | None = None,
          bootstrap: np.ndarray | None = None) -> Grouping:
    """Partition tasks by ``affinity``.

    k is ``cfg.k`` when set, else chosen by ``cfg.trace_penalty`` when set, else by the null test at level
    ``cfg.alpha`` against ``null_values`` ((draws, K) partition values of affinities from data resampled
    with the tasks exchangeable; ``cluster/significance.py``). ``bootstrap`` ((draws, n, n) affinities) adds
    co-membership confidence, and with k from the null test a split must also replicate: k is at most the
    number of groups the bootstrap draws choose most often, and a split whose bootstrap stability is below
    ``cfg.min_stability`` gives way to one group.
    """
    U = (np.asarray(affinity, dtype=float) + np.asarray(affinity, dtype=float).T) / 2
    n = len(U)
    if cfg.k is not None and cfg.k > n:
        raise PGXError(f"k = {cfg.k} groups for {n} tasks; choose k between 1 and {n}")
    chosen_by_test = cfg.k is None and cfg.trace_penalty is None
    if chosen_by_test and null_values is None:
        raise PGXError("choosing k needs the affinity's null draws: pass the AffinityResult of estimate_affinity "
                       "(pgx.group_tasks(res)), or fix k=..., or set trace_penalty=...")

    def rule(A: np.ndarray) -> tuple[Grouping, KChoice | None]:
        test = None if null_values is None else choose_k(partition_values(A), null_values, cfg.alpha)
        if not chosen_by_test:
            return partition(A, cfg.k, cfg.trace_penalty or 0.0, cfg.sdp_solver, seed), test
        assert test is not None  # k comes from the null test, which needs null_values (checked above)
        return _tested_k_groups(A, test.k, cfg, seed), test

    out, test = rule(U)
    out.reason = _reason(out.k, test, cfg)
    if bootstrap is not None and len(bootstrap):
        drawn = [rule(A)[0].groups for A in bootstrap]
        out.confidence = confidence(out.groups, drawn)
        if chosen_by_test and out.k > 1 and cfg.min_stability > 0:
            assert test is not None  # k came from the null test
            out = _replicated(out, U, test, drawn, cfg, seed)
    if test is not None:
        out.null_p, out.p_values = test.p, test.p_by_k
    return out


def _tested_k_groups(U: np.ndarray, k: int, cfg: ClusterConfig, seed: int, one_group: str = "null-test") -> Grouping:
    """The k groups of a k the null test chose (or held it to): one group (method ``one_group``), else the SDP's."""
    if k == 1:
        return Grouping([list(range(len(U)))], one_group)
    g = partition(U, k, 0.0, cfg.sdp_solver, seed)
    g.method = "sdp-null-test" if g.method == "sdp-fixed-k" else g.method
    return g


def modal_k(draw_k: list[int], own: int) -> int:
    """The number of groups the bootstrap draws choose most often; a tie with ``own`` (the data's k) keeps
    ``own``, other ties go to the fewer groups."""
    counts = np.bincount(draw_k, minlength=own + 1)
    return own if counts[own] == counts.max() else int(np.argmax(counts))


def _replicated(out: Grouping, U: np.ndarray, test: KChoice, drawn: list[list[list[int]]], cfg: ClusterConfig,
                seed: int) -> Grouping:
    """A k chosen by the null test, held to what replicates (module doc of ``cluster/significance.py``, step 3):
    no more groups than the bootstrap draws choose most often (``modal_k``), and a split whose stability is below
    ``cfg.min_stability`` gives way to one group."""
    conf = out.confidence
    assert conf is not None  # set by the caller from the same draws
    draw_k = conf.draw_k
    modal = modal_k(draw_k, out.k)
    if modal < out.k:
        chosen, shown = out.k, f"{sum(k == modal for k in draw_k)} of {len(draw_k)}"
        out = _tested_k_groups(U, modal, cfg, seed, one_group="null-test-unstable")
        out.confidence = conf = confidence(out.groups, drawn)
        beats = f"splitting beats the null at {cfg.alpha:.0%} (p = {test.p:.2f})"
        out.reason = (f"one group: {beats} but does not replicate: bootstrap resamples most often find no split "
                      f"({shown})" if modal == 1
                      else f"{modal} groups: {beats}; the data alone picks {chosen}, but bootstrap resamples most "
                           f"often pick {modal} ({shown}), and k is held to what replicates")
    stability = conf.stability
    if out.k > 1 and stability < cfg.min_stability:
        split = out.k
        out = Grouping([list(range(len(U)))], "null-test-unstable")
        out.confidence = confidence(out.groups, drawn)
        out.reason = (f"one group: a split into {split} beats the null at {cfg.alpha:.0%} (p = {test.p:.2f}) "
                      f"but does not replicate on bootstrap resamples (stability {stability:.2f}"
                      f" < {cfg.min_stability:g})")
    return out


def _reason(k: int, test: KChoice | None, cfg: ClusterConfig) -> str:
    level = f"{cfg.alpha:.0%}"
    against = "" if test is None else f" (anything to split, against the null: p = {test.p:.2f})"
    if cfg.k is not None:
        return f"k = {k} was fixed{against}"
    if cfg.trace_penalty is not None:
        return f"k = {k} chosen by the SDP's trace penalty {cfg.trace_penalty:g}{against}"
    assert test is not None  # k came from the null test
    if k == 1:
        return f"one group: no split beats the null at {level} (p = {test.p:.2f})"
    return (f"{k} groups: splitting beats the null at {level} (p = {test.p:.2f}), and {k} groups exceed what noise "
            f"reaches by the most (their own p = {test.p_by_k[k - 1]:.2f})")
