"""URL domain extraction for URI blocklists."""

from __future__ import annotations

import base64

from spamgate.filters.rbl.uris import message_url_hosts, registered_domain, url_hosts
from spamgate.filters.sdk.testing import canonical


def test_registered_domains_from_text() -> None:
    text = (
        "see http://www.Spam-URL.test/x and https://user@sub.a.example.co.uk:8080/p "
        "http://[192.0.2.1]/ http://192.0.2.5/a www.foo.example, mailto:x@y.example http://localhost/"
    )
    assert list(url_hosts(text)) == ["spam-url.test", "example.co.uk", "192.0.2.1", "192.0.2.5", "foo.example"]


def test_registered_domain_uses_public_suffixes() -> None:
    assert registered_domain("a.b.example.co.uk") == "example.co.uk"
    assert registered_domain("x.github.io") == "x.github.io"
    assert registered_domain("co.uk") is None


def test_idn_host_is_punycoded() -> None:
    assert list(url_hosts("http://www.bücher.example/")) == ["xn--bcher-kva.example"]


def test_decoded_text_and_html_parts() -> None:
    b64 = base64.encodebytes(b"go to http://b64.example/ now").decode()
    raw = canonical(
        'Content-Type: multipart/mixed; boundary="b"\n\n'
        "--b\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: base64\n\n"
        f"{b64}\n"
        "--b\nContent-Type: text/html\nContent-Transfer-Encoding: quoted-printable\n\n"
        '<a href=3D"&#104;ttp://www.html.example/">x</a>\n'
        "--b\nContent-Type: application/octet-stream\n\nhttp://binary.example/\n"
        "--b--\n"
    )
    assert message_url_hosts(raw, 10) == ["b64.example", "html.example"]


def test_cap_on_distinct_domains() -> None:
    body = " ".join(f"http://d{i}.example/ http://d{i}.example/again" for i in range(30))
    raw = canonical(f"Subject: many\n\n{body}\n")
    hosts = message_url_hosts(raw, 5)
    assert hosts == [f"d{i}.example" for i in range(5)]
    assert message_url_hosts(raw, 0) == []
