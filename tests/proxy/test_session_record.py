"""The session record's views: SessionInfo built once per set of facts, the client's address parsed once."""

from __future__ import annotations

import ipaddress

import pytest

from spamgate.proxy.rdns import ClientNames
from spamgate.proxy.session import has_control_chars
from tests.proxy.txn_fakes import harness

MSG = b"Subject: hello\r\nFrom: a@example.org\r\n\r\nbody\r\n"


def test_info_is_reused_until_a_fact_changes() -> None:
    st = harness().ctl.state
    first = st.info()
    assert st.info() is first
    st.helo = "other.example"
    second = st.info()
    assert second is not first and second.helo == "other.example"
    st.login = "alice"
    assert st.info().authenticated_user == "alice"
    st.names = ClientNames(reverse="mx.example.org", verified="mx.example.org")
    assert st.info().client_name == "mx.example.org"
    st.tls, st.tls_version, st.tls_cipher = "TLSv1.3", "TLSv1.3", "TLS_AES_128_GCM_SHA256"
    assert st.info().tls and st.info().tls_cipher == "TLS_AES_128_GCM_SHA256"


def test_peer_address_parsed_once_per_info() -> None:
    st = harness().ctl.state
    assert st.info().peer_address == ipaddress.ip_address("192.0.2.7")
    assert st.info().peer_address is st.info().peer_address


@pytest.mark.parametrize(("value", "bad"), [("a@b.example", False), ("a\x00b", True), ("tab\there", True),
                                            ("del\x7f", True), ("é@ü.example", False), ("", False)])
def test_control_chars(value: str, bad: bool) -> None:
    assert has_control_chars(value) is bad


async def test_phases_without_filters_build_no_context() -> None:
    h = harness()

    def no_context(*args: object, **kwargs: object) -> None:
        raise AssertionError("a context was built for a phase without filters")

    h.ctl.state.context = no_context  # type: ignore[method-assign]
    await h.ctl.on_connect()
    await h.envelope("alice@example.edu")
    assert (await h.ctl.on_data(MSG)).code == 250
