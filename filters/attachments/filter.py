"""The ``attachments`` filter: refuse or score dangerous attachments at end of DATA.

The parsing and the policy are pure functions (``mime``, ``archives``, ``detect``,
``rules``); this module turns options into a :class:`Policy`, runs it off the event
loop (parsing a large message is CPU work) and findings into a verdict: with
``block_action = "reject"`` (the default) a blocked file is refused with
``554 5.7.1 Message rejected: attachment "<name>" ...`` naming it; every other
finding is a scored symbol.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, field_validator

from spamgate.filters.attachments.archives import ArchiveLimits
from spamgate.filters.attachments.mime import MimeLimits
from spamgate.filters.attachments.rules import (
    BLOCKED,
    DEFAULT_BLOCKED,
    DEFAULT_MACRO,
    DEFAULT_SCORES,
    Finding,
    Policy,
    inspect_message,
)
from spamgate.filters.sdk.api import Context, FilterEnv, Phase, Reply, Symbol, Verdict
from spamgate.filters.sdk.metrics import MetricSpec
from spamgate.filters.sdk.options import FilterOptions, parse_options

__all__ = ["AttachmentsFilter", "AttachmentsOptions"]

log = logging.getLogger("spamgate.attachments")

RESULTS = MetricSpec(
    "counter", "spamgate_attachments_findings_total", "Attachment policy findings by symbol", ("symbol",)
)


def _extension_list(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return tuple(str(v).lower().lstrip(".").strip() for v in value)
    return value


class AttachmentsOptions(FilterOptions):
    block_extensions: tuple[str, ...] = DEFAULT_BLOCKED
    macro_extensions: tuple[str, ...] = DEFAULT_MACRO
    block_action: Literal["reject", "score"] = "reject"
    scores: dict[str, float] = Field(default_factory=dict)
    scan_archives: bool = True
    max_depth: int = Field(default=20, ge=1)
    max_parts: int = Field(default=500, ge=1)
    max_decoded_size: int = Field(default=50 * 1024 * 1024, gt=0)
    archive_depth: int = Field(default=2, ge=1, le=10)
    max_archive_members: int = Field(default=1000, ge=1)
    max_nested_size: int = Field(default=10 * 1024 * 1024, gt=0)
    max_uncompressed_size: int = Field(default=200 * 1024 * 1024, gt=0)
    max_ratio: float = Field(default=250.0, gt=1)

    _lists = field_validator("block_extensions", "macro_extensions", mode="before")(_extension_list)

    @field_validator("scores")
    @classmethod
    def _known(cls, v: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(v) - set(DEFAULT_SCORES))
        if unknown:
            raise ValueError(f"unknown symbol(s) {', '.join(unknown)}; known: {', '.join(DEFAULT_SCORES)}")
        return v


def _printable(name: str, limit: int = 80) -> str:
    """A file name fit for a one-line ASCII SMTP reply."""
    text = "".join(c if 32 <= ord(c) < 127 and c != '"' else "?" for c in name)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class AttachmentsFilter:
    """Apply the attachment policy; see the module docstring."""

    phases = frozenset({Phase.DATA})
    symbols = frozenset(DEFAULT_SCORES)

    def __init__(self, name: str, options: Mapping[str, Any], env: FilterEnv) -> None:
        self.name = name
        self._results = RESULTS.counter(env.metrics)
        for symbol in DEFAULT_SCORES:
            self._results.labels(symbol)  # exported from the start
        o = self.opts = parse_options(AttachmentsOptions, options)
        self.scores = {**DEFAULT_SCORES, **o.scores}
        self.policy = Policy(
            blocked=frozenset(o.block_extensions),
            macro=frozenset(o.macro_extensions),
            scan_archives=o.scan_archives,
            mime=MimeLimits(o.max_depth, o.max_parts, o.max_decoded_size),
            archive=ArchiveLimits(
                o.archive_depth, o.max_archive_members, o.max_nested_size, o.max_uncompressed_size, o.max_ratio
            ),
        )

    async def check(self, phase: Phase, ctx: Context) -> Verdict:
        if ctx.message is None:
            return Verdict.cont()
        findings = await asyncio.to_thread(inspect_message, ctx.message.raw, self.policy)
        return self.verdict(findings, ctx.session.session_id)

    def verdict(self, findings: list[Finding], session_id: str = "-") -> Verdict:
        symbols = []
        for f in findings:
            self._results.labels(f.symbol).inc()
            score = self.scores[f.symbol]
            if f.symbol == BLOCKED and self.opts.block_action == "reject":
                score = 0.0  # the reply is the consequence; don't count it twice
            symbols.append(Symbol(f.symbol, score, f"{_printable(f.file, 120)}: {f.detail}"))
            log.info("filter=%s symbol=%s file=%r detail=%r", self.name, f.symbol,
                     f.file, f.detail)
        blocked = [f for f in findings if f.block]
        if blocked and self.opts.block_action == "reject":
            first = blocked[0]
            why = first.detail.split(" (named", 1)[0]
            reply = Reply(554, "5.7.1", f'Message rejected: attachment "{_printable(first.file)}" not allowed ({why})')
            return Verdict.reject(reply, *symbols)
        return Verdict.cont(*symbols)

    async def close(self) -> None:
        """Nothing to release."""
