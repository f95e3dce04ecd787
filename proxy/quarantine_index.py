"""A SQLite index of the quarantine's metadata, so a search over 100,000 held messages is a lookup.

The ``.eml``/``.json`` files stay the source of truth; this index (``index.sqlite3`` in
the quarantine directory) is kept in step by :class:`proxy.quarantine.Quarantine` on
store, delete and release, and rebuilt from the files when it is missing. Every call is
blocking: callers on the event loop run it with ``asyncio.to_thread``. Each call opens
its own connection, so threads and processes (the proxy, ``spamgate quarantine``,
``spamgate digest``) share the file safely; WAL lets readers run beside a writer.

Searches are shaped so that SQLite answers each criterion from an index: sender,
recipient and reason are case-insensitive prefix matches (range scans on b-trees),
the subject a substring match through an FTS5 trigram index, time a range on ``time``.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import logging
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["IndexRow", "QuarantineIndex", "Search", "subject_of"]

log = logging.getLogger("spamgate.quarantine")

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE msg(id TEXT PRIMARY KEY, time REAL NOT NULL, sender TEXT NOT NULL, subject TEXT NOT NULL,
                 score REAL NOT NULL, action TEXT NOT NULL, reasons TEXT NOT NULL, recipients TEXT NOT NULL,
                 size INTEGER NOT NULL);
CREATE INDEX msg_time ON msg(time);
CREATE INDEX msg_sender ON msg(sender, time);
CREATE TABLE rcpt(addr TEXT NOT NULL, id TEXT NOT NULL, time REAL NOT NULL, PRIMARY KEY(addr, id)) WITHOUT ROWID;
CREATE INDEX rcpt_id ON rcpt(id);
CREATE TABLE reason(name TEXT NOT NULL, id TEXT NOT NULL, PRIMARY KEY(name, id)) WITHOUT ROWID;
CREATE INDEX reason_id ON reason(id);
CREATE VIRTUAL TABLE subj USING fts5(subject, tokenize='trigram');  -- rowid = msg.rowid
"""
# The trigram tokenizer cannot match fewer than three characters.
_MIN_TRIGRAM = 3


@dataclass(frozen=True)
class IndexRow:
    id: str
    time: float
    sender: str
    subject: str
    score: float
    action: str
    reasons: list[str]
    recipients: list[str]
    size: int


@dataclass(frozen=True)
class Search:
    """What the console's search form asks; empty fields match everything."""

    sender: str = ""
    recipient: str = ""
    subject: str = ""
    reason: str = ""
    since: float | None = None
    until: float | None = None
    limit: int = 50
    offset: int = 0


def subject_of(message: bytes) -> str:
    """The decoded Subject of a stored message (headers only are parsed)."""
    try:
        head = email.parser.BytesHeaderParser(policy=email.policy.default).parsebytes(message[:65536])
        return " ".join(str(head.get("subject", "") or "").split())[:300]
    except Exception:  # a malformed header must not keep a message out of the index
        return ""


def _prefix(column: str, value: str) -> tuple[str, list[Any]]:
    """A case-insensitive prefix match as a b-tree range (LIKE would not use the index)."""
    v = value.strip().lower()
    return f"{column} >= ? AND {column} < ?", [v, v + "\uffff"]


