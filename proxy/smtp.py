"""The SMTP server protocol: aiosmtpd's parser with its sharp edges filed off.

aiosmtpd does the parsing, STARTTLS, DATA reading (which ends only on CRLF.CRLF) and
timeouts. On top we add: enhanced status codes on its own replies; ``451 4.3.0``
instead of ``500 Error: <exception text>``; async AUTH against our authenticators
(its own authenticator hook is synchronous); connection limits; per-session state
that survives STARTTLS; and replies counted per phase.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import ipaddress
import logging
import re
import secrets
import ssl
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, ClassVar

from aiosmtpd.smtp import SMTP, TLSSetupException, _AuthMechAttr, login_always_fail

from spamgate.filters.sdk.api import Reply
from spamgate.filters.sdk.options import IPNetwork
from spamgate.proxy import metrics, replies
from spamgate.proxy.logs import SESSION, bind_session
from spamgate.proxy.proxy_protocol import ProxyHeaderError, read_proxy_header
from spamgate.proxy.relay import BackendReply
from spamgate.proxy.replies import enhance, format_multiline
from spamgate.proxy.runtime import Runtime
from spamgate.proxy.session import SessionState, has_control_chars
from spamgate.proxy.smtp_auth import AuthMixin

__all__ = ["GateSMTP"]

log = logging.getLogger("spamgate.smtp")
_PROTOCOL_ERRORS = {"500", "501", "503"}
# The event loop keeps only weak references to tasks: fire-and-forget ones live here until done.
_BACKGROUND: set[asyncio.Task[Any]] = set()


def spawn(coro: Coroutine[Any, Any, Any]) -> None:
    task = asyncio.get_running_loop().create_task(coro)
    _BACKGROUND.add(task)
    task.add_done_callback(_BACKGROUND.discard)


PROXY_HEADER_TIMEOUT = 5.0  # a balancer writes its header at once; a slow one is a broken one
_HOOKS = ("HELO", "EHLO", "MAIL", "RCPT", "DATA", "RSET", "exception")
# <local@domain> with a dot-atom local part and a host-name domain: the overwhelming majority.
_PLAIN_ADDR = re.compile(r"<([A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
                         r"@[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)>")


def _as_status(reply: Reply | BackendReply) -> str:
    if isinstance(reply, Reply):
        return str(reply)
    return "\r\n".join(format_multiline(reply.code, reply.message))


class _Hooks:
    """aiosmtpd's handler API, forwarding to the protocol (which owns the session state)."""

    def __init__(self) -> None:
        self.smtp: GateSMTP | None = None

    def _gate(self) -> GateSMTP:
        assert self.smtp is not None
        return self.smtp

    async def handle_HELO(self, server: Any, session: Any, envelope: Any, hostname: str) -> str:
        return str(await self._gate().on_helo(session, hostname, None))

    async def handle_EHLO(self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]) -> Any:
        return await self._gate().on_helo(session, hostname, responses)

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str, options: list[str]) -> str:
        return await self._gate().on_mail(envelope, address, options)

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: list[str]) -> str:
        return await self._gate().on_rcpt(envelope, address, options)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        return await self._gate().on_data(envelope)

    async def handle_RSET(self, server: Any, session: Any, envelope: Any) -> str:
        await self._gate().state.abort_transaction()
        return "250 2.0.0 Ok"

    async def handle_exception(self, error: Exception) -> str:
        status: str = self._gate().on_exception(error)
        return status


class _Commands(dict[str, Any]):
    """aiosmtpd's command table, resolved on demand (it builds one per connection with ``dir()``)."""

    def __init__(self, gate: GateSMTP) -> None:
        super().__init__()
        self._gate = gate

    def get(self, command: str, default: Any = None) -> Any:
        if command not in GateSMTP.COMMANDS:
            log.info("unknown-command=%r", command[:32])
            return default
        return functools.partial(self._gate._run_command, command)


