"""The console's listener: the aiohttp app, its guard middleware, and "off until an admin exists".

The guard runs before every handler: it finds the session, sends anyone not logged in
to /login (GET) or answers 403 (POST), and checks the CSRF token of every form posted
by a session. Release links (/release/...) are the one public area: the signed token is
their authority and their confirmation form carries its own token. Every answer
forbids scripts, framing, caching and referrers (a release link must not leak).
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

from spamgate.proxy.auth import PasswordFile, PasswordFileError
from spamgate.proxy.auth.credentials import parse_password_file
from spamgate.proxy.console import quarantine_views, views
from spamgate.proxy.console.context import CTX, FORM, SESSION, ConsoleContext, ConsoleHost
from spamgate.proxy.console.security import COOKIE, SessionStore, audit, csrf_ok
from spamgate.proxy.console.status import RateSampler, read_counters_async
from spamgate.proxy.http import start_site

__all__ = ["ConsoleServer", "build_app"]

log = logging.getLogger("spamgate.console")

_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
# How often to look for the first admin account while the console is off.
ADMIN_POLL_SECONDS = 2.0
SAMPLE_SECONDS = 15.0

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _public(path: str) -> bool:
    return path == "/login" or path.startswith("/release/")


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    ctx = request.app[CTX]
    session = ctx.sessions.get(request.cookies.get(COOKIE))
    if session is not None:
        request[SESSION] = session
    logged_in = session is not None and session.user is not None
    try:
        if not _public(request.path) and not logged_in:
            if request.method in ("GET", "HEAD"):
                raise web.HTTPSeeOther("/login")
            raise web.HTTPForbidden(text="not logged in\n")
        if request.method == "POST" and not request.path.startswith("/release/"):
            form = await request.post()
            if not csrf_ok(session, form.get("csrf")):
                audit(session.user if session and session.user else "-", "csrf_rejected", result="403",
                      client=request.remote or "-", detail=request.path)
                raise web.HTTPForbidden(text="missing or wrong CSRF token\n")
            request[FORM] = form
        resp = await handler(request)
    except web.HTTPException as exc:  # redirects and refusals: same headers, still raised
        for k, v in _HEADERS.items():
            exc.headers.setdefault(k, v)
        raise
    for k, v in _HEADERS.items():
        resp.headers.setdefault(k, v)
    return resp


def build_app(ctx: ConsoleContext) -> web.Application:
    app = web.Application(middlewares=[guard], client_max_size=1024 * 1024)
    app[CTX] = ctx
    views.routes(app)
    quarantine_views.routes(app)
    return app


def _has_admin(path: str) -> bool:
    try:
        return os.path.getsize(path) > 0 and bool(parse_password_file(Path(path).read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError, PasswordFileError):
        return False


class ConsoleServer:
    """Starts listening once ``[console] admin_file`` holds an account, checked every few seconds."""

    def __init__(self, host: ConsoleHost) -> None:
        self.host = host
        self._runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.port: int | None = None

    async def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._run()))

    async def _run(self) -> None:
        path = self.host.cfg.console.admin_file
        if not await asyncio.to_thread(_has_admin, path):
            log.info("console off: no admin account in %s (spamgate passwd add USER --file %s)", path, path)
            while not await asyncio.to_thread(_has_admin, path):
                await asyncio.sleep(ADMIN_POLL_SECONDS)
        await self._listen()

    async def _listen(self) -> None:
        c = self.host.cfg.console
        ssl_ctx = None
        if c.tls_cert and c.tls_key:
            ssl_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ssl_ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            try:
                ssl_ctx.load_cert_chain(c.tls_cert, c.tls_key)
            except (OSError, ssl.SSLError) as exc:
                log.error("console off: tls_cert/tls_key: cannot load %s / %s: %s", c.tls_cert, c.tls_key, exc)
                return
        sampler = RateSampler(await read_counters_async())
        try:  # hashing its dummy password takes a while: not on the loop
            admins = await asyncio.to_thread(PasswordFile, c.admin_file)
        except PasswordFileError as exc:
            log.error("console off: admin_file: %s", exc)
            return
        ctx = ConsoleContext(self.host, admins, SessionStore(c.session_seconds), sampler,
                             tls=ssl_ctx is not None)
        try:
            self._runner, self.port = await start_site(build_app(ctx), c.host, c.port, ssl_ctx)
        except OSError as exc:
            log.error("console off: cannot listen on %s:%d: %s", c.host, c.port, exc)
            return
        log.info("console address=%s:%d tls=%s admin_file=%s", c.host, self.port,
                 "yes" if ssl_ctx else "no", c.admin_file)
        while True:
            await asyncio.sleep(SAMPLE_SECONDS)
            sampler.sample(await read_counters_async())

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