class QuarantineIndex:
    def __init__(self, directory: str | Path) -> None:
        self.dir = Path(directory)
        self.path = self.dir / "index.sqlite3"
        self._ready = False

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        if not self._ready:
            self._open()
        con = sqlite3.connect(self.path, timeout=10)
        try:
            with con:
                yield con
        finally:
            con.close()

    def _open(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        fresh = not self.path.exists()
        con = sqlite3.connect(self.path, timeout=10)
        try:
            con.execute("PRAGMA journal_mode=WAL")
            version = con.execute("PRAGMA user_version").fetchone()[0]
            if fresh or version != SCHEMA_VERSION:
                with con:
                    for table in ("msg", "rcpt", "reason", "subj"):
                        con.execute(f"DROP TABLE IF EXISTS {table}")
                    con.executescript(_SCHEMA)
                    con.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                    count = self._rebuild(con)
                log.info("quarantine index %s built from the files: %d messages", self.path, count)
        finally:
            con.close()
        self._ready = True

    def _rebuild(self, con: sqlite3.Connection) -> int:
        count = 0
        for meta in self.dir.glob("*.json"):
            try:
                entry = json.loads(meta.read_text())
                with open(meta.with_suffix(".eml"), "rb") as fh:
                    subject = subject_of(fh.read(65536))
            except (OSError, ValueError):
                continue
            self._insert(con, entry, subject)
            count += 1
        return count

    @staticmethod
    def _insert(con: sqlite3.Connection, e: dict[str, Any], subject: str) -> None:
        qid = e["id"]
        QuarantineIndex._delete(con, qid)
        cur = con.execute(
            "INSERT INTO msg VALUES (?,?,?,?,?,?,?,?,?)",
            (qid, e["time"], e["mail_from"].lower(), subject, e["score"], e["action"], json.dumps(e["reasons"]),
             json.dumps(e["recipients"]), e["size"]),
        )  # fmt: skip
        con.executemany("INSERT OR IGNORE INTO rcpt VALUES (?,?,?)",
                        [(r.lower(), qid, e["time"]) for r in e["recipients"]])
        con.executemany("INSERT OR IGNORE INTO reason VALUES (?,?)", [(r.lower(), qid) for r in e["reasons"]])
        con.execute("INSERT INTO subj(rowid, subject) VALUES (?, ?)", (cur.lastrowid, subject))

    @staticmethod
    def _delete(con: sqlite3.Connection, qid: str) -> None:
        row = con.execute("SELECT rowid FROM msg WHERE id = ?", (qid,)).fetchone()
        if row is None:
            return
        con.execute("DELETE FROM subj WHERE rowid = ?", row)
        for table in ("msg", "rcpt", "reason"):
            con.execute(f"DELETE FROM {table} WHERE id = ?", (qid,))

    def add(self, entry: dict[str, Any], subject: str) -> None:
        with self._db() as con:
            self._insert(con, entry, subject)

    def add_many(self, items: Iterable[tuple[dict[str, Any], str]]) -> None:
        with self._db() as con:
            for entry, subject in items:
                self._insert(con, entry, subject)

    def remove(self, qid: str) -> None:
        with self._db() as con:
            self._delete(con, qid)

    def search(self, q: Search) -> tuple[list[IndexRow], int]:
        """One page of matches, newest first, and how many match in all."""
        where, args = self._where(q)
        sql_where = " AND ".join(where) or "1"
        with self._db() as con:
            total = con.execute(f"SELECT count(*) FROM msg m WHERE {sql_where}", args).fetchone()[0]
            rows = con.execute(
                f"SELECT id, time, sender, subject, score, action, reasons, recipients, size FROM msg m "
                f"WHERE {sql_where} ORDER BY m.time DESC, m.id DESC LIMIT ? OFFSET ?",
                [*args, q.limit, q.offset],
            ).fetchall()
        return [IndexRow(r[0], r[1], r[2], r[3], r[4], r[5], json.loads(r[6]), json.loads(r[7]), r[8])
                for r in rows], total  # fmt: skip

    def explain(self, q: Search) -> list[str]:
        """SQLite's query plan for a search's page query (for tests and benchmarks)."""
        where, args = self._where(q)
        sql_where = " AND ".join(where) or "1"
        with self._db() as con:
            plan = con.execute(
                f"EXPLAIN QUERY PLAN SELECT id FROM msg m WHERE {sql_where} ORDER BY m.time DESC, m.id DESC "
                "LIMIT ? OFFSET ?", [*args, q.limit, q.offset],
            ).fetchall()  # fmt: skip
        return [str(row[-1]) for row in plan]

    @staticmethod
    def _where(q: Search) -> tuple[list[str], list[Any]]:
        where: list[str] = []
        args: list[Any] = []
        if q.sender.strip():
            clause, a = _prefix("m.sender", q.sender)
            where.append(clause)
            args += a
        if q.recipient.strip():
            clause, a = _prefix("addr", q.recipient)
            where.append(f"m.id IN (SELECT id FROM rcpt WHERE {clause})")
            args += a
        if q.reason.strip():
            clause, a = _prefix("name", q.reason)
            where.append(f"m.id IN (SELECT id FROM reason WHERE {clause})")
            args += a
        subject = q.subject.strip()
        if len(subject) >= _MIN_TRIGRAM:
            where.append("m.rowid IN (SELECT rowid FROM subj WHERE subj MATCH ?)")
            args.append('"' + subject.replace('"', '""') + '"')
        elif subject:
            where.append("m.subject LIKE ? ESCAPE '\\'")
            args.append("%" + subject.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%")
        if q.since is not None:
            where.append("m.time >= ?")
            args.append(q.since)
        if q.until is not None:
            where.append("m.time < ?")
            args.append(q.until)
        return where, args

    def since(self, t: float) -> list[IndexRow]:
        """Everything held at or after ``t`` (oldest first), for the digest."""
        with self._db() as con:
            rows = con.execute(
                "SELECT id, time, sender, subject, score, action, reasons, recipients, size FROM msg "
                "WHERE time >= ? ORDER BY time", (t,),
            ).fetchall()  # fmt: skip
        return [IndexRow(r[0], r[1], r[2], r[3], r[4], r[5], json.loads(r[6]), json.loads(r[7]), r[8])
                for r in rows]  # fmt: skip
