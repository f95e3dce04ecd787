"""The ``spamgate`` command line: run, check-config, quarantine, and the tool commands."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import logging
import sys
from typing import Any

from spamgate.proxy import __version__
from spamgate.proxy.config import Config, ConfigError, default_config, load_config
from spamgate.proxy.logs import setup_logging
from spamgate.proxy.pipeline import PluginError, describe

__all__ = ["main"]

# Each module adds its sub-command with register(subparsers) and sets func=run(args) -> int.
COMMAND_MODULES = (
    "spamgate.proxy.tools.quarantine",
    "spamgate.proxy.tools.passwd",
    "spamgate.proxy.tools.audit",
    "spamgate.proxy.tools.cost",
    "spamgate.proxy.tools.learn",
    "spamgate.proxy.tools.dkim_keygen",
    "spamgate.proxy.tools.digest",
)

log = logging.getLogger("spamgate")


def _load(args: argparse.Namespace) -> Config:
    if args.config:
        return load_config(args.config)
    return default_config(maildir=args.maildir, port=args.port)


def cmd_check_config(args: argparse.Namespace) -> int:
    from spamgate.proxy.runtime import SessionCounter
    from spamgate.proxy.server import build_runtime

    try:
        cfg = load_config(args.file)
        runtime = build_runtime(cfg, SessionCounter())
    except (ConfigError, PluginError) as exc:
        print(f"spamgate: config error: {exc}", file=sys.stderr)
        return 1
    print(f"# {args.file}: OK")
    print(json.dumps(cfg.model_dump(mode="json"), indent=2))
    print("# filter order per phase:")
    print(describe(runtime.pipeline))
    asyncio.run(runtime.pipeline.close())
    for warning in _warnings(cfg):
        print(f"spamgate: warning: {warning}", file=sys.stderr)
    return 0


def _warnings(cfg: Config) -> list[str]:
    from spamgate.filters.services.dns import probe
    from spamgate.proxy.server import uses_dns

    out = cfg.warnings()
    if uses_dns(cfg):
        problem = asyncio.run(probe(cfg.dns.resolved()))
        if problem is not None:
            out.append(f"dns: no resolver answers ({problem}): reverse lookups and DNS lists will fail; "
                       "run a local caching resolver (e.g. unbound) and set [dns] nameservers")
    return out


def cmd_run(args: argparse.Namespace) -> int:
    try:
        cfg = _load(args)
    except ConfigError as exc:
        print(f"spamgate: config error: {exc}", file=sys.stderr)
        return 1
    setup_logging(args.log_level or cfg.server.log_level, cfg.server.log_format, worker=args.worker)
    if args.worker is None and args.config and cfg.server.workers > 1:
        from spamgate.proxy.workers import supervise

        return supervise(cfg, args.config, args.log_level)
    return asyncio.run(_run(cfg, args.config, args))


async def _run(cfg: Config, path: str | None, args: argparse.Namespace) -> int:
    from spamgate.proxy.server import Server
    from spamgate.proxy.workers import Seat

    seat = None if args.worker is None else Seat.join(args.worker, args.worker_ports, args.ready_fd)
    try:
        server = Server(cfg, path, seat)
    except (ConfigError, PluginError) as exc:
        log.error("config error: %s", exc)
        return 1
    try:
        await server.serve_forever()
    except OSError as exc:
        log.error("cannot start: %s", exc)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="spamgate",
        description="A transparent anti-spam SMTP proxy in front of your MTA. "
        "It never answers 250 before the backend has.",
    )
    p.add_argument("--version", action="version", version=f"spamgate {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    run = sub.add_parser("run", help="run the proxy in the foreground (logs to stderr)")
    run.add_argument("--config", "-c", metavar="FILE", help="TOML config (default: the embedded demo config: "
                     "127.0.0.1:2525 delivering into ./spamgate-maildir)")
    run.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    run.add_argument("--port", type=int, default=2525, help="embedded default only: listen port (default 2525)")
    run.add_argument("--maildir", default="./spamgate-maildir",
                     help="embedded default only: where mail is delivered (default ./spamgate-maildir)")
    # Set by the [server] workers supervisor on the processes it starts (proxy/workers.py).
    run.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    run.add_argument("--worker-ports", help=argparse.SUPPRESS)
    run.add_argument("--ready-fd", type=int, help=argparse.SUPPRESS)
    run.set_defaults(func=cmd_run)
    chk = sub.add_parser("check-config", help="validate a config file, print it resolved with the filter order")
    chk.add_argument("file", metavar="FILE")
    chk.set_defaults(func=cmd_check_config)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Any = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    return int(func(args))


if __name__ == "__main__":
    sys.exit(main())
