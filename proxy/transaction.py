"""The transaction controller: what spamgate does at each SMTP command of one session.

aiosmtpd parses the protocol (``proxy.smtp``); this controller decides every reply: it
runs the filters of each phase, relays MAIL/RCPT/DATA live to the backend, picks the
action from the score and quarantines, rejects or relays. The contract: spamgate answers
250 to a message only after the backend said 250 for it (or the message was durably
quarantined); backend trouble means a 4xx.

The facts it works on live in the session record (``proxy.session``); the rules it
applies are pure functions (``proxy.decisions``).
"""

from __future__ import annotations

import logging
import time

from spamgate.filters.sdk.api import Decision, HeaderRemoval, Message, Phase, Reply
from spamgate.filters.sdk.runner import PhaseResult, Scoreboard
from spamgate.filters.sdk.scoring import Action, choose_action, spam_headers
from spamgate.proxy import metrics, replies
from spamgate.proxy.backend import BackendReply
from spamgate.proxy.decisions import (
    EndOfData,
    auth_required,
    end_of_data,
    filter_quarantine_request,
    held_at_mail,
    held_at_rcpt,
    reasons,
    relay_denied,
)
from spamgate.proxy.errors import BackendError
from spamgate.proxy.message import build_final, canonicalize, find_bare_newlines, format_header, received_header
from spamgate.proxy.runtime import Runtime
from spamgate.proxy.session import SessionState, TransactionState, has_control_chars

__all__ = ["OWN_SPAM_HEADERS", "TransactionController"]

# The summary line keeps the logger name it always had: operators grep for "spamgate.session".
log = logging.getLogger("spamgate.session")

# Headers spamgate writes itself: an inbound copy can only be a forgery.
OWN_SPAM_HEADERS = tuple(HeaderRemoval(n) for n in ("X-Spam-Flag", "X-Spam-Score", "X-Spam-Status",
                                                     "X-Spamgate-Observe"))

AnyReply = Reply | BackendReply

_NO_FILTERS = PhaseResult(Decision.CONTINUE, None, None, ())


