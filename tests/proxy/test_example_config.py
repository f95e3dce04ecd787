"""deploy/spamgate.toml, the fully commented example, must load and every filter table must build."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from spamgate.filters.sdk.api import Filter
from spamgate.proxy.config import Config, load_config
from spamgate.proxy.pipeline import discover, filter_env

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "spamgate.toml"


def test_example_config_loads() -> None:
    cfg = load_config(EXAMPLE)
    assert [lst.role for lst in cfg.listen] == ["mx", "submission", "smtps"]
    assert cfg.backend.host == "127.0.0.1" and cfg.backend.port == 10025
    assert cfg.limits.max_message_size == 10485760
    assert set(cfg.filters) == {"local_sender", "rbl", "sender_auth", "headers", "spamassassin", "antivirus",
                                "attachments", "greylist", "ratelimit"}


def test_every_filter_table_builds_with_its_options() -> None:
    cfg = load_config(EXAMPLE)
    eps = discover()
    for name, table in cfg.filters.items():
        flt = eps[name].load()(name, table.options, filter_env(cfg))
        assert isinstance(flt, Filter) and flt.phases, name
        asyncio.run(flt.close())


def test_every_config_key_is_in_the_example() -> None:
    text = EXAMPLE.read_text()
    present = set(re.findall(r"^#?\s*([a-z_]+)\s*=", text, flags=re.M))
    for section, model in Config.model_fields.items():
        if section in ("filters", "source"):
            continue
        sub = model.annotation
        fields = getattr(sub, "model_fields", None)
        if fields is None:  # listen: a tuple of Listener
            from spamgate.proxy.config import Listener

            fields = Listener.model_fields
        missing = set(fields) - present
        assert not missing, f"[{section}] keys missing from deploy/spamgate.toml: {sorted(missing)}"


def test_check_config_names_file_and_listener_for_missing_tls_files() -> None:
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "spamgate.proxy", "check-config", str(EXAMPLE)],
                       capture_output=True, text=True)
    assert r.returncode == 1
    assert f"{EXAMPLE}: listen 'mx': tls_cert/tls_key: cannot load /etc/spamgate/tls/fullchain.pem" in r.stderr
