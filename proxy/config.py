"""One TOML file in, one frozen, validated config object out.

Every key is documented in deploy/spamgate.toml (which a test loads). Unknown keys
are errors; every error names the file and the key.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
import tomllib
from pathlib import Path
from typing import Any, Literal

import dns.resolver
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from spamgate.filters.sdk.dns import DnsSettings
from spamgate.filters.sdk.options import Networks, describe_error, lists_to_tuples
from spamgate.filters.sdk.runner import FilterSettings
from spamgate.filters.sdk.scoring import Thresholds
from spamgate.proxy.errors import ConfigError

__all__ = ["Config", "ConfigError", "FilterTable", "Listener", "default_config", "load_config", "parse_config"]

LOCAL_SENDER = "local_sender"  # the filter that [auth] local_domains turns on by default


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    @model_validator(mode="before")
    @classmethod
    def _arrays(cls, data: Any) -> Any:
        return lists_to_tuples(cls, data)


class Server(_Model):
    hostname: str = Field(default_factory=socket.getfqdn)
    banner: str = "ESMTP spamgate"
    state_dir: str = "/var/lib/spamgate"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = "text"
    shutdown_grace: float = Field(default=30.0, ge=0)
    # Processes sharing the listeners (SO_REUSEPORT) under a supervisor: proxy/workers.py.
    workers: int = Field(default=1, ge=1, le=256)
    # Seconds a worker may send no heartbeat (its event loop stuck) before the supervisor kills and
    # restarts it; 0 turns the watchdog off. Only with workers > 1.
    worker_watchdog: float = Field(default=30.0, ge=0)

    @field_validator("worker_watchdog")
    @classmethod
    def _watchdog(cls, value: float) -> float:
        if 0 < value < 1:
            raise ValueError("0 (off) or at least 1 second: a shorter one would kill workers busy for a moment")
        return value


class Listener(_Model):
    name: str = ""
    host: str = "127.0.0.1"
    port: int = Field(default=2525, ge=0, le=65535)
    role: Literal["mx", "submission", "smtps"] = "mx"
    tls_cert: str | None = None
    tls_key: str | None = None
    allow_plaintext_auth: bool = False
    proxy_protocol: bool = False
    trusted_proxies: Networks = ()
    reuse_port: bool = False

    @model_validator(mode="after")
    def _check(self) -> Listener:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together")
        if self.role == "smtps" and self.tls_cert is None:
            raise ValueError("role 'smtps' needs tls_cert and tls_key")
        if self.proxy_protocol and not self.trusted_proxies:
            raise ValueError("proxy_protocol = true needs trusted_proxies (the balancers that may send PROXY headers)")
        if self.proxy_protocol and self.role == "smtps":
            # The header precedes the TLS handshake, which aiosmtpd's implicit TLS does first.
            raise ValueError("proxy_protocol is not supported on role 'smtps' (use STARTTLS listeners)")
        return self

    @property
    def label(self) -> str:
        return self.name or f"{self.role}_{self.port}"


class Backend(_Model):
    host: str = "127.0.0.1"
    port: int = Field(default=10025, ge=1, le=65535)
    url: str | None = None
    timeout: float = Field(default=30.0, gt=0)
    connect_timeout: float = Field(default=10.0, gt=0)
    helo_name: str | None = None
    xclient: Literal["auto", "off"] = "auto"
    pool_size: int = Field(default=16, ge=0)
    pool_idle_seconds: float = Field(default=30.0, ge=0)

    @field_validator("url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith("maildir:"):
            raise ValueError("only 'maildir:PATH' is supported as url; use host and port for SMTP")
        if v is not None and not v[len("maildir:") :]:
            raise ValueError("maildir: needs a path")
        return v

    @property
    def maildir(self) -> str | None:
        return self.url[len("maildir:") :] if self.url else None


class Limits(_Model):
    max_message_size: int = Field(default=10_485_760, gt=0)
    max_command_line: int = Field(default=512, ge=64)
    max_line_length: int = Field(default=8192, ge=1000)
    max_recipients: int = Field(default=100, ge=1)
    max_sessions: int = Field(default=1000, ge=1)
    max_sessions_per_ip: int = Field(default=50, ge=1)
    # Like Postfix's smtpd_client_connection_limit_exceptions (default $mynetworks): the
    # machine's own clients (and a content filter in front) are never capped per IP.
    exempt_networks: Networks = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
    max_errors: int = Field(default=10, ge=1)
    command_timeout: float = Field(default=300.0, gt=0)
    data_timeout: float = Field(default=600.0, gt=0)
    bare_newline: Literal["normalize", "reject"] = "normalize"


class Pipeline(_Model):
    defer_rejects: bool = False
    exempt_recipients: tuple[str, ...] = ("postmaster",)
    quarantine_rejects: bool = False
    quarantine_dir: str | None = None
    add_explanation: bool = True


Actions = Thresholds  # [actions] is the SDK's model: no copy to keep in step


class Auth(_Model):
    local_domains: tuple[str, ...] = ()
    backend: Literal["none", "file", "dovecot"] = "none"
    password_file: str | None = None
    dovecot_socket: str | None = None
    sender_login_map: str | None = None
    # Beyond local_domains, the domains an mx listener takes mail for from anyone (e.g. as a backup MX).
    relay_domains: tuple[str, ...] = ()
    # Clients that may relay to any domain without logging in (Postfix's mynetworks; default: none).
    relay_networks: Networks = ()
    max_failures: int = Field(default=5, ge=1)
    failure_window: float = Field(default=300.0, gt=0)
    penalty_seconds: float = Field(default=900.0, ge=0)

    @field_validator("local_domains", "relay_domains")
    @classmethod
    def _lower(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(d.lower().strip(".") for d in v)

    @model_validator(mode="after")
    def _check(self) -> Auth:
        if self.backend == "file" and not self.password_file:
            raise ValueError("backend 'file' needs password_file")
        if self.backend == "dovecot" and not self.dovecot_socket:
            raise ValueError("backend 'dovecot' needs dovecot_socket")
        return self


@functools.cache
def system_nameservers(path: str = "/etc/resolv.conf") -> tuple[str, ...]:
    """The resolvers the system uses (as Postfix does); 127.0.0.1 when there are none."""
    try:
        found = dns.resolver.Resolver(filename=path, configure=True).nameservers
    except (dns.resolver.NoResolverConfiguration, OSError):
        return ("127.0.0.1",)
    return tuple(str(ns) for ns in found if isinstance(ns, str)) or ("127.0.0.1",)


class Dns(DnsSettings):
    """``[dns]``: the SDK's resolver settings plus the engine's own reverse-lookup keys."""

    reverse_lookup: bool = True
    reverse_lookup_timeout: float = Field(default=1.0, gt=0, le=10)

    @property
    def effective_nameservers(self) -> tuple[str, ...]:
        return self.nameservers or system_nameservers()

    def resolved(self) -> DnsSettings:
        """The resolver's settings, with the system's nameservers filled in when none are set."""
        return DnsSettings.model_validate(
            {**self.model_dump(include=set(DnsSettings.model_fields)), "nameservers": self.effective_nameservers}
        )


class State(_Model):
    """``[state]``: where counters and flags that expire live (penalty box, session counts, DNS
    answers, greylisting, rate limits). ``memory`` keeps them in this process; ``redis`` lets
    several instances count together.
    """

    backend: Literal["memory", "redis"] = "memory"
    url: str | None = None
    key_prefix: str = "spamgate:"
    timeout: float = Field(default=0.5, gt=0, le=30)

    @model_validator(mode="after")
    def _check(self) -> State:
        if self.backend == "redis" and not self.url:
            raise ValueError("backend 'redis' needs url (redis://, rediss:// or redis+sentinel://)")
        if self.url is not None and not self.url.startswith(("redis://", "rediss://", "unix://", "redis+sentinel://")):
            raise ValueError("url must start with redis://, rediss://, unix:// or redis+sentinel://")
        return self


class Metrics(_Model):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=9787, ge=0, le=65535)


class Console(_Model):
    """The web console; it only listens once ``admin_file`` holds an account."""

    host: str = "127.0.0.1"
    port: int = Field(default=9788, ge=0, le=65535)
    admin_file: str = "/etc/spamgate/admins"
    tls_cert: str | None = None
    tls_key: str | None = None
    public_url: str | None = None
    grafana_url: str | None = None
    session_seconds: float = Field(default=28800.0, gt=0)
    digest_from: str | None = None
    digest_link_days: float = Field(default=7.0, gt=0)

    @model_validator(mode="after")
    def _check(self) -> Console:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together")
        return self


class FilterTable(FilterSettings):
    """``[filters.<name>]``: the SDK's common keys (a FilterSettings); everything else goes to the filter."""

    model_config = ConfigDict(extra="allow", frozen=True, strict=True)

    enabled: bool = False  # a filter runs only when its table says so

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class Config(_Model):
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
