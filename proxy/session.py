"""The transaction logic of one client session: pipeline at each phase, live relay to the backend.

aiosmtpd parses the protocol (proxy.smtp); this handler decides every reply. The
contract: spamgate answers 250 to a message only after the backend said 250 for it
(or the message was durably quarantined); backend trouble means a 4xx.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, cast

from spamgate.filters.sdk.api import (
    QUARANTINE_NOTE,
    Context,
    Decision,
    Envelope,
    HeaderRemoval,
    Message,
    Phase,
    Reply,
    SessionInfo,
)
from spamgate.filters.sdk.runner import PhaseResult, Scoreboard
from spamgate.filters.sdk.scoring import Action, choose_action, spam_headers
from spamgate.proxy import metrics, replies
from spamgate.proxy.message import build_final, canonicalize, find_bare_newlines, format_header, received_header
from spamgate.proxy.rdns import ClientNames
from spamgate.proxy.relay import BackendError, BackendReply, ClientFacts, Transaction
from spamgate.proxy.runtime import Runtime

__all__ = ["SessionState", "TransactionState", "has_control_chars"]

log = logging.getLogger("spamgate.session")

# Headers spamgate writes itself: an inbound copy can only be a forgery.
OWN_SPAM_HEADERS = tuple(HeaderRemoval(n) for n in ("X-Spam-Flag", "X-Spam-Score", "X-Spam-Status",
                                                     "X-Spamgate-Observe"))


AUTH_ROLES = frozenset({"submission", "smtps"})


def has_control_chars(value: str) -> bool:
    return any(ord(c) < 32 or ord(c) == 127 for c in value)


@dataclass
class TransactionState:
    board: Scoreboard
    started: float = field(default_factory=time.monotonic)
    mail_from: str = ""
    mail_options: list[str] = field(default_factory=list)
    recipients: list[str] = field(default_factory=list)
    rejected_rcpts: int = 0
    backend: Transaction | None = None
    broken: Reply | None = None
    notes: dict[str, Any] = field(default_factory=dict)


@dataclass
class SessionState:
    """Facts about the client that outlive a single transaction (and STARTTLS)."""

    id: str
    runtime: Runtime
    listener: str
    role: str
    peer_ip: str
    peer_port: int
    helo: str | None = None
    names: ClientNames = field(default_factory=ClientNames)
    esmtp: bool = True
    tls: str | None = None
    tls_version: str | None = None
    tls_cipher: str | None = None
    login: str | None = None
    board: Scoreboard = field(default_factory=Scoreboard)
    held: PhaseResult | None = None  # a connect/HELO reject waiting to be applied
    txn: TransactionState | None = None
    transactions: int = 0

    def info(self) -> SessionInfo:
        return SessionInfo(
            session_id=self.id,
            peer_ip=self.peer_ip,
            peer_port=self.peer_port,
            reverse_name=self.names.reverse,
            client_name=self.names.verified,
            helo=self.helo,
            tls=self.tls is not None,
            tls_version=self.tls_version,
            tls_cipher=self.tls_cipher,
            authenticated_user=self.login,
            listener_role=self.role,
            listener_name=self.listener,
        )

    def context(
        self, phase: Phase, rcpt: str | None = None, message: Message | None = None, received: bytes = b""
    ) -> Context:
        t = self.txn
        env = Envelope()
        notes: dict[str, Any] = {}
        if t is not None:
            env = Envelope(
                mail_from=t.mail_from,
                mail_options=tuple(t.mail_options),
                recipients=tuple(t.recipients),
                rcpt=rcpt,
                smtputf8="SMTPUTF8" in t.mail_options,
            )
            notes = t.notes
        return Context(phase, self.info(), env, message, None, notes, received)

    @property
    def protocol(self) -> str:
        base = "ESMTP" if self.esmtp else "SMTP"
        return base + ("S" if self.tls else "") + ("A" if self.login else "")

    def client_facts(self) -> ClientFacts:
        return ClientFacts(
            addr=self.peer_ip, port=self.peer_port, name=self.names.verified, helo=self.helo,
            proto="ESMTP" if self.esmtp else "SMTP", login=self.login, reverse_name=self.names.reverse,
            name_tempfail=self.names.temporary_failure,
        )

    # -- phases ---------------------------------------------------------------

    async def run_phase(self, phase: Phase, ctx: Context, board: Scoreboard) -> PhaseResult:
        return await self.runtime.pipeline.run(phase, ctx, board)

    async def on_connect(self) -> None:
        rdns = self.runtime.rdns
        if rdns is not None:
            self.names = await rdns.lookup_bounded(self.peer_ip)
        result = await self.run_phase(Phase.CONNECT, self.context(Phase.CONNECT), self.board)
        if result.reply is not None:
            self.held = result

    async def on_helo(self, hostname: str, esmtp: bool) -> Reply | None:
        await self.abort_transaction()
        self.helo, self.esmtp = hostname, esmtp
        if self.held is None:
            result = await self.run_phase(Phase.HELO, self.context(Phase.HELO), self.board)
            if result.reply is not None:
                self.held = result
        return self.held_reply_now()

    def held_reply_now(self) -> Reply | None:
        """A held connect/HELO reject, unless it is deferred to RCPT."""
        if self.held is None or self.runtime.cfg.pipeline.defer_rejects:
            return None
        return self.held.reply

    async def on_mail(self, address: str, options: list[str]) -> Reply | BackendReply:
        await self.abort_transaction()
        if has_control_chars(address):
            return replies.BAD_ADDRESS
        if self.role in AUTH_ROLES and self.login is None:
            # The engine's own rule, whatever filters are configured: submission is for users.
            return replies.AUTH_REQUIRED
        held = self.held_reply_now()
        if held is not None:
            return held
        self.txn = txn = TransactionState(board=self.board.copy(), mail_from=address, mail_options=list(options))
        result = await self.run_phase(Phase.MAIL, self.context(Phase.MAIL), txn.board)
        if result.reply is not None:
            self.txn = None
            return result.reply
        try:
            txn.backend = await self.runtime.backend.begin(self.client_facts())
            reply = await txn.backend.mail(address, options)
        except BackendError as exc:
            log.debug("backend=%s stage=mail error=%s", exc.kind, exc)
            self.txn = None
            return exc.reply
        if not reply.ok:
            await txn.backend.finish(reset=False)
            self.txn = None
        return reply

    def _exempt(self, rcpt: str) -> bool:
        local = rcpt.rsplit("@", 1)[0].lower()
        return any(local == e.lower() or rcpt.lower() == e.lower() for e in self.runtime.cfg.pipeline.exempt_recipients)

    async def on_rcpt(self, address: str, options: list[str]) -> Reply | BackendReply:
        txn = self.txn
        if txn is None:
            return Reply(503, "5.5.1", "Error: need MAIL command")
        if txn.broken is not None:
            return txn.broken
        if has_control_chars(address):
            return replies.BAD_ADDRESS
        if len(txn.recipients) >= self.runtime.cfg.limits.max_recipients:
            metrics.LIMITS.labels("max_recipients").inc()
            return replies.TOO_MANY_RECIPIENTS
        if self.held is not None and self.held.reply is not None and not self._exempt(address):
            txn.rejected_rcpts += 1
            return self.held.reply
        result = await self.run_phase(Phase.RCPT, self.context(Phase.RCPT, rcpt=address), txn.board)
        if result.reply is not None:
            txn.rejected_rcpts += 1
            return result.reply
        assert txn.backend is not None
        try:
            reply = await txn.backend.rcpt(address, options)
        except BackendError as exc:
            log.debug("backend=%s stage=rcpt error=%s", exc.kind, exc)
            txn.broken = exc.reply
            txn.backend = None
            return exc.reply
        if reply.ok:
            txn.recipients.append(address)
        else:
            txn.rejected_rcpts += 1
        return reply

    async def abort_transaction(self) -> None:
        txn, self.txn = self.txn, None
        if txn is not None and txn.backend is not None:
            await txn.backend.finish(reset=True)

    async def on_data(self, content: bytes) -> Reply | BackendReply:
        txn = self.txn
        if txn is None or not txn.recipients:
            return replies.NO_VALID_RCPT
        if txn.broken is not None:
            await self.abort_transaction()
            return txn.broken
        try:
            reply, action = await self._data(txn, content)
        finally:
            self.txn = None
            self.transactions += 1
        self._summary(txn, len(content), action, reply)
        return reply

    async def _data(self, txn: TransactionState, content: bytes) -> tuple[Reply | BackendReply, str]:
        metrics.MESSAGE_SIZE.observe(len(content))
        metrics.RECEIVED_BYTES.inc(len(content))
        if find_bare_newlines(content):
            if self.runtime.cfg.limits.bare_newline == "reject":
                await self._release(txn, reset=True)
                return replies.BARE_NEWLINE, "reject_bare_newline"
            content = canonicalize(content)
        msg = Message(content)
        # Built once: filters (spamd) see exactly the trace header the relayed message gets.
        received = self._received()
        ctx = self.context(Phase.DATA, message=msg, received=format_header(*received))
        result = await self.run_phase(Phase.DATA, ctx, txn.board)
        board = txn.board
        if result.reply is not None:
            await self._release(txn, reset=True)
            action = "reject" if result.decision is Decision.REJECT else "tempfail"
            metrics.TRANSACTIONS.labels(action).inc()
            return result.reply, f"{action} by {result.decided_by}"
        score = board.score
        metrics.MESSAGE_SCORE.observe(score)
        thresholds = self.runtime.thresholds
        action = choose_action(score, thresholds)
        reasons = [e.symbol.name for e in sorted(board.entries, key=lambda e: -e.score) if e.score > 0]
        explain = spam_headers(score, action, board.entries, thresholds)
        if board.observed:
            explain.append(("X-Spamgate-Observe", "; ".join(board.observed)))
        final = build_final(msg.raw, msg.header_end, [received, *board.add_headers, *explain],
                            [*OWN_SPAM_HEADERS, *board.remove_headers])
        quarantine = self.runtime.quarantine
        held = self._held_by_filter(txn)
        if held is not None:
            if quarantine is not None:
                return await self._quarantine(txn, final, score, Action.QUARANTINE, reasons)
            await self._release(txn, reset=True)
            metrics.TRANSACTIONS.labels("reject").inc()
            return held, "reject (no quarantine_dir for a filter's quarantine)"
        if action is Action.QUARANTINE or (action is Action.REJECT and self.runtime.cfg.pipeline.quarantine_rejects):
            if quarantine is not None:
                return await self._quarantine(txn, final, score, action, reasons)
        if action is Action.REJECT:
            await self._release(txn, reset=True)
            metrics.TRANSACTIONS.labels("reject").inc()
            why = ", ".join(reasons[:3]) or "score"
            return Reply(550, "5.7.1", f"Message rejected as spam (score {score:.1f}: {why})"), "reject"
        if action is Action.TEMPFAIL:
            await self._release(txn, reset=True)
            metrics.TRANSACTIONS.labels("tempfail").inc()
            return replies.SPAM_TEMPFAIL, "tempfail"
        return await self._relay(txn, final, action.value)

    @staticmethod
    def _held_by_filter(txn: TransactionState) -> Reply | None:
        """A filter's request to quarantine (see filters.api.QUARANTINE_NOTE), unless it only observes."""
        note = txn.notes.get(QUARANTINE_NOTE)
        if not (isinstance(note, tuple) and len(note) == 2 and isinstance(note[1], Reply)):
            return None
        name, reply = note
        if any(e.filter == name and e.observed for e in txn.board.entries):
            return None
        return cast(Reply, reply)

    async def _quarantine(
        self, txn: TransactionState, final: bytes, score: float, action: Action, reasons: list[str]
    ) -> tuple[Reply, str]:
        assert self.runtime.quarantine is not None
        await self._release(txn, reset=True)
        try:
            qid = await self.runtime.quarantine.store(
                final, session_id=self.id, client_ip=self.peer_ip, mail_from=txn.mail_from,
                recipients=txn.recipients, score=score, action=action.value, reasons=reasons,
            )
        except OSError as exc:
            log.error("quarantine=failed error=%s", exc)
            metrics.TRANSACTIONS.labels("tempfail").inc()
            return replies.QUARANTINE_FULL, "tempfail (quarantine failed)"
        metrics.QUARANTINED.inc()
        metrics.TRANSACTIONS.labels("quarantine").inc()
        return Reply(250, "2.0.0", f"Ok: quarantined as {qid}"), f"quarantine id={qid}"

    async def _relay(self, txn: TransactionState, final: bytes, action: str) -> tuple[Reply | BackendReply, str]:
        assert txn.backend is not None
        try:
            reply = await txn.backend.data(final)
        except BackendError as exc:
            log.debug("backend=%s stage=data error=%s", exc.kind, exc)
            metrics.TRANSACTIONS.labels("error").inc()
            return exc.reply, "backend_error"
        await txn.backend.finish(reset=False)
        if reply.ok:
            metrics.TRANSACTIONS.labels(action).inc()
            return reply, action
        label = "backend_tempfail" if reply.code < 500 else "backend_reject"
        metrics.TRANSACTIONS.labels(label).inc()
        return reply, label

    async def _release(self, txn: TransactionState, reset: bool) -> None:
        if txn.backend is not None:
            await txn.backend.finish(reset=reset)
            txn.backend = None

    def _received(self) -> tuple[str, str]:
        t = self.txn
        rcpt = t.recipients[0] if t is not None and len(t.recipients) == 1 else None
        return received_header(
            helo=self.helo, peer_ip=self.peer_ip, reverse_name=self.names.verified,
            hostname=self.runtime.cfg.server.hostname,
            protocol=self.protocol, session_id=self.id, tls=self.tls, login=self.login, recipient=rcpt,
        )

    def _summary(self, txn: TransactionState, size: int, action: str, reply: Reply | BackendReply) -> None:
        text = str(reply) if isinstance(reply, Reply) else f"{reply.code} {reply.message}".replace("\n", " ")
        log.info(
            "client=%s helo=%r from=<%s> rcpts=%s rejected_rcpts=%d size=%d score=%.2f action=%s "
            "reply=%r duration=%.3fs",
            self.peer_ip, self.helo, txn.mail_from, ",".join(f"<{r}>" for r in txn.recipients), txn.rejected_rcpts,
            size, txn.board.score, action, text, time.monotonic() - txn.started,
        )
