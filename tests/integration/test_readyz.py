"""/healthz and /readyz of a real spamgate: the backend and filters' dependencies (spamd, DNS)."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request

from tests.integration.conftest import SpamgateFactory
from tests.integration.services.postfix import free_port


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=20) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_ready_when_backend_is_up(spamgate: SpamgateFactory) -> None:
    sg = spamgate()
    assert _get(sg.metrics_port, "/healthz")[0] == 200
    status, body = _get(sg.metrics_port, "/readyz")
    assert status == 200, body


def test_not_ready_names_every_unreachable_dependency(spamgate: SpamgateFactory) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        dns_port = silent.getsockname()[1]
        sg = spamgate(
            f'[dns]\nnameservers = ["127.0.0.1"]\nport = {dns_port}\ntimeout = 0.3\nattempts = 1\n'
            '[filters.rbl]\nenabled = true\n[[filters.rbl.lists]]\nzone = "zen.test"\n'
            f'[filters.spamassassin]\nenabled = true\nhost = "127.0.0.1"\nport = {free_port()}\n',
            backend_toml=f'host = "127.0.0.1"\nport = {free_port()}\nconnect_timeout = 1\n',
        )
        status, body = _get(sg.metrics_port, "/readyz")
    assert status == 503
    assert "backend" in body and "filter:spamassassin" in body and "filter:rbl" in body
    assert _get(sg.metrics_port, "/healthz")[0] == 200


def test_fail_open_dependency_degrades_but_stays_ready(spamgate: SpamgateFactory) -> None:
    dead = free_port()
    sg = spamgate(f'[filters.spamassassin]\nenabled = true\nhost = "127.0.0.1"\nport = {dead}\n')
    assert _get(sg.metrics_port, "/readyz") == (200, "ready, degraded: filter:spamassassin (failed)\n")
    closed = spamgate(f'[filters.spamassassin]\nenabled = true\non_error = "tempfail"\n'
                      f'host = "127.0.0.1"\nport = {dead}\n')
    assert _get(closed.metrics_port, "/readyz") == (503, "not ready: filter:spamassassin (failed)\n")
