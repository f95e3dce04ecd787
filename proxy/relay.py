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
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time

from spamgate.filters.sdk.outage import Outage
from spamgate.proxy import metrics, xclient
from spamgate.proxy.backend import BackendReply, ClientFacts, Transaction
from spamgate.proxy.config import Backend as BackendConfig
from spamgate.proxy.errors import BackendError
from spamgate.proxy.relay_data import send_message
from spamgate.proxy.replies import BACKEND_TIMEOUT, BACKEND_UNAVAILABLE
from spamgate.proxy.smtp_client import (
    BackendProtocolError,
    ClientError,
    Connection,
    SmtpReply,
    command_line,
    open_connection,
)

__all__ = ["SmtpBackend"]

log = logging.getLogger("spamgate.relay")


# What the client hears for a MAIL that waits for the first RCPT to go out (Postfix's own words).
_MAIL_DEFERRED = BackendReply(250, "2.1.0 Ok")


def _translate(exc: BaseException) -> BackendError:
    if isinstance(exc, TimeoutError):
        metrics.BACKEND_ERRORS.labels("timeout").inc()
        return BackendError(BACKEND_TIMEOUT, "timeout", str(exc))
    # A connection refused, reset or closed by the backend (BackendClosed is a ConnectionError).
    kind = "connect" if isinstance(exc, OSError) else "protocol"
    metrics.BACKEND_ERRORS.labels(kind).inc()
    return BackendError(BACKEND_UNAVAILABLE, kind, str(exc))


class _Reconnected(Exception):
    """The first exchange on a pooled connection found it closed: a fresh one replaced it, and the
    caller builds its commands again for that one (it may offer other extensions)."""


class _Timed:
    def __init__(self, stage: str) -> None:
        self.stage = stage
        self.start = 0.0

    def __enter__(self) -> None:
        self.start = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        metrics.BACKEND_DURATION_BY(self.stage).observe(time.perf_counter() - self.start)