class GateSMTP(AuthMixin, SMTP):
    COMMANDS: ClassVar[frozenset[str]] = frozenset()  # filled below the class, from its smtp_* methods

    def __init__(self, runtime: Runtime, listener: str, tls_context: ssl.SSLContext | None) -> None:
        # What aiosmtpd's SMTP.__init__ sets, minus its per-connection reflection (inspect.getmembers,
        # dir(), inspect.signature: ~0.25 ms of CPU per connection, 17 % of a relay benchmark).
        # tests/proxy/test_smtp_init.py keeps this in step with aiosmtpd's own __init__.
        cfg = runtime.cfg
        lst = runtime.listener(listener)
        limits = cfg.limits
        self.__ident__ = cfg.server.banner
        self.loop = asyncio.get_running_loop()
        self.line_length_limit = limits.max_line_length + 2
        asyncio.StreamReaderProtocol.__init__(
            self,
            asyncio.StreamReader(loop=self.loop, limit=self.line_length_limit),
            client_connected_cb=self._cb_client_connected,
            loop=self.loop,
        )
        hooks = _Hooks()
        hooks.smtp = self
        self.event_handler = hooks
        self.data_size_limit = limits.max_message_size
        self.enable_SMTPUTF8 = True
        self._decode_data = False
        # aiosmtpd's limits dict is class-wide (shared by all sessions): ours is per session.
        self.command_size_limit = limits.max_command_line
        self.command_size_limits = collections.defaultdict(lambda: limits.max_command_line)
        self.hostname = cfg.server.hostname
        self.tls_context = tls_context if lst.role != "smtps" else None
        self.require_starttls = False
        self._timeout_duration = limits.command_timeout
        self._timeout_handle = None
        self._tls_handshake_okay = True
        self._tls_protocol = None
        self._original_transport = None
        self.session = None
        self.envelope = None
        self.transport = None
        self._handler_coroutine = None
        self._auth_require_tls = not (lst.allow_plaintext_auth or lst.role == "smtps")
        self._proxy_timeout = None
        self._authenticator = None
        self._auth_callback = login_always_fail
        self._auth_required = False
        self._auth_methods = {"LOGIN": _AuthMechAttr(self.auth_LOGIN, True),
                              "PLAIN": _AuthMechAttr(self.auth_PLAIN, True)}
        self._handle_hooks = {name: getattr(hooks, f"handle_{name}") for name in _HOOKS}
        self._ehlo_hook_ver = "new"
        self._smtp_methods = _Commands(self)
        self._enforce_call_limit = False

        self.runtime = runtime
        self.listener_label = listener
        self.role = lst.role
        self.state: SessionState
        self._refused: Reply | None = None
        self._counted = False
        self._verbatim: str | None = None
        self._phase = "connect"
        self._errors = 0
        self._connect_task: asyncio.Task[None] | None = None
        self._session_id = ""
        self._await_proxy = False
        self._sslobj: Any = None

    async def _run_command(self, name: str, arg: str | None) -> None:
        phase = name.lower()
        self._phase = phase
        if phase == "data":
            self._reset_timeout(self.runtime.cfg.limits.data_timeout)
        # Check the raw argument: aiosmtpd's address parser turns a TAB into a quoted space.
        if phase in ("mail", "rcpt") and arg and has_control_chars(arg):
            await self.push(str(replies.BAD_ADDRESS))
            return
        method: Callable[[str | None], Awaitable[None]] = getattr(self, f"smtp_{name}")
        await method(arg)

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        # email's header parser (aiosmtpd's way) costs ~10 % of a relay; plain addresses don't need it.
        m = _PLAIN_ADDR.match(arg)
        if m is not None:
            return m.group(1), arg[m.end() :].lstrip()
        result: tuple[str | None, str | None] = super()._getaddr(arg)
        return result

    # -- connection -----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        starttls = self._original_transport is not None
        if not starttls:
            # Before aiosmtpd creates the session's handler task, which inherits the binding.
            self._session_id = secrets.token_hex(5)
            bind_session(self._session_id)
        super().connection_made(transport)
        sslobj = transport.get_extra_info("ssl_object")
        if starttls:
            self.state.helo = None
            self._note_tls(sslobj)
            spawn(self.state.abort_transaction())
            return
        peer = transport.get_extra_info("peername") or ("unknown", 0)
        rt = self.runtime
        self.state = SessionState(
            id=self._session_id, runtime=rt, listener=self.listener_label, role=self.role,
            peer_ip=str(peer[0]), peer_port=int(peer[1]),
        )
        self._sslobj = sslobj
        lst = rt.listener(self.listener_label)
        if lst.proxy_protocol and _exempt(self.state.peer_ip, lst.trusted_proxies):
            # The real client is named by the header: admission, logs and filters wait for it.
            self._await_proxy = True
            return
        self._admit()

    def _admit(self) -> None:
        """Limits, the connect log line, session metrics and the connect-phase filters, for the real client."""
        rt = self.runtime
        limits = rt.cfg.limits
        if rt.shutting_down:
            self._refused = replies.SHUTTING_DOWN
        elif rt.counter.total >= limits.max_sessions:
            self._refused = replies.TOO_MANY_SESSIONS
            metrics.SESSIONS_REFUSED.labels(self.listener_label, "max_sessions").inc()
        elif rt.counter.per_ip[self.state.peer_ip] >= limits.max_sessions_per_ip and not _exempt(
            self.state.peer_ip, limits.exempt_networks
        ):
            self._refused = replies.TOO_MANY_FROM_IP
            metrics.SESSIONS_REFUSED.labels(self.listener_label, "max_sessions_per_ip").inc()
        if self._refused is not None:
            log.warning("client=%s refused=%r", self.state.peer_ip, str(self._refused))
            return
        self._counted = True
        rt.counter.add(self.state.peer_ip)
        metrics.SESSIONS.labels(self.listener_label).inc()
        metrics.SESSIONS_ACTIVE.labels(self.listener_label).inc()
        if self._sslobj is not None:
            self._note_tls(self._sslobj)
        log.info("connect client=[%s]:%d listener=%s", self.state.peer_ip,
                 self.state.peer_port, self.listener_label)
        self._connect_task = self.loop.create_task(self.state.on_connect())

    def _note_tls(self, sslobj: Any) -> None:
        if sslobj is None:
            return
        version, cipher = sslobj.version(), (sslobj.cipher() or ("?",))[0]
        self.state.tls_version, self.state.tls_cipher = version, cipher
        self.state.tls = f"using {version} with cipher {cipher}"
        metrics.TLS_SESSIONS.labels(self.listener_label, str(version)).inc()

    async def _read_proxy_header(self) -> bool:
        """True when the session goes on; a health check or a bad header closes it here."""
        self._await_proxy = False
        try:
            info = await read_proxy_header(self._reader, PROXY_HEADER_TIMEOUT)
        except ProxyHeaderError as exc:
            metrics.SESSIONS_REFUSED.labels(self.listener_label, "proxy_header").inc()
            log.warning("proxy=%s refused: %s", self.state.peer_ip, exc)
            await self.push("421 4.7.0 Bad or missing PROXY protocol header")
            if self.transport is not None:
                self.transport.close()
            return False
        if info is None or info.local or info.source is None:
            # The balancer's own health check (connect-close, LOCAL): served quietly, never a session.
            log.debug("proxy=%s health check", self.state.peer_ip)
            if info is None:
                return False
            return True
        self.state.peer_ip, self.state.peer_port = info.source
        self._admit()
        return True

    async def _handle_client(self) -> None:
        if self._await_proxy and not await self._read_proxy_header():
            if self.transport is not None:
                self.transport.close()
            return
        if self._refused is not None:
            await self.push(str(self._refused))
            if self.transport is not None:
                self.transport.close()
            return
        await super()._handle_client()

    def connection_lost(self, error: Exception | None) -> None:
        super().connection_lost(error)
        if not self._counted:
            return
        self._counted = False
        self.runtime.counter.remove(self.state.peer_ip)
        metrics.SESSIONS_ACTIVE.labels(self.listener_label).dec()
        if self._connect_task is not None:
            self._connect_task.cancel()
        if self.state.txn is not None:
            spawn(self.state.abort_transaction())
        # connection_lost runs outside the session's tasks: bind the session for this one line.
        # (extra={"session": ...} collides with the record factory's own field: KeyError.)
        token = SESSION.set(self.state.id)
        log.info("disconnect transactions=%d", self.state.transactions)
        SESSION.reset(token)

    async def _connected(self) -> None:
        """Wait for the connect-phase filters (they started when the client connected)."""
        if self._connect_task is not None:
            await asyncio.shield(self._connect_task)

    async def smtp_PROXY(self, arg: str | None) -> None:
        """A PROXY line from a client not in trusted_proxies: refused, or anyone could claim any address."""
        metrics.SESSIONS_REFUSED.labels(self.listener_label, "proxy_untrusted").inc()
        log.warning("client=%s refused: PROXY header from an untrusted address", self.state.peer_ip)
        await self.push("554 5.7.0 PROXY header not accepted from this address")
        if self.transport is not None:
            self.transport.close()

    # -- replies ----------------------------------------------------------------

    async def push(self, status: Any) -> None:
        if isinstance(status, str):
            # RFC 2034: no enhanced codes on EHLO/HELO success lines (clients parse the keywords).
            greeting = self._phase in ("ehlo", "helo") and status.startswith("250")
            if status is not self._verbatim and not greeting:
                status = enhance(status)
            code = status[:3]
            if code.isdigit():
                metrics.REPLIES.labels(self._phase, f"{code[0]}xx").inc()
            if code in _PROTOCOL_ERRORS:
                self._errors += 1
        await super().push(status)
        if self._errors >= self.runtime.cfg.limits.max_errors and self.transport is not None:
            self._errors = -(10**9)
            metrics.LIMITS.labels("max_errors").inc()
            await super().push(str(replies.TOO_MANY_ERRORS))
            self.transport.close()

    def _status(self, reply: Reply | BackendReply) -> str:
        status = _as_status(reply)
        if isinstance(reply, BackendReply):
            self._verbatim = status
        return status

    def on_exception(self, error: Exception) -> str:
        if isinstance(error, TLSSetupException):
            # A client that fails the TLS handshake is not our bug: aiosmtpd closes the connection.
            log.warning("starttls=failed error=%r", error.__cause__)
            return "454 4.7.0 TLS not available due to temporary reason"
        metrics.INTERNAL_ERRORS.inc()
        log.error("internal error in %s",
                  self._phase, exc_info=error)
        if getattr(self, "state", None) is not None:
            spawn(self.state.abort_transaction())
        # The transaction is over for aiosmtpd too, or the client's next MAIL gets "503 nested MAIL".
        self.envelope = self._create_envelope()
        return str(replies.INTERNAL_ERROR)

    # -- commands -----------------------------------------------------------------

    async def on_helo(self, session: Any, hostname: str, responses: list[str] | None) -> Any:
        await self._connected()
        if has_bad_chars(hostname):
            return "501 5.5.4 Invalid HELO hostname"
        reply = await self.state.on_helo(hostname, esmtp=responses is not None)
        if reply is not None:
            return [str(reply)] if responses is not None else str(reply)
        session.host_name = hostname
        if responses is None:
            return f"250 {self.hostname}"
        return self._ehlo_lines(responses)

    def _ehlo_lines(self, responses: list[str]) -> list[str]:
        keywords = [r[4:] for r in responses[1:] if r[4:] != "HELP"]
        if self.runtime.authenticator is None:
            keywords = [k for k in keywords if not k.startswith("AUTH")]
        keywords += ["PIPELINING", "ENHANCEDSTATUSCODES"]
        lines = [f"250-{self.hostname}", *(f"250-{k}" for k in keywords[:-1]), f"250 {keywords[-1]}"]
        # One write for the whole reply instead of aiosmtpd's write-and-drain per line.
        return ["\r\n".join(lines)]

    async def on_mail(self, envelope: Any, address: str, options: list[str]) -> str:
        # aiosmtpd hands the null sender over as "<>" (and needs it truthy); everything else sees "".
        reply = await self.state.on_mail("" if address == "<>" else address, options)
        if (isinstance(reply, BackendReply) and reply.ok) or (isinstance(reply, Reply) and reply.code < 300):
            envelope.mail_from = address
            envelope.mail_options.extend(options)
        return self._status(reply)

    async def on_rcpt(self, envelope: Any, address: str, options: list[str]) -> str:
        reply = await self.state.on_rcpt(address, options)
        if isinstance(reply, BackendReply) and reply.ok:
            envelope.rcpt_tos.append(address)
        return self._status(reply)

    async def on_data(self, envelope: Any) -> str:
        cfg = self.runtime.cfg
        # Filters and the backend get their own bounds; this one only keeps a dead client from lingering.
        self._reset_timeout(cfg.backend.timeout * 2 + max((t.timeout for t in cfg.filters.values()), default=0) + 30)
        content: bytes = envelope.original_content or b""
        reply = await self.state.on_data(content)
        return self._status(reply)


def _exempt(ip: str, networks: tuple[IPNetwork, ...]) -> bool:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return any(addr in net for net in networks)


def has_bad_chars(value: str) -> bool:
    return any(ord(c) < 33 or ord(c) == 127 for c in value)


GateSMTP.COMMANDS = frozenset(name[5:] for name in dir(GateSMTP) if name.startswith("smtp_"))
