"""``spamgate learn --spam|--ham PATH...``: teach spamd's Bayes database through TELL.

A PATH is a single message file, an mbox (a file starting with ``From ``), a Maildir
(a directory with ``cur/`` and ``new/``) or a plain directory of message files. spamd
must run with ``--allow-tell``. The spamd address comes from ``--host/--port/--socket``,
else from ``[filters.spamassassin]`` in ``--config FILE``, else 127.0.0.1:783.

:func:`learn_message` is the same operation for one message, for the engine (releasing
a message from quarantine teaches it as ham).
"""

from __future__ import annotations

import argparse
import asyncio
import mailbox
import sys
from collections.abc import Generator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from spamgate.filters.sdk.api import OptionError
from spamgate.filters.sdk.options import parse_options
from spamgate.filters.services.spamd_client import SpamdClient, SpamdError, SpamdSettings
from spamgate.filters.spamassassin.filter import SpamAssassinOptions
from spamgate.proxy.config import Config, ConfigError, load_config

__all__ = ["LearnSettings", "iter_messages", "learn_message", "register", "run", "settings_from_config"]

Kind = Literal["spam", "ham"]


@dataclass(frozen=True)
class LearnSettings:
    spamd: SpamdSettings = field(default_factory=SpamdSettings)
    user: str | None = None
    max_size: int = 512_000


def settings_from_config(cfg: Config) -> LearnSettings:
    """The spamd address, user and size limit of ``[filters.spamassassin]`` (defaults if absent)."""
    table = cfg.filters.get("spamassassin")
    try:
        o = parse_options(SpamAssassinOptions, table.options if table else {})
    except OptionError as exc:
        raise ConfigError(f"{cfg.source}: [filters.spamassassin].{exc.key}: {exc.message}") from None
    spamd = SpamdSettings(o.host, o.port, o.socket, o.scan_timeout, o.connect_timeout)
    return LearnSettings(spamd, o.user, o.max_size)


_clients: dict[SpamdSettings, SpamdClient] = {}


def _client(settings: SpamdSettings) -> SpamdClient:
    client = _clients.get(settings)
    if client is None:
        client = _clients[settings] = SpamdClient(settings)
    return client


async def learn_message(raw: bytes, kind: Kind, settings: LearnSettings | SpamdSettings) -> bool:
    """Teach one message; True if spamd learned it, False if it already knew it as ``kind``.

    Raises :class:`filters.spamd_client.SpamdError` when spamd cannot be asked.
    """
    ls = settings if isinstance(settings, LearnSettings) else LearnSettings(settings)
    return await _client(ls.spamd).tell(raw, kind, ls.user)


def iter_messages(path: Path) -> Generator[tuple[str, bytes], None, None]:
    """(label, raw message) for every message under ``path``; blocking, so iterate off the loop."""
    if path.is_dir():
        if (path / "cur").is_dir() and (path / "new").is_dir():
            md = mailbox.Maildir(path, factory=None, create=False)
            for key in sorted(md.iterkeys()):
                yield f"{path}:{key}", md.get_bytes(key)
            return
        for f in sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")):
            yield str(f), f.read_bytes()
        return
    with path.open("rb") as fh:
        is_mbox = fh.read(5) == b"From "
    if not is_mbox:
        yield str(path), path.read_bytes()
        return
    mbox = mailbox.mbox(path, factory=None, create=False)
    try:
        for i, key in enumerate(mbox.iterkeys()):
            yield f"{path}#{i + 1}", mbox.get_bytes(key)
    finally:
        mbox.close()


@dataclass
class Tally:
    learned: int = 0
    known: int = 0
    skipped: int = 0
    failed: int = 0


async def _learn_one(label: str, raw: bytes, kind: Kind, ls: LearnSettings, tally: Tally, verbose: bool) -> None:
    if len(raw) > ls.max_size:
        tally.skipped += 1
        print(f"{label}: skipped, {len(raw)} bytes > max_size {ls.max_size}", file=sys.stderr)
        return
    try:
        learned = await learn_message(raw, kind, ls)
    except SpamdError as exc:
        tally.failed += 1
        print(f"{label}: {exc}", file=sys.stderr)
        return
    if learned:
        tally.learned += 1
    else:
        tally.known += 1
    if verbose:
        print(f"{label}: {'learned' if learned else 'already known'} as {kind}")


