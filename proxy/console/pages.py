"""HTML for the console: stdlib ``string.Template`` pages, every value escaped before it goes in.

No JavaScript: forms post, the server redirects. The Content-Security-Policy set by the
app forbids scripts outright, so even a rendering bug cannot run a message's markup.
"""

from __future__ import annotations

import time
from html import escape
from string import Template

__all__ = ["e", "fmt_time", "hidden_csrf", "layout", "table"]

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#222;background:#fafafa}
header{background:#24405e;color:#fff;padding:8px 16px;display:flex;gap:16px;align-items:center}
header a,header button{color:#fff;background:none;border:0;font:inherit;cursor:pointer;text-decoration:underline}
header form{margin-left:auto}
main{padding:16px;max-width:1200px}
table{border-collapse:collapse;width:100%;background:#fff}
th,td{border:1px solid #ddd;padding:4px 6px;text-align:left;vertical-align:top}
th{background:#eef2f6}
pre{white-space:pre-wrap;word-break:break-word;background:#fff;border:1px solid #ddd;padding:8px;max-height:40em;
overflow:auto}
.msg{background:#e8f4e8;border:1px solid #9c9;padding:6px 10px;margin-bottom:10px}
.err{background:#f8e8e8;border:1px solid #c99;padding:6px 10px;margin-bottom:10px}
.ok{color:#262}.down{color:#a00;font-weight:bold}
form.search input{width:11em}
fieldset{border:1px solid #ccc;margin:0 0 10px 0}
"""

_LAYOUT = Template("""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>$title - spamgate</title>
<meta name="referrer" content="no-referrer"><style>$css</style></head>
<body><header><strong>spamgate</strong>$nav</header>
<main><h1>$title</h1>$flash$body</main></body></html>
""")

_NAV = Template("""<a href="/quarantine">Quarantine</a><a href="/status">Status</a><span>$user</span>
<form method="post" action="/logout">$csrf<button type="submit">Log out</button></form>""")


def e(value: object) -> str:
    """Escape anything for HTML text or a quoted attribute."""
    return escape(str(value), quote=True)


def hidden_csrf(token: str) -> str:
    return f'<input type="hidden" name="csrf" value="{e(token)}">'


def fmt_time(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def layout(title: str, body: str, *, user: str | None = None, csrf: str = "", flash: str = "",
           error: bool = False) -> str:
    """A whole page; ``body`` is trusted HTML built from escaped parts, ``title``/``flash`` are text."""
    nav = _NAV.substitute(user=e(user), csrf=hidden_csrf(csrf)) if user else ""
    note = f'<p class="{"err" if error else "msg"}" role="status">{e(flash)}</p>' if flash else ""
    return _LAYOUT.substitute(title=e(title), css=_CSS, nav=nav, flash=note, body=body)


def table(headings: list[str], rows: list[list[str]], *, raw: bool = False) -> str:
    """A table of text cells (escaped), or of trusted HTML cells with ``raw``."""
    head = "".join(f"<th>{e(h)}</th>" for h in headings)
    body = "".join("<tr>" + "".join(f"<td>{c if raw else e(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