class SmtpTransaction:
    def __init__(self, backend: SmtpBackend, conn: Connection, client: ClientFacts, xforward: bool,
                 identity: bytes | None = None, reused: bool = False) -> None:
        self._backend = backend
        self._conn = conn
        self._client = client
        self._xforward = xforward
        # What the backend was last told about the client on this connection (XCLIENT + EHLO); None
        # once anything but a success happened on it, so the next client is identified again.
        self._identity = identity
        # The identification was skipped: a connection the backend closed while pooled shows only
        # at the first command, which then starts over on a fresh connection (as begin() does).
        self._retry_fresh = reused
        self._done = False
        # True while a command waits for its reply. If the wait is cancelled (the client went
        # away), the reply may still arrive and be paired with a later command: such a
        # connection is closed, never pooled.
        self._in_flight = False
        # A MAIL command line waiting to go out with the first RCPT (the backend offers PIPELINING).
        self._pending_mail: bytes | None = None

    async def _exchange(self, stage: str, data: bytes, replies: int = 1) -> list[SmtpReply]:
        """Send ``data`` (whole command lines) and read the ``replies`` it is owed, in order."""
        retry, self._retry_fresh = self._retry_fresh, False
        self._in_flight = True
        try:
            with _Timed(stage):
                self._conn.send(data, replies)
                got = [await self._conn.reply() for _ in range(replies)]
        except (ClientError, OSError) as exc:
            self._drop()
            if not retry:
                raise _translate(exc) from exc
            self._conn, self._xforward, self._identity = await self._backend.fresh(self._client)
            self._done = False
            raise _Reconnected from exc
        self._in_flight = False
        return got

    def _counted(self, stage: str, reply: SmtpReply) -> BackendReply:
        if not 200 <= reply.code < 400:
            self._identity = None
        metrics.BACKEND_REPLIES_BY(stage, metrics.reply_class(reply.code)).inc()
        return BackendReply(reply.code, reply.message)

    def _line(self, *parts: bytes) -> bytes:
        try:
            return command_line(b" ".join(parts))
        except BackendProtocolError as exc:
            self._drop()
            raise _translate(exc) from exc

    async def _forward_client(self) -> None:
        if self._xforward:
            [forwarded] = await self._exchange("xforward", self._line(b"XFORWARD", xclient.xforward_args(self._client)))
            self._counted("xforward", forwarded)

    async def mail(self, sender: str, options: list[str]) -> BackendReply:
        line = self._line(b"MAIL", f"FROM:<{sender}>".encode(), *(o.encode() for o in options))
        try:
            return await self._mail(line)
        except _Reconnected:
            return await self._mail(line)

    async def _mail(self, line: bytes) -> BackendReply:
        await self._forward_client()
        if self._conn.supports("pipelining"):
            self._pending_mail = line
            return _MAIL_DEFERRED
        [reply] = await self._exchange("mail", line)
        return self._counted("mail", reply)

    async def rcpt(self, rcpt: str, options: list[str]) -> BackendReply:
        line = self._line(b"RCPT", f"TO:<{rcpt}>".encode(), *(o.encode() for o in options))
        try:
            return await self._rcpt(line)
        except _Reconnected:
            # MAIL never reached the closed connection, nor did XFORWARD (it would have been the first).
            await self._forward_client()
            return await self._rcpt(line)

    async def _rcpt(self, line: bytes) -> BackendReply:
        pending = self._pending_mail
        if pending is None:
            [reply] = await self._exchange("rcpt", line)
            return self._counted("rcpt", reply)
        pipelined = self._conn.supports("pipelining")  # not so on a fresh connection to a balancer's other MTA
        if pipelined:
            mail, reply = await self._exchange("rcpt", pending + line, 2)
        else:
            [mail] = await self._exchange("mail", pending)
        answer = self._counted("mail", mail)
        if not answer.ok:
            # The sender refused: the RCPT behind it was refused for want of a MAIL ("503 need MAIL"),
            # so the client hears why; MAIL goes out again with its next RCPT.
            return answer
        self._pending_mail = None
        if not pipelined:
            [reply] = await self._exchange("rcpt", line)
        return self._counted("rcpt", reply)

    async def data(self, message: bytes) -> BackendReply:
        if self._pending_mail is not None:  # the controller sends DATA only after an accepted RCPT
            self._drop()
            raise _translate(BackendProtocolError("DATA before the backend accepted MAIL"))
        self._in_flight = True
        try:
            with _Timed("data"):
                resp = await send_message(self._conn, message)
        except (ClientError, OSError) as exc:
            self._drop()
            raise _translate(exc) from exc
        self._in_flight = False
        if not (200 <= resp.code < 300 or resp.code >= 400):
            # Neither done nor refused (a 3xx after the message, say): what the backend did is unknown.
            self._drop()
            raise _translate(BackendProtocolError(f"unexpected reply to the message: {resp.code} {resp.message}"))
        return self._counted("data", resp)

    def _drop(self) -> None:
        self._done = True
        self._conn.close()

    async def finish(self, reset: bool) -> None:
        """Return the connection to the pool (after RSET when the transaction is open)."""
        if self._done:
            return
        self._done = True
        if self._in_flight:
            self._conn.close()
            return
        if reset and self._pending_mail is not None:
            reset = False  # MAIL never went out or was refused: the backend has no transaction to reset
        if reset:
            # Not after a completed DATA (RFC 5321 4.1.1.4: the backend has reset already): only an
            # aborted transaction gets here. Its identity is forgotten: XCLIENT resets the backend's
            # whole session state (error and junk-command counts included) for the next client.
            self._identity = None
            try:
                resp = await self._conn.command(b"RSET")
                if resp.code != 250:
                    self._conn.close()
                    return
            except (ClientError, OSError):
                self._conn.close()
                return
        self._backend.release(self._conn, self._identity)


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
            with _Timed("connect"):
                # The greeting read is part of connect: a backend that accepts and stays silent
                # must not hold the client longer than the configured backend timeout.
                conn = await open_connection(cfg.host, cfg.port, min(cfg.connect_timeout, cfg.timeout), cfg.timeout)
                await _ehlo(conn, self.helo_name)
        except (ClientError, OSError) as exc:
            if conn is not None:
                conn.close()
            error = _translate(exc)
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
                    raise _translate(exc) from exc
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
            raise _translate(exc) from exc
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
