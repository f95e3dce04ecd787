"""The web console in a real browser: Debian's chromium driven by Playwright, against a real spamgate.

One spamgate (Postfix behind it, a real spamd as a filter) is started for the module with
mail already quarantined: ``From:`` a local domain without AUTH scores FROM_LOCAL_UNAUTH,
over the ``[actions] quarantine`` threshold. One browser serves every test. Set
SPAMGATE_SCREENSHOTS=DIR to save the page screenshots used in docs/console.md.
"""

from __future__ import annotations

import http.client
import os
import re
import smtplib
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from email import message_from_bytes, policy
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright

from tests.integration.conftest import REPO, Spamgate
from tests.integration.services.postfix import Postfix, free_port, wait_port
from tests.integration.services.spamd import Spamd, start_spamd

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PASSWORD = "correct horse battery"
SHOTS = os.environ.get("SPAMGATE_SCREENSHOTS")

HTML_BODY = """<html><head><title>x</title><script>document.title='pwned'; alert('xss')</script></head>
<body><p>Dear user, <b>claim</b> your prize</p><img src=x onerror="alert('img')"></body></html>"""


@dataclass
class Held:
    sg: Spamgate
    console: str
    ids: dict[str, str]
    spamd: Spamd
    postfix: Postfix


def _send(port: int, subject: str, rcpt: str = "alice@example.edu", html: str | None = None) -> str:
    body = (f"Content-Type: text/html; charset=utf-8\r\n\r\n{html}\r\n" if html
            else "Content-Type: text/plain; charset=utf-8\r\n\r\nHello, this is about our offer.\r\n")
    msg = (f"From: Boss <boss@example.edu>\r\nTo: {rcpt}\r\nSubject: {subject}\r\n"
           f"Date: {time.strftime('%a, %d %b %Y %H:%M:%S +0000', time.gmtime())}\r\n"
           f"Message-ID: <{time.time_ns()}@outside.example>\r\nMIME-Version: 1.0\r\n{body}")
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as s:
        s.ehlo("outside.example")
        s.mail("boss@example.edu")
        s.rcpt(rcpt)
        code, reply = s.data(msg.encode())
    m = re.search(rb"quarantined as (\S+)", reply)
    assert code == 250 and m, (code, reply)
    return m.group(1).decode()


def console_config(work: Path, postfix: Postfix, spamd: Spamd, ports: tuple[int, int, int]) -> str:
    port, mport, cport = ports
    return f"""
[server]
hostname = "spamgate.test"
state_dir = "{work}/state"
shutdown_grace = 2
[[listen]]
host = "127.0.0.1"
port = {port}
[backend]
host = "127.0.0.1"
port = {postfix.port}
[metrics]
host = "127.0.0.1"
port = {mport}
[auth]
local_domains = ["example.edu"]
[dns]
reverse_lookup = false
[actions]
reject = 1000
quarantine = 5
add_header = 3
# The held mail is a spoofed local From: scored (not refused) so that it lands in quarantine:
# local_sender (on because of local_domains) would refuse it at MAIL FROM / DATA.
[filters.local_sender]
enabled = false
[filters.headers]
enabled = true
scores = {{ FROM_LOCAL_UNAUTH = 8.0 }}
[filters.spamassassin]
enabled = true
host = "127.0.0.1"
port = {spamd.port}
connect_timeout = 1
[console]
host = "127.0.0.1"
port = {cport}
admin_file = "{work}/admins"
public_url = "http://127.0.0.1:{cport}"
grafana_url = "http://grafana.example.invalid/d/spamgate"
"""


def add_admin(path: Path, user: str = "admin") -> None:
    subprocess.run([sys.executable, "-m", "spamgate.proxy", "passwd", "add", user, "--file", str(path)],
                   input=PASSWORD + "\n", text=True, check=True, capture_output=True,
                   env={**os.environ, "PYTHONPATH": str(REPO)})  # fmt: skip


def wait_console(sg: Spamgate, port: int) -> None:
    deadline = time.monotonic() + 20
    while "console address=" not in sg.log():
        assert time.monotonic() < deadline, sg.log()
        time.sleep(0.05)
    wait_port(port, 5)


