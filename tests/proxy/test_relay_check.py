"""The engine's own relay check on mx listeners (Postfix's reject_unauth_destination)."""

from __future__ import annotations

import ipaddress

from spamgate.proxy.decisions import relay_denied

LOCAL = ("example.edu",)
CLIENT = ipaddress.ip_address("192.0.2.7")


def denied(rcpt: str, role: str = "mx", login: str | None = None, local: tuple[str, ...] = LOCAL,
           relay: tuple[str, ...] = (), nets: tuple[str, ...] = ()) -> str | None:
    reply = relay_denied(role, login, rcpt, CLIENT, local, relay, [ipaddress.ip_network(n) for n in nets])
    return None if reply is None else str(reply)


def test_mail_for_elsewhere_from_an_outsider_is_refused() -> None:
    assert denied("victim@elsewhere.example") == "554 5.7.1 <victim@elsewhere.example>: Relay access denied"
    assert denied("victim@example.edu.evil.example") is not None  # a suffix is not a subdomain


def test_our_domains_and_their_subdomains_are_taken_from_anyone() -> None:
    assert denied("alice@example.edu") is None
    assert denied("alice@Mail.Example.EDU.") is None
    assert denied("backup@partner.example", relay=("partner.example",)) is None


def test_logged_in_users_relay_networks_and_other_roles_may_relay() -> None:
    assert denied("friend@elsewhere.example", login="alice") is None
    assert denied("friend@elsewhere.example", nets=("192.0.2.0/24",)) is None
    assert denied("friend@elsewhere.example", nets=("198.51.100.0/24",)) is not None
    assert denied("friend@elsewhere.example", role="submission") is None  # AUTH is required there anyway


def test_without_local_domains_the_backend_decides() -> None:
    assert denied("friend@elsewhere.example", local=()) is None
