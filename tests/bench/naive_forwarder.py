"""The naive baseline: an aiosmtpd server whose handle_DATA forwards each message with
aiosmtplib (a new backend connection per message) and answers with the backend's reply.
No filtering, no pool, no logging, no metrics. From ../shared/bench-peers/naive_proxy.py.

usage: naive_forwarder.py LISTEN_PORT BACKEND_PORT
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import aiosmtplib
from aiosmtpd.smtp import SMTP

LISTEN, BACKEND = int(sys.argv[1]), int(sys.argv[2])


class ForwardHandler:
    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        try:
            errors, reply = await aiosmtplib.send(
                envelope.original_content, sender=envelope.mail_from, recipients=envelope.rcpt_tos,
                hostname="127.0.0.1", port=BACKEND, local_hostname="naive.bench.test", start_tls=False, timeout=60,
            )  # fmt: skip
        except aiosmtplib.SMTPException as exc:
            return f"451 4.4.0 backend error: {exc}"
        if errors:
            return "451 4.4.0 backend refused some recipients"
        return "250 2.0.0 " + reply.replace("\r\n", " ").strip()


async def main() -> None:
    loop = asyncio.get_running_loop()
    # an explicit hostname: aiosmtpd would otherwise call socket.getfqdn() (a DNS lookup)
    server = await loop.create_server(
        lambda: SMTP(ForwardHandler(), hostname="naive.bench.test", decode_data=False, data_size_limit=26214400),
        host="127.0.0.1", port=LISTEN, backlog=1024,
    )  # fmt: skip
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
