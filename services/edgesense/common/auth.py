"""Who is calling: API keys (one project each) and the internal service token.

Every RPC reads `authorization: Bearer <token>` from the gRPC metadata (the
REST API forwards the `Authorization` header there). An API key scopes the
call to its project; the internal token, shared by our own services, opens the
internal RPCs (WatchWebhooks, ReportDeliveryFailure, Publish) and nothing else.

Keys are kept as SHA-256 digests so a lookup takes the same time whatever the
key, and no key sits in memory in the clear longer than start-up.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from edgesense.common.errors import PermissionDenied, Unauthenticated

INTERNAL_TOKEN_CONTEXT = b"edgesense internal service token v1"


def derive_internal_token(secret_key: bytes) -> str:
    """The internal token every service derives from EDGESENSE_SECRET_KEY."""
    return hmac.new(secret_key, INTERNAL_TOKEN_CONTEXT, hashlib.sha256).hexdigest()


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


@dataclass(frozen=True)
class Caller:
    """An authenticated caller: a project (API key) or one of our services."""

    project_id: str | None
    internal: bool = False


class Authenticator:
    def __init__(self, api_keys: Mapping[str, str], internal_token: str | None = None) -> None:
        self._projects = {_digest(key): project for key, project in api_keys.items()}
        self._internal = _digest(internal_token) if internal_token else None

    def caller(self, metadata: Iterable[tuple[str, str | bytes]] | None) -> Caller:
        token = bearer_token(metadata)
        digest = _digest(token)
        if self._internal is not None and hmac.compare_digest(digest, self._internal):
            return Caller(project_id=None, internal=True)
        project = self._projects.get(digest)
        if project is None:
            raise Unauthenticated("invalid API key")
        return Caller(project_id=project)

    def project(self, metadata: Iterable[tuple[str, str | bytes]] | None) -> str:
        """The project of an API-key caller; internal callers are refused."""
        caller = self.caller(metadata)
        if caller.project_id is None:
            raise PermissionDenied("this method needs a project API key")
        return caller.project_id

    def require_internal(self, metadata: Iterable[tuple[str, str | bytes]] | None) -> None:
        if not self.caller(metadata).internal:
            raise PermissionDenied("this method is internal to EdgeSense services")


def bearer_token(metadata: Iterable[tuple[str, str | bytes]] | None) -> str:
    for key, value in metadata or ():
        if key.lower() != "authorization":
            continue
        text = value.decode() if isinstance(value, bytes) else value
        scheme, _, token = text.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("authorization must be 'Bearer <api key>'")
        return token.strip()
    raise Unauthenticated("missing API key: send 'Authorization: Bearer <api key>'")


def bearer_metadata(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)
