"""The quarantine pages: search with paging, one message, and the (bulk) actions."""

from __future__ import annotations

import asyncio
import datetime
from urllib.parse import urlencode

from aiohttp import web

from spamgate.proxy.console.actions import ActionError, delete, release
from spamgate.proxy.console.context import CTX, FORM, session_of
from spamgate.proxy.console.pages import e, fmt_time, hidden_csrf, layout, table
from spamgate.proxy.console.render import render_message
from spamgate.proxy.console.security import Session, audit
from spamgate.proxy.quarantine_index import Search

__all__ = ["routes"]

PAGE_SIZE = 50
_FIELDS = (("sender", "Sender"), ("recipient", "Recipient"), ("subject", "Subject"), ("reason", "Reason"))
_ACTIONS = {"release": "Release", "release_ham": "Release + learn as ham", "delete": "Delete"}


def _html(text: str, status: int = 200) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8")


def _user(request: web.Request) -> Session:
    s = session_of(request)
    assert s is not None and s.user is not None  # the guard let only logged-in sessions through
    return s


def _when(text: str) -> float | None:
    """A date or date-and-time from the form (local time), or None when empty or unreadable."""
    text = text.strip()
    if not text:
        return None
    try:
        return datetime.datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


def _buttons(csrf: str) -> str:
    return hidden_csrf(csrf) + "".join(
        f'<button type="submit" name="action" value="{k}">{e(v)}</button> ' for k, v in _ACTIONS.items()
    )


async def listing(request: web.Request) -> web.StreamResponse:
    ctx = request.app[CTX]
    session = _user(request)
    q = request.query
    try:
        page = max(1, int(q.get("page", "1")))
    except ValueError:
        page = 1
    search = Search(sender=q.get("sender", ""), recipient=q.get("recipient", ""), subject=q.get("subject", ""),
                    reason=q.get("reason", ""), since=_when(q.get("since", "")), until=_when(q.get("until", "")),
                    limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE)  # fmt: skip
    rows, total = await asyncio.to_thread(ctx.store.index.search, search)
    inputs = "".join(f'<label>{e(label)} <input name="{name}" value="{e(q.get(name, ""))}"></label> '
                     for name, label in _FIELDS)  # fmt: skip
    inputs += (f'<label>From <input name="since" type="datetime-local" value="{e(q.get("since", ""))}"></label> '
               f'<label>Until <input name="until" type="datetime-local" value="{e(q.get("until", ""))}"></label> ')
    form = f'<form class="search" method="get" action="/quarantine"><fieldset>{inputs}<button>Search</button>' \
           '</fieldset></form>'
    cells = [[
        f'<input type="checkbox" name="ids" value="{e(r.id)}" aria-label="select {e(r.id)}">',
        e(fmt_time(r.time)), e(r.sender), e(", ".join(r.recipients)),
        f'<a href="/quarantine/{e(r.id)}">{e(r.subject or "(no subject)")}</a>',
        f"{r.score:.1f}", e(", ".join(r.reasons[:5])),
    ] for r in rows]  # fmt: skip
    keep = {k: v for k, v in q.items() if k != "page" and v}
    pages = []
    if page > 1:
        pages.append(f'<a href="/quarantine?{e(urlencode({**keep, "page": page - 1}))}">previous</a>')
    if page * PAGE_SIZE < total:
        pages.append(f'<a href="/quarantine?{e(urlencode({**keep, "page": page + 1}))}">next</a>')
    first = (page - 1) * PAGE_SIZE + 1 if rows else 0
    body = (
        f'{form}<p id="count">{total} held message(s); showing {first}-{first + len(rows) - 1 if rows else 0}. '
        f'{" · ".join(pages)}</p>'
        f'<form method="post" action="/quarantine/action">{_buttons(session.csrf)}'
        f'{table(["", "held at", "sender", "recipients", "subject", "score", "reasons"], cells, raw=True)}</form>'
    )
    flash, session.flash = session.flash, ""
    return _html(layout("Quarantine", body, user=session.user, csrf=session.csrf, flash=flash))


async def message(request: web.Request) -> web.StreamResponse:
    ctx = request.app[CTX]
    session = _user(request)
    qid = request.match_info["qid"]
    try:
        entry, raw = await asyncio.to_thread(ctx.store.get, qid)
    except KeyError:
        return _html(layout("Not found", "<p>No such held message (released or deleted?).</p>",
                            user=session.user, csrf=session.csrf), 404)
    audit(session.user or "-", "view", qid, client=request.remote or "-")
    msg = await asyncio.to_thread(render_message, raw)
    score_rows = [["score", f"{entry.score:.1f}"], ["action", entry.action],
                  ["symbols", ", ".join(entry.reasons) or "(none)"], ["client", entry.client_ip],
                  ["session", entry.session_id], *[[k, v] for k, v in msg.score_headers]]
    body = (
        f'<form method="post" action="/quarantine/action"><input type="hidden" name="ids" value="{e(qid)}">'
        f'{_buttons(session.csrf)}</form>'
        f'<h2>Score explanation</h2><div id="score">{table(["", ""], score_rows)}</div>'
        f'<h2>Envelope</h2>{table(["", ""], [["from", entry.mail_from], ["to", ", ".join(entry.recipients)]])}'
        f'<h2>Body ({e(msg.body_source)})</h2><pre id="body">{e(msg.body)}</pre>'
        + (f"<p>Attachments: {e(', '.join(msg.attachments))}</p>" if msg.attachments else "")
        + (f'<details><summary>HTML source (escaped, never rendered)</summary><pre id="html-source">'
           f'{e(msg.html_source)}</pre></details>' if msg.html_source else "")
        + f'<h2>Headers</h2>{table(["name", "value"], [[k, v] for k, v in msg.headers])}'
    )
    return _html(layout(f"Held message {qid}", body, user=session.user, csrf=session.csrf))


async def act(request: web.Request) -> web.StreamResponse:
    ctx = request.app[CTX]
    session = _user(request)
    form = request[FORM]
    action = str(form.get("action", ""))
    ids = [str(i) for i in form.getall("ids", [])]
    if action not in _ACTIONS or not ids:
        session.flash = "Choose at least one message and an action."
        raise web.HTTPSeeOther("/quarantine")
    done, failed = 0, []
    for qid in ids:
        try:
            if action == "delete":
                await delete(ctx.store, qid)
                detail = ""
            else:
                detail = await release(ctx.cfg, ctx.store, qid, learn_ham=action == "release_ham")
        except ActionError as exc:
            failed.append(f"{qid}: {exc}")
            audit(session.user or "-", action, qid, result="failed", client=request.remote or "-",
                  detail=str(exc).replace(" ", "_")[:200])
            continue
        done += 1
        audit(session.user or "-", action, qid, client=request.remote or "-",
              detail=detail.split(";")[0].replace(" ", "_")[:120])
    verb = {"release": "released", "release_ham": "released and learned as ham", "delete": "deleted"}[action]
    session.flash = f"{done} message(s) {verb}." + (f" Failed: {'; '.join(failed)}" if failed else "")
    raise web.HTTPSeeOther("/quarantine")


async def home(request: web.Request) -> web.StreamResponse:
    raise web.HTTPSeeOther("/quarantine")


def routes(app: web.Application) -> None:
    app.router.add_get("/", home)
    app.router.add_get("/quarantine", listing)
    app.router.add_get("/quarantine/{qid}", message)
    app.router.add_post("/quarantine/action", act)
