"""GateSMTP's command table: aiosmtpd's ``smtp_<VERB>`` methods (or ours), each with ``_before``
first, and the per-connection verb-to-method mapping aiosmtpd dispatches through."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any

from aiosmtpd.smtp import SMTP

__all__ = ["CommandTable", "install"]

Command = Callable[[Any, str | None], Awaitable[None]]


def _track(name: str, own: Mapping[str, Command]) -> Command:
    """aiosmtpd's ``smtp_<COMMAND>`` (or ours), with ``_before`` first (wraps keeps its HELP syntax)."""
    command = own.get(name) or getattr(SMTP, name)
    phase = name[len("smtp_") :].lower()

    if phase == "starttls":

        @functools.wraps(command)
        async def starttls(self: Any, arg: str | None) -> None:
            if await self._before(phase, arg):
                await command(self, arg)
                self._after_starttls(arg)

        return starttls

    @functools.wraps(getattr(SMTP, name))
    async def tracked(self: Any, arg: str | None) -> None:
        if await self._before(phase, arg):
            await command(self, arg)

    return tracked


def install(cls: type, own: Mapping[str, Command]) -> tuple[str, ...]:
    """Put every aiosmtpd command on ``cls`` behind ``_before`` (``own`` replaces some); its verbs."""
    for name in [n for n in dir(SMTP) if n.startswith("smtp_")]:
        setattr(cls, name, _track(name, own))
    return tuple(sorted(n[len("smtp_") :] for n in dir(cls) if n.startswith("smtp_")))


class CommandTable(dict[str, Any]):
    """aiosmtpd's command table (verb to bound method), each verb bound at its first use.

    Binding all ~20 verbs for every connection showed at ~1 % of the CPU; a session uses five.
    aiosmtpd reads the table with ``get`` (dispatch, HELP <verb>) and ``items`` (HELP); the rest
    of the mapping interface answers for every verb too.
    """

    def __init__(self, owner: Any, verbs: tuple[str, ...]) -> None:
        super().__init__()
        self._owner = owner
        self._verbs = verbs

    def __missing__(self, verb: str) -> Any:
        if verb not in self._verbs:
            raise KeyError(verb)
        method = self[verb] = getattr(self._owner, "smtp_" + verb)
        return method

    def get(self, verb: str, default: Any = None) -> Any:
        method = dict.get(self, verb)
        if method is None:
            return self[verb] if verb in self._verbs else default
        return method

    def __contains__(self, verb: object) -> bool:
        return verb in self._verbs

    def __iter__(self) -> Iterator[str]:
        return iter(self._verbs)

    def __len__(self) -> int:
        return len(self._verbs)

    def keys(self) -> Any:
        return list(self._verbs)

    def values(self) -> Any:
        return [self[verb] for verb in self._verbs]

    def items(self) -> Any:
        return [(verb, self[verb]) for verb in self._verbs]
