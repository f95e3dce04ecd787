"""spamgate's exceptions, in one tree.

::

    SpamgateError                      (spamgate.filters.sdk.errors: the root)
    ├── OptionError                    a filter option is invalid (names the key)
    ├── DependencyError                a dependency is down; the pipeline applies on_error
    │   ├── AuthUnavailable            the credential back-end (Dovecot) gave no answer
    │   ├── SpamdError                 (built-in spamassassin, via its spamd client)
    │   ├── ClamdError                 (built-in antivirus)
    │   └── DnsTempError               (sender_auth's DNS: the answer is unknown)
    ├── ConfigError                    the config is unreadable or invalid (names file and key)
    │   ├── PluginError                a configured filter cannot be found, imported or built
    │   └── PasswordFileError          [auth] password_file is unreadable or malformed
    ├── BackendError                   the backend MTA is unreachable or broke mid-transaction
    └── ToolError                      a CLI tool or console action cannot do what was asked
        ├── ProbeError, MetricsError   (spamgate audit, spamgate cost --from-metrics)
        ├── TokenError                 a digest release link is bad, expired or used
        └── ActionError                a console action was refused

An exception that is *not* a SpamgateError is a bug: the SMTP layer answers it with
``451 4.3.0`` and logs its traceback.
"""

from __future__ import annotations

from spamgate.filters.sdk.api import Reply
from spamgate.filters.sdk.errors import DependencyError, OptionError, SpamgateError

__all__ = [
    "AuthUnavailable", "BackendError", "ConfigError", "DependencyError", "OptionError", "PasswordFileError",
    "PluginError", "SpamgateError", "ToolError",
]


class ConfigError(SpamgateError):
    """A config file could not be read or is invalid; the message names file and key."""


class PluginError(ConfigError):
    """A configured filter could not be found, imported or configured."""


class PasswordFileError(ConfigError):
    """The password file cannot be read or has a malformed line."""


class AuthUnavailable(DependencyError):
    """The credential back-end could not give an answer (not a wrong password)."""


class BackendError(SpamgateError):
    """The backend could not be reached or broke mid-way; ``reply`` is what the client gets."""

    def __init__(self, reply: Reply, kind: str, detail: str = "") -> None:
        super().__init__(f"{kind}: {detail}")
        self.reply = reply
        self.kind = kind


class ToolError(SpamgateError):
    """A command-line tool or console action could not do what was asked."""
