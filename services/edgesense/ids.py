"""Random, URL-safe ids with a type prefix (`wh_…`, `dlv_…`, `evt_…`)."""

from __future__ import annotations

import secrets
import string

_ALPHABET = string.ascii_lowercase + string.digits


def new_id(prefix: str, length: int = 20) -> str:
    """`prefix` + "_" + `length` random characters of [a-z0-9] (~103 bits for 20)."""
    return f"{prefix}_" + "".join(secrets.choice(_ALPHABET) for _ in range(length))
