"""The operations HTTP endpoint: /metrics, /healthz and /readyz, served by aiohttp.

aiohttp is the project's one HTTP stack: this endpoint and the web console
(proxy.console) both run on it, in the proxy's event loop, each on its own listener.
The exposition rendering walks every metric, so it is sent to a thread: a large
registry cannot stall SMTP sessions. Every answer closes its connection: probes and
scrapers open one per request anyway, and nothing lingers.

Readiness checks are registered by name (``add_check("backend", ...)``); they run
concurrently, each under its own timeout, and their results are cached briefly so a
tight probe loop (or several probes at once) cannot hammer the backend or spamd.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from spamgate.proxy.metrics import exposition_registry

__all__ = ["CheckState", "HealthServer", "ReadinessCheck", "start_site"]

log = logging.getLogger("spamgate.http")

ReadinessCheck = Callable[[], Awaitable[bool]]
_TEXT = "text/plain; charset=utf-8"
# An idle client (a probe that never sends, a browser between clicks) is dropped after this.
_REQUEST_TIMEOUT = 10.0


@dataclass(frozen=True)
class CheckState:
    """One readiness check's last answer: "ok", "failed", "timeout" or "error"."""

    name: str
    state: str
    critical: bool


async def start_site(
    app: web.Application, host: str, port: int, ssl_context: object = None
) -> tuple[web.AppRunner, int]:
    """Run ``app`` on ``host:port`` in the current loop; returns the runner and the bound port."""
    runner = web.AppRunner(
        app, access_log=None, handle_signals=False, shutdown_timeout=1.0, keepalive_timeout=_REQUEST_TIMEOUT
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=ssl_context, backlog=128)  # type: ignore[arg-type]
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    server = site._server
    assert isinstance(server, asyncio.Server) and server.sockets
    return runner, int(server.sockets[0].getsockname()[1])


class HealthServer:
    """Serve /metrics, /healthz and /readyz on ``host:port`` (port 0 picks a free port)."""

    def __init__(self, host: str, port: int, *, check_timeout: float = 2.0, cache_seconds: float = 1.0) -> None:
        self._host = host
        self._port = port
        self._check_timeout = check_timeout
        self._cache_seconds = cache_seconds
        self._checks: dict[str, ReadinessCheck] = {}
        # Checks whose failure degrades service without stopping it (fail-open filters' dependencies).
        self._advisory: set[str] = set()
        self._runner: web.AppRunner | None = None
        self._bound = 0
        self._cached: tuple[float, dict[str, str]] | None = None
        self._lock = asyncio.Lock()
        self._registry = exposition_registry()

    def add_check(self, name: str, check: ReadinessCheck, *, critical: bool = True) -> None:
        """Register a readiness check; it must return True when the dependency is usable."""
        self._checks[name] = check
        if not critical:
            self._advisory.add(name)
        self._cached = None

    def app(self) -> web.Application:
        app = web.Application(middlewares=[_close_and_no_store])
        app.router.add_route("*", "/metrics", self._metrics)
        app.router.add_route("*", "/healthz", self._healthz)
        app.router.add_route("*", "/readyz", self._readyz)
        return app

    async def start(self) -> None:
        self._runner, self._bound = await start_site(self.app(), self._host, self._port)

    @property
    def port(self) -> int:
        """The bound port (the real one when constructed with port 0)."""
        if self._runner is None:
            raise RuntimeError("HealthServer is not started")
        return self._bound

    async def stop(self) -> None:
        if self._runner is None:
            return
        runner, self._runner = self._runner, None
        await runner.cleanup()

    async def readiness(self) -> dict[str, str]:
        """Problems by check name ("failed", "timeout" or "error"); empty means ready."""
        async with self._lock:
            now = asyncio.get_running_loop().time()
            if self._cached is not None and now - self._cached[0] < self._cache_seconds:
                return self._cached[1]
            names = list(self._checks)
            results = await asyncio.gather(*(self._run_check(n) for n in names))
            problems = {n: r for n, r in zip(names, results, strict=True) if r is not None}
            self._cached = (asyncio.get_running_loop().time(), problems)
            return problems

    async def states(self) -> list[CheckState]:
        """Every registered check with its state, from the same (cached) run as /readyz."""
        problems = await self.readiness()
        return [CheckState(n, problems.get(n, "ok"), n not in self._advisory) for n in sorted(self._checks)]

    async def _run_check(self, name: str) -> str | None:
        try:
            async with asyncio.timeout(self._check_timeout):
                ok = await self._checks[name]()
        except TimeoutError:
            log.warning("readiness check %s timed out after %.1fs", name, self._check_timeout)
            return "timeout"
        except Exception as exc:
            log.warning("readiness check %s raised %s: %s", name, type(exc).__name__, exc)
            return "error"
        return None if ok else "failed"

    async def _metrics(self, request: web.Request) -> web.StreamResponse:
        body = await asyncio.to_thread(generate_latest, self._registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, request: web.Request) -> web.StreamResponse:
        return web.Response(body=b"ok\n", headers={"Content-Type": _TEXT})

    async def _readyz(self, request: web.Request) -> web.StreamResponse:
        problems = await self.readiness()
        if not problems:
            return web.Response(body=b"ready\n", headers={"Content-Type": _TEXT})
        detail = ", ".join(f"{n} ({why})" for n, why in sorted(problems.items()))
        if set(problems) <= self._advisory:
            return web.Response(body=f"ready, degraded: {detail}\n".encode(), headers={"Content-Type": _TEXT})
        return web.Response(status=503, body=f"not ready: {detail}\n".encode(), headers={"Content-Type": _TEXT})


@web.middleware
async def _close_and_no_store(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    if request.method not in ("GET", "HEAD"):
        resp: web.StreamResponse = web.Response(
            status=405, body=b"method not allowed\n", headers={"Content-Type": _TEXT, "Allow": "GET, HEAD"}
        )
    else:
        try:
            resp = await handler(request)
        except web.HTTPNotFound:
            resp = web.Response(status=404, body=b"not found\n", headers={"Content-Type": _TEXT})
    resp.headers["Cache-Control"] = "no-store"
    resp.force_close()
    return resp
