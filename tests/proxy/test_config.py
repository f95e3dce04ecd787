"""Config loading: one TOML file, frozen objects, errors that name the file and the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from spamgate.proxy.config import Config, ConfigError, default_config, load_config, parse_config
from spamgate.proxy.pipeline import filter_env

SRC = "/etc/spamgate/spamgate.toml"


def _error(data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(data, SRC)
    return str(info.value)


def test_defaults_are_sane() -> None:
    cfg = parse_config({}, SRC)
    assert cfg.limits.max_message_size == 10_485_760
    assert cfg.limits.max_command_line == 512
    assert cfg.limits.bare_newline == "normalize"
    assert cfg.backend.host == "127.0.0.1" and cfg.backend.port == 10025
    assert cfg.backend.timeout == 30
    assert cfg.backend.maildir is None
    assert cfg.enabled_filters == {}
    assert cfg.source == SRC


def test_fixed_interface_keys_work_as_written() -> None:
    cfg = parse_config(
        {
            "listen": [{"host": "127.0.0.1", "port": 2525, "role": "mx"}],
            "backend": {"host": "127.0.0.1", "port": 10025, "timeout": 30},
            "limits": {"max_message_size": 10485760},
        },
        SRC,
    )
    assert cfg.listen[0].port == 2525 and cfg.listen[0].role == "mx"
    assert cfg.backend.timeout == 30.0
    assert parse_config({"backend": {"url": "maildir:/var/lib/spamgate/maildir"}}).backend.maildir == (
        "/var/lib/spamgate/maildir"
    )


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"bogus": {}}, "bogus"),
        ({"limits": {"max_mesage_size": 1}}, "limits.max_mesage_size"),
        ({"backend": {"hots": "x"}}, "backend.hots"),
        ({"listen": [{"port": 25}, {"port": 26, "rol": "mx"}]}, "listen[1].rol"),
        ({"server": {"hostname": "x", "color": "blue"}}, "server.color"),
    ],
)
def test_unknown_keys_are_errors_naming_file_and_key(data: dict[str, Any], key: str) -> None:
    msg = _error(data)
    assert msg.startswith(f"{SRC}: {key}: unknown key"), msg


@pytest.mark.parametrize(
    ("data", "key", "words"),
    [
        ({"limits": {"bare_newline": "strip"}}, "limits.bare_newline", "normalize"),
        ({"limits": {"max_message_size": 0}}, "limits.max_message_size", "greater than 0"),
        ({"limits": {"max_recipients": "many"}}, "limits.max_recipients", "integer"),
        ({"backend": {"port": 70000}}, "backend.port", "65535"),
        ({"backend": {"timeout": 0}}, "backend.timeout", "greater than 0"),
        ({"listen": [{"role": "relay"}]}, "listen[0].role", "mx"),
        ({"listen": [{"role": "smtps"}]}, "listen[0]", "tls_cert"),
        ({"listen": [{"tls_cert": "/x.pem"}]}, "listen[0]", "tls_key"),
        ({"dns": {"nameservers": ["localhost"]}}, "dns.nameservers", "localhost"),
        ({"filters": {"rbl": {"enabled": "yes please"}}}, "filters.rbl.enabled",
         "expected true or false, got the string 'yes please'"),
        ({"filters": {"rbl": {"on_error": "ignore"}}}, "filters.rbl.on_error", "tempfail"),
        ({"auth": {"backend": "file"}}, "auth", "password_file"),
    ],
)
def test_bad_values_name_file_and_key(data: dict[str, Any], key: str, words: str) -> None:
    msg = _error(data)
    assert msg.startswith(f"{SRC}: {key}: "), msg
    assert words in msg


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("http://127.0.0.1:10025", "maildir:PATH"),
        ("smtp://127.0.0.1:10025", "maildir:PATH"),
        ("/var/mail", "maildir:PATH"),
        ("maildir:", "needs a path"),
    ],
)
def test_maildir_url_validation(url: str, words: str) -> None:
    msg = _error({"backend": {"url": url}})
    assert msg.startswith(f"{SRC}: backend.url: "), msg
    assert words in msg


def test_every_error_is_reported_at_once() -> None:
    msg = _error({"limits": {"max_mesage_size": 1}, "backend": {"port": 0}})
    assert "limits.max_mesage_size: unknown key" in msg
    assert "backend.port" in msg


def test_listeners_need_one_and_unique_names() -> None:
    assert "[[listen]]" in _error({"listen": []})
    assert "unique" in _error({"listen": [{"port": 2525}, {"port": 2525}]})
    cfg = parse_config({"listen": [{"port": 2525}, {"port": 2525, "host": "::1", "name": "v6"}]})
    assert [lst.label for lst in cfg.listen] == ["mx_2525", "v6"]


def test_filter_tables_split_common_keys_from_options() -> None:
    cfg = parse_config(
        {"filters": {"rbl": {"enabled": True, "order": 5, "skip_networks": ["10.0.0.0/8"], "lists": ["a"]},
                     "spamassassin": {"host": "127.0.0.1"}}}
    )
    rbl = cfg.filters["rbl"]
    assert rbl.options == {"lists": ["a"]}
    assert rbl.order == 5 and str(rbl.skip_networks[0]) == "10.0.0.0/8"
    assert list(cfg.enabled_filters) == ["rbl"]


def test_config_is_frozen() -> None:
    cfg = parse_config({})
    with pytest.raises(ValueError, match="frozen"):
        setattr(cfg.limits, "max_recipients", 5)  # noqa: B010


def test_load_config_names_the_file(tmp_path: Path) -> None:
    f = tmp_path / "spamgate.toml"
    f.write_text('[limits]\nmax_message_size = 1000\nmax_rcpts = 3\n')
    with pytest.raises(ConfigError, match=rf"^{f}: limits.max_rcpts: unknown key$"):
        load_config(f)
    f.write_text("[limits\n")
    with pytest.raises(ConfigError, match=rf"^{f}: TOML syntax error"):
        load_config(f)
    f.write_bytes(b'[server]\nbanner = "\xff"\n')
    with pytest.raises(ConfigError, match=rf"^{f}: not UTF-8"):
        load_config(f)
    with pytest.raises(ConfigError, match=rf"^{tmp_path / 'missing.toml'}: cannot read"):
        load_config(tmp_path / "missing.toml")
    f.write_text('[backend]\nurl = "maildir:/srv/mail"\n[limits]\nbare_newline = "reject"\n')
    cfg = load_config(f)
    assert isinstance(cfg, Config)
    assert cfg.source == str(f) and cfg.limits.bare_newline == "reject" and cfg.backend.maildir == "/srv/mail"


def test_embedded_default_delivers_to_a_maildir_on_loopback() -> None:
    cfg = default_config("/tmp/box", port=2626)
    assert cfg.backend.maildir == "/tmp/box"
    assert [(lst.host, lst.port, lst.role) for lst in cfg.listen] == [("127.0.0.1", 2626, "mx")]
    assert cfg.metrics.enabled is False


# -- issue 11: strict types, secure and fast defaults ---------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"listen": [{"port": "32500"}]}, "listen[0].port: expected an integer, got the string '32500'"),
        ({"filters": {"rbl": {"enabled": "yes"}}}, "filters.rbl.enabled: expected true or false, got the string 'yes'"),
        ({"metrics": {"enabled": 1}}, "metrics.enabled: expected true or false, got the number 1"),
        ({"dns": {"timeout": "2"}}, "dns.timeout: expected a number, got the string '2'"),
        ({"auth": {"local_domains": "example.edu"}}, "auth.local_domains: expected a list, got the string"),
        ({"limits": {"max_sessions": 1.5}}, "limits.max_sessions: expected an integer, got the number 1.5"),
    ],
)
def test_no_coercion_and_errors_say_what_was_expected(data: dict[str, Any], expected: str) -> None:
    assert f"{SRC}: {expected}" in _error(data)


def test_listen_written_as_a_table_says_use_an_array_of_tables() -> None:
    assert _error({"listen": {"port": 25}}) == f"{SRC}: listen: use [[listen]] (an array of tables), not [listen]"


def test_toml_arrays_still_fill_tuples() -> None:
    cfg = parse_config({"auth": {"local_domains": ["Example.EDU."]}, "limits": {"exempt_networks": ["10.0.0.0/8"]}})
    assert cfg.auth.local_domains == ("example.edu",)
    assert [str(n) for n in cfg.limits.exempt_networks] == ["10.0.0.0/8"]


def test_local_domains_turn_the_local_sender_policy_on() -> None:
    cfg = parse_config({"auth": {"local_domains": ["example.edu"]}}, SRC)
    assert "local_sender" in cfg.enabled_filters
    assert not any("spoof" in w for w in cfg.warnings())
    # Options without an explicit enabled still count as "on".
    cfg = parse_config({"auth": {"local_domains": ["example.edu"]},
                        "filters": {"local_sender": {"from_header": "score"}}}, SRC)
    assert cfg.enabled_filters["local_sender"].options == {"from_header": "score"}


def test_explicitly_disabled_local_sender_is_off_with_a_warning() -> None:
    cfg = parse_config({"auth": {"local_domains": ["example.edu"]},
                        "filters": {"local_sender": {"enabled": False}}}, SRC)
    assert "local_sender" not in cfg.enabled_filters
    assert any("local senders can be spoofed" in w for w in cfg.warnings())


def test_no_local_domains_no_policy_and_a_warning() -> None:
    cfg = parse_config({}, SRC)
    assert "local_sender" not in cfg.enabled_filters
    assert any("local_domains is empty" in w for w in cfg.warnings())


def test_submission_without_auth_backend_warns() -> None:
    cfg = parse_config({"listen": [{"port": 587, "role": "submission"}], "auth": {"local_domains": ["x.org"]}}, SRC)
    assert any("nobody can log in" in w for w in cfg.warnings())


def test_loopback_is_exempt_from_the_per_ip_limit_by_default() -> None:
    nets = parse_config({}, SRC).limits.exempt_networks
    assert [str(n) for n in nets] == ["127.0.0.0/8", "::1/128"]


def test_dns_defaults_to_the_system_resolvers(tmp_path: Path) -> None:
    from spamgate.proxy.config import system_nameservers

    conf = tmp_path / "resolv.conf"
    conf.write_text("search example.org\nnameserver 192.0.2.53\nnameserver ::1\n")
    assert system_nameservers(str(conf)) == ("192.0.2.53", "::1")
    assert system_nameservers(str(tmp_path / "missing")) == ("127.0.0.1",)
    cfg = parse_config({}, SRC)
    assert cfg.dns.nameservers == ()
    assert cfg.dns.effective_nameservers == system_nameservers()
    assert cfg.dns.reverse_lookup_timeout <= 1.0
    pinned = parse_config({"dns": {"nameservers": ["127.0.0.1"]}}, SRC)
    assert filter_env(pinned).dns.nameservers == ("127.0.0.1",)
