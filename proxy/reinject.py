"""Re-inject a held message through the backend (quarantine release, console, digest links).

The backend's own reply is returned; the caller removes the message from quarantine only
after it, so a failed release keeps the message.
"""

from __future__ import annotations

import aiosmtplib

from spamgate.proxy.config import Config

__all__ = ["reinject"]


async def reinject(cfg: Config, mail_from: str, rcpts: list[str], message: bytes) -> str:
    if cfg.backend.maildir is not None:
        from spamgate.proxy.backend import ClientFacts
        from spamgate.proxy.maildir import MaildirBackend

        txn = await MaildirBackend(cfg.backend.maildir).begin(ClientFacts("127.0.0.1"))
        await txn.mail(mail_from, [])
        for r in rcpts:
            await txn.rcpt(r, [])
        reply = await txn.data(message)
        return f"{reply.code} {reply.message}"
    b = cfg.backend
    errors, text = await aiosmtplib.send(
        message, sender=mail_from, recipients=rcpts, hostname=b.host, port=b.port, timeout=b.timeout,
        start_tls=False, use_tls=False,
    )
    if errors:
        raise aiosmtplib.SMTPException(f"recipients refused: {errors}")
    return text
