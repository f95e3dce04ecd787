"""Logging: one line per event, every line of a session carrying its id, as text or JSON.

The session id is bound once, in a context variable, when a client connects; every task
of that session (the command handler, filters, the backend relay) inherits it, so no call
site formats it by hand and filters get it without knowing the engine. ``[server]
log_format = "json"`` writes one JSON object per line for log shippers.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
from typing import Any

__all__ = ["SESSION", "JsonFormatter", "TextFormatter", "bind_session", "setup_logging"]

SESSION: contextvars.ContextVar[str | None] = contextvars.ContextVar("spamgate_session", default=None)


def bind_session(session_id: str | None) -> None:
    """Bind the id to the current context (and to every task created from it from now on)."""
    SESSION.set(session_id)


_base_factory = logging.getLogRecordFactory()


def _record_with_session(*args: Any, **kwargs: Any) -> logging.LogRecord:
    # At creation, in the emitting task's context: every handler (and pytest's caplog) sees it.
    record = _base_factory(*args, **kwargs)
    record.session = SESSION.get()
    return record


logging.setLogRecordFactory(_record_with_session)


class TextFormatter(logging.Formatter):
    """``2026-11-30 01:02:03,456 INFO spamgate.session: [worker=K ][session=ID ]message``."""

    def __init__(self, worker: int | None = None) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        # With [server] workers, every line says which process wrote it.
        self._worker = "" if worker is None else f"worker={worker} "
        self._second = -1
        self._second_text = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        # The date and time of a whole second, formatted once: three lines a message made strftime show
        # in profiles. Same text as logging's default (local time, ",mmm").
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        second = int(record.created)
        if second != self._second:
            self._second, self._second_text = second, time.strftime(self.default_time_format,
                                                                    self.converter(record.created))
        return f"{self._second_text},{int(record.msecs):03d}"

    def formatMessage(self, record: logging.LogRecord) -> str:
        session = getattr(record, "session", None)
        fields = self._worker if session is None else f"{self._worker}session={session} "
        return f"{record.asctime} {record.levelname} {record.name}: {fields}{record.message}"


class JsonFormatter(logging.Formatter):
    def __init__(self, worker: int | None = None) -> None:
        super().__init__()
        self._worker = worker

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if self._worker is not None:
            out["worker"] = self._worker
        session = getattr(record, "session", None)
        if session is not None:
            out["session"] = session
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def setup_logging(level: str, fmt: str = "text", worker: int | None = None) -> None:
    # Neither format prints threads, processes or the calling file and line: don't make every
    # LogRecord look them up (the logging HOWTO's "Optimization" switches; _srcfile = None skips
    # the stack walk of findCaller, three per message).
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    logging._srcfile = None
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(worker) if fmt == "json" else TextFormatter(worker))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper()))
    # aiosmtpd logs every command line at INFO and some events at WARNING, without our session
    # id; our own log says what matters, once per event, with it.
    logging.getLogger("mail.log").setLevel(logging.ERROR)