class TransactionController:
    """Connect/HELO filters, then MAIL, RCPT, DATA and RSET for the session in ``state``."""

    def __init__(self, state: SessionState) -> None:
        self.state = state

    @property
    def runtime(self) -> Runtime:
        return self.state.runtime

    async def _run(self, phase: Phase, board: Scoreboard, rcpt: str | None = None, message: Message | None = None,
                   received: bytes = b"") -> PhaseResult:
        pipeline = self.runtime.pipeline
        if not pipeline.filters_for(phase):
            # No filter at this phase (the production config has none at all): no context to build.
            return _NO_FILTERS
        return await pipeline.run(phase, self.state.context(phase, rcpt, message, received), board)

    # -- before the first transaction -----------------------------------------

    async def on_connect(self) -> None:
        st = self.state
        rdns = self.runtime.rdns
        if rdns is not None:
            st.names = await rdns.lookup_bounded(st.peer_ip)
        result = await self._run(Phase.CONNECT, st.board)
        if result.reply is not None:
            st.held = result

    async def on_helo(self, hostname: str, esmtp: bool) -> Reply | None:
        st = self.state
        await self.abort_transaction()
        st.helo, st.esmtp = hostname, esmtp
        if st.held is None:
            result = await self._run(Phase.HELO, st.board)
            if result.reply is not None:
                st.held = result
        return self.held_reply_now()

    def held_reply_now(self) -> Reply | None:
        """A held connect/HELO reject, unless it is deferred to RCPT."""
        return held_at_mail(self.state.held, self.runtime.cfg.pipeline.defer_rejects)

    # -- the transaction --------------------------------------------------------

    async def on_mail(self, address: str, options: list[str]) -> AnyReply:
        st = self.state
        await self.abort_transaction()
        if has_control_chars(address):
            return replies.BAD_ADDRESS
        if auth_required(st.role, st.login):
            return replies.AUTH_REQUIRED
        held = self.held_reply_now()
        if held is not None:
            return held
        st.txn = txn = TransactionState(board=st.board.copy(), mail_from=address, mail_options=list(options))
        result = await self._run(Phase.MAIL, txn.board)
        if result.reply is not None:
            st.txn = None
            return result.reply
        try:
            txn.backend = await self.runtime.backend.begin(st.client_facts())
            reply = await txn.backend.mail(address, options)
        except BackendError as exc:
            log.debug("backend=%s stage=mail error=%s", exc.kind, exc)
            st.txn = None
            return exc.reply
        if not reply.ok:
            await txn.backend.finish(reset=False)
            st.txn = None
        return reply

    async def on_rcpt(self, address: str, options: list[str]) -> AnyReply:
        st, cfg = self.state, self.runtime.cfg
        txn = st.txn
        if txn is None:
            return Reply(503, "5.5.1", "Error: need MAIL command")
        if txn.broken is not None:
            return txn.broken
        if has_control_chars(address):
            return replies.BAD_ADDRESS
        if len(txn.recipients) >= cfg.limits.max_recipients:
            metrics.LIMITS.labels("max_recipients").inc()
            return replies.TOO_MANY_RECIPIENTS
        held = held_at_rcpt(st.held, address, cfg.pipeline.exempt_recipients)
        if held is not None:
            txn.rejected_rcpts += 1
            return held
        a = cfg.auth
        denied = relay_denied(st.role, st.login, address, st.info().peer_address, a.local_domains, a.relay_domains,
                              a.relay_networks)
        if denied is not None:
            txn.rejected_rcpts += 1
            metrics.LIMITS.labels("relay_denied").inc()
            log.info("relay=denied rcpt=<%s>", address)
            return denied
        result = await self._run(Phase.RCPT, txn.board, rcpt=address)
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
        """RSET, a new HELO or MAIL, STARTTLS, a disconnect: the open transaction ends unsent."""
        txn, self.state.txn = self.state.txn, None
        if txn is not None and txn.backend is not None:
            await txn.backend.finish(reset=True)

    async def on_data(self, content: bytes) -> AnyReply:
        st = self.state
        txn = st.txn
        if txn is None or not txn.recipients:
            return replies.NO_VALID_RCPT
        if txn.broken is not None:
            await self.abort_transaction()
            return txn.broken
        try:
            reply, action = await self._data(txn, content)
        except Exception:
            # A bug below (the session answers 451 4.3.0): the backend transaction must not stay open on
            # a connection nobody would return to the pool or close. (A client gone mid-way is
            # connection_lost's abort_transaction, which runs before this task sees its cancellation.)
            await self._release(txn, reset=True)
            raise
        finally:
            st.txn = None
            st.transactions += 1
        self._summary(txn, len(content), action, reply)
        return reply

    # -- end of DATA ------------------------------------------------------------

    async def _data(self, txn: TransactionState, content: bytes) -> tuple[AnyReply, str]:
        rt = self.runtime
        metrics.MESSAGE_SIZE.observe(len(content))
        metrics.RECEIVED_BYTES.inc(len(content))
        if find_bare_newlines(content):
            if rt.cfg.limits.bare_newline == "reject":
                await self._release(txn, reset=True)
                return replies.BARE_NEWLINE, "reject_bare_newline"
            content = canonicalize(content)
        msg = Message(content)
        # Built once: filters (spamd) see exactly the trace header the relayed message gets.
        received = self._received()
        result = await self._run(Phase.DATA, txn.board, message=msg, received=format_header(*received))
        if result.reply is not None:
            await self._release(txn, reset=True)
            action = "reject" if result.decision is Decision.REJECT else "tempfail"
            metrics.TRANSACTIONS_BY(action).inc()
            return result.reply, f"{action} by {result.decided_by}"
        board = txn.board
        score = board.score
        metrics.MESSAGE_SCORE.observe(score)
        thresholds = rt.thresholds
        action = choose_action(score, thresholds)
        why = reasons(board)
        explain = spam_headers(score, action, board.entries, thresholds)
        if board.observed:
            explain.append(("X-Spamgate-Observe", "; ".join(board.observed)))
        final = build_final(msg.raw, msg.header_end, [received, *board.add_headers, *explain],
                            [*OWN_SPAM_HEADERS, *board.remove_headers])
        plan = end_of_data(
            score, action, why, filter_quarantine_request(txn.notes, board.entries),
            quarantine_rejects=rt.cfg.pipeline.quarantine_rejects, can_quarantine=rt.quarantine is not None,
        )
        if plan.kind is EndOfData.QUARANTINE:
            return await self._quarantine(txn, final, score, plan.action, why)
        if plan.kind is EndOfData.REFUSE:
            assert plan.reply is not None
            await self._release(txn, reset=True)
            metrics.TRANSACTIONS_BY(plan.label).inc()
            return plan.reply, plan.summary
        return await self._relay(txn, final, plan.label)

    async def _quarantine(
        self, txn: TransactionState, final: bytes, score: float, action: Action, why: list[str]
    ) -> tuple[Reply, str]:
        st, quarantine = self.state, self.runtime.quarantine
        assert quarantine is not None
        await self._release(txn, reset=True)
        try:
            qid = await quarantine.store(
                final, session_id=st.id, client_ip=st.peer_ip, mail_from=txn.mail_from,
                recipients=txn.recipients, score=score, action=action.value, reasons=why,
            )
        except OSError as exc:
            log.error("quarantine=failed error=%s", exc)
            metrics.TRANSACTIONS_BY("tempfail").inc()
            return replies.QUARANTINE_FULL, "tempfail (quarantine failed)"
        metrics.QUARANTINED.inc()
        metrics.TRANSACTIONS_BY("quarantine").inc()
        return Reply(250, "2.0.0", f"Ok: quarantined as {qid}"), f"quarantine id={qid}"

    async def _relay(self, txn: TransactionState, final: bytes, action: str) -> tuple[AnyReply, str]:
        assert txn.backend is not None
        try:
            reply = await txn.backend.data(final)
        except BackendError as exc:
            log.debug("backend=%s stage=data error=%s", exc.kind, exc)
            metrics.TRANSACTIONS_BY("error").inc()
            return exc.reply, "backend_error"
        await self._release(txn, reset=False)
        if reply.ok:
            metrics.TRANSACTIONS_BY(action).inc()
            return reply, action
        label = "backend_tempfail" if reply.code < 500 else "backend_reject"
        metrics.TRANSACTIONS_BY(label).inc()
        return reply, label

    @staticmethod
    async def _release(txn: TransactionState, reset: bool) -> None:
        if txn.backend is not None:
            await txn.backend.finish(reset=reset)
            txn.backend = None

    def _received(self) -> tuple[str, str]:
        st = self.state
        t = st.txn
        rcpt = t.recipients[0] if t is not None and len(t.recipients) == 1 else None
        return received_header(
            helo=st.helo, peer_ip=st.peer_ip, reverse_name=st.names.verified,
            hostname=self.runtime.cfg.server.hostname,
            protocol=st.protocol, session_id=st.id, tls=st.tls, login=st.login, recipient=rcpt,
        )

    def _summary(self, txn: TransactionState, size: int, action: str, reply: AnyReply) -> None:
        st = self.state
        text = str(reply) if isinstance(reply, Reply) else f"{reply.code} {reply.message}".replace("\n", " ")
        log.info(
            "client=%s helo=%r from=<%s> rcpts=%s rejected_rcpts=%d size=%d score=%.2f action=%s "
            "reply=%r duration=%.3fs",
            st.peer_ip, st.helo, txn.mail_from, ",".join(f"<{r}>" for r in txn.recipients), txn.rejected_rcpts,
            size, txn.board.score, action, text, time.monotonic() - txn.started,
        )
