"""One backend transaction on one pooled connection: MAIL (deferred to go out with the first RCPT
when the backend offers PIPELINING), RCPT, the message, and the connection's return to the pool
(proxy/relay.py), with a RSET only for an aborted transaction. A pooled connection found closed
at its first command is replaced by a fresh one, spoken to as it offers itself.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from spamgate.proxy import metrics, xclient
from spamgate.proxy.backend import BackendReply, ClientFacts
from spamgate.proxy.errors import BackendError
from spamgate.proxy.relay_data import send_message
from spamgate.proxy.replies import BACKEND_TIMEOUT, BACKEND_UNAVAILABLE
from spamgate.proxy.smtp_client import BackendProtocolError, ClientError, Connection, SmtpReply, command_line

if TYPE_CHECKING:  # the pool creates these and takes their connections back
    from spamgate.proxy.relay import SmtpBackend

__all__ = ["SmtpTransaction", "Timed", "translate"]


# What the client hears for a MAIL that waits for the first RCPT to go out (Postfix's own words).
_MAIL_DEFERRED = BackendReply(250, "2.1.0 Ok")


def translate(exc: BaseException) -> BackendError:
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


class Timed:
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
            with Timed(stage):
                self._conn.send(data, replies)
                got = [await self._conn.reply() for _ in range(replies)]
        except (ClientError, OSError) as exc:
            self._drop()
            if not retry:
                raise translate(exc) from exc
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
            raise translate(exc) from exc

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
            raise translate(BackendProtocolError("DATA before the backend accepted MAIL"))
        self._in_flight = True
        try:
            with Timed("data"):
                resp = await send_message(self._conn, message)
        except (ClientError, OSError) as exc:
            self._drop()
            raise translate(exc) from exc
        self._in_flight = False
        if not (200 <= resp.code < 300 or resp.code >= 400):
            # Neither done nor refused (a 3xx after the message, say): what the backend did is unknown.
            self._drop()
            raise translate(BackendProtocolError(f"unexpected reply to the message: {resp.code} {resp.message}"))
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