@pytest.fixture(scope="module")
def held(postfix: Postfix, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Held]:
    work = tmp_path_factory.mktemp("console")
    spamd = start_spamd(work / "spamd", children=2)
    ports = (free_port(), free_port(), free_port())
    add_admin(work / "admins")
    sg = Spamgate(work, console_config(work, postfix, spamd, ports), ports[0], ports[0], ports[1])
    try:
        sg.start()
        wait_console(sg, ports[2])
        ids = {
            "release": _send(sg.port, "Weekly newsletter 4711"),
            "html": _send(sg.port, "Prize notification", html=HTML_BODY),
            "delete": _send(sg.port, "Delete me please"),
            "digest": _send(sg.port, "Digest candidate for bob", rcpt="bob@example.edu"),
        }
        yield Held(sg, f"http://127.0.0.1:{ports[2]}", ids, spamd, postfix)
    finally:
        sg.stop()
        spamd.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    # Playwright gives every launch a fresh, empty temporary profile (user-data-dir).
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def admin(browser: Browser, held: Held) -> Iterator[Page]:
    ctx = browser.new_context()
    page = ctx.new_page()
    login(page, held.console, PASSWORD)
    assert page.url.endswith("/quarantine")
    yield page
    ctx.close()


def login(page: Page, base: str, password: str) -> None:
    page.goto(f"{base}/login")
    page.fill("input[name=username]", "admin")
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")


def shot(page: Page, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=f"{SHOTS}/console-{name}.png")


