"""The operations HTTP endpoint: /metrics, /healthz and /readyz on one small asyncio server.

It speaks just enough HTTP/1.1 for Prometheus and for Kubernetes/systemd probes: one
GET (or HEAD) per connection, answered with ``Connection: close``. Everything runs on
the event loop except the exposition rendering, which walks every metric and is sent
to a thread so a large registry cannot stall SMTP sessions.

Readiness checks are registered by name (``add_check("backend", ...)``); they run
concurrently, each under its own timeout, and their results are cached briefly so a
tight probe loop (or several probes at once) cannot hammer the backend or spamd.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

__all__ = ["HealthServer", "ReadinessCheck"]

log = logging.getLogger("spamgate.http")

ReadinessCheck = Callable[[], Awaitable[bool]]

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}
_MAX_HEADER_BYTES = 16384
# A probe or scraper that has not sent its request by then is gone or hostile.
_REQUEST_TIMEOUT = 10.0


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
        self._server: asyncio.Server | None = None
        self._cached: tuple[float, dict[str, str]] | None = None
        self._lock = asyncio.Lock()
        self._clients: set[asyncio.Task[None]] = set()

    def add_check(self, name: str, check: ReadinessCheck, *, critical: bool = True) -> None:
        """Register a readiness check; it must return True when the dependency is usable."""
        self._checks[name] = check
        if not critical:
            self._advisory.add(name)
        self._cached = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._on_client, self._host, self._port, limit=_MAX_HEADER_BYTES)

    @property
    def port(self) -> int:
        """The bound port (the real one when constructed with port 0)."""
        if self._server is None or not self._server.sockets:
            raise RuntimeError("HealthServer is not started")
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for task in list(self._clients):
            task.cancel()
        await asyncio.gather(*self._clients, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None

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

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._clients.add(task)
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ValueError):
            pass
        finally:
            self._clients.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async with asyncio.timeout(_REQUEST_TIMEOUT):
            head = await reader.readuntil(b"\r\n\r\n")
        request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = request_line.split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            await self._respond(writer, 400, b"bad request\n")
            return
        method, target = parts[0], parts[1]
        if method not in ("GET", "HEAD"):
            await self._respond(writer, 405, b"method not allowed\n", extra=[("Allow", "GET, HEAD")])
            return
        status, body, ctype = await self._route(target.split("?", 1)[0])
        await self._respond(writer, status, body, ctype=ctype, head_only=method == "HEAD")

    async def _route(self, path: str) -> tuple[int, bytes, str]:
        text = "text/plain; charset=utf-8"
        if path == "/metrics":
            return 200, await asyncio.to_thread(generate_latest, REGISTRY), CONTENT_TYPE_LATEST
        if path == "/healthz":
            return 200, b"ok\n", text
        if path == "/readyz":
            problems = await self.readiness()
            if not problems:
                return 200, b"ready\n", text
            detail = ", ".join(f"{n} ({why})" for n, why in sorted(problems.items()))
            if set(problems) <= self._advisory:
                return 200, f"ready, degraded: {detail}\n".encode(), text
            return 503, f"not ready: {detail}\n".encode(), text
        return 404, b"not found\n", text

    @staticmethod
    async def _respond(
        writer: asyncio.StreamWriter,
        status: int,
        body: bytes,
        *,
        ctype: str = "text/plain; charset=utf-8",
        head_only: bool = False,
        extra: list[tuple[str, str]] | None = None,
    ) -> None:
        headers = [
            ("Content-Type", ctype),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"),
            ("Connection", "close"),
            *(extra or []),
        ]
        lines = [f"HTTP/1.1 {status} {_REASONS[status]}", *(f"{k}: {v}" for k, v in headers)]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        if not head_only:
            writer.write(body)
        await writer.drain()
