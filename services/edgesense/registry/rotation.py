"""Secret rotation: which previous secrets stay live, and for how long (pure).

A rotation makes the new secret current; the one it replaces stays live (it
keeps signing) until `now + overlap`, and no older secret stays live past
that time either, so an overlap of 0 means only the new secret signs from
now on. At most MAX_LIVE_PREVIOUS previous secrets are live at once (Svix's
number); expired ones are dropped at each rotation. Delivery decides expiry
again at send time, so nothing has to happen when an overlap ends.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from edgesense.common.errors import FailedPrecondition, InvalidArgument

MAX_LIVE_PREVIOUS = 10


@dataclass(frozen=True)
class PreviousSecret:
    """A rotated-out secret that signs until `expires_at`."""

    secret: str
    expires_at: datetime

    def __repr__(self) -> str:  # never the secret
        return f"PreviousSecret(expires_at={self.expires_at.isoformat()})"


def live(previous: Sequence[PreviousSecret], now: datetime) -> tuple[PreviousSecret, ...]:
    """The previous secrets that still sign at `now`, in their order (oldest first)."""
    return tuple(p for p in previous if p.expires_at > now)


def rotate(
    current: str,
    previous: Sequence[PreviousSecret],
    new: str,
    overlap_seconds: int,
    now: datetime,
) -> tuple[PreviousSecret, ...]:
    """The previous secrets, oldest first, after `new` replaces `current`.

    InvalidArgument (naming `secret`) if `new` is the current secret or a live
    previous one; FailedPrecondition if more than MAX_LIVE_PREVIOUS would be
    live, saying when the oldest ends.
    """
    still = live(previous, now)
    if new == current or any(new == p.secret for p in still):
        raise InvalidArgument(
            "secret",
            "is the current secret or one still live from an earlier rotation; choose a new one",
        )
    ends = now + timedelta(seconds=overlap_seconds)
    kept = [
        PreviousSecret(p.secret, min(p.expires_at, ends))
        for p in still
        if min(p.expires_at, ends) > now
    ]
    if ends > now:
        kept.append(PreviousSecret(current, ends))
    if len(kept) > MAX_LIVE_PREVIOUS:
        raise FailedPrecondition(
            f"at most {MAX_LIVE_PREVIOUS} previous secrets may be live at once, and "
            f"{len(still)} are; the oldest ends at {kept[0].expires_at.isoformat()}: rotate "
            "after that, or with overlapSeconds 0 to end them all now"
        )
    return tuple(kept)


def rotation_ends_at(previous: Sequence[PreviousSecret], now: datetime) -> datetime | None:
    """When the last live previous secret ends; None if none is live."""
    still = live(previous, now)
    return max(p.expires_at for p in still) if still else None
