"""``spamgate learn --spam|--ham PATH...``: teach a learning filter (spamd's Bayes database).

A PATH is a single message file, an mbox (a file starting with ``From ``), a Maildir
(a directory with ``cur/`` and ``new/``) or a plain directory of message files. The
filter (``--filter``, default spamassassin) is loaded through its entry point with its
``[filters.NAME]`` options from ``--config FILE``, and must implement the SDK's
``Learner`` protocol; ``--host/--port/--socket/--user/--timeout/--max-size`` override
those options. For spamassassin, spamd must run with ``--allow-tell``.
"""

from __future__ import annotations

import argparse
import asyncio
import mailbox
import sys
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spamgate.filters.sdk.api import Learner, LearnKind, LearnResult
from spamgate.filters.sdk.outage import DependencyError
from spamgate.proxy.config import ConfigError, load_config
from spamgate.proxy.pipeline import DEFAULT_LEARNER, PluginError, learner_from

__all__ = ["iter_messages", "register", "run"]

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


async def _learn_one(label: str, raw: bytes, kind: LearnKind, learner: Learner, tally: Tally, verbose: bool) -> None:
    try:
        result: LearnResult = await learner.learn(raw, kind)
    except DependencyError as exc:
        tally.failed += 1
        print(f"{label}: {exc}", file=sys.stderr)
        return
    if result == "too_big":
        tally.skipped += 1
        print(f"{label}: skipped, {len(raw)} bytes is over the filter's max_size", file=sys.stderr)
        return
    if result == "learned":
        tally.learned += 1
    else:
        tally.known += 1
    if verbose:
        print(f"{label}: {'learned' if result == 'learned' else 'already known'} as {kind}")


async def _learn_all(paths: list[Path], kind: LearnKind, learner: Learner, jobs: int, verbose: bool) -> Tally:
    """Read messages one at a time in a thread; at most ``jobs`` in flight."""
    tally = Tally()
    pending: set[asyncio.Task[None]] = set()
    for path in paths:
        messages = iter_messages(path)
        try:
            while (item := await asyncio.to_thread(next, messages, None)) is not None:
                pending.add(asyncio.create_task(_learn_one(*item, kind, learner, tally, verbose)))
                if len(pending) >= jobs:
                    _, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        except OSError as exc:
            tally.failed += 1
            print(f"{path}: cannot read: {exc}", file=sys.stderr)
        finally:
            messages.close()
    await asyncio.gather(*pending)
    return tally


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if args.socket:
        out["socket"] = args.socket
    elif args.host or args.port:
        out["socket"] = None
        if args.host:
            out["host"] = args.host
        if args.port:
            out["port"] = args.port
    for key, value in (("user", args.user), ("scan_timeout", args.timeout), ("max_size", args.max_size)):
        if value:
            out[key] = value
    return out


def run(args: argparse.Namespace) -> int:
    """Exit 0 when every message was taught (or already known), 1 if any failed, 2 on bad input."""
    try:
        cfg_path: str | None = getattr(args, "config", None)
        learner = learner_from(load_config(cfg_path) if cfg_path else None, args.filter, _overrides(args))
    except (ConfigError, PluginError) as exc:
        print(f"spamgate learn: {exc}", file=sys.stderr)
        return 2
    paths = [Path(p) for p in args.paths]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        print(f"spamgate learn: no such file or directory: {', '.join(missing)}", file=sys.stderr)
        return 2
    tally = asyncio.run(_learn_all(paths, args.kind, learner, args.jobs, args.verbose))
    print(
        f"{args.kind}: {tally.learned} learned, {tally.known} already known, "
        f"{tally.skipped} skipped (too big), {tally.failed} failed (filter {args.filter})"
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
    p.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS, help="read [filters.NAME] options")
    p.add_argument("--filter", default=DEFAULT_LEARNER, metavar="NAME",
                   help="the learning filter (default spamassassin)")
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
