"""How many groups the data supports, and how sure the groups are.

*What a grouping is worth.* The SDP maximises <U, X> over relaxed partition matrices; for a real partition
into groups G, X = sum_G 1_G 1_G^T / |G| and <U, X> = V = sum_G (sum of U over G x G) / |G|. V_k, the value
of k groups, grows with k on any affinity, noise included, so no fixed price per group (the paper's trace
penalty) tells structure from noise on every family.

*Against the null.* Each null draw (``estimate/resample.py``: blocks of transitions dealt among tasks at
random) is an affinity with nothing to group, and gives V_k^null. One cheap, deterministic partition for
every k serves the comparison, the same for the real affinity and the draws: Ward's tree over the tasks'
spectral embedding (U's eigenvectors with positive eigenvalue, scaled by their square roots), cut into k
groups. Then

1. *Anything to split?* The statistic max_k (V_k - mean V_k^null) / sd V_k^null, against the same on each
   null draw: p = (1 + #{draws at least as extreme}) / (1 + draws). Above ``alpha``: one group. So when the
   tasks do not differ, a split is chosen with probability at most ``alpha``.
2. *How many?* k = argmax_k (V_k - q_k), q_k the null's (1 - alpha) quantile of V_k: the number of groups
   whose value exceeds what noise reaches by the most. Beyond the real groups a further split buys about
   what it buys on noise and the excess stops growing; the chosen k itself beats the null (V_k > q_k).
3. *Does it replicate?* (``cluster/grouping.py``, with bootstrap draws.) Each bootstrap draw chooses its own
   k by steps 1-2; where the k they choose most often is smaller than the data's own, it replaces it (a tie
   with the data's k keeps it), and a split whose bootstrap stability is below ``min_stability`` gives way
   to one group. The argmax of step 2 jumps where two k's excesses are close (cartpole, seed 0: 2.00 for
   three groups, 1.62 for two; its draws chose 2 in 10 of 20, 3 in 9); the draws' modal k is the bagged,
   steadier answer, and capping by it only removes groups. Ties keep the data's k because on many tasks the
   draws' k spreads (planted-100x10, seed 4: 8, 9 and 10 groups in 7, 6 and 7 draws; the data's 10 is
   right).

First tried: splits one at a time against the null's same-rank eigenvalue of the centred affinity
(parallel analysis). Exact and cheap, but on planted with 100 tasks in 10 clusters the later clusters'
eigenvalues sat below the noise's largest one and it stopped at k = 5 (NMI 0.75) although the SDP's 10 groups
scored NMI 0.95. Discrete partitions cannot fit noise as eigenvectors can, so V_k separates the two: k = 9,
NMI 0.94 on the same data. Also tried for step 2: k at the largest standardised excess (step 1's own
statistic). It gave cartpole's seed 0 its two groups but planted-100x10's seed 0 five (NMI 0.75): the null's
spread grows with k, which favours small k.

*How sure.* Each bootstrap draw's affinity is grouped by the same rule (its k against the same null, then
the SDP), and co-membership C_ij is the share of draws that put tasks i and j together.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.cluster.hierarchy import fcluster, linkage

MAX_K = 30
"""Largest number of groups the null test considers."""


def partition_values(U: np.ndarray, max_k: int = MAX_K) -> np.ndarray:
    """(min(n, max_k),) V_1..V_K: the SDP objective <U, X> of Ward's k-group cut of U's spectral embedding."""
    U = (U + U.T) / 2
    n = len(U)
    out = np.zeros(min(n, max_k))
    w, vec = np.linalg.eigh(U)
    keep = w > 1e-12 * max(1.0, float(np.abs(w).max()))
    if n < 2 or not keep.any():
        return out
    tree = linkage(vec[:, keep] * np.sqrt(w[keep]), "ward")
    for k in range(2, len(out) + 1):
        onehot = np.eye(k)[fcluster(tree, k, "maxclust") - 1]
        size = onehot.sum(0)
        out[k - 1] = float((np.diag(onehot.T @ U @ onehot)[size > 0] / size[size > 0]).sum())
    return out


@dataclass
class KChoice:
    k: int
    p: float
    """p-value of "anything to split" (step 1 of the module doc)."""
    p_by_k: list[float]
    """p-value of V_k against the null, for k = 1..K (1.0 at k = 1)."""
    excess: list[float]
    """V_k minus the null's (1 - alpha) quantile, for k = 1..K."""


def choose_k(values: np.ndarray, null: np.ndarray, alpha: float) -> KChoice:
    """k from the affinity's partition ``values`` (K,) against ``null`` (draws, K); see the module doc."""
    mean, sd = null.mean(0), null.std(0)
    varies = sd > 1e-12  # k = n (every task alone, V = 0) carries no evidence either way

    def most_extreme(v: np.ndarray) -> float:
        z = np.where(varies, (v - mean) / np.where(varies, sd, 1.0), -np.inf)
        return float(z[1:].max()) if len(v) > 1 else -np.inf

    observed = most_extreme(values)
    p = (1 + sum(most_extreme(v) >= observed - 1e-12 for v in null)) / (1 + len(null))
    p_by_k = (1 + (null >= values[None, :] - 1e-12).sum(0)) / (1 + len(null))
    p_by_k[0] = 1.0
    excess = values - np.quantile(null, 1 - alpha, axis=0)
    best = int(np.argmax(excess[1:])) + 2 if len(values) > 1 else 1
    k = best if p <= alpha and excess[best - 1] > 0 else 1  # k itself must beat the null too
    return KChoice(k, float(p), [float(x) for x in p_by_k], [float(x) for x in excess])


@dataclass
class Confidence:
    """Bootstrap agreement with a grouping."""

    co_membership: np.ndarray
    """(n, n): share of bootstrap draws that put tasks i and j in one group."""
    confidence: np.ndarray
    """(n,): per task, its mean co-membership with the other members of its group (a task alone: the mean
    share of draws that keep it apart from every other task)."""
    stability: float
    """Mean NMI between each bootstrap draw's grouping and the grouping itself (1: every draw agrees)."""
    draw_k: list[int]
    """The number of groups each bootstrap draw chose."""


def confidence(groups: list[list[int]], drawn: list[list[list[int]]]) -> Confidence:
    """How far the groupings of bootstrap draws (``drawn``) agree with ``groups``."""
    n = sum(len(g) for g in groups)
    together = np.zeros((n, n))
    for d in drawn:
        together += _same_group(d, n)
    nmis, ks = [nmi(groups, d, n) for d in drawn], [len(d) for d in drawn]
    co = together / max(1, len(drawn))
    conf = np.zeros(n)
    for g in groups:
        for i in g:
            others = [j for j in g if j != i]
            conf[i] = co[i, others].mean() if others else 1.0 - np.delete(co[i], i).mean()
    return Confidence(co, conf, float(np.mean(nmis)) if nmis else 1.0, ks)


def _same_group(groups: list[list[int]], n: int) -> np.ndarray:
    label = np.empty(n, dtype=int)
    for c, g in enumerate(groups):
        label[g] = c
    return (label[:, None] == label[None, :]).astype(float)


def nmi(groups_a: list[list[int]], groups_b: list[list[int]], n: int) -> float:
    """Normalised mutual information between two partitions of n tasks (1.0 when they are equal, one group
    each included)."""
    from sklearn.metrics import normalized_mutual_info_score

    labels = np.zeros((2, n), dtype=int)
    for row, groups in enumerate((groups_a, groups_b)):
        for c, g in enumerate(groups):
            labels[row, g] = c
    return float(normalized_mutual_info_score(labels[0], labels[1]))
