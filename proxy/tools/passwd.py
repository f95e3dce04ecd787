"""``spamgate passwd add|remove|list``: manage the argon2id password file.

The file is rewritten atomically (a temporary file in the same directory, fsync,
rename) with mode 0600, keeping comments and the order of the other users; the
running spamgate notices the change by itself.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher

from spamgate.proxy.auth.credentials import PasswordFileError, parse_password_file, valid_username

__all__ = ["register", "run"]

DEFAULT_FILE = "/etc/spamgate/passwd"


def register(sub: argparse._SubParsersAction[Any]) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        "passwd",
        help="manage the SMTP AUTH password file (argon2id)",
        description="Add, remove or list users of the [auth] password_file. "
        "'add' reads the password from stdin when stdin is not a terminal, otherwise prompts twice.",
    )
    p.set_defaults(func=run)
    actions = p.add_subparsers(dest="passwd_action", required=True, metavar="{add,remove,list}")
    for name, help_text in (
        ("add", "add a user or change their password"),
        ("remove", "remove a user"),
        ("list", "list the users"),
    ):
        a = actions.add_parser(name, help=help_text)
        if name != "list":
            a.add_argument("user", help="login name, e.g. alice@example.edu")
        a.add_argument("--file", default=DEFAULT_FILE, help=f"password file (default {DEFAULT_FILE})")
    return p


def _read_password(user: str) -> str:
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass(f"Password for {user}: ")
    if getpass.getpass("Again: ") != first:
        raise ValueError("passwords do not match")
    return first


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _user_of(line: str) -> str | None:
    s = line.strip()
    if not s or s.startswith("#") or ":" not in s:
        return None
    return s.split(":", 1)[0].lower()


def add_user(path: Path, user: str, password: str, hasher: PasswordHasher | None = None) -> bool:
    """Set ``user``'s password; True if the user is new."""
    if not valid_username(user):
        raise ValueError(f"invalid user name {user!r} (no spaces, colons or control characters)")
    if not password:
        raise ValueError("empty password")
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    parse_password_file("\n".join(lines), str(path))
    entry = f"{user}:{(hasher or PasswordHasher()).hash(password)}"
    new = True
    for i, line in enumerate(lines):
        if _user_of(line) == user.lower():
            lines[i], new = entry, False
            break
    else:
        lines.append(entry)
    _write_atomically(path, "\n".join(lines) + "\n")
    return new


def remove_user(path: Path, user: str) -> bool:
    """Remove ``user``; False if they were not there."""
    lines = path.read_text(encoding="utf-8").splitlines()
    kept = [line for line in lines if _user_of(line) != user.lower()]
    if len(kept) == len(lines):
        return False
    _write_atomically(path, "\n".join(kept) + "\n" if kept else "")
    return True


def list_users(path: Path) -> list[str]:
    return [line.strip().split(":", 1)[0] for line in path.read_text(encoding="utf-8").splitlines() if _user_of(line)]


def run(args: argparse.Namespace) -> int:
    path = Path(args.file)
    try:
        if args.passwd_action == "add":
            new = add_user(path, args.user, _read_password(args.user))
            print(f"{'added' if new else 'updated'} {args.user} in {path}")
        elif args.passwd_action == "remove":
            if not remove_user(path, args.user):
                print(f"spamgate passwd: no user {args.user} in {path}", file=sys.stderr)
                return 1
            print(f"removed {args.user} from {path}")
        else:
            for user in list_users(path):
                print(user)
    except (OSError, ValueError, PasswordFileError, UnicodeDecodeError) as exc:
        print(f"spamgate passwd: {exc}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, EOFError):
        return 130
    return 0
