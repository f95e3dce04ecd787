"""SMTP AUTH building blocks: credential back-ends, the brute-force penalty box.

The SMTP server (proxy.smtp) owns the protocol; this package only answers "are these
credentials good?" and "is this client locked out?".
"""

from __future__ import annotations

from spamgate.filters.sdk.state import StateStore
from spamgate.proxy.auth.credentials import (
    Authenticator,
    AuthUnavailable,
    PasswordFile,
    PasswordFileError,
    valid_username,
)
from spamgate.proxy.auth.dovecot import DovecotAuth
from spamgate.proxy.auth.penalty import PenaltyBox
from spamgate.proxy.config import Auth

__all__ = [
    "AuthUnavailable",
    "Authenticator",
    "DovecotAuth",
    "PasswordFile",
    "PasswordFileError",
    "PenaltyBox",
    "make_authenticator",
    "make_penalty_box",
    "valid_username",
]


def make_authenticator(auth_cfg: Auth) -> Authenticator | None:
    """The back-end ``[auth] backend`` names, or None when AUTH is off.

    Raises PasswordFileError when the password file cannot be read at start-up.
    """
    if auth_cfg.backend == "file":
        assert auth_cfg.password_file is not None  # the config model guarantees it
        return PasswordFile(auth_cfg.password_file)
    if auth_cfg.backend == "dovecot":
        assert auth_cfg.dovecot_socket is not None
        return DovecotAuth(auth_cfg.dovecot_socket)
    return None


def make_penalty_box(auth_cfg: Auth, store: StateStore) -> PenaltyBox:
    return PenaltyBox(store, auth_cfg.max_failures, auth_cfg.failure_window, auth_cfg.penalty_seconds)
