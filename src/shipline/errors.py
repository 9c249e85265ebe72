"""Errors a user can act on. The CLI prints them in one line and exits with code 2."""

from __future__ import annotations


class ShiplineError(Exception):
    """Base for every error that should reach the user as a clear message, not a traceback."""

    exit_code = 2


class ConfigError(ShiplineError):
    """shipline.toml (or a file it names) is missing, malformed or inconsistent."""


class TicketError(ShiplineError):
    """A ticket is malformed, unknown, or in a state that forbids the request."""


class StoreError(ShiplineError):
    """The store is missing, empty, damaged, read-only, full, locked, gone, or was written by a
    newer shipline. The message names the fault and the fix. `transient` says whether waiting
    may help (a lock held by another process, a full disk, a server that went away): a worker
    backs off and tries again; every other command stops."""

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


class ProviderError(ShiplineError):
    """A provider call failed. `retryable` says whether another try (or entry) may help."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


class BudgetExceeded(ShiplineError):
    """A phase's prompt does not fit its input-token budget, even after truncation."""
