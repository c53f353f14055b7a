"""Errors a user can fix. The CLI prints their message on one line and exits with code 2."""


class PGXError(Exception):
    """Bad input or a run folder that cannot be used; the message says what to change."""


class ConfigError(PGXError, ValueError):
    """A configuration value out of range."""
