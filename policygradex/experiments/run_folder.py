"""The run folder: its identity (family + configuration), its artifacts and the stage wall times.

A folder belongs to one family and one configuration, recorded in ``config.json`` when the run starts.
Starting again with the same ones resumes: every stage whose artifact is there is loaded, not redone.
Starting with different ones is refused, so nothing already there is overwritten.
"""

from __future__ import annotations

import os
from importlib.metadata import version
from pathlib import Path
from typing import Any

from policygradex.config import diff
from policygradex.errors import PGXError
from policygradex.io import read_json, write_json

CONFIG_FILE = "config.json"
TIMINGS_FILE = "timings.json"


class RunFolder:
    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def open(cls, out: str | os.PathLike, identity: dict[str, Any]) -> RunFolder:
        """Create ``out`` or reopen it for the same family and configuration; refuse anything else."""
        path = Path(out)
        if path.exists() and not path.is_dir():
            raise PGXError(f"--out {path} is a file; give a folder path")
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise PGXError(f"cannot create --out {path}: {exc.strerror}; choose a writable folder") from None
        if not os.access(path, os.W_OK | os.X_OK):
            raise PGXError(f"cannot write to --out {path}: permission denied; choose a writable folder")
        config_path = path / CONFIG_FILE
        if config_path.exists():
            try:
                before = read_json(config_path)
            except ValueError:
                raise PGXError(f"{config_path} is unreadable; use a new --out or delete that folder") from None
            changed = diff(before.get("family", {}), identity["family"], "family.") + diff(
                {k: v for k, v in before.get("config", {}).items() if k in identity["config"]}, identity["config"])
            if changed:
                raise PGXError(
                    f"run folder {path} was made with a different configuration (changed: "
                    f"{'; '.join(changed[:4])}{' ...' if len(changed) > 4 else ''}); "
                    "use a new --out, or the same settings to resume")
        elif any(path.iterdir()):
            raise PGXError(f"--out {path} is not empty and holds no policygradex run; choose a new or empty folder")
        else:
            try:
                write_json(config_path, {"policygradex": version("policygradex"), **identity})
            except OSError as exc:
                raise PGXError(f"cannot write to --out {path}: {exc.strerror}; choose a writable folder") from None
        return cls(path)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def timings(self) -> dict[str, float]:
        p = self.path / TIMINGS_FILE
        return read_json(p) if p.exists() else {}

    def record_time(self, stage: str, seconds: float) -> None:
        write_json(self.path / TIMINGS_FILE, {**self.timings(), stage: round(seconds, 3)})
