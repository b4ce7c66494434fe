"""Listen addresses: one clear error when a service cannot bind one.

Every service listens on a gRPC or HTTP address and a metrics address. When
one is taken, the user should read one line naming it (`CannotListen`, exit
code 3 from `edgesense <service>`), not a traceback.

gRPC needs help with that. On Linux it sets SO_REUSEPORT by default, so a
second registry started on the port of a running one binds without an error
and the kernel shares new connections between the two (the stale process
answers health checks). Our gRPC servers turn SO_REUSEPORT off; and since
gRPC's own bind failure is a RuntimeError without the reason (plus a line of
C-core logging), `ensure_free` first binds the address with a plain socket
and reports the operating system's reason. aiohttp's OSError only needs
translating (`cannot_listen`).
"""

from __future__ import annotations

import os
import socket

from edgesense.common.errors import CannotListen


def split_address(addr: str) -> tuple[str, int]:
    """'host:port' or '[v6]:port' -> (host, port); an empty host means every address."""
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"address {addr!r} is not host:port")
    return host.strip("[]") or "0.0.0.0", int(port)


def join_address(host: str, port: int) -> str:
    """(host, port) -> 'host:port', with an IPv6 host in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def local_address(addr: str) -> str:
    """Where a client on this machine reaches a server listening on `addr`:
    a wildcard host (empty, 0.0.0.0, ::) becomes loopback, so that a URL made
    of it opens in a browser (which refuses 0.0.0.0) and `:8080` makes a URL."""
    host, port = split_address(addr)
    if host in ("0.0.0.0", "::"):
        host = "::1" if host == "::" else "127.0.0.1"
    return join_address(host, port)


def cannot_listen(address: str, exc: OSError) -> CannotListen:
    """The error for a failed bind, with the OS's reason in lower case (aiohttp
    puts its own words around it in `strerror`: the errno's text is shorter)."""
    reason = os.strerror(exc.errno) if exc.errno else exc.strerror or str(exc)
    return CannotListen(address, reason[:1].lower() + reason[1:])


def ensure_free(addr: str) -> None:
    """Raise CannotListen if `addr` cannot be bound now (port 0 always can).

    Binds every address the host resolves to, with SO_REUSEADDR as gRPC does
    (a port left in TIME_WAIT by a stopped server is free), then lets go.
    """
    host, port = split_address(addr)
    if port == 0:
        return
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise cannot_listen(addr, exc) from exc
    for family, kind, proto, _, sockaddr in found:
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(sockaddr)
            except OSError as exc:
                raise cannot_listen(addr, exc) from exc
