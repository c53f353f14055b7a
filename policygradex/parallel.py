"""Executors for embarrassingly parallel work: a local process pool (default) or a Ray cluster.

Everything that splits into independent items goes through ``Executor.map``: per-task rollouts for the
gradient features, group trainings, ground-truth fine-tunes, seeds of ``compare``. Every item carries its
own seed, so results do not depend on the executor, the number of workers or the order items finish in.

Small policies train fastest with one torch thread each (measured 10x faster PPO than torch's default on 2
cores), so parallelism comes from processes. Items travel with cloudpickle, so that a user's own env
factories (lambdas, closures) reach the workers too.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import TYPE_CHECKING, Any, TypeVar

from policygradex.errors import ConfigError, PGXError

if TYPE_CHECKING:
    import torch
from policygradex.registry import Registry

T = TypeVar("T")
R = TypeVar("R")
OnDone = Callable[[int, Any], None]


def init_worker() -> None:
    import signal

    import torch

    torch.set_num_threads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to report, once
    _die_with_parent()


def _die_with_parent() -> None:
    """A killed parent (SIGKILL, SIGTERM) takes its workers with it (Linux): an orphaned worker would go on
    writing artifacts of a run that a restarted command is writing too."""
    import sys

    if sys.platform != "linux":
        return
    import ctypes
    import signal

    parent = os.getppid()
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


@contextlib.contextmanager
def _main_not_rerun() -> Iterator[None]:
    """Workers started inside this block do not re-import the user's ``__main__``.

    A spawned worker normally re-runs the script that started it (multiprocessing's rule), so a script
    without an ``if __name__ == "__main__":`` guard would start the whole computation again in every worker.
    Items reach workers through cloudpickle, which carries functions and classes of ``__main__`` by value,
    so workers never need that module: with its file and spec hidden while workers start, they skip it."""
    main = sys.modules.get("__main__")
    saved = {k: main.__dict__[k] for k in ("__file__", "__spec__") if main is not None and k in main.__dict__}
    try:
        for k in saved:
            setattr(main, k, None) if k == "__spec__" else delattr(main, k)
        yield
    finally:
        for k, v in saved.items():
            setattr(main, k, v)


def _call(blob: bytes) -> Any:
    import cloudpickle

    fn, item = cloudpickle.loads(blob)
    return fn(item)


class Executor:
    """``map(fn, items, on_done)`` = ``[fn(x) for x in items]``, possibly in other processes or machines;
    ``on_done(index, result)`` runs in this process as each item finishes (progress, checkpoints).

    Every executor is built as ``cls(workers, address)`` (``address``: the cluster to join, if it joins one)."""

    workers: int = 1

    def map(self, fn: Callable[[T], R], items: Sequence[T], on_done: OnDone | None = None) -> list[R]:
        raise NotImplementedError

    def close(self) -> None:
        """Release workers (a pool is started once and reused by every ``map`` until then)."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """torch uses ``count`` threads inside the block, then as many as before: the setting stays local to the
    work that needs it (one thread for small-policy RL, every core for batched linear algebra)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(max(1, count or 1))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def resolve_device(name: str | None) -> torch.device:
    """The torch device called ``name`` (default: cuda when torch sees one, else cpu); a ConfigError for a name
    torch does not know or a GPU that is not there."""
    import torch

    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError("device", f"is not a torch device: {name!r}; use cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device", f"is {name!r} but torch sees no GPU here; use cpu or leave it unset")
    return device


def _in_process(fn: Callable, items: Sequence, on_done: OnDone | None) -> list:
    results = []
    for i, item in enumerate(items):
        with torch_threads(1):  # as in a worker
            results.append(fn(item))
        if on_done:
            on_done(i, results[i])
    return results


class LocalExecutor(Executor):
    """A pool of ``workers`` spawned processes on this machine, one torch thread each (in-process if 1).
    There is no cluster to join: Config refuses an ``address`` without the ray executor."""

    def __init__(self, workers: int, address: str | None = None) -> None:
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None

    def map(self, fn: Callable[[T], R], items: Sequence[T], on_done: OnDone | None = None) -> list[R]:
        if self.workers <= 1 or len(items) <= 1:
            return _in_process(fn, items, on_done)
        if self._pool is None:  # spawn, not fork: forking after torch has run can deadlock its thread pools
            self._pool = ProcessPoolExecutor(self.workers, mp_context=mp.get_context("spawn"),
                                             initializer=init_worker)
        import cloudpickle

        results: list[Any] = [None] * len(items)
        with _main_not_rerun():  # the pool starts its workers as items are submitted
            futures = {self._pool.submit(_call, cloudpickle.dumps((fn, item))): i for i, item in enumerate(items)}
        try:
            for fut in as_completed(futures):
                i = futures[fut]
                results[i] = fut.result()
                if on_done:
                    on_done(i, results[i])
        except BaseException:  # a failure or Ctrl-C: do not run the queued items to the end for nothing
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
            raise
        return results

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


class RayExecutor(Executor):
    """Ray tasks, one CPU and one torch thread each. Without an address Ray starts a local instance on
    loopback with ``workers`` CPUs; with one (``ray start --head`` prints it) it joins that cluster, whose
    size then sets the parallelism. Every machine needs policygradex and the families' extras installed."""

    def __init__(self, workers: int, address: str | None = None) -> None:
        self.workers, self.address = workers, address
        self._submit: Callable[[bytes], Any] | None = None  # a Ray task per call; returns its ObjectRef
        self._started_here = False

    def _start(self) -> Callable[[bytes], Any]:
        try:
            import ray
        except ImportError:
            raise PGXError("--executor ray needs Ray: pip install 'policygradex[ray]'") from None
        if not ray.is_initialized():
            if self.address is None:
                os.environ.setdefault("RAY_AUTH_MODE", "disabled")
                ray.init(num_cpus=self.workers, include_dashboard=False, log_to_driver=False,
                         configure_logging=False, _node_ip_address="127.0.0.1")
            else:
                try:
                    ray.init(address=self.address, log_to_driver=False, configure_logging=False)
                except (ConnectionError, ValueError, RuntimeError) as exc:
                    raise PGXError(f"cannot join the Ray cluster at --ray-address {self.address}: {exc}; start one "
                                   "with `ray start --head` and pass the address it prints") from None
            self._started_here = True

        @ray.remote(num_cpus=1)
        def call(blob: bytes) -> Any:
            init_worker()
            return _call(blob)

        return call.remote

    def map(self, fn: Callable[[T], R], items: Sequence[T], on_done: OnDone | None = None) -> list[R]:
        if not items:
            return []
        if self._submit is None:
            self._submit = self._start()
        import cloudpickle
        import ray

        refs = [self._submit(cloudpickle.dumps((fn, item))) for item in items]
        index = {ref: i for i, ref in enumerate(refs)}
        results: list[Any] = [None] * len(items)
        pending = list(refs)
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                i = index[done[0]]
                results[i] = ray.get(done[0])
                if on_done:
                    on_done(i, results[i])
        except BaseException:
            for ref in pending:
                ray.cancel(ref, force=True)
            raise
        return results

    def close(self) -> None:
        if self._started_here:
            import ray

            ray.shutdown()
        self._submit, self._started_here = None, False


# The executors --executor chooses from. Adding one: its module (an Executor subclass), one line here, and its
# name in Config.executor's Literal (config.py).
EXECUTORS: Registry[Callable[[int, str | None], Executor]] = Registry("executor", {
    "local": LocalExecutor,
    "ray": RayExecutor,
})


def make_executor(kind: str, workers: int, address: str | None = None) -> Executor:
    return EXECUTORS.get(kind)(workers, address)

