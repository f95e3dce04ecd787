"""The root of spamgate's exceptions, and the two a filter raises.

Filters and the engine share one tree (the engine's part is in ``spamgate.proxy.errors``,
whose docstring draws all of it), so ``except SpamgateError`` catches every failure
spamgate itself reports, and nothing else.
"""

from __future__ import annotations

__all__ = ["DependencyError", "OptionError", "SpamgateError"]


class SpamgateError(Exception):
    """Every error spamgate raises on purpose derives from this."""


class OptionError(SpamgateError, ValueError):
    """A filter option is invalid; ``key`` names it within ``[filters.<name>]``."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


class DependencyError(SpamgateError):
    """Something a filter depends on (a daemon, a resolver) is unavailable: not a bug in the filter.

    The pipeline logs these once per outage (no traceback) and applies the filter's
    ``on_error`` policy.
    """