def test_login_refuses_a_wrong_password(browser: Browser, held: Held) -> None:
    ctx: BrowserContext = browser.new_context()
    page = ctx.new_page()
    page.goto(f"{held.console}/quarantine")
    assert page.url.endswith("/login")
    shot(page, "login")
    login(page, held.console, "wrong password")
    assert page.url.endswith("/login")
    assert "Wrong user name or password" in page.inner_text("main")
    assert "Weekly newsletter" not in page.content()
    login(page, held.console, PASSWORD)
    assert page.url.endswith("/quarantine")
    assert "Weekly newsletter 4711" in page.inner_text("main")
    cookie = next(c for c in ctx.cookies() if c["name"] == "spamgate_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    ctx.close()
    assert "action=login id=- result=failed" in held.sg.log()


def _raw(base: str, method: str, path: str, body: dict[str, str] | None = None,
         cookie: str = "") -> tuple[int, dict[str, str], str]:
    u = urllib.parse.urlsplit(base)
    con = http.client.HTTPConnection(u.hostname, u.port, timeout=20)
    headers = {"Cookie": cookie} if cookie else {}
    data = urllib.parse.urlencode(body or {})
    if body is not None:
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    con.request(method, path, body=data if body is not None else None, headers=headers)
    r = con.getresponse()
    out = (r.status, {k.lower(): v for k, v in r.getheaders()}, r.read().decode())
    con.close()
    return out


def test_csrf_token_missing_or_wrong_is_403(held: Held, admin: Page) -> None:
    status, headers, page = _raw(held.console, "GET", "/login")
    cookie = headers["set-cookie"].split(";")[0]
    token = re.search(r'name="csrf" value="([^"]+)"', page)
    assert status == 200 and token
    creds = {"username": "admin", "password": PASSWORD}
    assert _raw(held.console, "POST", "/login", creds, cookie)[0] == 403
    assert _raw(held.console, "POST", "/login", {**creds, "csrf": "x" * 43}, cookie)[0] == 403
    assert _raw(held.console, "POST", "/login", {**creds, "csrf": token.group(1)}, cookie)[0] == 303
    # A logged-in admin's session with a wrong token: refused, and the message stays held.
    session = next(c for c in admin.context.cookies() if c["name"] == "spamgate_console")
    admin_cookie = f"spamgate_console={session['value']}"
    qid = held.ids["delete"]
    for form in ({"action": "delete", "ids": qid}, {"action": "delete", "ids": qid, "csrf": "forged"}):
        assert _raw(held.console, "POST", "/quarantine/action", form, admin_cookie)[0] == 403
    assert _raw(held.console, "GET", f"/quarantine/{qid}", cookie=admin_cookie)[0] == 200
    assert "action=csrf_rejected" in held.sg.log()


def test_search_finds_a_message(admin: Page, held: Held) -> None:
    admin.goto(f"{held.console}/quarantine")
    assert "4 held message(s)" in admin.inner_text("#count")
    shot(admin, "quarantine")
    admin.fill("input[name=subject]", "newsletter 47")
    admin.click("form.search button")
    assert "1 held message(s)" in admin.inner_text("#count")
    assert "Weekly newsletter 4711" in admin.inner_text("table")
    admin.fill("input[name=subject]", "")
    admin.fill("input[name=recipient]", "bob@")
    admin.click("form.search button")
    assert "1 held message(s)" in admin.inner_text("#count")
    assert "Digest candidate for bob" in admin.inner_text("table")


def test_message_view_explains_the_score_and_never_runs_the_html(admin: Page, held: Held) -> None:
    dialogs: list[str] = []
    admin.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    qid = held.ids["html"]
    admin.goto(f"{held.console}/quarantine")
    admin.click("text=Prize notification")
    assert admin.url.endswith(f"/quarantine/{qid}")
    score = admin.inner_text("#score")
    assert "FROM_LOCAL_UNAUTH" in score and "X-Spam-Status" in score and "score=" in score
    assert "Dear user, claim your prize" in admin.inner_text("#body")
    admin.click("summary")
    source = admin.inner_text("#html-source")
    assert "<script>document.title='pwned'; alert('xss')</script>" in source
    assert admin.title() == f"Held message {qid} - spamgate"
    assert admin.locator("script").count() == 0 and admin.locator("main img").count() == 0
    shot(admin, "message")
    admin.wait_for_timeout(300)
    assert dialogs == []


def test_release_delivers_to_postfix_exactly_once(admin: Page, held: Held) -> None:
    qid = held.ids["release"]
    admin.goto(f"{held.console}/quarantine")
    admin.check(f"input[name=ids][value='{qid}']")
    admin.click("button[value=release]")
    assert "1 message(s) released" in admin.inner_text("main")
    held.postfix.wait_for(lambda m: b"Weekly newsletter 4711" in m)
    time.sleep(1)
    assert sum(b"Weekly newsletter 4711" in m for m in held.postfix.messages("alice@example.edu")) == 1
    admin.goto(f"{held.console}/quarantine/{qid}")
    assert "No such held message" in admin.inner_text("main")
    assert f"action=release id={qid} result=ok" in held.sg.log()


def test_delete_removes_it(admin: Page, held: Held) -> None:
    qid = held.ids["delete"]
    admin.goto(f"{held.console}/quarantine/{qid}")
    admin.click("button[value=delete]")
    assert "1 message(s) deleted" in admin.inner_text("main")
    assert "Delete me please" not in admin.inner_text("table")
    assert not list((held.sg.dir / "state" / "quarantine").glob(f"{qid}.*"))
    assert f"audit user=admin action=delete id={qid} result=ok" in held.sg.log()


def test_digest_link_releases_once(browser: Browser, held: Held) -> None:
    res = subprocess.run([sys.executable, "-m", "spamgate.proxy", "digest", "--config", str(held.sg.config_path)],
                         capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "sent bob@example.edu: 1 held message(s)" in res.stdout
    digest = held.postfix.wait_for(lambda m: b"Quarantine digest" in m, rcpt="bob@example.edu")
    msg = message_from_bytes(digest, policy=policy.default)
    assert msg.get_content_type() == "multipart/alternative"
    text = msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "Digest candidate for bob" in text
    link = re.search(r"Release: (\S+)", text)
    assert link and link.group(1).startswith(f"{held.console}/release/")
    ctx = browser.new_context()  # no login
    page = ctx.new_page()
    page.goto(link.group(1))
    assert "Digest candidate for bob" in page.inner_text("main")
    page.click("button[type=submit]")
    assert "released to bob@example.edu" in page.inner_text("main")
    held.postfix.wait_for(lambda m: b"Digest candidate for bob" in m, rcpt="bob@example.edu")
    resp = page.goto(link.group(1))
    assert resp is not None and resp.status == 410
    assert "already released" in page.inner_text("main")
    token = link.group(1).rsplit("/", 1)[1]
    tampered = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    resp = page.goto(f"{held.console}/release/{tampered}")
    assert resp is not None and resp.status == 403
    ctx.close()
    assert sum(b"Digest candidate for bob" in m and b"Quarantine digest" not in m
               for m in held.postfix.messages("bob@example.edu")) == 1


def test_status_shows_a_stopped_spamd_as_down(admin: Page, held: Held) -> None:
    admin.goto(f"{held.console}/status")
    row = admin.locator("tr", has_text="filter:spamassassin")
    assert "up" in row.inner_text()
    text = admin.inner_text("main")
    assert "headers" in text and "enforce" in text and "Grafana dashboard" in text
    assert re.search(r"quarantine\s+\d", text), text
    shot(admin, "status")
    held.spamd.stop()
    deadline = time.monotonic() + 10
    while "down" not in row.inner_text():
        assert time.monotonic() < deadline, admin.inner_text("main")
        time.sleep(0.5)
        admin.reload()
    assert "filtering degraded" in row.inner_text()
