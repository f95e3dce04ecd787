"""``[dns]`` left out entirely: the resolvers of /etc/resolv.conf, inside a loopback-only namespace.

Whatever /etc/resolv.conf names is unreachable there, which is the worst case for a box
whose resolver is down: the greeting must still come at once. Nothing leaves loopback.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.acceptance.conftest import SPAMGATE

SCRIPT = textwrap.dedent(
    """
    import json, socket, statistics, subprocess, sys, time
    spamgate, cfg, log = sys.argv[1:4]
    proc = subprocess.Popen([spamgate, "run", "--config", cfg], stdout=open(log, "ab"), stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while "spamgate ready" not in open(log).read():
            assert proc.poll() is None and time.monotonic() < deadline, open(log).read()
            time.sleep(0.05)
        times = []
        for i in range(7):
            s = socket.create_connection(("127.0.0.1", 2525), timeout=20)
            f = s.makefile("rb")
            t = time.perf_counter()
            f.readline()
            s.sendall(b"EHLO client.test\\r\\n")
            while not f.readline().startswith(b"250 "):
                pass
            times.append(time.perf_counter() - t)
            s.sendall(b"MAIL FROM:<a@elsewhere.example>\\r\\nRCPT TO:<bob@example.edu>\\r\\nDATA\\r\\n")
            for _ in range(3):
                f.readline()
            s.sendall(b"Subject: %d\\r\\n\\r\\nhi\\r\\n.\\r\\nQUIT\\r\\n" % i)
            data_reply = f.readline().decode()
            s.close()
        print(json.dumps({"times": times, "median": statistics.median(times), "data": data_reply}))
    finally:
        proc.terminate()
        proc.wait(15)
    """
)


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs util-linux unshare (root)")
def test_default_dns_config_in_an_offline_namespace(tmp_path: Path) -> None:
    maildir = tmp_path / "maildir"
    cfg = tmp_path / "spamgate.toml"
    cfg.write_text(f'[[listen]]\nhost = "127.0.0.1"\nport = 2525\n\n[backend]\nurl = "maildir:{maildir}"\n\n'
                   f'[auth]\nlocal_domains = ["example.edu"]\n\n[metrics]\nenabled = false\n\n'
                   f'[server]\nstate_dir = "{tmp_path / "state"}"\n')
    (tmp_path / "probe.py").write_text(SCRIPT)
    out = subprocess.run(
        ["unshare", "--net", "sh", "-c",
         f'ip link set lo up && exec "{sys.executable}" "{tmp_path / "probe.py"}" "{SPAMGATE}" "{cfg}" '
         f'"{tmp_path / "log"}"'],
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr + (tmp_path / "log").read_text()
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["median"] < 0.1, result
    assert result["data"].startswith("250"), result
    assert len(list((maildir / "new").iterdir())) == 7
