"""TLS between EdgeSense services: which files, checked once at start.

    EDGESENSE_GRPC_TLS_CERT         PEM certificate (chain) this process presents:
                                    as a gRPC server, and as a client to servers
                                    that require client certificates
    EDGESENSE_GRPC_TLS_KEY          its private key (PEM, unencrypted)
    EDGESENSE_GRPC_TLS_CA           PEM CA bundle the peers' certificates must
                                    chain to (default: the system CAs)
    EDGESENSE_GRPC_TLS_CLIENT_AUTH  `none` (default) or `require`: servers refuse
                                    clients without a certificate from that CA

None of them set: plaintext gRPC. Any of them set: TLS on every gRPC server
and client of the process. Half a configuration (a certificate without its
key, `require` without a CA to check clients against) is refused here, with
the variable named, rather than at the first handshake with an OpenSSL
message. `edgesense.common.grpc_tls` turns a `GrpcTls` into gRPC credentials; this
module imports no transport library.

Files are read once at start: after rotating certificates, restart the
services (a rolling restart keeps them available).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from edgesense.common.errors import ConfigurationError

CERT_VAR = "EDGESENSE_GRPC_TLS_CERT"
KEY_VAR = "EDGESENSE_GRPC_TLS_KEY"
CA_VAR = "EDGESENSE_GRPC_TLS_CA"
CLIENT_AUTH_VAR = "EDGESENSE_GRPC_TLS_CLIENT_AUTH"
CLIENT_AUTH_VALUES = ("none", "require")


@dataclass(frozen=True)
class PemFile:
    """A PEM file named by a setting, as read at start."""

    variable: str
    path: str
    data: bytes

    @classmethod
    def read(cls, variable: str, path: str) -> PemFile:
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise ConfigurationError(f"{variable}: cannot read {path}: {exc.strerror}") from None
        return cls(variable, path, data)

    def where(self) -> str:
        return f"{self.variable} ({self.path})"


@dataclass(frozen=True)
class GrpcTls:
    """The TLS settings of a process's gRPC servers and clients; empty = plaintext."""

    cert: PemFile | None = None
    key: PemFile | None = None
    ca: PemFile | None = None
    require_client_cert: bool = False

    @property
    def enabled(self) -> bool:
        return any(f is not None for f in (self.cert, self.key, self.ca))

    @property
    def has_identity(self) -> bool:
        """A certificate and key to serve with (and to present as a client)."""
        return self.cert is not None and self.key is not None

    def describe(self) -> str:
        if not self.enabled:
            return "plaintext"
        return "mutual TLS (client certificates required)" if self.require_client_cert else "TLS"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> GrpcTls:
        paths = {var: (env.get(var) or "").strip() for var in (CERT_VAR, KEY_VAR, CA_VAR)}
        raw_auth = (env.get(CLIENT_AUTH_VAR) or "none").strip().lower()
        if raw_auth not in CLIENT_AUTH_VALUES:
            raise ConfigurationError(
                f"{CLIENT_AUTH_VAR} must be none or require, not {env.get(CLIENT_AUTH_VAR)!r}"
            )
        if bool(paths[CERT_VAR]) != bool(paths[KEY_VAR]):
            given, missing = (CERT_VAR, KEY_VAR) if paths[CERT_VAR] else (KEY_VAR, CERT_VAR)
            raise ConfigurationError(
                f"{given} is set but {missing} is not: TLS needs the certificate and its "
                "private key together (or neither, for plaintext gRPC)"
            )
        require = raw_auth == "require"
        if require and not paths[CERT_VAR]:
            raise ConfigurationError(
                f"{CLIENT_AUTH_VAR}=require needs {CERT_VAR} and {KEY_VAR}: every service "
                "then presents its own certificate to the others"
            )
        if require and not paths[CA_VAR]:
            raise ConfigurationError(
                f"{CLIENT_AUTH_VAR}=require needs {CA_VAR}, the CA that client "
                "certificates must chain to"
            )
        files = {var: PemFile.read(var, path) for var, path in paths.items() if path}
        tls = cls(files.get(CERT_VAR), files.get(KEY_VAR), files.get(CA_VAR), require)
        tls.check()
        return tls

    def check(self) -> None:
        """The files hold what they should, the key belongs to the certificate, and
        the certificate has not expired: each problem named before any handshake."""
        if self.ca is not None:
            _certificates(self.ca)
        if self.cert is None or self.key is None:
            return
        leaf = _certificates(self.cert)[0]
        try:
            key = serialization.load_pem_private_key(self.key.data, password=None)
        except (ValueError, TypeError):
            raise ConfigurationError(
                f"{self.key.where()} holds no unencrypted PEM private key"
            ) from None
        public = serialization.PublicFormat.SubjectPublicKeyInfo
        der = serialization.Encoding.DER
        if key.public_key().public_bytes(der, public) != leaf.public_key().public_bytes(
            der, public
        ):
            raise ConfigurationError(
                f"{self.key.where()} is not the private key of the certificate in "
                f"{self.cert.where()}"
            )
        if leaf.not_valid_after_utc <= datetime.now(UTC):
            raise ConfigurationError(
                f"the certificate in {self.cert.where()} expired on "
                f"{leaf.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
            )


def _certificates(pem: PemFile) -> list[x509.Certificate]:
    try:
        found = x509.load_pem_x509_certificates(pem.data)
    except ValueError:
        found = []
    if not found:
        raise ConfigurationError(f"{pem.where()} holds no PEM certificate")
    return found