async def _learn_all(paths: list[Path], kind: Kind, ls: LearnSettings, jobs: int, verbose: bool) -> Tally:
    """Read messages one at a time in a thread; at most ``jobs`` TELLs in flight."""
    tally = Tally()
    pending: set[asyncio.Task[None]] = set()
    for path in paths:
        messages = iter_messages(path)
        try:
            while (item := await asyncio.to_thread(next, messages, None)) is not None:
                pending.add(asyncio.create_task(_learn_one(*item, kind, ls, tally, verbose)))
                if len(pending) >= jobs:
                    _, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        except OSError as exc:
            tally.failed += 1
            print(f"{path}: cannot read: {exc}", file=sys.stderr)
        finally:
            messages.close()
    await asyncio.gather(*pending)
    return tally


def run(args: argparse.Namespace) -> int:
    """Exit 0 when every message was taught (or already known), 1 if any failed, 2 on bad input."""
    try:
        cfg_path: str | None = getattr(args, "config", None)
        ls = settings_from_config(load_config(cfg_path)) if cfg_path else LearnSettings()
    except ConfigError as exc:
        print(f"spamgate learn: {exc}", file=sys.stderr)
        return 2
    spamd = ls.spamd
    if args.socket:
        spamd = replace(spamd, socket=args.socket)
    elif args.host or args.port:
        spamd = replace(spamd, host=args.host or spamd.host, port=args.port or spamd.port, socket=None)
    if args.timeout:
        spamd = replace(spamd, timeout=args.timeout)
    ls = replace(ls, spamd=spamd, user=args.user or ls.user, max_size=args.max_size or ls.max_size)
    paths = [Path(p) for p in args.paths]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        print(f"spamgate learn: no such file or directory: {', '.join(missing)}", file=sys.stderr)
        return 2
    tally = asyncio.run(_learn_all(paths, args.kind, ls, args.jobs, args.verbose))
    print(
        f"{args.kind}: {tally.learned} learned, {tally.known} already known, "
        f"{tally.skipped} skipped (too big), {tally.failed} failed (spamd {spamd.address})"
    )
    return 1 if tally.failed else 0


def _positive_int(v: str) -> int:
    n = int(v)
    if n < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return n


def register(sub: Any) -> argparse.ArgumentParser:
    """Add the ``learn`` sub-command to an argparse subparsers object."""
    p: argparse.ArgumentParser = sub.add_parser(
        "learn",
        help="teach spamd's Bayes database spam or ham (file, mbox or Maildir)",
        description="Teach spamd's Bayes database through TELL (spamd needs --allow-tell). A PATH is a "
        "message file, an mbox, a Maildir or a directory of message files.",
    )
    kind = p.add_mutually_exclusive_group(required=True)
    kind.add_argument("--spam", dest="kind", action="store_const", const="spam", help="the messages are spam")
    kind.add_argument("--ham", dest="kind", action="store_const", const="ham", help="the messages are ham")
    p.add_argument("paths", nargs="+", metavar="PATH", help="message file, mbox, Maildir or directory")
    # SUPPRESS: never overwrite a --config the main parser may already have set.
    p.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS, help="read [filters.spamassassin]")
    p.add_argument("--host", help="spamd host (default from config, else 127.0.0.1)")
    p.add_argument("--port", type=int, help="spamd port (default from config, else 783)")
    p.add_argument("--socket", metavar="PATH", help="spamd unix socket (wins over host/port)")
    p.add_argument("--user", help="spamd user whose Bayes database learns (per-user setups)")
    p.add_argument("--timeout", type=float, help="seconds per message (default from config, else 8)")
    p.add_argument("--max-size", type=_positive_int, help="skip messages larger than this many bytes (512000)")
    p.add_argument("--jobs", type=_positive_int, default=2, help="messages taught in parallel (default 2)")
    p.add_argument("-v", "--verbose", action="store_true", help="one line per message")
    p.set_defaults(func=run)
    return p
