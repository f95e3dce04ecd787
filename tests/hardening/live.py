"""A real spamgate subprocess from a minimal config, for tests that do not need Postfix."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

from tests.integration.conftest import Spamgate
from tests.integration.services.postfix import free_port

# No resolver on 127.0.0.1:53 here: reverse lookups would only wait for their timeout.
NO_RDNS = "[dns]\nreverse_lookup = false\n"


@contextlib.contextmanager
def running_spamgate(backend_toml: str, extra_toml: str = "", listen_toml: str = "",
                     port: int | None = None) -> Iterator[Spamgate]:
    """spamgate with one mx listener (or ``listen_toml``, whose first port is ``port``), the given
    [backend] body and any extra tables."""
    work = Path(tempfile.mkdtemp(prefix="spamgate-hardening-"))
    port, mport = port or free_port(), free_port()
    listen = listen_toml or f'[[listen]]\nhost = "127.0.0.1"\nport = {port}\nrole = "mx"\n'
    config = (
        f'[server]\nhostname = "spamgate.test"\nstate_dir = "{work}/state"\nshutdown_grace = 5\n\n{listen}\n'
        f"[backend]\n{backend_toml}\n[metrics]\nhost = \"127.0.0.1\"\nport = {mport}\n\n"
        f"{'' if '[dns]' in extra_toml else NO_RDNS}{extra_toml}\n"
    )
    sg = Spamgate(work, config, port, 0, mport)
    try:
        sg.start()
        yield sg
    finally:
        sg.stop()
