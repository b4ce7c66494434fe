"""Signing secrets and custom header values encrypted at rest with Fernet
(AES-128-CBC + HMAC-SHA256).

The key is EDGESENSE_SECRET_KEY; a copy of the database alone does not reveal
any secret or header value. The webhook id (and, for anything but the
current secret, what the text is: `previous-secrets`, `headers`) is bound
into the plaintext, so a ciphertext copied onto another row or into another
column does not decrypt as that row's or that column's value.
"""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken

from edgesense.common.errors import ConfigurationError

SECRET = "secret"
PREVIOUS_SECRETS = "previous-secrets"
HEADERS = "headers"


def _owner(webhook_id: str, what: str) -> str:
    # The current secret keeps the form it had before anything else was sealed.
    return webhook_id if what == SECRET else f"{webhook_id}:{what}"


class SecretBox:
    def __init__(self, key: bytes) -> None:
        try:
            self._fernet = Fernet(key)
        except ValueError as exc:
            raise ConfigurationError(f"EDGESENSE_SECRET_KEY is not a Fernet key: {exc}") from None

    def seal(self, webhook_id: str, secret: str, what: str = SECRET) -> str:
        return self._fernet.encrypt(f"{_owner(webhook_id, what)}\n{secret}".encode()).decode()

    def open(self, webhook_id: str, token: str, what: str = SECRET) -> str:
        try:
            plain = self._fernet.decrypt(token.encode()).decode()
        except InvalidToken:
            raise ConfigurationError(
                f"the {what} of {webhook_id} does not decrypt: EDGESENSE_SECRET_KEY changed?"
            ) from None
        owner, _, secret = plain.partition("\n")
        if owner != _owner(webhook_id, what):
            raise ConfigurationError(
                f"the stored {what} of {webhook_id} belongs to another webhook or column"
            )
        return secret
