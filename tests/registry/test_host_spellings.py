"""Every spelling of a private address is refused at registration (pure logic).

Resolvers (glibc inet_aton: 1-4 parts, decimal, octal or hex) and URL parsers
(WHATWG: the same when the last label is a number, after percent-decoding and
IDNA mapping) read far more than dotted decimal as an address; each of these
must be refused as the dotted form is, naming `url`.
"""

from __future__ import annotations

import ipaddress

import pytest

from edgesense.common.errors import InvalidArgument
from edgesense.common.hostaddr import embedded_ipv4, host_address
from edgesense.common.netpolicy import UrlPolicy, is_forbidden_address


def fullwidth(text: str) -> str:
    """`text` in full-width forms (U+FF01-FF5E), which IDNA maps back to ASCII."""
    return "".join(chr(ord(c) + 0xFEE0) for c in text)


STRICT = UrlPolicy()
DEV = UrlPolicy(allow_insecure_urls=True, allow_private_networks=True)

# host as written in the URL -> the address it denotes
PRIVATE_SPELLINGS = {
    "2130706433": "127.0.0.1",
    "0x7f000001": "127.0.0.1",
    "0X7F000001": "127.0.0.1",
    "127.1": "127.0.0.1",
    "127.0.1": "127.0.0.1",
    "0177.0.0.1": "127.0.0.1",
    "0177.1": "127.0.0.1",
    "00000177.0.0.1": "127.0.0.1",
    "0x7f.1": "127.0.0.1",
    "0x7f.0x0.0x0.0x1": "127.0.0.1",
    "017700000001": "127.0.0.1",
    "127.0.0.1.": "127.0.0.1",
    "127.0.0.1..": "127.0.0.1",
    "0": "0.0.0.0",
    "0x0": "0.0.0.0",
    "0.0.0.0": "0.0.0.0",
    "10.1": "10.0.0.1",
    "167772161": "10.0.0.1",
    "0xa9fea9fe": "169.254.169.254",
    "169.254.43518": "169.254.169.254",
    "0251.0376.0251.0376": "169.254.169.254",
    "3232235521": "192.168.0.1",
    "0xc0a80001": "192.168.0.1",
    "192.168.1": "192.168.0.1",
    "100.64.0.1": "100.64.0.1",
    "224.0.0.1": "224.0.0.1",
    "4026531841": "240.0.0.1",
    "%31%32%37.0.0.1": "127.0.0.1",
    fullwidth("127.0.0.1"): "127.0.0.1",  # IDNA maps full-width digits and dots
    "127\u30020\u30020\u30021": "127.0.0.1",  # ideographic full stops
    "[::1]": "::1",
    "[::]": "::",
    "[0:0:0:0:0:0:0:1]": "::1",
    "[::ffff:127.0.0.1]": "::ffff:127.0.0.1",
    "[::ffff:7f00:1]": "::ffff:127.0.0.1",
    "[::ffff:a9fe:a9fe]": "::ffff:169.254.169.254",
    "[::127.0.0.1]": "::7f00:1",
    "[::10.0.0.1]": "::a00:1",
    "[2002:7f00:1::]": "2002:7f00:1::",
    "[2002:c0a8:1::1]": "2002:c0a8:1::1",
    "[64:ff9b::7f00:1]": "64:ff9b::7f00:1",
    "[64:ff9b::a9fe:a9fe]": "64:ff9b::a9fe:a9fe",
    "[fe80::1]": "fe80::1",
    "[fc00::1]": "fc00::1",
    "[fd12:3456::1]": "fd12:3456::1",
    "[ff02::1]": "ff02::1",
}

LOCAL_NAMES = [
    "localhost",
    "LOCALHOST",
    "localhost.",
    "api.localhost",
    "a.b.localhost.",
    "localhost.localdomain",
    "ip6-localhost",
    fullwidth("localhost"),
]

# Numeric hosts that are no address at all, or that carry a zone id.
NOT_ADDRESSES = [
    "1.2.3.4.5",
    "256.1.1.1",
    "1.2.3.256",
    "1.16777216",
    "4294967296",
    "0x100000000",
    "08.0.0.1",
    "127..1",
    "example.123",
    "[fe80::1%25eth0]",
    "[::1%25lo]",
    "127.0.0.1\\@example.com",  # WHATWG: host 127.0.0.1; urlsplit: example.com
    "[::ffff:127.0.0.1%25x]",
]

# Public addresses spelled oddly: refused too (clients disagree on them),
# with a message that says how to write them.
ODD_PUBLIC = {
    "134744072": "8.8.8.8",
    "0x08080808": "8.8.8.8",
    "8.8.2056": "8.8.8.8",
    "010.010.010.010": "8.8.8.8",
    fullwidth("8.8.8.8"): "8.8.8.8",
    "8.8.8.8.": "8.8.8.8",
}

