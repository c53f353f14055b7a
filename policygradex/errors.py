"""Errors a user can fix. The CLI prints their message on one line and exits with code 2."""

from __future__ import annotations


class PGXError(Exception):
    """Bad input or a run folder that cannot be used; the message says what to change."""


class ConfigError(PGXError, ValueError):
    """A configuration value out of range: ``field`` (dotted once its section is known, e.g. ``meta.gamma``)
    and ``reason`` (``must lie in (0, 1], got 7``). The CLI turns the field into its flag name."""

    def __init__(self, field: str, reason: str) -> None:
        self.field, self.reason = field, reason
        super().__init__(f"{field} {reason}")

    def within(self, section: str) -> ConfigError:
        """The same error, its field prefixed with the section it belongs to."""
        return ConfigError(f"{section}.{self.field}", self.reason)
