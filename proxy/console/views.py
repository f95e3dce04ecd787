"""Login, logout, the status page and the public digest release links."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from spamgate.proxy import metrics
from spamgate.proxy.console.actions import ActionError, release_to
from spamgate.proxy.console.context import CTX, FORM, session_of
from spamgate.proxy.console.pages import e, fmt_time, hidden_csrf, layout, table
from spamgate.proxy.console.security import COOKIE, audit
from spamgate.proxy.console.status import SESSIONS, read_counters_async
from spamgate.proxy.quarantine_index import subject_of
from spamgate.proxy.release_tokens import TokenError

__all__ = ["routes"]

log = logging.getLogger("spamgate.console")

_LOGIN_FORM = """<form method="post" action="/login">{csrf}
<p><label>User name<br><input name="username" autocomplete="username" required autofocus></label></p>
<p><label>Password<br><input name="password" type="password" autocomplete="current-password" required></label></p>
<p><button type="submit">Log in</button></p></form>"""


def _html(text: str, status: int = 200) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8")


def _set_cookie(request: web.Request, resp: web.StreamResponse, sid: str) -> None:
    ctx = request.app[CTX]
    resp.set_cookie(COOKIE, sid, httponly=True, samesite="Strict", secure=ctx.tls, path="/",
                    max_age=int(ctx.sessions.lifetime))


async def login_page(request: web.Request) -> web.StreamResponse:
    ctx = request.app[CTX]
    session = session_of(request)
    if session is not None and session.user is not None:
        raise web.HTTPSeeOther("/quarantine")
    if session is None:
        session = ctx.sessions.new()
    resp = _html(layout("Log in", _LOGIN_FORM.format(csrf=hidden_csrf(session.csrf))))
    _set_cookie(request, resp, session.id)
    return resp


async def login(request: web.Request) -> web.StreamResponse:
    ctx = request.app[CTX]
    form = request[FORM]
    session = session_of(request)
    assert session is not None  # the guard checked its CSRF token
    ip = request.remote or "-"
    user = str(form.get("username", ""))[:200]
    penalties = ctx.penalties
    if await penalties.is_blocked(ip):
        audit(user or "-", "login", result="blocked", client=ip)
        return _html(layout("Log in", _LOGIN_FORM.format(csrf=hidden_csrf(session.csrf)),
                            flash="Too many failed logins from your address; try again later.", error=True), 429)
    if not await ctx.admins.authenticate(user, str(form.get("password", "")), client_ip=ip):
        if await penalties.record_failure(ip):
            metrics.PENALTY_BOX.inc()
        audit(user or "-", "login", result="failed", client=ip)
        return _html(layout("Log in", _LOGIN_FORM.format(csrf=hidden_csrf(session.csrf)),
                            flash="Wrong user name or password.", error=True), 401)
    await penalties.record_success(ip)
    ctx.sessions.drop(session.id)
    fresh = ctx.sessions.new(user)
    audit(user, "login", client=ip)
    resp = web.HTTPSeeOther("/quarantine")
    _set_cookie(request, resp, fresh.id)
    raise resp


async def logout(request: web.Request) -> web.StreamResponse:
    session = session_of(request)
    assert session is not None and session.user is not None
    request.app[CTX].sessions.drop(session.id)
    audit(session.user, "logout", client=request.remote or "-")
    resp = web.HTTPSeeOther("/login")
    resp.del_cookie(COOKIE, path="/")
    raise resp


async def status(request: web.Request) -> web.StreamResponse:
    ctx = request.app[CTX]
    session = session_of(request)
    assert session is not None and session.user is not None
    runtime = ctx.host.runtime
    health = ctx.host.health
    checks = await health.states() if health is not None else []
    deps = table(["dependency", "state", "if down"], [[
        e(c.name),
        '<span class="ok">up</span>' if c.state == "ok" else f'<span class="down">down ({e(c.state)})</span>',
        "mail is refused (4xx)" if c.critical else "filtering degraded, mail flows",
    ] for c in checks], raw=True)  # fmt: skip
    now = await read_counters_async()
    rates = ctx.sampler.per_minute(now)
    rate_rows = [[k, f"{v:.1f}"] for k, v in rates.items()] or [["(no messages)", "0"]]
    top = ctx.sampler.top_rejections(now) or [("(none)", 0)]
    filters = [[s.name, s.settings.mode, ", ".join(sorted(p.value for p in s.filter.phases)), s.settings.on_error]
               for s in runtime.pipeline.slots] or [["(no filters enabled)", "", "", ""]]
    grafana = ctx.cfg.console.grafana_url
    body = (
        f"<p>SMTP sessions now: <strong id=\"sessions\">{now[SESSIONS]:.0f}</strong> · "
        f"console admins logged in: {ctx.sessions.logged_in}</p>"
        f"<h2>Dependencies</h2>{deps}"
        f"<h2>Messages per minute by action</h2>{table(['action', 'per minute'], rate_rows)}"
        f"<h2>Top rejection reasons (last hour)</h2>{table(['reason', 'count'], [[k, str(v)] for k, v in top])}"
        f"<h2>Filters</h2>{table(['filter', 'mode', 'phases', 'on error'], filters)}"
        + (f'<p><a href="{e(grafana)}" rel="noreferrer">Grafana dashboard</a> (history and trends)</p>'
           if grafana else "<p>Set <code>[console] grafana_url</code> to link the Grafana dashboard here.</p>")
    )
    return _html(layout("Status", body, user=session.user, csrf=session.csrf, flash=""))


async def release_link(request: web.Request) -> web.StreamResponse:
    """GET shows what would be released and a button; only the POST releases.

    Mail scanners and link previewers fetch links in mails: a GET must never release.
    """
    ctx = request.app[CTX]
    token = request.match_info["token"]
    key = ctx.link_key()
    try:
        link = key.verify(token)
    except TokenError as exc:
        audit("link", "release_link", result="refused", client=request.remote or "-", detail=str(exc).replace(" ", "_"))
        return _html(layout("Release refused", f"<p>{e(str(exc).capitalize())}.</p>"), 403)
    who = f"link:{link.rcpt}"
    if request.method == "POST":
        form = await request.post()
        if form.get("csrf") != key.form_token(token):
            audit(who, "release_link", link.qid, result="403", client=request.remote or "-")
            raise web.HTTPForbidden(text="missing or wrong CSRF token\n")
        try:
            reply = await release_to(ctx.cfg, ctx.store, link.qid, link.rcpt)
        except ActionError as exc:
            audit(who, "release_link", link.qid, result="refused", client=request.remote or "-")
            return _html(layout("Release refused", f"<p>{e(exc)}.</p>"), 410)
        audit(who, "release_link", link.qid, client=request.remote or "-", detail=reply.split()[0])
        return _html(layout("Released", f"<p>The message was released to {e(link.rcpt)}.</p>"))
    try:
        entry, raw = await asyncio.to_thread(ctx.store.get, link.qid)
    except KeyError:
        entry, raw = None, b""
    if entry is None or link.rcpt.lower() not in (r.lower() for r in entry.recipients):
        return _html(layout("Release refused", "<p>This message was already released or deleted.</p>"), 410)
    body = (
        f"<p>Held at {e(fmt_time(entry.time))} from &lt;{e(entry.mail_from)}&gt; for {e(link.rcpt)}:</p>"
        f"<p>Subject: <strong>{e(subject_of(raw))}</strong></p>"
        f'<form method="post"><input type="hidden" name="csrf" value="{e(key.form_token(token))}">'
        '<button type="submit">Release this message to my mailbox</button></form>'
    )
    return _html(layout("Release a held message", body))


def routes(app: web.Application) -> None:
    app.router.add_get("/login", login_page)
    app.router.add_post("/login", login)
    app.router.add_post("/logout", logout)
    app.router.add_get("/status", status)
    app.router.add_get("/release/{token}", release_link)
    app.router.add_post("/release/{token}", release_link)
