"""The console app in-process (aiohttp's test server on loopback): login rate limit, cookies, guard."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

from aiohttp.test_utils import TestClient, TestServer
from argon2 import PasswordHasher

from spamgate.proxy.auth import PasswordFile
from spamgate.proxy.config import parse_config
from spamgate.proxy.console.context import ConsoleContext
from spamgate.proxy.console.security import SessionStore
from spamgate.proxy.console.server import build_app
from spamgate.proxy.console.status import RateSampler, read_counters
from spamgate.proxy.runtime import SessionCounter
from spamgate.proxy.server import build_runtime
from spamgate.proxy.tools.passwd import add_user

FAST = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


def _ctx(tmp_path: Path, tls: bool = False) -> tuple[ConsoleContext, object]:
    tmp_path.mkdir(exist_ok=True)
    add_user(tmp_path / "admins", "admin", "pw-right", FAST)
    cfg = parse_config({
        "server": {"state_dir": str(tmp_path / "state")}, "backend": {"url": f"maildir:{tmp_path}/md"},
        "auth": {"max_failures": 2}, "metrics": {"enabled": False}, "dns": {"reverse_lookup": False},
        "console": {"admin_file": str(tmp_path / "admins")},
    })  # fmt: skip
    runtime = build_runtime(cfg, SessionCounter())
    host = SimpleNamespace(cfg=cfg, runtime=runtime, health=None)
    ctx = ConsoleContext(host, PasswordFile(tmp_path / "admins", FAST), SessionStore(60), RateSampler(read_counters()),  # type: ignore[arg-type]
                         tls=tls)
    return ctx, runtime


async def _login(client: TestClient, password: str) -> int:  # type: ignore[type-arg]
    page = await (await client.get("/login")).text()
    token = re.search(r'name="csrf" value="([^"]+)"', page)
    assert token
    r = await client.post("/login", data={"username": "admin", "password": password, "csrf": token.group(1)},
                          allow_redirects=False)
    return r.status


async def test_failed_console_logins_fill_the_shared_penalty_box(tmp_path: Path) -> None:
    ctx, runtime = _ctx(tmp_path)
    async with TestClient(TestServer(build_app(ctx))) as client:
        assert await _login(client, "nope") == 401
        assert await _login(client, "nope") == 401
        # The SMTP side's penalty box is the one that was filled...
        assert await runtime.penalties.is_blocked("127.0.0.1")  # type: ignore[union-attr]
        # ...and now even the right password waits out the penalty.
        assert await _login(client, "pw-right") == 429


async def test_login_rotates_the_session_and_guards_pages(tmp_path: Path) -> None:
    tls_ctx, _ = _ctx(tmp_path / "tls", tls=True)
    async with TestClient(TestServer(build_app(tls_ctx))) as client:
        # A TLS listener: the cookie is never sent over plain HTTP.
        assert "Secure" in (await client.get("/login")).headers["Set-Cookie"]
    ctx, _ = _ctx(tmp_path)
    async with TestClient(TestServer(build_app(ctx))) as client:
        r = await client.get("/status", allow_redirects=False)
        assert r.status == 303 and r.headers["Location"] == "/login"
        assert (await client.post("/quarantine/action", data={"action": "delete"})).status == 403
        first = await client.get("/login")
        assert "Secure" not in first.headers["Set-Cookie"] and "HttpOnly" in first.headers["Set-Cookie"]
        before = client.session.cookie_jar.filter_cookies(client.make_url("/"))
        assert await _login(client, "pw-right") == 303
        after = client.session.cookie_jar.filter_cookies(client.make_url("/"))
        assert before["spamgate_console"].value != after["spamgate_console"].value
        assert (await client.get("/status")).status == 200
        assert "script-src" not in first.headers["Content-Security-Policy"]
        assert "default-src 'none'" in first.headers["Content-Security-Policy"]
