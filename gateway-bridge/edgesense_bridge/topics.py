"""Gateway topics (contract section 4): what a topic names, and the topics we use.

    {prefix}/{projectId}/{gatewayId}/{deviceId}/{kind}   kind: data|alert|status|config
    {prefix}/{projectId}/{gatewayId}/status              the gateway's own status
    {prefix}/{projectId}/{gatewayId}/{deviceId}/config/set   what PushConfig publishes

The bridge subscribes to `{prefix}/#` (so a wrong depth or an unknown kind is
seen and counted instead of silently never matching) and skips its own
`config/set` publications.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from edgesense.common.events import DEVICE_ID

KINDS: Final = ("data", "alert", "status", "config")
ID_RULE: Final = "1-128 of A-Z a-z 0-9 . _ : -, starting with a letter or digit"


class TopicError(ValueError):
    """A topic that names no event; `reason` is the metric label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def is_valid_id(value: str) -> bool:
    return DEVICE_ID.fullmatch(value) is not None


def check_id(name: str, value: str) -> None:
    """Raise TopicError ("bad_id") naming `name` unless `value` is an id."""
    if not is_valid_id(value):
        raise TopicError("bad_id", f"{name} {value[:40]!r} is not an id ({ID_RULE})")


@dataclass(frozen=True)
class TopicAddress:
    """The project, gateway, device and kind a topic names; ids already checked."""

    project_id: str
    gateway_id: str
    device_id: str
    kind: str

    def __post_init__(self) -> None:
        for name in ("project_id", "gateway_id", "device_id"):
            check_id(name, getattr(self, name))
        if self.kind not in KINDS:
            raise TopicError("unknown_kind", f"kind {self.kind[:40]!r} is not one of {KINDS}")


@dataclass(frozen=True)
class TopicLayout:
    """The topics under one prefix."""

    prefix: str

    def subscription(self, shared_group: str | None = None) -> str:
        wildcard = f"{self.prefix}/#"
        return f"$share/{shared_group}/{wildcard}" if shared_group else wildcard

    def config_set(self, project_id: str, gateway_id: str, device_id: str) -> str:
        return f"{self.prefix}/{project_id}/{gateway_id}/{device_id}/config/set"

    def is_config_set(self, topic: str) -> bool:
        levels = self._levels(topic)
        return levels is not None and len(levels) == 5 and levels[3:] == ["config", "set"]

    def parse(self, topic: str) -> TopicAddress:
        """The address a gateway topic names; raises TopicError."""
        levels = self._levels(topic)
        if levels is None:
            raise TopicError("bad_topic", f"topic is not under {self.prefix}/")
        if len(levels) == 3 and levels[2] == "status":
            project, gateway, _ = levels
            return TopicAddress(project, gateway, gateway, "status")
        if len(levels) != 4:
            raise TopicError(
                "bad_topic",
                f"expected {self.prefix}/project/gateway/device/kind or "
                f"{self.prefix}/project/gateway/status, got {len(levels)} levels",
            )
        return TopicAddress(*levels)

    def _levels(self, topic: str) -> list[str] | None:
        head = self.prefix + "/"
        if not topic.startswith(head):
            return None
        return topic[len(head) :].split("/")
