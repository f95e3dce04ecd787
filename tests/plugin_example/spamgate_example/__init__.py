"""Example spamgate filters, written only against the public SDK (``spamgate.filters.sdk``).

* ``example_keyword``: rejects chosen HELO names, chosen recipients at RCPT, tempfails messages whose body
  contains a keyword, scores a spammy word and adds a header to every message.
* ``example_crash``: raises (to show the engine contains it).
* ``example_hang``: never answers (to show the engine's timeout).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from spamgate.filters.sdk import Context, FilterEnv, FilterOptions, Phase, Reply, Symbol, Verdict, parse_options


class KeywordOptions(FilterOptions):
    reject_recipients: tuple[str, ...] = ()
    reject_helo: tuple[str, ...] = ()
    tempfail_keyword: str = "TEMPFAIL-ME"
    spam_word: str = "viagra"
    spam_score: float = 5.0
    header_name: str = "X-Example-Filter"


class KeywordFilter:
    name = "example_keyword"
    phases = frozenset({Phase.HELO, Phase.RCPT, Phase.DATA})
    symbols = frozenset({"EXAMPLE_SPAM_WORD"})

    def __init__(self, name: str, options: Mapping[str, Any], env: FilterEnv) -> None:
        self.name = name
        self.opts = parse_options(KeywordOptions, options)

    async def check(self, phase: Phase, ctx: Context) -> Verdict:
        if phase is Phase.HELO:
            if ctx.session.helo in self.opts.reject_helo:
                return Verdict.reject(Reply(554, "5.7.1", f"HELO {ctx.session.helo} refused by example filter"))
            return Verdict.cont()
        if phase is Phase.RCPT:
            if ctx.envelope.rcpt in self.opts.reject_recipients:
                return Verdict.reject(Reply(550, "5.7.1", f"<{ctx.envelope.rcpt}>: refused by example filter"))
            return Verdict.cont()
        assert ctx.message is not None
        body = ctx.message.body
        if self.opts.tempfail_keyword.encode() in body:
            return Verdict.tempfail(Reply(451, "4.7.1", "Example filter says: try again later"))
        header = [(self.opts.header_name, f"checked by {self.name}")]
        if self.opts.spam_word.encode() in body.lower():
            return Verdict.cont(Symbol("EXAMPLE_SPAM_WORD", self.opts.spam_score, self.opts.spam_word),
                                add_headers=header)
        return Verdict.cont(add_headers=header)

    async def close(self) -> None:
        return None


class CrashFilter:
    name = "example_crash"
    phases = frozenset({Phase.DATA})
    symbols: frozenset[str] = frozenset()

    def __init__(self, name: str, options: Mapping[str, Any], env: FilterEnv) -> None:
        self.name = name
        parse_options(FilterOptions, options)

    async def check(self, phase: Phase, ctx: Context) -> Verdict:
        raise RuntimeError("example_crash always crashes")

    async def close(self) -> None:
        return None


class HangFilter:
    name = "example_hang"
    phases = frozenset({Phase.DATA})
    symbols: frozenset[str] = frozenset()

    def __init__(self, name: str, options: Mapping[str, Any], env: FilterEnv) -> None:
        self.name = name
        parse_options(FilterOptions, options)

    async def check(self, phase: Phase, ctx: Context) -> Verdict:
        await asyncio.sleep(3600)
        return Verdict.cont()

    async def close(self) -> None:
        return None
