"""Certificates from a test CA (trustme) written where EDGESENSE_GRPC_TLS_* can name them."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

import trustme

from edgesense.common.tls import CA_VAR, CERT_VAR, CLIENT_AUTH_VAR, KEY_VAR, GrpcTls


@dataclass(frozen=True)
class TlsFiles:
    """One identity's certificate and key, and the CA bundle it trusts."""

    cert: Path
    key: Path
    ca: Path

    def env(self, client_auth: str = "require") -> dict[str, str]:
        return {
            CERT_VAR: str(self.cert),
            KEY_VAR: str(self.key),
            CA_VAR: str(self.ca),
            CLIENT_AUTH_VAR: client_auth,
        }

    def tls(self, client_auth: str = "require") -> GrpcTls:
        return GrpcTls.from_env(self.env(client_auth))


def write_identity(
    ca: trustme.CA,
    directory: Path,
    *names: str,
    trusts: trustme.CA | None = None,
    not_after: datetime.datetime | None = None,
) -> TlsFiles:
    """A certificate for `names` (default 127.0.0.1 and localhost) signed by `ca`;
    the bundle is `trusts` (default: the same CA)."""
    directory.mkdir(parents=True, exist_ok=True)
    leaf = ca.issue_cert(*(names or ("127.0.0.1", "localhost")), not_after=not_after)
    files = TlsFiles(directory / "tls.crt", directory / "tls.key", directory / "ca.crt")
    files.cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(files.key))
    (trusts or ca).cert_pem.write_to_path(str(files.ca))
    return files
