"""GradientStore: per-transition gradient features, labels, weights and task ids, on disk or in memory,
plus the per-task sufficient statistics every subset solve starts from.

On disk a store is a folder of ``.npy`` files (one per column) read and written in chunks of rows with
plain file I/O, so that a million transitions at d = 400 (1.6 GB of features) pass through a small, fixed
amount of memory (memory maps would count every page they touch as resident). Rows are task-major: each
task's transitions are contiguous, its held-out ones last. The folder is built under a temporary name and
renamed when complete, ``meta.json`` written last; ``open`` checks every file's size against it.

Sufficient statistics (the surrogate at beta = 0; see surrogate.py): for the fit rows of task i,
b_i = sum w y z and H_i = sum w z z^T, computed once, chunk by chunk, in float64.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

COLUMNS = {"z": np.float32, "y": np.float32, "w": np.float32, "task": np.int64, "holdout": np.bool_}
CHUNK_ROWS = 65_536


@dataclass
class TaskStats:
    """Per-task sufficient statistics of the fit rows: b (n, d), H (n, d, d), count (n,), float64."""

    b: torch.Tensor
    H: torch.Tensor
    count: torch.Tensor

    def arrays(self) -> dict[str, np.ndarray]:
        return {"b": self.b.numpy(), "H": self.H.numpy(), "count": self.count.numpy()}

    def to(self, device: torch.device | None) -> TaskStats:
        """The same statistics on ``device`` (itself when already there or ``device`` is None)."""
        if device is None or self.H.device == torch.device(device):
            return self
        return TaskStats(self.b.to(device), self.H.to(device), self.count.to(device))


class GradientStore:
    """Columns ``z`` (N, d), ``y`` (+-1), ``w`` (>= 0), ``task`` and ``holdout`` (N,), and ``stats``.

    ``read(column, rows)`` is how the library reads; on disk it reads just those rows from the file.
    """

    def __init__(self, columns: dict[str, np.ndarray] | None, n_tasks: int, stats: TaskStats | None = None,
                 path: Path | None = None, n_rows: int = 0, d: int = 0) -> None:
        self._columns, self.n_tasks, self._stats, self.path = columns, n_tasks, stats, path
        if columns is not None:
            n_rows, d = columns["z"].shape
        self.n_rows, self.d = n_rows, d
        self._index: tuple[np.ndarray, np.ndarray] | None = None

    def __len__(self) -> int:
        return self.n_rows

    def _shape(self, column: str) -> tuple[int, ...]:
        return (self.n_rows, self.d) if column == "z" else (self.n_rows,)

    def read(self, column: str, rows: slice = slice(None)) -> np.ndarray:
        start, stop, _ = rows.indices(self.n_rows)
        if self._columns is not None:
            return np.asarray(self._columns[column][start:stop])
        dtype, width = np.dtype(COLUMNS[column]), (self.d if column == "z" else 1)
        with open(self._file(column), "rb") as f:
            _header_size(f)  # leaves the file at the first row
            out = np.fromfile(f, dtype=dtype, count=(stop - start) * width, offset=start * width * dtype.itemsize)
        return out.reshape((stop - start, self.d) if column == "z" else (stop - start,))

    def chunks(self, chunk: int = CHUNK_ROWS):
        """(slice, {column: rows}) for consecutive chunks of rows."""
        for start in range(0, self.n_rows, chunk):
            sl = slice(start, min(start + chunk, self.n_rows))
            yield sl, {k: self.read(k, sl) for k in COLUMNS}

    @property
    def stats(self) -> TaskStats:
        if self._stats is None:
            self._stats = compute_stats(self)
        return self._stats

    def rows(self, task: int, holdout: bool) -> slice:
        """The contiguous rows of one task's fit (``holdout=False``) or held-out transitions."""
        if self._index is None:
            self._index = (self.read("task"), self.read("holdout"))
        idx = np.flatnonzero((self._index[0] == task) & (self._index[1] == holdout))
        return slice(int(idx[0]), int(idx[-1]) + 1) if len(idx) else slice(0, 0)

    def __getattr__(self, column: str) -> np.ndarray:
        """``store.z`` etc.: the whole column (in memory) or a read-only memory map (on disk)."""
        if column not in COLUMNS:
            raise AttributeError(column)
        if self._columns is not None:
            return self._columns[column]
        return np.load(self._file(column), mmap_mode="r")

    def _file(self, column: str) -> Path:
        """A column's ``.npy`` file, for a store on disk (one without in-memory columns)."""
        assert self.path is not None, "a GradientStore holds its columns in memory or has a path"
        return self.path / f"{column}.npy"

    # -- on disk -------------------------------------------------------------------------------------
    @classmethod
    def create(cls, path: str | Path | None, n_rows: int, d: int, n_tasks: int) -> StoreWriter:
        """A writer for a store at ``path``, or in memory when ``path`` is None."""
        return StoreWriter(None if path is None else Path(path), n_rows, d, n_tasks)

    def save(self, path: str | Path) -> GradientStore:
        writer = GradientStore.create(path, self.n_rows, self.d, self.n_tasks)
        for sl, cols in self.chunks():
            writer.write(sl.start, **cols)
        return writer.close()

    @classmethod
    def open(cls, path: str | Path) -> GradientStore:
        path = Path(path)
        meta = json.loads((path / "meta.json").read_text())
        store = cls(None, meta["n_tasks"], path=path, n_rows=meta["n_rows"], d=meta["d"])
        for k, dtype in COLUMNS.items():
            with open(path / f"{k}.npy", "rb") as f:
                expected = _header_size(f) + int(np.prod(store._shape(k))) * np.dtype(dtype).itemsize
            if (path / f"{k}.npy").stat().st_size != expected:
                raise ValueError(f"gradient store {path}: {k}.npy is truncated or does not match meta.json")
        with np.load(path / "stats.npz") as s:
            store._stats = TaskStats(*(torch.as_tensor(s[k]) for k in ("b", "H", "count")))
        return store


