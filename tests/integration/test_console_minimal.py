"""The console from a minimal config, the way a user starts it: listen + backend + [console] + an admin file."""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
import time
from pathlib import Path

from tests.integration.conftest import REPO, Spamgate
from tests.integration.services.postfix import Postfix, free_port, wait_port


def _get(port: int, path: str) -> tuple[int, dict[str, str], str]:
    con = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    con.request("GET", path)
    r = con.getresponse()
    out = (r.status, {k.lower(): v for k, v in r.getheaders()}, r.read().decode())
    con.close()
    return out


def test_minimal_config_serves_login_and_guards_the_quarantine(postfix: Postfix, tmp_path: Path) -> None:
    port, cport = free_port(), free_port()
    admins = tmp_path / "admins"
    # [metrics] is switched off only so the default 9787 cannot clash with another test run.
    config = (f'[server]\nstate_dir = "{tmp_path}/state"\n[[listen]]\nport = {port}\n'
              f'[backend]\nhost = "127.0.0.1"\nport = {postfix.port}\n[metrics]\nenabled = false\n'
              f'[console]\nport = {cport}\nadmin_file = "{admins}"\n')  # fmt: skip
    sg = Spamgate(tmp_path, config, port, port, 0)
    try:
        sg.start()
        # The console waits for an admin account in a task of its own: its line may follow "ready".
        deadline = time.monotonic() + 15
        while "console off: no admin account" not in sg.log():
            assert time.monotonic() < deadline, sg.log()
            time.sleep(0.1)
        subprocess.run([sys.executable, "-m", "spamgate.proxy", "passwd", "add", "root", "--file", str(admins)],
                       input="s3cret-pass\n", text=True, check=True, capture_output=True,
                       env={**os.environ, "PYTHONPATH": str(REPO)})  # fmt: skip
        deadline = time.monotonic() + 15
        while "console address=" not in sg.log():
            assert time.monotonic() < deadline, sg.log()
            time.sleep(0.1)
        wait_port(cport, 5)
        status, headers, body = _get(cport, "/quarantine")
        assert status == 303 and headers["location"] == "/login"
        status, headers, body = _get(cport, "/login")
        assert status == 200
        assert 'name="username"' in body and 'name="password"' in body and 'method="post" action="/login"' in body
        assert "HttpOnly" in headers["set-cookie"] and "SameSite=Strict" in headers["set-cookie"]
        assert "Secure" not in headers["set-cookie"]  # plain HTTP on loopback
    finally:
        sg.stop()
