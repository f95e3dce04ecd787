"""Console sessions, CSRF tokens and the audit log.

Sessions live in memory (a restart logs everyone out, which is fine for a handful of
admins). A visitor gets an anonymous session on GET /login so the login form itself
carries a CSRF token; a successful login replaces it with a fresh session id, so an id
planted before login is worthless afterwards. Every form posts the session's CSRF
token; a missing or wrong one is a 403.
"""

from __future__ import annotations

import hmac
import logging
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass

__all__ = ["COOKIE", "Session", "SessionStore", "audit"]

COOKIE = "spamgate_console"
# Anonymous sessions are created by anyone who loads /login: bound the memory they take.
_MAX_SESSIONS = 10_000

audit_log = logging.getLogger("spamgate.console.audit")


@dataclass
class Session:
    id: str
    csrf: str
    expires: float
    user: str | None = None
    flash: str = ""  # one message for the next page (after a redirect)


class SessionStore:
    def __init__(self, lifetime: float) -> None:
        self.lifetime = lifetime
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    def new(self, user: str | None = None) -> Session:
        s = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(32), time.time() + self.lifetime, user)
        self._sessions[s.id] = s
        while len(self._sessions) > _MAX_SESSIONS:
            self._sessions.popitem(last=False)
        return s

    def get(self, sid: str | None) -> Session | None:
        if not sid:
            return None
        s = self._sessions.get(sid)
        if s is None:
            return None
        if s.expires <= time.time():
            del self._sessions[sid]
            return None
        return s

    def drop(self, sid: str) -> None:
        self._sessions.pop(sid, None)

    @property
    def logged_in(self) -> int:
        now = time.time()
        return sum(1 for s in self._sessions.values() if s.user is not None and s.expires > now)


def csrf_ok(session: Session | None, sent: object) -> bool:
    return session is not None and isinstance(sent, str) and hmac.compare_digest(session.csrf, sent)


def audit(user: str, action: str, qid: str = "-", result: str = "ok", client: str = "-", detail: str = "") -> None:
    """One line per console action: who, what, which message, how it went."""
    audit_log.info("audit user=%s action=%s id=%s result=%s client=%s%s", user, action, qid, result, client,
                   f" detail={detail}" if detail else "")
