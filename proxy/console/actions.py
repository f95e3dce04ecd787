"""What the console does to a held message: release (optionally learning it as ham), delete.

Release re-injects through the backend exactly as ``spamgate quarantine release`` does,
and the message leaves the quarantine only after the backend accepted it: a failed
release keeps it held. Quarantine file and index calls block, so they run in a thread.
"""

from __future__ import annotations

import asyncio

import aiosmtplib

from spamgate.proxy.config import Config
from spamgate.proxy.errors import ToolError
from spamgate.proxy.quarantine import Quarantine
from spamgate.proxy.reinject import reinject

__all__ = ["ActionError", "delete", "release", "release_to"]

_release_lock = asyncio.Lock()


class ActionError(ToolError):
    """The action could not be done; the message says why (shown to the admin, logged)."""


async def release(cfg: Config, store: Quarantine, qid: str, *, learn_ham: bool = False) -> str:
    """Re-inject to every recipient, then remove; returns the backend's answer (and learning's)."""
    async with _release_lock:  # two clicks on one message must not deliver it twice
        try:
            entry, message = await asyncio.to_thread(store.get, qid)
        except KeyError:
            raise ActionError("no such message (already released or deleted)") from None
        try:
            reply = await reinject(cfg, entry.mail_from, entry.recipients, message)
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise ActionError(f"backend refused the release, message kept: {exc}") from None
        await asyncio.to_thread(store.delete, qid)
    if not learn_ham:
        return reply
    from spamgate.filters.sdk.outage import DependencyError
    from spamgate.proxy.pipeline import PluginError, learner_from

    try:
        learned = await learner_from(cfg).learn(message, "ham")
    except (DependencyError, PluginError) as exc:
        raise ActionError(f"released, but not learned as ham: {exc}") from None
    return f"{reply}; learned as ham: {learned}"


async def release_to(cfg: Config, store: Quarantine, qid: str, rcpt: str) -> str:
    """Release to one recipient only (a digest link); refused if they no longer wait for it."""
    async with _release_lock:
        try:
            entry, message = await asyncio.to_thread(store.get, qid)
        except KeyError:
            raise ActionError("this message was already released or deleted") from None
        if rcpt.lower() not in (r.lower() for r in entry.recipients):
            raise ActionError("this message was already released to you")
        try:
            reply = await reinject(cfg, entry.mail_from, [rcpt], message)
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise ActionError(f"the mail server refused the release, message kept: {exc}") from None
        await asyncio.to_thread(store.drop_recipient, qid, rcpt)
        return reply


async def delete(store: Quarantine, qid: str) -> None:
    try:
        await asyncio.to_thread(store.delete, qid)
    except KeyError:
        raise ActionError("no such message (already released or deleted)") from None
