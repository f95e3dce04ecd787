"""Listeners, the metrics endpoint, reload on SIGHUP and graceful shutdown on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import ssl
import weakref
from collections.abc import Awaitable, Callable
from pathlib import Path

from spamgate.filters.sdk.api import ReadyCheck
from spamgate.filters.services.dns import probe, shared_resolver
from spamgate.proxy import metrics
from spamgate.proxy.auth import PasswordFileError, make_authenticator, make_penalty_box
from spamgate.proxy.backend import BackendProtocol
from spamgate.proxy.config import Config, ConfigError, Listener, load_config
from spamgate.proxy.console import ConsoleServer
from spamgate.proxy.filter_metrics import FILTER_METRICS
from spamgate.proxy.http import HealthServer
from spamgate.proxy.maildir import MaildirBackend
from spamgate.proxy.peers import proxy_header_peer, socket_peer
from spamgate.proxy.pipeline import PluginError, build_pipeline
from spamgate.proxy.quarantine import Quarantine
from spamgate.proxy.rdns import ReverseResolver
from spamgate.proxy.relay import SmtpBackend
from spamgate.proxy.runtime import Authenticator, Penalties, Runtime, SessionCounter
from spamgate.proxy.smtp import GateSMTP
from spamgate.proxy.state import StateSeam, make_state
from spamgate.proxy.state_redis import RedisStore
from spamgate.proxy.tasks import spawn
from spamgate.proxy.workers import Seat

__all__ = ["Server", "make_backend", "tls_context"]

log = logging.getLogger("spamgate.server")


def tls_context(lst: Listener, source: str = "<config>") -> ssl.SSLContext | None:
    if lst.tls_cert is None or lst.tls_key is None:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(lst.tls_cert, lst.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"{source}: listen {lst.label!r}: tls_cert/tls_key: cannot load {lst.tls_cert} / {lst.tls_key}: {exc}"
        ) from None
    return ctx


def make_backend(cfg: Config) -> BackendProtocol:
    if cfg.backend.maildir is not None:
        return MaildirBackend(cfg.backend.maildir)
    return SmtpBackend(cfg.backend, cfg.server.hostname)


def _authenticator(cfg: Config) -> Authenticator | None:
    try:
        return make_authenticator(cfg.auth)
    except PasswordFileError as exc:
        raise ConfigError(f"{cfg.source}: auth.password_file: {exc}") from None


def uses_dns(cfg: Config) -> bool:
    """Whether anything in this config queries DNS (then /readyz and check-config ask the resolver)."""
    dns_filters = {"rbl", "sender_auth"}
    return cfg.dns.reverse_lookup or bool(dns_filters & set(cfg.enabled_filters))


def build_runtime(
    cfg: Config,
    counter: SessionCounter,
    backend: BackendProtocol | None = None,
    penalties: Penalties | None = None,
    state: StateSeam | None = None,
) -> Runtime:
    """Everything a config generation needs; raises ConfigError/PluginError before anything starts.

    ``counter``, ``penalties`` and ``state`` belong to the server and are handed from generation
    to generation, so a reload neither forgets open sessions nor lets a boxed client out.
    Without them (check-config, tests) the generation gets a store of its own.
    """
    for lst in cfg.listen:
        tls_context(lst, cfg.source)
    if state is None:
        state = make_state(cfg.state)
    if state.shared:
        # Before the filters are built: they reach the same process-wide resolver.
        shared_resolver(cfg.dns.resolved(), FILTER_METRICS, state.engine)
    pipeline = build_pipeline(cfg, state.strict)
    authenticator = _authenticator(cfg)
    qdir = cfg.pipeline.quarantine_dir or str(Path(cfg.server.state_dir) / "quarantine")
    rdns = None
    if cfg.dns.reverse_lookup:
        rdns = ReverseResolver(shared_resolver(cfg.dns.resolved(), FILTER_METRICS), cfg.dns.reverse_lookup_timeout)
    return Runtime(
        cfg=cfg,
        pipeline=pipeline,
        backend=backend or make_backend(cfg),
        counter=counter,
        quarantine=Quarantine(qdir),
        authenticator=authenticator,
        penalties=penalties if penalties is not None else make_penalty_box(cfg.auth, state.engine),
        rdns=rdns,
    )


def settle_heap() -> None:
    """Collect once, then move every surviving object out of the cyclic collector's sight.

    What exists once the server is up (modules, config, filters) lives as long as the process;
    a full collection walking it took ~60 ms here, a pause every session in flight waited for
    (p99 latency 80-130 ms at half load). Frozen objects are still freed by reference counting.
    """
    gc.collect()
    gc.freeze()


class Server:
    def __init__(self, cfg: Config, config_path: str | None = None, seat: Seat | None = None) -> None:
        self.cfg = cfg
        self.config_path = config_path
        self.seat = seat  # set when this process is one of [server] workers
        # Owned here, not by a runtime: a reload rebuilds the runtime and hands these over.
        self.state = make_state(cfg.state)
        # Per IP across instances needs a shared store; this process's own count is exact without one.
        self.counter = SessionCounter(store=self.state.strict if self.state.shared else None)
        self.penalties = make_penalty_box(cfg.auth, self.state.engine)
        self.runtime = build_runtime(cfg, self.counter, penalties=self.penalties, state=self.state)
        self.servers: list[asyncio.Server] = []
        self.sessions: weakref.WeakSet[GateSMTP] = weakref.WeakSet()
        self.health: HealthServer | None = None
        self.console = ConsoleServer(self)
        self.stopped = asyncio.Event()
        self.ports: dict[str, int] = {}

    def _factory(self, label: str, ctx: ssl.SSLContext | None) -> GateSMTP:
        source = proxy_header_peer if self.runtime.listener(label).proxy_protocol else socket_peer
        proto = GateSMTP(self.runtime, label, ctx, address_source=source)
        self.sessions.add(proto)
        return proto

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        for lst in self.cfg.listen:
            ctx = tls_context(lst, self.cfg.source)
            srv = await loop.create_server(
                lambda label=lst.label, c=ctx: self._factory(label, c),
                host=lst.host,
                port=self.seat.ports.get(lst.label, lst.port) if self.seat else lst.port,
                ssl=ctx if lst.role == "smtps" else None,
                reuse_port=lst.reuse_port or self.seat is not None or None,
                backlog=1024,
            )
            self.servers.append(srv)
            port = srv.sockets[0].getsockname()[1]
            self.ports[lst.label] = port
            log.info("listening listener=%s role=%s address=%s:%d tls=%s", lst.label, lst.role, lst.host, port,
                     "implicit" if lst.role == "smtps" else ("starttls" if ctx else "none"))
        # The checks exist even with [metrics] off: the console's status page asks them too.
        self.health = HealthServer(self.cfg.metrics.host, self.cfg.metrics.port)
        self.health.add_check("backend", lambda: self.runtime.backend.ping())
        for slot in self.runtime.pipeline.slots:
            if isinstance(slot.filter, ReadyCheck):
                # A fail-open filter's dependency being down degrades filtering but mail still flows.
                self.health.add_check(f"filter:{slot.name}", self._filter_ready(slot.name),
                                      critical=slot.settings.on_error == "tempfail")
        if isinstance(self.state.store, RedisStore):
            # Features on the store follow their on_state_error; mail flows while Redis is down.
            self.health.add_check("state", self.state.store.ping, critical=False)
        if uses_dns(self.cfg):
            # Reverse lookups and DNS lists degrade without a resolver; mail still flows.
            self.health.add_check("dns", self._dns_ready, critical=False)
        serves_http = self.seat is None or self.seat.serves_http  # one worker owns the HTTP ports
        if self.seat is not None and serves_http:
            # One worker down or restarting: the others serve, so /readyz is degraded, not failed.
            self.health.add_check("workers", self._workers_ready, critical=False)
        if self.cfg.metrics.enabled and serves_http:
            await self.health.start()
            log.info("metrics address=%s:%d", self.cfg.metrics.host, self.health.port)
        if serves_http:
            await self.console.start()
        quarantining = self.cfg.actions.quarantine is not None or self.cfg.pipeline.quarantine_rejects
        if self.runtime.quarantine is not None and quarantining:
            # Only when it will be used: a minimal config must not need a writable state_dir.
            try:
                self.runtime.quarantine.ensure()
            except OSError as exc:
                log.warning("quarantine dir unusable: %s (quarantine actions will tempfail)", exc)
        for warning in self.cfg.warnings():
            log.warning("config: %s", warning)
        for sig, handler in ((signal.SIGTERM, self._on_term), (signal.SIGINT, self._on_term),
                             (signal.SIGHUP, self._on_hup)):
            loop.add_signal_handler(sig, handler)
        log.info("spamgate ready filters=%s backend=%s", ",".join(s.name for s in self.runtime.pipeline.slots)
                 or "none", self.cfg.backend.url or f"{self.cfg.backend.host}:{self.cfg.backend.port}")
        if self.seat is not None:
            watchdog = self.cfg.server.worker_watchdog
            self.seat.ready(heartbeat=min(1.0, watchdog / 4) if watchdog > 0 else 0.0)

    async def _workers_ready(self) -> bool:
        assert self.seat is not None
        census = await asyncio.to_thread(self.seat.census)
        return census is not None and census[0] >= census[1]

    async def _dns_ready(self) -> bool:
        return await probe(self.cfg.dns.resolved()) is None

    def _filter_ready(self, name: str) -> Callable[[], Awaitable[bool]]:
        """Looks the filter up at call time, so a reload's new instance is the one asked."""

        async def check() -> bool:
            for slot in self.runtime.pipeline.slots:
                if slot.name == name and isinstance(slot.filter, ReadyCheck):
                    return await slot.filter.ready()
            return True  # no longer configured: nothing to wait for

        return check

    def _on_term(self) -> None:
        spawn(self.shutdown())

    def _on_hup(self) -> None:
        spawn(self.reload())

    async def reload(self) -> bool:
        """New sessions get the new config; live sessions finish on the one they started with."""
        if self.config_path is None:
            log.warning("reload ignored: running on the embedded default config")
            return False
        try:
            cfg = load_config(self.config_path)
            if [(lst.host, lst.port, lst.role) for lst in cfg.listen] != [
                (lst.host, lst.port, lst.role) for lst in self.cfg.listen
            ]:
                raise ConfigError(f"{self.config_path}: listen: changing listeners needs a restart")
            if cfg.server.workers != self.cfg.server.workers:
                raise ConfigError(f"{self.config_path}: server.workers: changing [server] workers needs a restart")
            if cfg.server.workers > 1 and cfg.server.worker_watchdog != self.cfg.server.worker_watchdog:
                raise ConfigError(f"{self.config_path}: server.worker_watchdog: changing it needs a restart "
                                  "(the supervisor keeps the value it started with)")
            if cfg.state != self.cfg.state:
                raise ConfigError(f"{self.config_path}: state: changing [state] needs a restart")
            same_backend = cfg.backend == self.cfg.backend
            self.penalties.reconfigure(cfg.auth.max_failures, cfg.auth.failure_window, cfg.auth.penalty_seconds)
            runtime = build_runtime(cfg, self.counter, self.runtime.backend if same_backend else None,
                                    self.penalties, self.state)
        except (ConfigError, PluginError) as exc:
            metrics.CONFIG_RELOADS.labels("error").inc()
            log.error("reload failed, keeping the running config: %s", exc)
            return False
        old, self.runtime, self.cfg = self.runtime, runtime, cfg
        metrics.CONFIG_RELOADS.labels("ok").inc()
        log.info("reloaded config=%s filters=%s", self.config_path,
                 ",".join(s.name for s in runtime.pipeline.slots) or "none")
        spawn(self._retire(old, close_backend=not same_backend))
        return True

    async def _retire(self, old: Runtime, close_backend: bool) -> None:
        while any(s.runtime is old and s.transport is not None for s in list(self.sessions)):
            await asyncio.sleep(1)
        await old.pipeline.close()
        if close_backend:
            await old.backend.close()
        del old
        if gc.get_freeze_count():  # a process that settled its heap (serve_forever)
            gc.unfreeze()  # the retired generation may now be garbage: let one collection see it
            settle_heap()

    async def shutdown(self) -> None:
        if self.runtime.shutting_down:
            return
        self.runtime.shutting_down = True
        grace = self.cfg.server.shutdown_grace
        log.info("shutting down: no new connections, %d session(s) open, grace %.0fs", self.counter.total, grace)
        for srv in self.servers:
            srv.close()
        try:
            await self._drain(grace)
        finally:
            # Whatever went wrong while draining, the process must still come down on SIGTERM.
            for step in (self.runtime.pipeline.close, self.runtime.backend.close,
                         *((self.runtime.authenticator.close,) if self.runtime.authenticator else ()),
                         self.state.close, *((self.health.stop,) if self.health else ()), self.console.stop):
                try:
                    await step()
                except Exception:
                    log.exception("shutdown step failed")
            log.info("stopped")
            self.stopped.set()

    def _live(self) -> list[GateSMTP]:
        """Sessions whose connection is still open (a closing one is the kernel's business now)."""
        return [s for s in list(self.sessions) if s.transport is not None and not s.transport.is_closing()]

    async def _drain(self, grace: float) -> None:
        """Idle sessions are told goodbye at once, transactions in flight get ``grace`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while loop.time() < deadline:
            for s in self._live():
                if getattr(s, "state", None) is None or s.state.txn is None:
                    await self._goodbye(s)
            if not self._live():
                return
            await asyncio.sleep(0.1)
        for s in self._live():
            await self._goodbye(s)

    @staticmethod
    async def _goodbye(s: GateSMTP) -> None:
        # Straight to the transport (not push): no drain to wait for, the connection closes next.
        transport = s.transport
        if transport is None or transport.is_closing():
            return
        try:
            if isinstance(transport, asyncio.WriteTransport):
                transport.write(s.take_held() + b"421 4.3.2 Service shutting down, please try again later\r\n")
            transport.close()
        except Exception as exc:  # a transport half torn down must not keep the process from exiting
            log.debug("goodbye failed: %r", exc)
            if isinstance(transport, asyncio.WriteTransport):
                with contextlib.suppress(Exception):
                    transport.abort()

    async def serve_forever(self) -> None:
        """The process's server (``spamgate run``): started, its start-up heap settled, until stopped."""
        await self.start()
        settle_heap()
        await self.stopped.wait()