def _header_size(f) -> int:
    np.lib.format.read_magic(f)
    np.lib.format.read_array_header_1_0(f)
    return f.tell()


def compute_stats(store: GradientStore) -> TaskStats:
    """b_i, H_i, N_i over the fit rows, one chunk of rows at a time."""
    d, n = store.d, store.n_tasks
    b = torch.zeros(n, d, dtype=torch.float64)
    H = torch.zeros(n, d, d, dtype=torch.float64)
    count = torch.zeros(n, dtype=torch.float64)
    for _, c in store.chunks():
        fit = ~c["holdout"]
        z = torch.as_tensor(c["z"][fit], dtype=torch.float64)
        w, y = (torch.as_tensor(c[k][fit], dtype=torch.float64) for k in ("w", "y"))
        task = c["task"][fit]
        for i in np.unique(task):
            rows = torch.as_tensor(task == i)
            zi, wi = z[rows], w[rows]
            b[i] += (wi * y[rows]) @ zi
            H[i] += (zi * wi[:, None]).T @ zi
            count[i] += len(zi)
    return TaskStats(b, H, count)


class StoreWriter:
    """Streams rows into a store; ``close()`` computes the statistics and, on disk, publishes the folder."""

    def __init__(self, path: Path | None, n_rows: int, d: int, n_tasks: int) -> None:
        self.path, self.n_rows, self.d, self.n_tasks = path, n_rows, d, n_tasks
        shapes = {k: (n_rows, d) if k == "z" else (n_rows,) for k in COLUMNS}
        if path is None:
            self.columns: dict[str, np.ndarray] = {k: np.zeros(shapes[k], dtype=dt) for k, dt in COLUMNS.items()}
            return
        self.tmp = path.with_name(f".{path.name}.tmp")  # a crashed build's leftovers are cleared here
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir(parents=True)
        self.offsets: dict[str, int] = {}
        for k, dt in COLUMNS.items():
            with open(self.tmp / f"{k}.npy", "wb") as f:
                np.lib.format.write_array_header_1_0(
                    f, {"descr": np.lib.format.dtype_to_descr(np.dtype(dt)), "fortran_order": False,
                        "shape": shapes[k]})
                self.offsets[k] = f.tell()
                f.truncate(self.offsets[k] + int(np.prod(shapes[k])) * np.dtype(dt).itemsize)

    def write(self, start: int, **columns: np.ndarray) -> None:
        for k, v in columns.items():
            v = np.ascontiguousarray(v, dtype=COLUMNS[k])
            if self.path is None:
                self.columns[k][start:start + len(v)] = v
                continue
            row_bytes = v.itemsize * (self.d if k == "z" else 1)
            with open(self.tmp / f"{k}.npy", "r+b") as f:
                f.seek(self.offsets[k] + start * row_bytes)
                f.write(v.tobytes())

    def close(self) -> GradientStore:
        if self.path is None:
            return GradientStore(self.columns, self.n_tasks)
        staged = GradientStore(None, self.n_tasks, path=self.tmp, n_rows=self.n_rows, d=self.d)
        # allow_pickle is numpy's default, named so that no key of ``arrays()`` can be taken for it
        np.savez(self.tmp / "stats.npz", allow_pickle=True, **staged.stats.arrays())
        (self.tmp / "meta.json").write_text(json.dumps({"n_rows": self.n_rows, "d": self.d, "n_tasks": self.n_tasks}))
        if self.path.exists():
            shutil.rmtree(self.path)
        os.replace(self.tmp, self.path)
        return GradientStore.open(self.path)
