"""Signing secrets encrypted at rest with Fernet (AES-128-CBC + HMAC-SHA256).

The key is EDGESENSE_SECRET_KEY; a copy of the database alone does not reveal
any secret. The webhook id is bound into the plaintext so a ciphertext copied
onto another row does not decrypt as that row's secret.
"""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken

from edgesense.common.errors import ConfigurationError


class SecretBox:
    def __init__(self, key: bytes) -> None:
        try:
            self._fernet = Fernet(key)
        except ValueError as exc:
            raise ConfigurationError(f"EDGESENSE_SECRET_KEY is not a Fernet key: {exc}") from None

    def seal(self, webhook_id: str, secret: str) -> str:
        return self._fernet.encrypt(f"{webhook_id}\n{secret}".encode()).decode()

    def open(self, webhook_id: str, token: str) -> str:
        try:
            plain = self._fernet.decrypt(token.encode()).decode()
        except InvalidToken:
            raise ConfigurationError(
                f"the secret of {webhook_id} does not decrypt: EDGESENSE_SECRET_KEY changed?"
            ) from None
        owner, _, secret = plain.partition("\n")
        if owner != webhook_id:
            raise ConfigurationError(
                f"the stored secret of {webhook_id} belongs to another webhook"
            )
        return secret
