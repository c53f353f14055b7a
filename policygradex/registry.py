"""Named implementations of a configurable choice: trainers, solvers, projectors, executors, architectures.

Each registry lives in the module of what it registers and lists its entries in one place, one line each::

    SOLVERS = Registry("estimate.solver", {"newton-stats": _newton_stats, "exact": _exact})

The config field that picks an entry is typed ``Literal[...]`` with the same names (config.py checks values
against the Literal; tests/test_registry.py checks that every registry and its Literal agree).
"""

from __future__ import annotations

from typing import Generic, TypeVar

from policygradex.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Names -> implementations of one choice; ``field`` is the (dotted) config field that picks one."""

    def __init__(self, field: str, entries: dict[str, T] | None = None) -> None:
        self.field = field
        self._entries: dict[str, T] = {}
        for name, obj in (entries or {}).items():
            self.add(name, obj)

    def add(self, name: str, obj: T) -> T:
        if name in self._entries:
            raise ValueError(f"{self.field} {name!r} is registered already")
        self._entries[name] = obj
        return obj

    def get(self, name: str) -> T:
        """The implementation called ``name``; a ConfigError listing the choices for any other name."""
        try:
            return self._entries[name]
        except (KeyError, TypeError):  # TypeError: an unhashable value
            raise ConfigError(self.field, f"must be one of {', '.join(self._entries)}; got {name!r}") from None

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def copy(self) -> Registry[T]:
        return Registry(self.field, self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __repr__(self) -> str:
        return f"Registry({self.field!r}, {list(self._entries)})"
