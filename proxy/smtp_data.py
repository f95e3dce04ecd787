"""DATA for GateSMTP: aiosmtpd's command, reading the message in blocks (proxy.data_stream)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiosmtpd.smtp import MISSING

from spamgate.proxy.data_stream import DataState, DataStream, read_data

__all__ = ["DataMixin"]

_AIOSMTPD_LOG = logging.getLogger("mail.log")  # aiosmtpd's own logger, for the line of its smtp_DATA we replace


class DataMixin:
    """Mixed into GateSMTP (before aiosmtpd's SMTP), whose attributes and methods it uses."""

    # Provided by aiosmtpd's SMTP and GateSMTP.
    envelope: Any
    transport: Any
    line_length_limit: int
    data_size_limit: int
    _reader: asyncio.StreamReader
    _writer: Any
    push: Any
    check_helo_needed: Any
    check_auth_needed: Any
    _set_post_data_state: Any
    _call_handler_hook: Any

    async def _smtp_data(self, arg: str | None) -> None:
        """aiosmtpd's ``smtp_DATA`` (1.4.6) step for step, but reading the data in blocks (proxy.data_stream).

        Same checks, replies and states; decode_data is off for GateSMTP, so content is bytes.
        """
        if await self.check_helo_needed():
            return
        if await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        stream = DataStream(self.line_length_limit, self.data_size_limit)
        try:
            await read_data(self._reader, stream, lambda: self.transport is not None)
        except asyncio.CancelledError:
            _AIOSMTPD_LOG.info("Connection lost during DATA")
            self._writer.close()
            raise
        if stream.state is not DataState.NOMINAL:
            if stream.state is DataState.TOO_LONG:
                await self.push("500 Line too long (see RFC5321 4.5.3.1.6)")
            else:
                await self.push("552 Error: Too much mail data")
            self._set_post_data_state()
            return
        content = stream.content()
        self.envelope.content = content
        self.envelope.original_content = content
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()
        await self.push("250 OK" if status is MISSING else status)
