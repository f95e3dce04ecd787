"""The test zones every rbl integration test serves from NSD.

Loopback clients: 127.0.0.2 listed, 127.0.0.3 clean, 127.0.0.4 listed with an XBL-style
code, 127.0.0.5 gets a Spamhaus error code, 127.0.0.6 is listed but also on the DNSWL.
"""

from __future__ import annotations

import ipaddress

from tests.integration.services.dns import zone

__all__ = ["IPV6_LISTED", "NEGATIVE_TTL", "TXT_127_0_0_2", "ZONES", "nibbles"]

NEGATIVE_TTL = 30
IPV6_LISTED = "2001:db8::25"
TXT_127_0_0_2 = "Listed in zen.test, see http://zen.test/q?127.0.0.2"


def nibbles(ip6: str) -> str:
    return ".".join(reversed(ipaddress.IPv6Address(ip6).exploded.replace(":", "")))


ZONES = {
    "zen.test": zone(
        "zen.test",
        [
            "2.0.0.127 A 127.0.0.2",
            f'2.0.0.127 TXT "{TXT_127_0_0_2}"',
            "4.0.0.127 A 127.0.0.4",
            '4.0.0.127 TXT "XBL listed 127.0.0.4"',
            "5.0.0.127 A 127.255.255.254",
            "6.0.0.127 A 127.0.0.2",
            f"{nibbles(IPV6_LISTED)} A 127.0.0.2",
            f"{nibbles('::1')} A 127.0.0.2",
        ],
        negative_ttl=NEGATIVE_TTL,
    ),
    "dnswl.test": zone("dnswl.test", ["6.0.0.127 A 127.0.10.2"]),
    "dbl.test": zone(
        "dbl.test",
        [
            "spam-helo.example A 127.0.1.2",
            "spammer.example A 127.0.1.2",
            'spammer.example TXT "spammer.example is a spam domain"',
        ],
    ),
    "uribl.test": zone("uribl.test", ["spam-url.example A 127.0.0.2", "bitonly.example A 127.0.0.8"]),
}
