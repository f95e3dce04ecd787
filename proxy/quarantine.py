"""Quarantine store: one ``<id>.eml`` plus ``<id>.json`` (envelope, score, reasons) per message.

Files are written to a temporary name, fsynced and renamed, so a stored message is
either complete or absent. A write failure (disk full) raises OSError and the engine
answers 451 instead of accepting: nothing is lost.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import sqlite3
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from spamgate.proxy.quarantine_index import QuarantineIndex, subject_of

__all__ = ["Quarantine", "QuarantineEntry"]


@dataclass(frozen=True)
class QuarantineEntry:
    id: str
    time: float
    session_id: str
    client_ip: str
    mail_from: str
    recipients: list[str]
    score: float
    action: str
    reasons: list[str]
    size: int


log = logging.getLogger("spamgate.quarantine")


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.rename(tmp, path)
    except OSError:
        # A partial file on a full disk would keep it full after the message was refused.
        tmp.unlink(missing_ok=True)
        raise


class Quarantine:
    def __init__(self, directory: str | Path) -> None:
        self.dir = Path(directory)
        self.index = QuarantineIndex(self.dir)

    def _reindex(self, entry: QuarantineEntry | None, qid: str, message: bytes = b"") -> None:
        """Keep the search index in step; the files are the truth, so a failure here only logs."""
        try:
            if entry is None:
                self.index.remove(qid)
            else:
                self.index.add(asdict(entry), subject_of(message))
        except (sqlite3.Error, OSError) as exc:
            log.error("quarantine index %s not updated for id=%s: %s", self.index.path, qid, exc)

    def ensure(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)

    def _store_sync(self, entry: QuarantineEntry, message: bytes) -> None:
        self.ensure()
        _write_atomic(self.dir / f"{entry.id}.eml", message)
        try:
            _write_atomic(self.dir / f"{entry.id}.json", json.dumps(asdict(entry), indent=1).encode())
        except OSError:
            (self.dir / f"{entry.id}.eml").unlink(missing_ok=True)
            raise
        fd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        self._reindex(entry, entry.id, message)

    async def store(
        self,
        message: bytes,
        *,
        session_id: str,
        client_ip: str,
        mail_from: str,
        recipients: list[str],
        score: float,
        action: str,
        reasons: list[str],
    ) -> str:
        qid = f"{time.strftime('%Y%m%d%H%M%S')}-{secrets.token_hex(4)}"
        entry = QuarantineEntry(
            qid, time.time(), session_id, client_ip, mail_from, list(recipients), score, action, reasons, len(message)
        )
        await asyncio.to_thread(self._store_sync, entry, message)
        return qid

    def list(self) -> list[QuarantineEntry]:
        if not self.dir.is_dir():
            return []
        out = []
        for meta in sorted(self.dir.glob("*.json")):
            try:
                out.append(QuarantineEntry(**json.loads(meta.read_text())))
            except (OSError, ValueError, TypeError):
                continue
        return out

    def get(self, qid: str) -> tuple[QuarantineEntry, bytes]:
        if not qid or "/" in qid or qid.startswith("."):
            raise KeyError(qid)
        try:
            entry = QuarantineEntry(**json.loads((self.dir / f"{qid}.json").read_text()))
            return entry, (self.dir / f"{qid}.eml").read_bytes()
        except FileNotFoundError:
            raise KeyError(qid) from None

    def delete(self, qid: str) -> None:
        self.get(qid)
        (self.dir / f"{qid}.eml").unlink(missing_ok=True)
        (self.dir / f"{qid}.json").unlink(missing_ok=True)
        self._reindex(None, qid)

    def drop_recipient(self, qid: str, rcpt: str) -> bool:
        """Forget one recipient (released to them alone); the message goes once nobody is left.

        True if ``rcpt`` was still waiting for this message.
        """
        entry, message = self.get(qid)
        left = [r for r in entry.recipients if r.lower() != rcpt.lower()]
        if len(left) == len(entry.recipients):
            return False
        if not left:
            self.delete(qid)
            return True
        kept = QuarantineEntry(**{**asdict(entry), "recipients": left})
        _write_atomic(self.dir / f"{qid}.json", json.dumps(asdict(kept), indent=1).encode())
        self._reindex(kept, qid, message)
        return True
