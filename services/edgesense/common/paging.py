"""Pages of a listing: opaque page tokens, and pages cut to a byte budget.

Every listing answer must stay under gRPC's 4 MiB message limit whatever the
rows hold, so a page ends at `page_size` items or when the next item would
pass PAGE_BYTES, whichever comes first (`fit_page`); one item is always far
below the budget, since every field it carries is bounded at validation.

Page tokens are opaque, signed and bound to the listing they page.

A token carries where the next page starts (a delivery's seq, a webhook's id)
and an HMAC over that position and the listing's scope: the project, and the
webhook and filter for deliveries. So a token is usable only on the listing
that issued it, a client cannot forge a position (say, a number that
overflows the database's integer), and any replica accepts it: the key is
derived from the internal service token every service shares. A malformed,
altered or foreign token is InvalidArgument naming `pageToken` (400).
Pure: no I/O.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Callable, Sequence
from typing import TypeVar

from google.protobuf.message import Message

from edgesense.common.errors import InvalidArgument

_CONTEXT = b"edgesense page tokens v1"
_MAC_BYTES = 16
MAX_TOKEN_CHARS = 256
MAX_SEQ = 2**63 - 1  # the database's BIGINT
# A quarter of gRPC's default 4 MiB limit: the answer's own fields and JSON
# transcoding overhead have ample room.
PAGE_BYTES = 1024 * 1024
# A repeated message field costs its tag and a length of up to 5 bytes.
_FRAMING_BYTES = 6


def page_size(requested: int, default: int, maximum: int) -> int:
    """The page size a request asks for: its own (capped), or the default."""
    if requested < 0:
        raise InvalidArgument("pageSize", "must not be negative")
    return min(requested or default, maximum)


R = TypeVar("R")
M = TypeVar("M", bound=Message)


def fit_page(
    rows: Sequence[R], to_message: Callable[[R], M], page_size: int, budget: int = PAGE_BYTES
) -> tuple[list[M], bool]:
    """Messages of the first rows that fit `page_size` and `budget` (at least
    one), and whether a row was left for a next page (`rows` may hold one
    more than `page_size`: the sign that there is more)."""
    page: list[M] = []
    used = 0
    for row in rows[:page_size]:
        message = to_message(row)
        size = message.ByteSize() + _FRAMING_BYTES
        if page and used + size > budget:
            return page, True
        page.append(message)
        used += size
    return page, len(rows) > len(page)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class PageTokens:
    def __init__(self, shared_secret: str | bytes) -> None:
        secret = shared_secret.encode() if isinstance(shared_secret, str) else shared_secret
        self._key = hmac.new(secret, _CONTEXT, hashlib.sha256).digest()

    def issue(self, scope: Sequence[str], position: str) -> str:
        return f"{_b64(position.encode())}.{_b64(self._mac(scope, position))}"

    def read(self, token: str, scope: Sequence[str]) -> str | None:
        """The position `token` starts at; None for no token (the first page)."""
        if not token:
            return None
        encoded, dot, mac = token.partition(".")
        if len(token) > MAX_TOKEN_CHARS or not dot:
            raise _invalid()
        try:
            position = _unb64(encoded).decode()
            given = _unb64(mac)
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise _invalid() from None
        if not hmac.compare_digest(given, self._mac(scope, position)):
            raise InvalidArgument(
                "pageToken",
                "was not issued for this listing (it pages another project, webhook "
                "or status filter, or it was altered); start again without it",
            )
        return position

    def read_seq(self, token: str, scope: Sequence[str]) -> int | None:
        """A position that is a sequence number (1 to the largest BIGINT)."""
        position = self.read(token, scope)
        if position is None:
            return None
        if not position.isascii() or not position.isdigit() or not 0 < int(position) <= MAX_SEQ:
            raise _invalid()
        return int(position)

    def _mac(self, scope: Sequence[str], position: str) -> bytes:
        # Unit and record separators: no scope part can contain them (the
        # text check refuses control characters), so parts cannot be shifted.
        message = "\x1f".join(scope) + "\x1e" + position
        return hmac.new(self._key, message.encode(), hashlib.sha256).digest()[:_MAC_BYTES]


def _invalid() -> InvalidArgument:
    return InvalidArgument("pageToken", "is not a page token this service issued")
