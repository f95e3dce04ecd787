"""Log lines: the session id bound once per session, text and JSON formats."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys

import pytest

from spamgate.proxy.logs import SESSION, JsonFormatter, TextFormatter, bind_session


def _record(msg: str, *args: object) -> logging.LogRecord:
    return logging.getLogger("spamgate.test").makeRecord("spamgate.test", logging.INFO, __file__, 1, msg, args, None)


async def test_tasks_of_a_session_inherit_its_id_and_others_do_not() -> None:
    seen: dict[str, object] = {}

    async def session(sid: str) -> None:
        bind_session(sid)

        async def filter_task() -> None:
            await asyncio.sleep(0)
            seen[sid] = _record("from a filter").session  # type: ignore[attr-defined]

        await asyncio.create_task(filter_task())

    await asyncio.gather(session("aaaaaaaaaa"), session("bbbbbbbbbb"))
    assert seen == {"aaaaaaaaaa": "aaaaaaaaaa", "bbbbbbbbbb": "bbbbbbbbbb"}
    assert SESSION.get() is None
    assert _record("outside").session is None  # type: ignore[attr-defined]


def test_text_format_puts_the_session_after_the_logger() -> None:
    token = SESSION.set("0123456789")
    try:
        line = TextFormatter().format(_record("connect client=[%s]:%d", "192.0.2.7", 4242))
    finally:
        SESSION.reset(token)
    assert line.endswith("INFO spamgate.test: session=0123456789 connect client=[192.0.2.7]:4242")
    plain = TextFormatter().format(_record("spamgate ready"))
    assert plain.endswith("INFO spamgate.test: spamgate ready") and "session=" not in plain


@pytest.mark.parametrize("created", [1700000000.0, 1700000000.0004, 1700000000.9996, 1700000001.5, 1764464401.123])
def test_text_format_is_loggings_own_without_a_session(created: float) -> None:
    """The cached time text and the direct formatting give logging's default output, exceptions included."""
    reference = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    ours = TextFormatter()
    ours.format(_record("warm the cache with another second"))
    for exc in (None, ZeroDivisionError("boom")):
        r = _record("hello %s", "world")
        r.created, r.msecs = created, int((created - int(created)) * 1000)
        if exc is not None:
            r.exc_info = (type(exc), exc, None)
        assert ours.format(r) == reference.format(r)


def test_json_format_is_one_object_per_line() -> None:
    token = SESSION.set("0123456789")
    try:
        line = JsonFormatter().format(_record("quarantine=failed error=%s", "disk full"))
    finally:
        SESSION.reset(token)
    obj = json.loads(line)
    assert obj["session"] == "0123456789" and obj["message"] == "quarantine=failed error=disk full"
    assert obj["level"] == "info" and obj["logger"] == "spamgate.test" and obj["time"].endswith("Z")
    assert "\n" not in line


def test_setup_logging_skips_the_caller_lookup_and_the_lines_stay_the_same() -> None:
    """No format prints the calling file or line, so records don't walk the stack for them."""
    code = (
        "import logging, sys\n"
        "from spamgate.proxy.logs import setup_logging\n"
        "setup_logging('info')\n"
        "seen = []\n"
        "log = logging.getLogger('spamgate.test')\n"
        "log.addFilter(lambda r: seen.append(r) or True)\n"
        "log.info('hello %s', 'world')\n"
        "print(seen[0].lineno, seen[0].funcName)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.split() == ["0", "(unknown", "function)"]
    assert done.stderr.rstrip("\n").endswith(" INFO spamgate.test: hello world")
