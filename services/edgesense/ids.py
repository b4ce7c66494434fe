"""Random, URL-safe ids with a type prefix (`wh_…`, `dlv_…`, `evt_…`)."""

from __future__ import annotations

import base64
import secrets


def new_id(prefix: str, length: int = 20) -> str:
    """`prefix` + "_" + `length` random characters of [a-z2-7] (100 bits for 20).

    One read of the system's random source per id: ids are made on the hot
    path (one per delivery), where a character-by-character choice was slow.
    """
    raw = secrets.token_bytes((length * 5 + 7) // 8)
    return f"{prefix}_" + base64.b32encode(raw).decode().lower()[:length]
