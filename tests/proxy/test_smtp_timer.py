"""GateSMTP's idle timeout: every command moves the deadline without a new timer, and the
connection still times out at the deadline (aiosmtpd cancelled and re-created its timer per command)."""

from __future__ import annotations

import asyncio
from typing import Any

from spamgate.filters.sdk.runner import Pipeline
from spamgate.proxy.config import parse_config
from spamgate.proxy.maildir import MaildirBackend
from spamgate.proxy.runtime import Runtime, SessionCounter
from spamgate.proxy.smtp import GateSMTP


def _gate(tmp_path: Any, fired: list[float]) -> GateSMTP:
    cfg = parse_config({"backend": {"url": f"maildir:{tmp_path}/md"}, "limits": {"command_timeout": 0.2}})
    rt = Runtime(cfg, Pipeline([]), MaildirBackend(f"{tmp_path}/md"), SessionCounter())
    gate = GateSMTP(rt, cfg.listen[0].label, None)
    loop = asyncio.get_running_loop()
    gate._timeout_cb = lambda: fired.append(loop.time())  # type: ignore[method-assign]
    return gate


async def test_a_command_moves_the_deadline_without_a_new_timer(tmp_path: Any) -> None:
    fired: list[float] = []
    gate = _gate(tmp_path, fired)
    loop = asyncio.get_running_loop()
    gate._reset_timeout()
    first = gate._timeout_handle
    await asyncio.sleep(0.1)
    gate._reset_timeout()  # a command: the deadline is now 0.2 s from here
    deadline = loop.time() + 0.2
    assert gate._timeout_handle is first
    await asyncio.sleep(0.15)  # past the first timer: it re-armed itself instead of timing out
    assert fired == []
    await asyncio.sleep(0.2)
    assert len(fired) == 1 and fired[0] >= deadline - 0.01


async def test_a_shorter_timeout_rearms_at_once(tmp_path: Any) -> None:
    fired: list[float] = []
    gate = _gate(tmp_path, fired)
    gate._reset_timeout(30)  # e.g. DATA's timeout
    gate._reset_timeout(0.05)  # then a shorter one: must not wait for the 30 s timer
    await asyncio.sleep(0.15)
    assert len(fired) == 1
    gate._timeout_handle.cancel()  # type: ignore[union-attr]


async def test_no_timeout_while_commands_keep_coming(tmp_path: Any) -> None:
    fired: list[float] = []
    gate = _gate(tmp_path, fired)
    for _ in range(8):
        gate._reset_timeout()
        await asyncio.sleep(0.05)
    assert fired == []
    await asyncio.sleep(0.3)
    assert len(fired) == 1
