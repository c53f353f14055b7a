"""Artifact I/O: every file is written under a temporary name in the same folder, then renamed.

A crash or Ctrl-C never leaves a half-written artifact; readers see the old file or the new one.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def file_mode() -> int:
    """The mode a plain ``open(..., "w")`` would give a new file under the user's umask (0644 for umask 022)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> None:
    """Call ``write(tmp_path)``, then rename the temporary file onto ``path``, with the mode the user's umask
    gives new files (a temporary file starts at 0600: readable by its owner alone)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def jsonable(obj: Any) -> Any:
    """JSON-safe: numpy scalars and arrays to Python, NaN to null."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_json(path: str | Path, data: Any) -> None:
    atomic_write(path, lambda p: p.write_text(json.dumps(jsonable(data), indent=2) + "\n"))


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda p: p.write_text(text))


def write_npy(path: str | Path, array: np.ndarray) -> None:
    def write(p: Path) -> None:
        with open(p, "wb") as f:
            np.save(f, array)

    atomic_write(path, write)


def write_npz(path: str | Path, **arrays: np.ndarray) -> None:
    def write(p: Path) -> None:
        with open(p, "wb") as f:
            np.savez(f, allow_pickle=True, **arrays)  # numpy's default, named so no array is taken for the flag

    atomic_write(path, write)


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """torch.save through a buffer: a file named after its temporary name would record that name inside the
    archive, and the same checkpoint would differ byte for byte between two runs."""
    import io as _io

    import torch

    buffer = _io.BytesIO()
    torch.save(obj, buffer)
    atomic_write(path, lambda p: p.write_bytes(buffer.getvalue()))
