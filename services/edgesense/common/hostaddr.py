"""Which IP address a URL's host denotes, read the way resolvers and URL parsers read it.

A host is not only `127.0.0.1`: glibc's `inet_aton` (what `getaddrinfo` uses
for numeric hosts) takes one to four parts, each decimal, octal (a leading
`0`) or hex (`0x`), so `127.1`, `0177.0.0.1`, `2130706433`, `0x7f000001` and
`0x7f.1` are all 127.0.0.1; the WHATWG URL standard (browsers, many HTTP
clients) reads any host whose last label is a number the same way, after
percent-decoding it and mapping it with IDNA (full-width digits and dots
become ASCII ones). IPv6 literals may carry a zone id (`%25eth0`) and embed an
IPv4 address (mapped, compatible, 6to4, NAT64, Teredo).

`host_address` returns the address a host denotes, or None for a name (which
only DNS can answer: delivery checks the address it connects to), and raises
`NumericHostError` for a numeric host that is no address at all. Pure: no I/O.
"""

from __future__ import annotations

import contextlib
import ipaddress
from dataclasses import dataclass
from urllib.parse import unquote

import idna

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# 64:ff9b::/96 (RFC 6052) and 64:ff9b:1::/48 (RFC 8215): NAT64 prefixes whose
# last 32 bits are the IPv4 address the translator connects to.
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
_V4_COMPATIBLE = ipaddress.ip_network("::/96")
_HEX = "0123456789abcdef"


class NumericHostError(ValueError):
    """A host that parsers read as an address but that is not a valid one."""


@dataclass(frozen=True)
class HostAddress:
    """The address a numeric host denotes, and whether it was written canonically
    (dotted decimal for IPv4; any valid form for IPv6)."""

    address: IPAddress
    canonical: bool


def normalize_host(host: str) -> str:
    """The host as a WHATWG parser sees it: percent-decoded, IDNA-mapped, lower case."""
    text = unquote(host) if "%" in host else host
    if not text.isascii():
        # Not mappable: a (bad) name, left to DNS.
        with contextlib.suppress(idna.IDNAError):
            text = idna.uts46_remap(text, std3_rules=False, transitional=False)
    return text.lower()


def host_address(host: str) -> HostAddress | None:
    """The address `host` (as `urlsplit().hostname` gives it) denotes; None for a name."""
    if ":" in host:
        return HostAddress(_ipv6(host), canonical=True)
    text = normalize_host(host)
    labels = text.rstrip(".").split(".")
    if not _is_number(labels[-1]):
        return None  # a name, even 127.0.0.1.nip.io: DNS decides, checked at send time
    address = _ipv4(labels, host)
    return HostAddress(address, canonical=host.lower() == str(address))


# Names that resolve to this machine by convention (RFC 6761 `.localhost` too).
LOCAL_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback")


def is_local_name(host: str) -> bool:
    """`host` (normalized, as `normalize_host` gives it) names this machine."""
    name = host.rstrip(".")
    return name in LOCAL_NAMES or name.endswith(".localhost")


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries and leads to, if any."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if any(address in net for net in _NAT64) or (
        address in _V4_COMPATIBLE and int(address) > 0xFFFF
    ):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _ipv6(host: str) -> ipaddress.IPv6Address:
    if "%" in host:
        raise NumericHostError(
            "has an IPv6 zone id (%25...): zone ids name a local interface, "
            "they have no meaning for a webhook target"
        )
    try:
        return ipaddress.IPv6Address(host)
    except ValueError:
        raise NumericHostError(f"[{host[:60]}] is not a valid IPv6 address") from None


def _is_number(label: str) -> bool:
    """WHATWG's "ends in a number" test for one label."""
    if label.startswith("0x"):
        return all(c in _HEX for c in label[2:])
    return label != "" and label.isascii() and label.isdigit()


def _ipv4(labels: list[str], host: str) -> ipaddress.IPv4Address:
    """inet_aton / WHATWG IPv4 number parsing of 1-4 parts."""
    invalid = NumericHostError(
        f"{host[:60]!r} is numeric but not a valid IPv4 address "
        "(resolvers and browsers would read it differently)"
    )
    if len(labels) > 4:
        raise invalid
    try:
        numbers = [_part(label) for label in labels]
    except ValueError:
        raise invalid from None
    *leading, last = numbers
    if any(n > 255 for n in leading) or last >= 256 ** (5 - len(numbers)):
        raise invalid
    value = last
    for index, number in enumerate(leading):
        value += number << (8 * (3 - index))
    return ipaddress.IPv4Address(value)


def _part(label: str) -> int:
    # Checked by hand: int() would also take "+1", " 1" and "1_0".
    if label.startswith("0x"):
        digits, base, allowed = label[2:], 16, _HEX
    elif len(label) > 1 and label.startswith("0"):
        digits, base, allowed = label[1:], 8, "01234567"
    else:
        digits, base, allowed = label, 10, "0123456789"
    if (not digits and base != 16) or any(c not in allowed for c in digits):
        raise ValueError(label)
    return int(digits or "0", base)
