"""Executors for embarrassingly parallel work: a local process pool, one torch thread per worker.

Small policies train fastest with one torch thread each (measured 10x faster PPO than torch's default
on 2 cores), so parallelism comes from processes. Work items travel with cloudpickle, so that a user's
own env factories (lambdas, closures) reach the workers too.
"""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any, TypeVar

import cloudpickle

T = TypeVar("T")
R = TypeVar("R")


def init_worker() -> None:
    import signal

    import torch

    torch.set_num_threads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to report, once


def _call(blob: bytes) -> Any:
    fn, item = cloudpickle.loads(blob)
    return fn(item)


def map_local(fn: Callable[[T], R], items: Sequence[T], workers: int,
              on_done: Callable[[int, R], None] | None = None) -> list[R]:
    """``[fn(x) for x in items]``, across ``workers`` spawned processes (in-process when workers <= 1).

    ``on_done(index, result)`` runs in this process as each item finishes (progress, checkpoints).
    """
    results: list[Any] = [None] * len(items)
    if workers <= 1 or len(items) <= 1:
        for i, item in enumerate(items):
            results[i] = fn(item)
            if on_done:
                on_done(i, results[i])
        return results
    ctx = mp.get_context("spawn")  # fork after torch has run can deadlock its thread pools
    with ProcessPoolExecutor(max_workers=min(workers, len(items)), mp_context=ctx,
                             initializer=init_worker) as pool:
        futures = {pool.submit(_call, cloudpickle.dumps((fn, item))): i for i, item in enumerate(items)}
        try:
            for fut in as_completed(futures):
                i = futures[fut]
                results[i] = fut.result()
                if on_done:
                    on_done(i, results[i])
        except BaseException:  # a failure or Ctrl-C: do not run the queued items to the end for nothing
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    return results
