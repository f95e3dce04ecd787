"""The models of the config file's sections: ``[server]``, ``[[listen]]``, ``[backend]``, ``[limits]``,
``[pipeline]``, ``[actions]``, ``[auth]``, ``[dns]``, ``[state]``, ``[metrics]``, ``[console]`` and
``[filters.<name>]``, one strict, frozen pydantic model each, with their own checks.

:mod:`spamgate.proxy.config` assembles them into the one ``Config`` and reads the file; import
them from there.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
from typing import Any, Literal

import dns.resolver
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from spamgate.filters.sdk.dns import DnsSettings
from spamgate.filters.sdk.options import Networks, lists_to_tuples
from spamgate.filters.sdk.runner import FilterSettings
from spamgate.filters.sdk.scoring import Thresholds

__all__ = [
    "Actions", "Auth", "Backend", "Console", "Dns", "FilterTable", "Limits", "Listener", "Metrics", "Pipeline",
    "Server", "State", "StrictModel", "system_nameservers",
]


class StrictModel(BaseModel):
    """The base of every config model: unknown keys are errors, values are frozen and never coerced."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    @model_validator(mode="before")
    @classmethod
    def _arrays(cls, data: Any) -> Any:
        return lists_to_tuples(cls, data)


class Server(StrictModel):
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


class Listener(StrictModel):
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


class Backend(StrictModel):
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


class Limits(StrictModel):
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


class Pipeline(StrictModel):
    defer_rejects: bool = False
    exempt_recipients: tuple[str, ...] = ("postmaster",)
    quarantine_rejects: bool = False
    quarantine_dir: str | None = None
    add_explanation: bool = True


Actions = Thresholds  # [actions] is the SDK's model: no copy to keep in step


class Auth(StrictModel):
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


class State(StrictModel):
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


class Metrics(StrictModel):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=9787, ge=0, le=65535)


class Console(StrictModel):
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

