"""``spamgate digest``: mail each local recipient what was held for them since the last digest.

Run from a systemd timer or cron (deploy/systemd/spamgate-digest.*, deploy/cron/).
Each mail goes through the backend (SMTP to ``[backend]``) as multipart text + HTML,
one entry per held message with a signed, expiring release link to the console
(``[console] public_url``). The time of the last digest is kept in
``state_dir/digest-state.json`` and only moves forward once every digest was accepted
by the backend: a failed run repeats entries next time rather than losing them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from html import escape
from pathlib import Path
from typing import Any

import aiosmtplib

from spamgate.proxy.config import Config, ConfigError, load_config
from spamgate.proxy.quarantine import Quarantine
from spamgate.proxy.quarantine_index import IndexRow
from spamgate.proxy.release_tokens import LinkKey

__all__ = ["build_digest", "register", "run_digest"]

STATE_FILE = "digest-state.json"


def _local(rcpt: str, domains: tuple[str, ...]) -> bool:
    """Local recipients get a digest; with no local_domains configured, every recipient is local."""
    return not domains or rcpt.rpartition("@")[2].lower().strip(".") in domains


def build_digest(cfg: Config, rcpt: str, rows: list[IndexRow], key: LinkKey, now: float) -> EmailMessage:
    c = cfg.console
    base = (c.public_url or f"http://{c.host}:{c.port}").rstrip("/")
    expires = now + c.digest_link_days * 86400
    entries = []
    for r in rows:
        link = f"{base}/release/{key.sign(r.id, rcpt, expires)}"
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(r.time))
        entries.append((when, r.sender or "<>", r.subject or "(no subject)", f"{r.score:.1f}", link))
    text = [f"{len(rows)} message(s) addressed to you were held as suspected spam.",
            f"To get one delivered, open its release link (valid {c.digest_link_days:g} days).", ""]
    for when, sender, subject, score, link in entries:
        text += [f"{when}  from {sender}  score {score}", f"  Subject: {subject}", f"  Release: {link}", ""]
    rows_html = "".join(
        f"<tr><td>{escape(w)}</td><td>{escape(s)}</td><td>{escape(subj)}</td><td>{escape(sc)}</td>"
        f'<td><a href="{escape(link, quote=True)}">release</a></td></tr>'
        for w, s, subj, sc, link in entries
    )
    html = (f"<html><body><p>{len(rows)} message(s) addressed to you were held as suspected spam. "
            f"To get one delivered, use its release link (valid {c.digest_link_days:g} days).</p>"
            "<table border=\"1\" cellpadding=\"4\"><tr><th>held at</th><th>from</th><th>subject</th>"
            f"<th>score</th><th></th></tr>{rows_html}</table></body></html>")  # fmt: skip
    msg = EmailMessage()
    msg["From"] = c.digest_from or f"postmaster@{cfg.server.hostname}"
    msg["To"] = rcpt
    msg["Subject"] = f"Quarantine digest: {len(rows)} held message(s)"
    msg["Date"] = formatdate(now, localtime=True)
    msg["Message-ID"] = make_msgid(domain=cfg.server.hostname)
    msg["Auto-Submitted"] = "auto-generated"
    msg.set_content("\n".join(text))
    msg.add_alternative(html, subtype="html")
    return msg


def _read_state(path: Path) -> float:
    try:
        return float(json.loads(path.read_text())["last"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0.0


def _write_state(path: Path, last: float) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps({"last": last}))
    os.replace(tmp, path)


async def run_digest(cfg: Config, *, dry_run: bool = False, out: Any = sys.stdout) -> int:
    state = Path(cfg.server.state_dir)
    store = Quarantine(cfg.pipeline.quarantine_dir or str(state / "quarantine"))
    state_file = state / STATE_FILE
    since, now = _read_state(state_file), time.time()
    rows = await asyncio.to_thread(store.index.since, since)
    per_rcpt: dict[str, list[IndexRow]] = {}
    for r in rows:
        if r.time >= now:
            continue
        for rcpt in r.recipients:
            if _local(rcpt, cfg.auth.local_domains):
                per_rcpt.setdefault(rcpt.lower(), []).append(r)
    key = LinkKey.load(state)
    failed = 0
    for rcpt, held in sorted(per_rcpt.items()):
        msg = build_digest(cfg, rcpt, held, key, now)
        if dry_run:
            print(f"would send {rcpt}: {len(held)} held message(s)", file=out)
            continue
        try:
            await aiosmtplib.send(msg, sender="", recipients=[rcpt], hostname=cfg.backend.host,
                                  port=cfg.backend.port, timeout=cfg.backend.timeout, start_tls=False, use_tls=False)
        except (aiosmtplib.SMTPException, OSError) as exc:
            failed += 1
            print(f"spamgate digest: {rcpt}: not sent: {exc}", file=sys.stderr)
            continue
        print(f"sent {rcpt}: {len(held)} held message(s)", file=out)
    if not dry_run and not failed:
        await asyncio.to_thread(_write_state, state_file, now)
    return 1 if failed else 0


def run(args: argparse.Namespace) -> int:
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(f"spamgate: config error: {exc}", file=sys.stderr)
        return 1
    if cfg.backend.maildir is not None:
        print("spamgate digest: needs an SMTP [backend] (host/port), not a maildir", file=sys.stderr)
        return 1
    return asyncio.run(run_digest(cfg, dry_run=args.dry_run))


def register(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser("digest", help="mail each local recipient the list of messages held for them")
    p.add_argument("--config", "-c", metavar="FILE", required=True, help="spamgate config")
    p.add_argument("--dry-run", action="store_true", help="say who would get a digest; send nothing")
    p.set_defaults(func=run)