ACCEPTED = [
    "example.com",
    "example.com.",
    "hooks.example.com",
    "8.8.8.8",
    "1.1.1.1",
    "[2606:4700:4700::1111]",
    "[2002:808:808::1]",  # 6to4 of a public address
    "127.0.0.1.nip.io",  # a name: DNS decides, checked at send time
    "0x7f000001.example.com",
    "1e100.net",
    "localhost.example.com",
    "xn--bcher-kva.example",
    "bücher.example",
]


def refusal(url: str, policy: UrlPolicy = STRICT) -> InvalidArgument:
    with pytest.raises(InvalidArgument) as caught:
        policy.check_webhook_url(url)
    assert caught.value.field == "url"
    return caught.value


@pytest.mark.parametrize(("host", "address"), PRIVATE_SPELLINGS.items())
def test_every_spelling_of_a_private_address_is_refused(host: str, address: str) -> None:
    error = refusal(f"https://{host}/hook")
    assert "private, loopback or link-local" in error.problem
    assert "EDGESENSE_ALLOW_PRIVATE_NETWORKS=1" in error.problem
    if not host.startswith("["):
        assert f"means {ipaddress.ip_address(address)}" in error.problem


@pytest.mark.parametrize("host", LOCAL_NAMES)
def test_local_names_are_refused(host: str) -> None:
    error = refusal(f"https://{host}:8443/hook")
    assert "local name" in error.problem


@pytest.mark.parametrize("host", NOT_ADDRESSES)
def test_numeric_hosts_that_are_no_address_are_refused(host: str) -> None:
    error = refusal(f"https://{host}/hook")
    assert any(words in error.problem for words in ("not a valid", "zone id", "backslash"))


@pytest.mark.parametrize(("host", "address"), ODD_PUBLIC.items())
def test_odd_spellings_of_public_addresses_are_refused_saying_how_to_write_them(
    host: str, address: str
) -> None:
    error = refusal(f"https://{host}/hook")
    assert f"write {address}" in error.problem


@pytest.mark.parametrize("host", ACCEPTED)
def test_names_and_public_addresses_are_accepted(host: str) -> None:
    assert STRICT.check_webhook_url(f"https://{host}/hook") == f"https://{host}/hook"


@pytest.mark.parametrize("host", [*PRIVATE_SPELLINGS, *LOCAL_NAMES, *ODD_PUBLIC])
def test_the_private_network_opt_in_accepts_them_all(host: str) -> None:
    DEV.check_webhook_url(f"http://{host}/hook")


@pytest.mark.parametrize(("host", "address"), PRIVATE_SPELLINGS.items())
def test_host_address_reads_what_a_resolver_reads(host: str, address: str) -> None:
    found = host_address(host.strip("[]"))
    assert found is not None
    assert found.address == ipaddress.ip_address(address)


@pytest.mark.parametrize(
    ("address", "inner"),
    [
        ("::ffff:127.0.0.1", "127.0.0.1"),
        ("::7f00:1", "127.0.0.1"),
        ("2002:a9fe:a9fe::", "169.254.169.254"),
        ("64:ff9b::a00:1", "10.0.0.1"),
        ("64:ff9b:1::a00:1", "10.0.0.1"),
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "192.0.2.45"),  # Teredo (RFC 4380 example)
        ("::1", None),
        ("2606:4700:4700::1111", None),
    ],
)
def test_embedded_ipv4_addresses(address: str, inner: str | None) -> None:
    found = embedded_ipv4(ipaddress.IPv6Address(address))
    assert found == (ipaddress.IPv4Address(inner) if inner else None)


@pytest.mark.parametrize(
    "address", ["::ffff:127.0.0.1", "2002:7f00:1::", "64:ff9b::a9fe:a9fe", "::10.0.0.1"]
)
def test_the_send_time_check_sees_through_embedded_addresses(address: str) -> None:
    # Delivery applies is_forbidden_address to the address it connected to.
    assert is_forbidden_address(address)


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("example.com/hook", "has no scheme"),
        ("localhost:9000/hook", "has no scheme"),
        ("ftp://example.com/hook", "scheme ftp://"),
    ],
)
def test_a_url_without_scheme_says_so_and_what_is_accepted(url: str, words: str) -> None:
    dev = refusal(url, DEV)
    assert words in dev.problem
    assert "http:// or https://" in dev.problem
    strict = refusal(url, STRICT)
    assert words in strict.problem
    assert "an https:// URL" in strict.problem
    assert "http:// or" not in strict.problem
