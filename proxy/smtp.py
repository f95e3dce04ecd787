"""The SMTP server protocol: aiosmtpd's parser with its sharp edges filed off.

aiosmtpd does the parsing, STARTTLS, DATA reading (which ends only on CRLF.CRLF) and
timeouts. On top we add: connection setup as an async step before the greeting
(address, limits, connect filters); enhanced status codes on its own replies;
``451 4.3.0`` instead of ``500 Error: <exception text>``; async AUTH against our
authenticators (its own authenticator hook is synchronous); per-session state that
survives STARTTLS; and replies counted per phase. The aiosmtpd internals still touched
are listed, with the reason for each, in docs/architecture.md.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import re
import secrets
import ssl
from email.errors import HeaderParseError
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, TLSSetupException

from spamgate.filters.sdk.api import Reply
from spamgate.proxy import metrics, replies
from spamgate.proxy.logs import bind_session
from spamgate.proxy.peers import AddressSource, in_networks, socket_peer
from spamgate.proxy.runtime import Runtime
from spamgate.proxy.session import SessionState, has_control_chars
from spamgate.proxy.smtp_auth import AuthMixin
from spamgate.proxy.smtp_commands import CommandTable, install
from spamgate.proxy.smtp_data import DataMixin
from spamgate.proxy.smtp_hooks import HooksMixin
from spamgate.proxy.smtp_replies import RepliesMixin
from spamgate.proxy.tasks import spawn
from spamgate.proxy.transaction import TransactionController

__all__ = ["GateSMTP"]

log = logging.getLogger("spamgate.smtp")
# <local@domain> with a dot-atom local part and a host-name domain: the overwhelming majority.
_PLAIN_ADDR = re.compile(r"<([A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
                         r"@[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)>")

@functools.lru_cache(maxsize=16)
def _template(hostname: str, ident: str, data_size_limit: int, timeout: float,
              tls_context: ssl.SSLContext | None, auth_require_tls: bool) -> SMTP:
    """aiosmtpd's own constructor, run once per listener setting: each connection copies the result.

    Its constructor reflects on the protocol and the handler (``inspect.getmembers``, ``dir``,
    ``inspect.signature``) on every connection: 17 % of a relay's CPU. What it computes
    depends only on these settings and on the GateSMTP class, which is the handler.
    """
    return SMTP(
        GateSMTP, hostname=hostname, ident=ident, data_size_limit=data_size_limit, enable_SMTPUTF8=True,
        tls_context=tls_context, timeout=timeout, auth_require_tls=auth_require_tls,
        loop=asyncio.get_running_loop(),
    )


# misc: AuthMixin's auth_PLAIN/auth_LOGIN take (self, args), the handler form aiosmtpd calls for
# them, not the (self, server, args) of the builtins they replace.
class GateSMTP(HooksMixin, RepliesMixin, AuthMixin, DataMixin, SMTP):  # type: ignore[misc]
    """One client connection: aiosmtpd's protocol, whose handler is this class itself.

    aiosmtpd calls a handler's hooks as ``handle_<COMMAND>(server, session, envelope, ...)``;
    with the class as handler, the hook it finds is the plain function and ``server`` lands in
    ``self``: the hooks (proxy/smtp_hooks.py) are ordinary methods, with no shim object in
    between. They return what the session decided, typed (``Reply``, ``BackendReply``);
    ``push`` (proxy/smtp_replies.py) writes it and adds enhanced status codes to aiosmtpd's
    own replies only. AUTH mechanisms are found on the handler the same way
    (``auth_<MECH>(server, args)``). The private aiosmtpd
    names still touched are listed in docs/architecture.md.
    """

    def __init__(
        self,
        runtime: Runtime,
        listener: str,
        tls_context: ssl.SSLContext | None,
        address_source: AddressSource = socket_peer,
    ) -> None:
        cfg = runtime.cfg
        lst = runtime.listener(listener)
        limits = cfg.limits
        template = _template(
            cfg.server.hostname, cfg.server.banner, limits.max_message_size, limits.command_timeout,
            tls_context if lst.role != "smtps" else None, not (lst.allow_plaintext_auth or lst.role == "smtps"),
        )
        vars(self).update(vars(template))
        # What is this connection's own: the loop, a fresh stream (asyncio's constructor), the limits
        # (aiosmtpd's command_size_limits is class-wide), and the command table bound to this object.
        self.loop = asyncio.get_running_loop()
        self.line_length_limit = limits.max_line_length + 2
        self.command_size_limit = limits.max_command_line
        self.command_size_limits = collections.defaultdict(lambda: limits.max_command_line)
        asyncio.StreamReaderProtocol.__init__(
            self, asyncio.StreamReader(loop=self.loop, limit=self.line_length_limit),
            client_connected_cb=self._cb_client_connected, loop=self.loop,
        )
        self._smtp_methods = CommandTable(self, _VERBS)
        self.runtime = runtime
        self.listener_label = listener
        self.role = lst.role
        self.address_source = address_source
        self.health_check = False  # set by the address source for a balancer's PROXY LOCAL check
        self.state: SessionState
        self._started = False  # connection_made ran once: a second call is the TLS restart of STARTTLS
        self._tls_up = False  # that second call happened: the STARTTLS handshake completed
        self.ctl: TransactionController
        self._counted = False
        self._in_store = False
        self._phase = "connect"
        self._errors = 0
        self._connect_task: asyncio.Task[None] | None = None
        self._session_id = ""
        self._deadline = 0.0  # the idle timeout's deadline (loop time): see _reset_timeout
        self._timer_armed = False
        self._held = b""  # replies to a pipelined MAIL/RCPT group, not written yet: see push

    async def _before(self, phase: str, arg: str | None) -> bool:
        """Every command passes here first; False when it was answered already."""
        self._phase = phase
        if phase == "data":
            self._reset_timeout(self.runtime.cfg.limits.data_timeout)
        # Check the raw argument: aiosmtpd's address parser turns a TAB into a quoted space.
        if phase in ("mail", "rcpt") and arg and has_control_chars(arg):
            await self.push(replies.BAD_ADDRESS)
            return False
        return True

    def _reset_timeout(self, duration: float | None = None) -> None:
        """aiosmtpd's idle timeout, moved by every command: only the deadline moves.

        aiosmtpd cancels its timer and schedules a new one for every command; here the armed timer
        stays and, when it fires before the deadline (a command came meanwhile), re-arms itself for
        the rest. A deadline earlier than the armed timer (a shorter timeout) re-arms at once. The
        connection still times out at the same moment.
        """
        deadline = self.loop.time() + (duration or self._timeout_duration)
        self._deadline = deadline
        handle = self._timeout_handle
        if self._timer_armed and handle is not None and handle.when() <= deadline:
            return
        if handle is not None:
            handle.cancel()
        self._timer_armed = True
        self._timeout_handle = self.loop.call_at(deadline, self._deadline_reached)

    def _deadline_reached(self) -> None:
        self._timer_armed = False
        if self.loop.time() < self._deadline:
            self._timer_armed = True
            self._timeout_handle = self.loop.call_at(self._deadline, self._deadline_reached)
            return
        self._timeout_cb()  # type: ignore[no-untyped-call]

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        # email's header parser (aiosmtpd's way) costs ~10 % of a relay; plain addresses don't need it.
        m = _PLAIN_ADDR.match(arg)
        if m is not None:
            # What follows is folding white space (space, tab) and comments to aiosmtpd's parser:
            # a comment is the slow path's business.
            rest = arg[m.end() :].lstrip(" \t")
            if not rest.startswith("("):
                return m.group(1), rest
        try:
            result: tuple[str | None, str | None] = super()._getaddr(arg)
        except (IndexError, AttributeError, UnboundLocalError, HeaderParseError):
            # email's parser crashes on truncated addresses: IndexError on "<" and "<@", on "<a@[" it
            # returns a defect object aiosmtpd reads .addr_spec from, and "a@[ " hits an unbound local
            # in its get_domain (CPython 3.11). A syntax error, not our bug.
            return None, None
        return result

    # -- connection -----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        starttls, self._started = self._started, True
        if not starttls:
            # Before aiosmtpd creates the session's handler task, which inherits the binding.
            self._session_id = secrets.token_hex(5)
            bind_session(self._session_id)
        super().connection_made(transport)
        if starttls:
            self._tls_up = True
            self.state.helo = None
            self._note_tls(transport.get_extra_info("ssl_object"))
            spawn(self.ctl.abort_transaction())

    async def _handle_client(self) -> None:
        # aiosmtpd's session loop (greeting, then commands) runs only once the setup admitted the client.
        try:
            if await self._setup():
                await super()._handle_client()
        except ConnectionError:
            # Gone before or while it was greeted (a balancer's connect-and-close health check does
            # this all day): aiosmtpd writes the greeting outside its own error handling.
            if self.transport is not None:
                self.transport.close()

    async def _setup(self) -> bool:
        """Connection setup, first thing in the session's task, before the greeting.

        1. the client's address, from ``address_source`` (the socket, or a PROXY header);
        2. limits (shutting down, sessions in total and per IP, the latter through the store);
        3. the reverse lookup and connect-phase filters, started in the background: the
           greeting does not wait for them, HELO does (``_connected``).
        False when the connection ended here (refused, or not a session at all).
        """
        address = await self.address_source(self)
        if address is None:
            if self.transport is not None:
                self.transport.close()
            return False
        ip, port = address
        self.state = SessionState(
            id=self._session_id, runtime=self.runtime, listener=self.listener_label, role=self.role,
            peer_ip=ip, peer_port=port,
        )
        self.ctl = TransactionController(self.state)
        refused = await self._admit(ip)
        if refused is not None:
            log.warning("client=%s refused=%r", ip, str(refused))
            await self.push(refused)
            if self.transport is not None:
                self.transport.close()
            return False
        metrics.SESSIONS_BY(self.listener_label).inc()
        metrics.SESSIONS_ACTIVE_BY(self.listener_label).inc()
        if self.transport is not None:
            self._note_tls(self.transport.get_extra_info("ssl_object"))
        # A balancer's health check (PROXY LOCAL) is served, but it is not a client's session in the logs.
        log.log(logging.DEBUG if self.health_check else logging.INFO, "connect client=[%s]:%d listener=%s", ip,
                port, self.listener_label)
        self._connect_task = self.loop.create_task(self.ctl.on_connect())
        return True

    async def _admit(self, ip: str) -> Reply | None:
        """Count the session in, or say why not (then it is not counted)."""
        rt = self.runtime
        limits = rt.cfg.limits
        if rt.shutting_down:
            return replies.SHUTTING_DOWN
        if rt.counter.total >= limits.max_sessions:
            metrics.SESSIONS_REFUSED.labels(self.listener_label, "max_sessions").inc()
            return replies.TOO_MANY_SESSIONS
        now, self._in_store = await rt.counter.open(ip)
        self._counted = True
        if now > limits.max_sessions_per_ip and not in_networks(ip, limits.exempt_networks):
            self._uncount()
            metrics.SESSIONS_REFUSED.labels(self.listener_label, "max_sessions_per_ip").inc()
            return replies.TOO_MANY_FROM_IP
        return None

    def _uncount(self) -> None:
        self._counted = False
        self.runtime.counter.remove(self.state.peer_ip)
        if self._in_store:
            spawn(self.runtime.counter.release(self.state.peer_ip))

    def _note_tls(self, sslobj: Any) -> None:
        if sslobj is None:
            return
        version, cipher = sslobj.version(), (sslobj.cipher() or ("?",))[0]
        self.state.tls_version, self.state.tls_cipher = version, cipher
        self.state.tls = f"using {version} with cipher {cipher}"
        metrics.TLS_SESSIONS.labels(self.listener_label, str(version)).inc()

    def connection_lost(self, error: Exception | None) -> None:
        super().connection_lost(error)
        # This protocol and asyncio's SSLProtocol point at each other: without this cut, a TLS
        # session's OpenSSL buffers wait for a full garbage collection (+60 MB after a flood).
        self._tls_protocol = None
        self._original_transport = None
        if not self._counted:
            return
        self._uncount()
        metrics.SESSIONS_ACTIVE_BY(self.listener_label).dec()
        if self._connect_task is not None:
            self._connect_task.cancel()
        if self.state.txn is not None:
            spawn(self.ctl.abort_transaction())
        # connection_lost runs outside the session's tasks, in a context of its own (a copy made for this
        # callback): bind the id there. (The record factory always sets "session": extra= can't.)
        bind_session(self.state.id)
        log.log(logging.DEBUG if self.health_check else logging.INFO, "disconnect transactions=%d",
                self.state.transactions)

    async def _connected(self) -> None:
        """Wait for the connect-phase filters (they started when the client was admitted)."""
        if self._connect_task is not None:
            await asyncio.shield(self._connect_task)

    def _after_starttls(self, arg: str | None) -> None:
        if self.tls_context is not None and not arg and not self._tls_up:
            # Our own close of a connection mid-handshake (the command timeout, a shutdown) makes
            # asyncio's SSLProtocol resolve the handshake waiter *successfully* without ever telling
            # this protocol the connection is gone: the session would stay counted and its task
            # would wait for a line forever. Treat it as the failed handshake it is.
            raise TLSSetupException() from ConnectionAbortedError("connection closed during the TLS handshake")

    async def smtp_PROXY(self, arg: str | None) -> None:
        """A PROXY line from a client not in trusted_proxies: refused, or anyone could claim any address."""
        metrics.SESSIONS_REFUSED.labels(self.listener_label, "proxy_untrusted").inc()
        log.warning("client=%s refused: PROXY header from an untrusted address", self.state.peer_ip)
        await self.push("554 5.7.0 PROXY header not accepted from this address")
        if self.transport is not None:
            self.transport.close()

    async def handle_exception(self, error: Exception) -> str:
        """aiosmtpd's answer to an exception in a command (its own: ``500 Error: <text>``)."""
        if isinstance(error, TLSSetupException):
            # A client that fails the TLS handshake is not our bug: aiosmtpd closes the connection.
            log.warning("starttls=failed error=%r", error.__cause__)
            return "454 4.7.0 TLS not available due to temporary reason"
        metrics.INTERNAL_ERRORS.inc()
        log.error("internal error in %s", self._phase, exc_info=error)
        if getattr(self, "ctl", None) is not None:
            spawn(self.ctl.abort_transaction())
        # The transaction is over for aiosmtpd too, or the client's next MAIL gets "503 nested MAIL".
        self.envelope = Envelope()
        return str(replies.INTERNAL_ERROR)


_VERBS = install(GateSMTP, {"smtp_DATA": GateSMTP._smtp_data})
