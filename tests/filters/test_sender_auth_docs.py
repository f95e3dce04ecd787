"""The commented TOML in docs/sender-auth.md is a working config for both filters."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from spamgate.filters.headers.filter import HeadersFilter
from spamgate.filters.sender_auth.filter import SenderAuthFilter
from spamgate.proxy.config import parse_config
from spamgate.proxy.pipeline import filter_env
from spamgate.proxy.tools.dkim_keygen import generate

DOC = Path(__file__).resolve().parents[2] / "docs" / "sender-auth.md"


def test_documented_config_builds_both_filters(tmp_path: Path) -> None:
    block = re.search(r"```toml\n(.*?)```", DOC.read_text(), re.DOTALL)
    assert block is not None
    key = tmp_path / "dkim.key"
    key.write_bytes(generate("rsa", 1024)[0])
    text = block.group(1).replace("/etc/spamgate/dkim/example.edu.2024a.key", str(key))
    cfg = parse_config(tomllib.loads(text), str(DOC))
    env = filter_env(cfg)
    headers = HeadersFilter("headers", cfg.filters["headers"].options, env)
    auth = SenderAuthFilter("sender_auth", cfg.filters["sender_auth"].options, env)
    assert headers.opts.reject_symbols == ("DISPLAY_NAME_ADDRESS_MISMATCH",)
    assert auth.authserv_id == "mx.example.edu" and auth.opts.dmarc_enforce
    assert set(auth.keys) == {"example.edu"}
