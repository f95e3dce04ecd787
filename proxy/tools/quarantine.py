"""``spamgate quarantine list | show ID | release ID | delete ID``."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from dataclasses import asdict
from typing import Any

import aiosmtplib

from spamgate.proxy.config import Config, ConfigError, load_config
from spamgate.proxy.quarantine import Quarantine
from spamgate.proxy.reinject import reinject

__all__ = ["register", "reinject"]


def _store(args: argparse.Namespace) -> tuple[Quarantine, Config | None]:
    cfg = load_config(args.config) if args.config else None
    if args.dir:
        return Quarantine(args.dir), cfg
    if cfg is None:
        raise ConfigError("give --config FILE or --dir DIR")
    from pathlib import Path

    return Quarantine(cfg.pipeline.quarantine_dir or str(Path(cfg.server.state_dir) / "quarantine")), cfg


def run(args: argparse.Namespace) -> int:
    try:
        store, cfg = _store(args)
    except ConfigError as exc:
        print(f"spamgate: {exc}", file=sys.stderr)
        return 1
    try:
        if args.action == "list":
            entries = store.list()
            if args.json:
                print(json.dumps([asdict(e) for e in entries], indent=1))
            for e in entries if not args.json else []:
                print(f"{e.id}  score={e.score:6.1f}  from=<{e.mail_from}>  to={','.join(e.recipients)}  "
                      f"reasons={','.join(e.reasons[:4])}")
            return 0
        entry, message = store.get(args.id)
        if args.action == "show":
            print(json.dumps(asdict(entry), indent=1))
            sys.stdout.flush()
            sys.stdout.buffer.write(b"\n" + message)
            return 0
        if args.action == "delete":
            store.delete(args.id)
            print(f"deleted {args.id}")
            return 0
        if cfg is None:
            print("spamgate: release needs --config FILE (for the backend)", file=sys.stderr)
            return 1
        reply = asyncio.run(reinject(cfg, entry.mail_from, entry.recipients, message))
        if args.learn_ham:
            from spamgate.filters.sdk.outage import DependencyError
            from spamgate.proxy.pipeline import PluginError, learner_from

            store.delete(args.id)
            try:
                learned = asyncio.run(learner_from(cfg).learn(message, "ham"))
            except (DependencyError, PluginError) as exc:
                print(f"spamgate: released {args.id}, but not learned as ham: {exc}", file=sys.stderr)
                return 1
            print(f"released {args.id}: backend said {reply}; learned as ham: {learned}")
            return 0
        store.delete(args.id)
        print(f"released {args.id}: backend said {reply}")
        return 0
    except KeyError:
        print(f"spamgate: no quarantined message {args.id!r}", file=sys.stderr)
        return 1
    except (aiosmtplib.SMTPException, OSError) as exc:
        print(f"spamgate: release failed, message kept: {exc}", file=sys.stderr)
        return 1


def register(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser("quarantine", help="list, show, release or delete quarantined messages")
    p.add_argument("action", choices=["list", "show", "release", "delete"])
    p.add_argument("id", nargs="?", default="", help="message id (for show, release, delete)")
    p.add_argument("--config", "-c", metavar="FILE", help="spamgate config (quarantine dir and backend)")
    p.add_argument("--dir", metavar="DIR", help="quarantine directory (overrides the config)")
    p.add_argument("--json", action="store_true", help="machine-readable list")
    p.add_argument("--learn-ham", action="store_true", help="on release, teach the message to spamd as ham")
    p.set_defaults(func=run)
