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

from edgesense.errors import InvalidArgument

MAX_URL_LENGTH = 2048
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_LOCAL_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback")


def is_forbidden_address(address: str) -> bool:
    """True for an IP address webhooks must not reach without the private opt-in."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return True
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
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
            raise InvalidArgument("url", "must be an https:// URL")
        if scheme == "http" and not self.allow_insecure_urls:
            raise InvalidArgument(
                "url", "must be https:// (http:// needs EDGESENSE_ALLOW_INSECURE_URLS=1)"
            )
        if not host:
            raise InvalidArgument("url", "has no host")
        if any(c.isspace() for c in url):
            raise InvalidArgument("url", "contains white space")
        if not self.allow_private_networks and _names_private_host(host):
            raise InvalidArgument(
                "url",
                "points to a private, loopback or link-local address "
                "(allowed only with EDGESENSE_ALLOW_PRIVATE_NETWORKS=1)",
            )
        return url


def _names_private_host(host: str) -> bool:
    lowered = host.lower().rstrip(".")
    if lowered in _LOCAL_NAMES or lowered.endswith(".localhost"):
        return True
    try:
        ipaddress.ip_address(lowered.split("%", 1)[0])
    except ValueError:
        return False  # a name: checked on the resolved address at send time
    return is_forbidden_address(lowered)
