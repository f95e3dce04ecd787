"""One TOML file in, one frozen, validated config object out.

Every key is documented in deploy/spamgate.toml (which a test loads). Unknown keys
are errors; every error names the file and the key.

The sections' models live in :mod:`spamgate.proxy.config_sections`; this module assembles
them into :class:`Config`, checks the whole, and reads the file. It re-exports the sections,
so the engine, the tools and the tests import the whole config from here.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, model_validator

from spamgate.filters.sdk.options import describe_error
from spamgate.proxy.config_sections import (
    Actions,
    Auth,
    Backend,
    Console,
    Dns,
    FilterTable,
    Limits,
    Listener,
    Metrics,
    Pipeline,
    Server,
    State,
    StrictModel,
    system_nameservers,
)
from spamgate.proxy.errors import ConfigError

__all__ = [
    "Actions", "Auth", "Backend", "Config", "ConfigError", "Console", "Dns", "FilterTable", "Limits", "Listener",
    "Metrics", "Pipeline", "Server", "State", "default_config", "load_config", "parse_config", "system_nameservers",
]

LOCAL_SENDER = "local_sender"  # the filter that [auth] local_domains turns on by default


class Config(StrictModel):
    server: Server = Field(default_factory=Server)
    listen: tuple[Listener, ...] = (Listener(),)
    backend: Backend = Field(default_factory=Backend)
    limits: Limits = Field(default_factory=Limits)
    pipeline: Pipeline = Field(default_factory=Pipeline)
    actions: Actions = Field(default_factory=Actions)
    auth: Auth = Field(default_factory=Auth)
    dns: Dns = Field(default_factory=Dns)
    state: State = Field(default_factory=State)
    metrics: Metrics = Field(default_factory=Metrics)
    console: Console = Field(default_factory=Console)
    filters: dict[str, FilterTable] = Field(default_factory=dict)
    source: str = Field(default="<default>", exclude=True)

    @model_validator(mode="after")
    def _check(self) -> Config:
        if not self.listen:
            raise ValueError("at least one [[listen]] is needed")
        labels = [lst.label for lst in self.listen]
        if len(set(labels)) != len(labels):
            raise ValueError("listener names must be unique (set name = ...)")
        return self

    @property
    def enabled_filters(self) -> dict[str, FilterTable]:
        tables = dict(self.filters)
        # Secure by default: naming local domains is asking for the local-sender policy,
        # unless the admin explicitly wrote enabled = false for it (check-config warns).
        local = tables.get(LOCAL_SENDER, FilterTable())
        if self.auth.local_domains and "enabled" not in local.model_fields_set:
            tables[LOCAL_SENDER] = local.model_copy(update={"enabled": True})
        return {n: t for n, t in tables.items() if t.enabled}

    def warnings(self) -> list[str]:
        """Settings that are valid but unsafe: check-config prints them, start-up logs them."""
        out = []
        local = self.filters.get(LOCAL_SENDER)
        if self.auth.local_domains and local is not None and "enabled" in local.model_fields_set and not local.enabled:
            out.append(f"[filters.{LOCAL_SENDER}] enabled = false: with auth.local_domains set, anyone can send "
                       "as a local address without logging in (local senders can be spoofed)")
        elif self.auth.local_domains and local is not None and local.mode == "observe":
            out.append(f"[filters.{LOCAL_SENDER}] mode = observe: spoofed local senders are only logged, not refused")
        if not self.auth.local_domains:
            out.append("auth.local_domains is empty: spamgate cannot tell local senders, so nobody has to log in "
                       "to send as your domain, and it cannot refuse relaying: the backend alone decides (give it "
                       "XCLIENT, see deploy/postfix/)")
        if self.server.workers > 1 and self.state.backend == "memory":
            out.append(f"server.workers = {self.server.workers} with [state] backend = \"memory\": each worker "
                       "keeps its own penalty box, session counts (max_sessions, max_sessions_per_ip), greylist "
                       "and rate limits, so every limit applies per worker; set [state] backend = \"redis\" "
                       "to share them")
        for lst in self.listen:
            if lst.role in ("submission", "smtps") and self.auth.backend == "none":
                out.append(f"listen {lst.label!r} (role {lst.role}) requires AUTH, but auth.backend = none: "
                           "nobody can log in to send there")
            elif lst.role == "submission" and lst.tls_cert is None and not lst.allow_plaintext_auth:
                out.append(f"listen {lst.label!r} (role submission) has no tls_cert: AUTH needs TLS, "
                           "so nobody can log in to send there")
        return out


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out or "(top level)"


def parse_config(data: dict[str, Any], source: str = "<string>") -> Config:
    if isinstance(data.get("listen"), dict):
        raise ConfigError(f"{source}: listen: use [[listen]] (an array of tables), not [listen]")
    try:
        return Config.model_validate({**data, "source": source})
    except ValidationError as exc:
        lines = [f"{source}: {_loc(tuple(err['loc']))}: {describe_error(err)}" for err in exc.errors()]
        raise ConfigError("\n".join(lines)) from None


def load_config(path: str | Path) -> Config:
    p = Path(path)
    try:
        text = p.read_bytes().decode("utf-8")
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: not UTF-8") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: TOML syntax error: {exc}") from None
    return parse_config(data, str(p))


def default_config(maildir: str = "./spamgate-maildir", port: int = 2525) -> Config:
    """The embedded default: one mx listener on loopback, delivering into a local Maildir."""
    return parse_config(
        {
            "server": {"state_dir": "./spamgate-state"},
            "listen": [{"host": "127.0.0.1", "port": port, "role": "mx"}],
            "backend": {"url": f"maildir:{maildir}"},
            "metrics": {"enabled": False},
            # A bare machine may have no resolver: don't make every session wait for one.
            "dns": {"reverse_lookup": False},
        },
        "<embedded default>",
    )
