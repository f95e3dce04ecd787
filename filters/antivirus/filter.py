"""The ``antivirus`` filter: every message is scanned by ClamAV's clamd at end of DATA.

* A virus: ``554 5.7.1 Message rejected: virus found (<signature>)``, or with
  ``action = "quarantine"`` the message is held in the engine's quarantine (see
  ``filters.api.QUARANTINE_NOTE``).
* Clean: a zero-weight ``AV_CLEAN`` symbol, so the explanation header shows the scan.
* Larger than ``max_size`` (keep it at or under clamd's ``StreamMaxLength``), or refused
  by clamd for its size: a zero-weight ``AV_SKIPPED_SIZE``, never an error.
* clamd down or slow: :class:`ClamdError` (a ``DependencyError``) is raised and the
  engine applies ``on_error`` (continue with ``ANTIVIRUS_ERROR``, or tempfail 451); the
  pipeline logs the outage once when it starts, as a reminder while it lasts, and once
  when clamd answers again.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field

from spamgate.filters.antivirus.clamd import ClamdClient, ClamdError, ClamdSettings, ScanResult
from spamgate.filters.sdk.api import (
    QUARANTINE_NOTE,
    Context,
    FilterEnv,
    HeaderRemoval,
    Phase,
    Reply,
    Symbol,
    Verdict,
)
from spamgate.filters.sdk.metrics import MetricSpec
from spamgate.filters.sdk.options import FilterOptions, parse_options

__all__ = ["AntivirusFilter", "AntivirusOptions", "virus_reply"]

log = logging.getLogger("spamgate.antivirus")

AV_CLEAN = "AV_CLEAN"
AV_VIRUS = "AV_VIRUS"
AV_SKIPPED_SIZE = "AV_SKIPPED_SIZE"
RESULT_HEADER = "X-Spamgate-Antivirus"

SCANS = MetricSpec(
    "counter", "spamgate_antivirus_scans_total", "Antivirus scans by result (clean, virus, error, skipped)", ("result",)
)
CLAMD_UP = MetricSpec(
    "gauge", "spamgate_antivirus_clamd_up", "1 if clamd answered the last scan or PING, 0 if it failed"
)


class AntivirusOptions(FilterOptions):
    host: str = "127.0.0.1"
    port: int = Field(default=3310, ge=1, le=65535)
    socket: str | None = None
    action: Literal["reject", "quarantine"] = "reject"
    max_size: int = Field(default=25 * 1024 * 1024, gt=0)
    max_connections: int = Field(default=4, ge=1)
    scan_timeout: float = Field(default=8.0, gt=0)
    connect_timeout: float = Field(default=2.0, gt=0)
    virus_score: float = 100.0
    result_header: bool = True


def _safe(text: str, limit: int = 120) -> str:
    """A signature name fit for a one-line SMTP reply and a header (clamd's names are ASCII anyway)."""
    cleaned = "".join(c if 32 < ord(c) < 127 else "_" for c in text.strip())
    return cleaned[:limit] or "unknown"


def virus_reply(signature: str) -> Reply:
    return Reply(554, "5.7.1", f"Message rejected: virus found ({_safe(signature)})")


class AntivirusFilter:
    """Scan the message with clamd; see the module docstring."""

    phases = frozenset({Phase.DATA})
    symbols = frozenset({AV_CLEAN, AV_VIRUS, AV_SKIPPED_SIZE})

    def __init__(self, name: str, options: Mapping[str, Any], env: FilterEnv) -> None:
        self.name = name
        self.opts = o = parse_options(AntivirusOptions, options)
        self.settings = ClamdSettings(o.host, o.port, o.socket, o.scan_timeout, o.connect_timeout, o.max_connections)
        # Built once and reused; it also bounds the connections open to clamd.
        self.client = ClamdClient(self.settings)
        self._removals = (HeaderRemoval(RESULT_HEADER),) if o.result_header else ()
        self._scans = SCANS.counter(env.metrics)
        self._up = CLAMD_UP.gauge(env.metrics)
        for result in ("clean", "virus", "error", "skipped"):
            self._scans.labels(result)  # every result is exported from the start: dashboards never see "no data"

    def _headers(self, value: str) -> list[tuple[str, str]]:
        return [(RESULT_HEADER, value)] if self.opts.result_header else []

    async def check(self, phase: Phase, ctx: Context) -> Verdict:
        msg = ctx.message
        if msg is None:
            return Verdict.cont()
        sid = ctx.session.session_id
        size = len(msg.raw)
        if size > self.opts.max_size:
            return self._skipped(sid, f"{size} bytes > max_size {self.opts.max_size}")
        try:
            result = await self.client.scan(msg.raw)
        except ClamdError as exc:
            self._scans.labels("error").inc()
            self._up.set(0)
            log.debug("filter=%s result=error error=%s", self.name, exc)
            raise
        self._up.set(1)
        if result.status == "size":
            return self._skipped(sid, f"{size} bytes refused by clamd (StreamMaxLength)")
        if result.status == "virus":
            return self._virus(ctx, result)
        self._scans.labels("clean").inc()
        log.debug("filter=%s result=clean size=%d", self.name, size)
        return Verdict.cont(
            Symbol(AV_CLEAN, 0.0, f"clamd {self.settings.address}"),
            add_headers=self._headers(f"clean (clamd at {self.settings.address})"),
            remove_headers=self._removals,
        )

    def _skipped(self, sid: str, detail: str) -> Verdict:
        self._scans.labels("skipped").inc()
        log.info("filter=%s result=skipped reason=size detail=%r", self.name, detail)
        return Verdict.cont(
            Symbol(AV_SKIPPED_SIZE, 0.0, detail),
            add_headers=self._headers(f"not scanned ({detail})"),
            remove_headers=self._removals,
        )

    def _virus(self, ctx: Context, result: ScanResult) -> Verdict:
        self._scans.labels("virus").inc()
        sig = _safe(result.signature)
        log.warning(
            "filter=%s result=virus signature=%s action=%s", self.name, sig, self.opts.action,
        )
        reply = virus_reply(sig)
        symbol = Symbol(AV_VIRUS, self.opts.virus_score, sig)
        if self.opts.action == "quarantine":
            ctx.notes[QUARANTINE_NOTE] = (self.name, reply)
            return Verdict.cont(symbol, add_headers=self._headers(f"virus found ({sig})"),
                                remove_headers=self._removals)
        return Verdict.reject(reply, symbol)

    async def ready(self) -> bool:
        """/readyz: clamd answers PING (and the gauge learns of it)."""
        try:
            await self.client.ping()
        except ClamdError:
            self._up.set(0)
            return False
        self._up.set(1)
        return True

    async def close(self) -> None:
        """Nothing to release: every request opens and closes its own connection."""
