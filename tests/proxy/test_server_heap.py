"""The server takes what it built at start out of the cyclic collector's sight (gc.freeze)."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest

from spamgate.proxy.config import load_config
from spamgate.proxy.server import Server, settle_heap


class _Node:
    other: _Node | None = None


@pytest.fixture(autouse=True)
def _unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()


def test_settle_heap_collects_garbage_first_then_freezes() -> None:
    a, b = _Node(), _Node()
    a.other, b.other = b, a  # a cycle: only the cyclic collector can free it
    gone = weakref.ref(a)
    del a, b
    settle_heap()
    assert gone() is None, "garbage must be collected, not frozen forever"
    assert gc.get_freeze_count() > 0


async def test_serve_forever_freezes_its_startup_heap(tmp_path: Path) -> None:
    path = tmp_path / "sg.toml"
    path.write_text(f'[[listen]]\nhost = "127.0.0.1"\nport = 0\n[backend]\nurl = "maildir:{tmp_path}/md"\n'
                    f'[server]\nstate_dir = "{tmp_path}/state"\n[metrics]\nenabled = false\n'
                    "[dns]\nreverse_lookup = false\n")
    srv = Server(load_config(path), str(path))
    assert gc.get_freeze_count() == 0
    serving = asyncio.create_task(srv.serve_forever())
    try:
        for _ in range(1000):  # serve_forever settles right after start(); not a timing assertion
            if gc.get_freeze_count() or serving.done():
                break
            await asyncio.sleep(0.01)
        assert srv.ports and gc.get_freeze_count() > 0
    finally:
        await srv.shutdown()
        await serving
