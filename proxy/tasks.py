"""Fire-and-forget tasks (a disconnect's backend RSET, a signal's reload, a refusal's observers).

The event loop keeps only weak references to tasks: these live here until done, or a garbage
collection could drop one half-way.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

__all__ = ["spawn"]

_BACKGROUND: set[asyncio.Task[Any]] = set()


def spawn(coro: Coroutine[Any, Any, Any]) -> None:
    task = asyncio.get_running_loop().create_task(coro)
    _BACKGROUND.add(task)
    task.add_done_callback(_BACKGROUND.discard)
