"""Task metadata as numbers: the context vector a metadata-reading trainer (CARE, rl/care.py) sees per task.

CARE (Sodhani et al. 2021) encodes each task's description with a pretrained language model, which cannot be
downloaded here. Instead a task is described by its own ``Task.params``, the parameters that built it: numbers
and booleans as they are, lists entry by entry, and text (a Meta-World task's name and description) as a
deterministic bag of hashed words and character trigrams. Each column is then standardised over the family's
training tasks, so that gravity in m/s^2 and a pole length in metres weigh alike.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np

TEXT_DIM = 32
"""Numbers per text field (hashed words and character trigrams, signed, L2-normalised)."""


def text_features(text: str, dim: int = TEXT_DIM) -> np.ndarray:
    """A fixed, seed-free encoding of ``text``: each lower-cased word and each character trigram is hashed to a
    column and a sign (feature hashing), counts summed, the vector L2-normalised. Similar texts (``drawer-open``,
    ``drawer-close``) share words and trigrams, hence direction."""
    vec = np.zeros(dim)
    words = text.lower().replace("-", " ").replace("_", " ").split()
    grams = [f"#{w}" for w in words] + [w[i:i + 3] for w in words for i in range(max(1, len(w) - 2))]
    for gram in grams:
        h = int.from_bytes(hashlib.blake2b(gram.encode(), digest_size=8).digest(), "little")
        vec[h % dim] += 1.0 if (h >> 32) & 1 else -1.0
    norm = np.linalg.norm(vec)
    return vec / norm if norm > 0 else vec


def _encode(value: Any) -> np.ndarray:
    if isinstance(value, str):
        return text_features(value)
    return np.atleast_1d(np.asarray(value, dtype=np.float64)).ravel()


def context_matrix(params: Sequence[dict[str, Any]], keys: Sequence[str] | None = None,
                   reference: Sequence[dict[str, Any]] | None = None) -> np.ndarray | None:
    """(tasks, c): each task's ``keys`` of its params (default: every key the first task has), encoded and
    standardised with the mean and spread of ``reference`` (default: these tasks themselves; pass the training
    tasks' params when encoding test tasks). A column constant over the reference becomes 0. None when there is
    nothing to encode (no keys): the trainer then learns an embedding per task instead."""
    keys = list(params[0]) if keys is None and params else list(keys or [])
    if not keys:
        return None
    missing = sorted({k for p in params for k in keys if k not in p})
    if missing:
        raise ValueError(f"task params lack {missing}: every task must describe itself with the same keys")

    def encode(rows: Sequence[dict[str, Any]]) -> np.ndarray:
        return np.stack([np.concatenate([_encode(p[k]) for k in keys]) for p in rows])

    raw = encode(params)
    ref = raw if reference is None else encode(reference)
    mean, std = ref.mean(0), ref.std(0)
    return np.where(std > 1e-12, (raw - mean) / np.where(std > 1e-12, std, 1.0), 0.0)
