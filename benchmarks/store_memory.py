"""Build a GradientStore of many transitions on disk, read it back, and print peak memory as JSON.

    python benchmarks/store_memory.py --rows 1000000 --d 400 --out /tmp/store

Rows are written in chunks (random features, labels and weights), the per-task statistics are computed
chunk by chunk, then the store is reopened (memory-mapped) and every task's held-out rows are scored.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def main(argv: list[str] | None = None) -> dict:
    from policygradex.estimate.store import CHUNK_ROWS, GradientStore
    from policygradex.estimate.subsets import sample_subsets
    from policygradex.estimate.surrogate import newton_from_stats, subset_scores

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--d", type=int, default=400)
    parser.add_argument("--tasks", type=int, default=10)
    parser.add_argument("--out", type=Path, default=None, help="store folder (default: a temporary one)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    tmp = None
    if args.out is None:
        tmp = Path(tempfile.mkdtemp(prefix="pgx-store-"))
        args.out = tmp / "store"
    rng = np.random.default_rng(0)
    per_task = args.rows // args.tasks
    start = time.perf_counter()
    writer = GradientStore.create(args.out, per_task * args.tasks, args.d, args.tasks)
    for row in range(0, per_task * args.tasks, CHUNK_ROWS):
        n = min(CHUNK_ROWS, per_task * args.tasks - row)
        idx = np.arange(row, row + n)
        writer.write(row, z=rng.standard_normal((n, args.d), dtype=np.float32),
                     y=np.where(rng.random(n) < 0.5, 1.0, -1.0).astype(np.float32),
                     w=rng.exponential(size=n).astype(np.float32), task=idx // per_task,
                     holdout=(idx % per_task) >= int(0.75 * per_task))
    writer.close()
    built = time.perf_counter() - start
    store = GradientStore.open(args.out)
    subsets = sample_subsets(args.tasks, None, 3, 1000, rng)
    scores = subset_scores(store, subsets, newton_from_stats(store.stats, subsets, 0.1))
    result = {"bench": "store", "rows": len(store), "d": store.d, "bytes_on_disk": sum(
        p.stat().st_size for p in args.out.iterdir()), "build_s": round(built, 2),
        "read_score_s": round(time.perf_counter() - start - built, 2), "finite_scores": bool(np.isfinite(
            scores[subsets]).all()), "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}
    if tmp is not None:
        shutil.rmtree(tmp)
    return result


if __name__ == "__main__":
    print(json.dumps(main()))
