"""Live relay to the backend MTA: one backend transaction per client transaction.

The backend session opens at the client's first MAIL FROM; every RCPT is relayed and
the backend's reply goes back as-is; at end of DATA the message goes to the backend and
the client gets the backend's own final reply. When the backend offers PIPELINING
(Postfix does), MAIL goes out with the first RCPT in one write (RFC 2920): the client's
MAIL is answered once spamgate's own checks pass, and a sender the backend refuses is
the answer to that RCPT, as Postfix's own smtpd_delay_reject does. Connections are kept
in a small pool and re-identified with XCLIENT for each new client, so Postfix applies
its policies to the real client. A completed DATA resets the backend's transaction
(RFC 5321 4.1.1.4): only an aborted one costs a RSET. A pooled connection whose last
XCLIENT + EHLO sent exactly the attributes the next client needs is not identified again
(two round trips less per message); any error reply or RSET on it forgets that identity.
This module is the pool and the identification; one transaction is proxy/relay_transaction.py.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time

from spamgate.filters.sdk.outage import Outage
from spamgate.proxy import metrics, xclient
from spamgate.proxy.backend import ClientFacts, Transaction
from spamgate.proxy.config import Backend as BackendConfig
from spamgate.proxy.relay_transaction import SmtpTransaction, Timed, translate
from spamgate.proxy.smtp_client import BackendProtocolError, ClientError, Connection, open_connection

__all__ = ["SmtpBackend"]

log = logging.getLogger("spamgate.relay")


class SmtpBackend:
    """An SMTP backend with a bounded pool of idle, health-checked connections."""

    def __init__(self, cfg: BackendConfig, helo_name: str) -> None:
        self.cfg = cfg
        self.helo_name = cfg.helo_name or helo_name
        # (released at, connection, identity: see _identify)
        self._idle: collections.deque[tuple[float, Connection, bytes | None]] = collections.deque()
        self.outage = Outage(f"backend {cfg.host}:{cfg.port}", log)
        self._warned_anonymous = False
        # The XCLIENT attributes the backend offered last (the same on every connection to it): to
        # pick a pooled connection already identified as the next client.
        self._offered: frozenset[str] | None = None

    async def _connect(self) -> Connection:
        cfg = self.cfg
        conn: Connection | None = None
        try:
            with Timed("connect"):
                # The greeting read is part of connect: a backend that accepts and stays silent
                # must not hold the client longer than the configured backend timeout.
                conn = await open_connection(cfg.host, cfg.port, min(cfg.connect_timeout, cfg.timeout), cfg.timeout)
                await _ehlo(conn, self.helo_name)
        except (ClientError, OSError) as exc:
            if conn is not None:
                conn.close()
            error = translate(exc)
            self.outage.failed(str(error))
            raise error from exc
        self.outage.ok()
        return conn

    def _take_idle(self, identity: bytes | None) -> tuple[Connection, bytes | None] | None:
        """The newest live idle connection, preferring one already identified as ``identity``."""
        now = time.monotonic()
        idle = self._idle
        while idle and not (idle[0][1].idle and now - idle[0][0] < self.cfg.pool_idle_seconds):
            idle.popleft()[1].close()  # the oldest first: expired or closed by the backend
        if identity is not None:
            for i in range(len(idle) - 1, -1, -1):
                if idle[i][2] == identity and idle[i][1].idle:
                    _, conn, known = idle[i]
                    del idle[i]
                    metrics.BACKEND_POOL.set(len(idle))
                    return conn, known
        while idle:
            _, conn, known = idle.pop()
            if conn.idle:
                metrics.BACKEND_POOL.set(len(idle))
                return conn, known
            conn.close()
        metrics.BACKEND_POOL.set(0)
        return None

    def release(self, conn: Connection, identity: bytes | None = None) -> None:
        if len(self._idle) >= self.cfg.pool_size or not conn.idle:
            conn.close()
            return
        self._idle.append((time.monotonic(), conn, identity))
        metrics.BACKEND_POOL.set(len(self._idle))

    def _wanted(self, client: ClientFacts) -> bytes | None:
        if self._offered is None or self.cfg.xclient == "off":
            return None
        return xclient.identity(client, self._offered)[2]

    async def _identify(self, conn: Connection, client: ClientFacts,
                        known: bytes | None) -> tuple[bool, bytes | None, bool]:
        """Send XCLIENT when offered, unless ``known`` (the connection's identity) is this client's already.

        Returns (use XFORWARD instead, the connection's identity now, XCLIENT was skipped).
        """
        if self.cfg.xclient == "off":
            return False, None, False
        if conn.supports("xclient"):
            self._offered = offered = frozenset(conn.extensions.get("xclient", "").upper().split())
            args, helo, known_as = xclient.identity(client, offered)
            if known_as == known:
                return False, known_as, True
            resp = await conn.command(b"XCLIENT " + args)
            # Postfix answers 220 (a fresh greeting); other implementations (smtp-sink) 250.
            if not 200 <= resp.code < 300:
                conn.close()
                raise BackendProtocolError(f"XCLIENT refused: {resp.code} {resp.message}")
            await _ehlo(conn, helo or self.helo_name)
            return False, known_as, False
        if not conn.supports("xforward") and not self._warned_anonymous:
            # Once per process: the backend's relay and rate checks see spamgate's address for everyone.
            self._warned_anonymous = True
            log.warning("backend %s:%d offers neither XCLIENT nor XFORWARD to us: it sees every client as "
                        "spamgate's own address; authorise us (smtpd_authorized_xclient_hosts, deploy/postfix/) "
                        "and set [auth] local_domains so spamgate refuses relaying itself", self.cfg.host,
                        self.cfg.port)
        return conn.supports("xforward"), None, False

    async def begin(self, client: ClientFacts) -> Transaction:
        pooled = self._take_idle(self._wanted(client))
        conn, known = pooled if pooled is not None else (None, None)
        for attempt in (0, 1):
            if conn is None:
                conn = await self._connect()
            identified = False
            try:
                xforward, identity, reused = await self._identify(conn, client, known)
                identified = True
                return SmtpTransaction(self, conn, client, xforward, identity, reused)
            except (ClientError, OSError) as exc:
                # A pooled connection may have been closed by the backend's idle timeout.
                if attempt == 1:
                    raise translate(exc) from exc
            finally:
                if not identified:  # failed, or cancelled mid-reply: never reuse it
                    conn.close()
            conn, known = None, None
        raise AssertionError("unreachable")

    async def fresh(self, client: ClientFacts) -> tuple[Connection, bool, bytes | None]:
        """A new connection, identified for ``client``: (connection, use XFORWARD, identity)."""
        conn = await self._connect()
        identified = False
        try:
            xforward, identity, _ = await self._identify(conn, client, None)
            identified = True
        except (ClientError, OSError) as exc:
            raise translate(exc) from exc
        finally:
            if not identified:
                conn.close()
        return conn, xforward, identity

    async def ping(self) -> bool:
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(self.cfg.host, self.cfg.port), self.cfg.connect_timeout
            )
        except (TimeoutError, OSError):
            return False
        writer.close()
        return True

    async def close(self) -> None:
        while self._idle:
            _, conn, _ = self._idle.pop()
            try:
                async with asyncio.timeout(2):
                    await conn.quit()
            except (ClientError, OSError, TimeoutError):
                conn.close()
        metrics.BACKEND_POOL.set(0)


async def _ehlo(conn: Connection, name: str) -> None:
    try:
        reply = await conn.ehlo(name)
    except UnicodeEncodeError as exc:
        conn.close()
        raise BackendProtocolError(f"EHLO name not ASCII: {name!r}") from exc
    if reply.code != 250:
        conn.close()
        raise BackendProtocolError(f"EHLO refused: {reply.code} {reply.message}")
