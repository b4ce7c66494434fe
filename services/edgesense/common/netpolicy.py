"""Which webhook targets may be called: the URL rule and the private-network rule.

Used twice: at registration (`check_webhook_url`, on the URL as written) and
at send time by delivery (`is_forbidden_address`, on the address actually
connected to), so a name that later resolves to 127.0.0.1 or 169.254.169.254
is refused too. Private networks (loopback, RFC 1918, link-local, CGNAT,
unique-local, multicast, reserved, unspecified) are refused unless
EDGESENSE_ALLOW_PRIVATE_NETWORKS=1.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

from edgesense.common.errors import InvalidArgument
from edgesense.common.hostaddr import (
    IPAddress,
    NumericHostError,
    embedded_ipv4,
    host_address,
    is_local_name,
    normalize_host,
)

MAX_URL_LENGTH = 2048
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_PRIVATE = "points to a private, loopback or link-local address"
_OPT_IN = "allowed only with EDGESENSE_ALLOW_PRIVATE_NETWORKS=1"


def is_forbidden_address(address: str) -> bool:
    """True for an IP address webhooks must not reach without the private opt-in."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return True
    return forbidden_ip(ip)


def forbidden_ip(ip: IPAddress) -> bool:
    """The private-network rule on one address, and on the IPv4 address an IPv6
    one embeds (mapped, compatible, 6to4, NAT64, Teredo)."""
    if isinstance(ip, ipaddress.IPv6Address):
        inner = embedded_ipv4(ip)
        if inner is not None and forbidden_ip(inner):
            return True
    return (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or (isinstance(ip, ipaddress.IPv4Address) and ip in _CGNAT)
    )


@dataclass(frozen=True)
class UrlPolicy:
    allow_insecure_urls: bool = False
    allow_private_networks: bool = False

    def check_webhook_url(self, url: str) -> str:
        """The URL, if it may be registered; InvalidArgument naming `url` if not."""
        url = url.strip()
        if not url:
            raise InvalidArgument("url", "is required")
        if len(url) > MAX_URL_LENGTH:
            raise InvalidArgument("url", f"is longer than {MAX_URL_LENGTH} characters")
        try:
            parts = urlsplit(url)
            host = parts.hostname
            parts.port  # noqa: B018  (raises ValueError on a bad port)
        except ValueError as exc:
            raise InvalidArgument("url", f"does not parse: {exc}") from None
        scheme = parts.scheme.lower()
        if scheme not in ("https", "http"):
            raise InvalidArgument("url", self._scheme_problem(url, scheme))
        if scheme == "http" and not self.allow_insecure_urls:
            raise InvalidArgument(
                "url", "must be https:// (http:// needs EDGESENSE_ALLOW_INSECURE_URLS=1)"
            )
        if not host:
            raise InvalidArgument("url", "has no host")
        if any(c.isspace() for c in url):
            raise InvalidArgument("url", "contains white space")
        if "\\" in parts.netloc:
            # Browsers read https://127.0.0.1\@example.com as host 127.0.0.1,
            # Python's parsers as example.com: refuse what parsers disagree on.
            raise InvalidArgument(
                "url", "has a backslash before its path, which URL parsers read differently"
            )
        if not self.allow_private_networks:
            _check_host(host)
        return url

    def _scheme_problem(self, url: str, scheme: str) -> str:
        accepted = "an http:// or https:// URL" if self.allow_insecure_urls else "an https:// URL"
        if not scheme or "://" not in url:
            return f"has no scheme (such as https://); it must be {accepted}"
        return f"has the scheme {scheme[:20]}://; it must be {accepted}"


def _check_host(host: str) -> None:
    """InvalidArgument unless `host` is a public address or a name (names are
    checked at send time, on the address connected to)."""
    if is_local_name(normalize_host(host)):
        raise InvalidArgument("url", f"{_PRIVATE} ({host[:60]} is a local name; {_OPT_IN})")
    try:
        found = host_address(host)
    except NumericHostError as exc:
        raise InvalidArgument("url", f"host {exc}") from None
    if found is None:
        return
    if forbidden_ip(found.address):
        raise InvalidArgument("url", f"{_PRIVATE} ({host[:60]} means {found.address}; {_OPT_IN})")
    if not found.canonical:
        raise InvalidArgument(
            "url",
            f"host {host[:60]!r} is an unusual spelling of {found.address}, which "
            f"resolvers and URL parsers may read differently: write {found.address}",
        )
