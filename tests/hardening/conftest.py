"""Fixtures for the hardening suite: the integration suite's real Postfix and spamgate factory.

Re-exported, not copied, so both suites start components the same way.
"""

from tests.integration.conftest import postfix, spamgate

__all__ = ["postfix", "spamgate"]
