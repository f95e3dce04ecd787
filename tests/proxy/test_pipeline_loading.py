"""Filters are found through entry points, configured from [filters.<name>], errors name the culprit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from spamgate.filters.sdk.api import Phase
from spamgate.proxy.config import parse_config
from spamgate.proxy.pipeline import PluginError, build_pipeline, describe, discover
from tests.plugin_support import ensure_example_plugin


@pytest.fixture(scope="module", autouse=True)
def _plugin() -> None:
    ensure_example_plugin()


def test_builtins_and_third_party_share_the_entry_point_group() -> None:
    eps = discover()
    assert {"rbl", "spamassassin", "headers", "sender_auth", "local_sender"} <= set(eps)
    assert eps["rbl"].dist is not None and eps["rbl"].dist.name == "spamgate"
    assert eps["example_keyword"].dist is not None
    assert eps["example_keyword"].dist.name == "spamgate-example-plugin"


def test_only_enabled_filters_are_loaded_in_order() -> None:
    cfg = parse_config({"filters": {
        "example_keyword": {"enabled": True, "order": 20, "reject_recipients": ["x@example.edu"]},
        "example_crash": {"enabled": True, "order": 10},
        "example_hang": {"enabled": False},
    }})
    p = build_pipeline(cfg)
    assert [s.name for s in p.slots] == ["example_crash", "example_keyword"]
    assert [s.name for s in p.filters_for(Phase.RCPT)] == ["example_keyword"]
    text = describe(p)
    assert "data     example_crash(order=10) -> example_keyword(order=20)" in text
    assert "connect  (none)" in text


def test_unknown_filter_names_the_table_and_lists_what_is_installed() -> None:
    cfg = parse_config({"filters": {"nosuch": {"enabled": True}}}, "site.toml")
    with pytest.raises(PluginError) as err:
        build_pipeline(cfg)
    msg = str(err.value)
    assert "site.toml: [filters.nosuch]" in msg and "example_keyword" in msg


def test_bad_option_names_filter_distribution_and_key() -> None:
    cfg = parse_config({"filters": {"example_keyword": {"enabled": True, "spam_scroe": 3}}}, "site.toml")
    with pytest.raises(PluginError) as err:
        build_pipeline(cfg)
    msg = str(err.value)
    assert "site.toml: [filters.example_keyword].spam_scroe: unknown option" in msg
    assert "spamgate-example-plugin" in msg


def test_bad_common_key_is_a_config_error() -> None:
    from spamgate.proxy.config import ConfigError

    with pytest.raises(ConfigError) as err:
        parse_config({"filters": {"example_keyword": {"enabled": True, "on_error": "explode"}}}, "s.toml")
    assert "s.toml: filters.example_keyword.on_error" in str(err.value)


def test_check_config_shows_the_filter_order(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        '[backend]\nurl = "maildir:' + str(tmp_path / "md") + '"\n'
        '[filters.example_keyword]\nenabled = true\norder = 5\nmode = "observe"\n'
    )
    r = subprocess.run([sys.executable, "-m", "spamgate.proxy", "check-config", str(cfg)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "rcpt     example_keyword(order=5, observe)" in r.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text("[filters.example_keyword]\nenabled = true\nnope = 1\n")
    r = subprocess.run([sys.executable, "-m", "spamgate.proxy", "check-config", str(bad)],
                       capture_output=True, text=True)
    assert r.returncode == 1
    assert f"{bad}: [filters.example_keyword].nope: unknown option" in r.stderr
