"""The one place gRPC servers and channels get their transport security.

Every server binds with `listen` and every client dials with `open_channel`,
both from the process's `GrpcTls` (`edgesense.common.tls`): TLS with the configured
certificate, key and CA, mutual TLS when client certificates are required, or
plaintext when nothing is configured. No other module calls
`add_insecure_port`, `insecure_channel` or `secure_channel`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import grpc

from edgesense.common.errors import ConfigurationError
from edgesense.common.tls import CA_VAR, CERT_VAR, KEY_VAR, GrpcTls

log = logging.getLogger(__name__)
ChannelOptions = Sequence[tuple[str, str | int]]


def server_credentials(tls: GrpcTls) -> grpc.ServerCredentials:
    if tls.cert is None or tls.key is None:
        raise ConfigurationError(
            f"{CA_VAR} is set but {CERT_VAR} and {KEY_VAR} are not: a gRPC server "
            "needs a certificate and key of its own to serve TLS"
        )
    ca = tls.ca.data if tls.ca is not None and tls.require_client_cert else None
    return grpc.ssl_server_credentials(
        [(tls.key.data, tls.cert.data)],
        root_certificates=ca,
        require_client_auth=tls.require_client_cert,
    )


def channel_credentials(tls: GrpcTls) -> grpc.ChannelCredentials:
    """Trust the configured CA (else the system's); present our certificate if we have one."""
    return grpc.ssl_channel_credentials(
        root_certificates=tls.ca.data if tls.ca is not None else None,
        private_key=tls.key.data if tls.key is not None else None,
        certificate_chain=tls.cert.data if tls.cert is not None else None,
    )


def listen(server: grpc.aio.Server, addr: str, tls: GrpcTls) -> int:
    """Bind `addr` (TLS when configured); the bound port, 0 when binding failed."""
    log.info("gRPC on %s: %s", addr, tls.describe())
    if tls.enabled:
        return server.add_secure_port(addr, server_credentials(tls))
    return server.add_insecure_port(addr)


def open_channel(
    target: str,
    tls: GrpcTls,
    options: ChannelOptions = (),
    *,
    server_name: str | None = None,
) -> grpc.aio.Channel:
    """A channel to another service. `server_name` checks the server's certificate
    for that name instead of the target's host (a health probe dialling 127.0.0.1)."""
    if not tls.enabled:
        return grpc.aio.insecure_channel(target, options=options)
    if server_name:
        options = [*options, ("grpc.ssl_target_name_override", server_name)]
    return grpc.aio.secure_channel(target, channel_credentials(tls), options=options)
