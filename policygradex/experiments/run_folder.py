"""The run folder: its identity (family + configuration), its artifacts, their checksums, stage wall times.

A folder belongs to one family and one configuration, recorded in ``config.json`` when the run starts; for a
user's family (``TaskFamily.from_envs``) also each task's environment fingerprint (``TaskFamily.fingerprints``),
since its task names alone say nothing of the environments behind them.
Starting again with the same ones resumes: every stage whose artifact is there is loaded, not redone.
Starting with different ones is refused, so nothing already there is overwritten.

Every artifact is written under a temporary name and renamed, then *sealed*: its CRC-32 goes into
``checksums.json``. An artifact is reused only when it still matches its checksum; one that does not (a
truncated or damaged file, or one finished in the instant before a crash and never sealed) is recomputed.
"""

from __future__ import annotations

import enum
import os
import zlib
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any, Final, TypeVar

from policygradex.config import Config, diff
from policygradex.errors import PGXError
from policygradex.io import jsonable, read_json, write_json

CONFIG_FILE = "config.json"
TIMINGS_FILE = "timings.json"
CHECKSUMS_FILE = "checksums.json"
LOCK_FILE = ".lock"
A = TypeVar("A")


class _Missing(enum.Enum):
    """What ``RunFolder.reuse`` returns when an artifact has to be computed (an enum member: a type of its own)."""

    MISSING = enum.auto()


MISSING: Final = _Missing.MISSING


class Outdated(Exception):
    """Raised by an artifact's reader for an artifact that an older version of its stage's rule made (the
    message says which); ``RunFolder.reuse`` then recomputes it."""


_LOCKS: dict[str, int] = {}
"""Run folders this process holds (path -> open lock file); the OS releases them when the process ends."""


def _lock(path: Path) -> None:
    """Hold the folder's lock for the rest of this process, or refuse: two processes writing one run folder
    (a run started twice, or a killed run's stray worker) would overwrite each other's work in progress."""
    import fcntl

    key = str(path.resolve())
    if key in _LOCKS:
        return
    fd = os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise PGXError(f"run folder {path} is in use by another policygradex process; wait for it to finish or "
                       "stop it, then run the same command again") from None
    _LOCKS[key] = fd


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
        if not config_path.exists() and any(p.name != LOCK_FILE for p in path.iterdir()):
            raise PGXError(f"--out {path} is not empty and holds no policygradex run; choose a new or empty folder")
        _lock(path)
        if config_path.exists():
            try:
                before = read_json(config_path)
            except ValueError:
                raise PGXError(f"{config_path} is unreadable; use a new --out or delete that folder") from None
            changed = diff(before.get("family", {}), identity["family"], "family.") + diff(
                {k: v for k, v in before.get("config", {}).items() if k in identity["config"]}, identity["config"],
                defaults=jsonable(Config().identity()))
            if changed:
                raise PGXError(
                    f"run folder {path} was made with a different configuration (changed: "
                    f"{'; '.join(changed[:4])}{' ...' if len(changed) > 4 else ''}); "
                    "use a new --out, or the same settings to resume")
            was, now = before.get("environments") or {}, identity.get("environments") or {}
            if envs := sorted(name for name in set(was) | set(now) if was.get(name) != now.get(name)):
                raise PGXError(
                    f"run folder {path} was made with other environments for task(s) {', '.join(envs[:6])}"
                    f"{' ...' if len(envs) > 6 else ''} (spaces, dynamics or rewards differ); use a new --out, "
                    "or the same environments to resume")
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

    def seal(self, artifact: str) -> None:
        """Record the checksum of ``artifact`` (a file or a folder, relative to the run folder)."""
        sums = self._checksums()
        sums[artifact] = checksum(self.path / artifact)
        write_json(self.path / CHECKSUMS_FILE, sums)

    def verify(self, artifact: str) -> str | None:
        """None if ``artifact`` matches its recorded checksum, else what is wrong with it."""
        expected = self._checksums().get(artifact)
        if expected is None:
            return "has no checksum (it was never sealed)"
        if not (self.path / artifact).exists():
            return "is missing"
        if checksum(self.path / artifact) != expected:
            return "does not match its checksum (truncated or damaged)"
        return None

    def reuse(self, artifact: str, read: Callable[[Path], A], warn: Callable[[str], None]) -> A | _Missing:
        """``read`` of the artifact (a file or a folder) if it is there and matches its checksum, else
        ``MISSING``. A damaged or unreadable artifact is reported through ``warn``, never used."""
        path = self.path / artifact
        if not path.exists():
            return MISSING
        problem = self.verify(artifact)
        if problem is None:
            try:
                return read(path)
            except Outdated as exc:
                problem = str(exc)
            except Exception as exc:  # unreadable although sealed
                problem = f"is unreadable ({type(exc).__name__})"
        warn(f"{path} {problem}; recomputing it")
        return MISSING

    def _checksums(self) -> dict[str, str]:
        p = self.path / CHECKSUMS_FILE
        try:
            return read_json(p) if p.exists() else {}
        except ValueError:  # a damaged checksum file: every artifact counts as unsealed and is redone
            return {}


def checksum(path: Path, chunk: int = 1 << 22) -> str:
    """CRC-32 of a file, or of a folder's files (names and contents, in name order), as 8 hex digits."""
    crc = 0
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        if path.is_dir():
            crc = zlib.crc32(str(f.relative_to(path)).encode(), crc)
        with open(f, "rb") as fh:
            while block := fh.read(chunk):
                crc = zlib.crc32(block, crc)
    return f"{crc:08x}"
