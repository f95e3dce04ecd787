"""An in-memory backend and tiny filters for driving the transaction controller without sockets."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spamgate.filters.sdk.api import Context, Phase, Reply, Symbol, Verdict
from spamgate.filters.sdk.runner import FilterSettings, Pipeline, Slot
from spamgate.proxy import replies
from spamgate.proxy.backend import BackendReply, ClientFacts
from spamgate.proxy.config import parse_config
from spamgate.proxy.errors import BackendError
from spamgate.proxy.quarantine import Quarantine
from spamgate.proxy.rdns import ClientNames
from spamgate.proxy.runtime import Runtime, SessionCounter
from spamgate.proxy.session import SessionState
from spamgate.proxy.transaction import TransactionController

OK = BackendReply(250, "2.0.0 Ok")
QUEUED = BackendReply(250, "2.0.0 Ok: queued as ABC123")
Script = dict[str, BackendReply | BackendError]


class FakeTransaction:
    """Records every command it gets; replies come from the backend's script (default 250)."""

    def __init__(self, backend: FakeBackend) -> None:
        self.backend = backend

    async def _reply(self, stage: str, record: tuple[str, Any]) -> BackendReply:
        self.backend.commands.append(record)
        scripted = self.backend.script.get(stage, QUEUED if stage == "data" else OK)
        if isinstance(scripted, BackendError):
            raise scripted
        return scripted

    async def mail(self, sender: str, options: list[str]) -> BackendReply:
        self.backend.options.append(options)
        return await self._reply("mail", ("MAIL", sender))

    async def rcpt(self, rcpt: str, options: list[str]) -> BackendReply:
        self.backend.options.append(options)
        return await self._reply("rcpt", ("RCPT", rcpt))

    async def data(self, message: bytes) -> BackendReply:
        self.backend.messages.append(message)
        return await self._reply("data", ("DATA", len(message)))

    async def finish(self, reset: bool) -> None:
        self.backend.commands.append(("RSET", None) if reset else ("DONE", None))


@dataclass
class FakeBackend:
    script: Script = field(default_factory=dict)
    commands: list[tuple[str, Any]] = field(default_factory=list)
    messages: list[bytes] = field(default_factory=list)
    options: list[list[str]] = field(default_factory=list)  # of each MAIL and RCPT
    clients: list[ClientFacts] = field(default_factory=list)

    async def begin(self, client: ClientFacts) -> FakeTransaction:
        self.clients.append(client)
        scripted = self.script.get("begin")
        if isinstance(scripted, BackendError):
            raise scripted
        return FakeTransaction(self)

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        pass

    @property
    def verbs(self) -> list[str]:
        return [c[0] for c in self.commands]


def unavailable(stage: str) -> BackendError:
    return BackendError(replies.BACKEND_UNAVAILABLE, "connect", f"refused at {stage}")


def timeout() -> BackendError:
    return BackendError(replies.BACKEND_TIMEOUT, "timeout", "slow")


class OneVerdict:
    """One phase, one verdict (or a function of the context): the smallest real filter."""


    def __init__(self, name: str, phase: Phase, verdict: Verdict | Callable[[Context], Verdict]) -> None:
        self.name = name
        self.phases = frozenset({phase})
        self._verdict = verdict
        syms = verdict.symbols if isinstance(verdict, Verdict) else ()
        self.symbols = frozenset(s.name for s in syms)

    async def check(self, phase: Phase, ctx: Context) -> Verdict:
        return self._verdict(ctx) if callable(self._verdict) else self._verdict

    async def close(self) -> None:
        pass


def scoring(score: float, name: str = "SPAMMY") -> OneVerdict:
    return OneVerdict("scorer", Phase.DATA, Verdict.cont(Symbol(name, score)))


def rejecting(phase: Phase, reply: Reply, name: str = "blocker") -> OneVerdict:
    return OneVerdict(name, phase, Verdict.reject(reply))


@dataclass
class FakeRdns:
    names: ClientNames
    asked: list[str] = field(default_factory=list)

    async def lookup_bounded(self, ip: str) -> ClientNames:
        self.asked.append(ip)
        return self.names


class BrokenQuarantine(Quarantine):
    async def store(self, message: bytes, **meta: Any) -> str:
        raise OSError(28, "No space left on device")


@dataclass
class Harness:
    ctl: TransactionController
    backend: FakeBackend

    @property
    def state(self) -> SessionState:
        return self.ctl.state

    async def envelope(self, *rcpts: str, sender: str = "sender@example.org") -> None:
        """MAIL and RCPT that must all succeed."""
        assert (await self.ctl.on_mail(sender, [])) == OK
        for r in rcpts:
            assert (await self.ctl.on_rcpt(r, [])) == OK


def harness(
    *filters: OneVerdict | tuple[OneVerdict, FilterSettings],
    config: dict[str, Any] | None = None,
    role: str = "mx",
    login: str | None = None,
    script: Script | None = None,
    quarantine: Quarantine | Path | None = None,
    rdns: Any = None,
) -> Harness:
    cfg = parse_config({"server": {"hostname": "gate.test"}, **(config or {})}, "<test>")
    slots = [Slot(f[0], f[1]) if isinstance(f, tuple) else Slot(f) for f in filters]
    backend = FakeBackend(script or {})
    store = Quarantine(quarantine) if isinstance(quarantine, Path) else quarantine
    runtime = Runtime(cfg, Pipeline(slots), backend, SessionCounter(), quarantine=store, rdns=rdns)
    state = SessionState(id="s1", runtime=runtime, listener="test", role=role,
                         peer_ip="192.0.2.7", peer_port=40000, helo="client.example", login=login)
    return Harness(TransactionController(state), backend)
