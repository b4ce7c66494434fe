"""The bridge's own settings, read with `edgesense.common.config`'s parsers.

EDGESENSE_MQTT_CLIENT_ID (`edgesense-bridge`)
    Stable client id: the broker keeps our session (and queues for us) under it.
EDGESENSE_MQTT_SHARED_GROUP (none)
    Subscribe as `$share/{group}/…` so that several bridges split the load.
EDGESENSE_MQTT_PROTOCOL (`5`)
    `5` (MQTT 5) or `3.1.1`.
EDGESENSE_MQTT_SESSION_EXPIRY_SECONDS (`86400`)
    MQTT 5 session expiry: how long the broker keeps queueing while we are down.
EDGESENSE_MQTT_KEEPALIVE_SECONDS (`30`)
    MQTT keepalive.
EDGESENSE_MQTT_CA_FILE (system CAs)
    CA file trusted for `mqtts://` brokers.
EDGESENSE_MQTT_MAX_PAYLOAD_BYTES (`262144`)
    Larger payloads are rejected (`too_large`).
EDGESENSE_MQTT_RECONNECT_MAX_SECONDS (`30`)
    Cap of the reconnect backoff (it starts at 0.5 s and has jitter).
EDGESENSE_BRIDGE_MAX_IN_FLIGHT (`1000`)
    Messages received and not yet acknowledged: the MQTT 5 receive maximum, and
    the bridge stops reading from the broker when it holds this many.
EDGESENSE_BRIDGE_BATCH_SIZE (`200`)
    Most events in one Publish message to delivery.
EDGESENSE_BRIDGE_BATCH_LINGER_MS (`2`)
    How long a batch may wait to fill while other batches are in flight (a batch
    leaves at once when the stream is idle).
EDGESENSE_BRIDGE_PIPELINE_DEPTH (`4`)
    Batches sent and not yet confirmed, at most.
EDGESENSE_BRIDGE_TOPICS (`edgesense,sparkplug`)
    The inputs the bridge subscribes to: `edgesense`, our topic scheme
    (`{prefix}/#`, shared with EDGESENSE_MQTT_SHARED_GROUP), and `sparkplug`,
    Sparkplug B (`spBv1.0/#`, never shared: see `server`).
EDGESENSE_SPARKPLUG_GROUPS (none)
    `group=projectId,...`: the project of a Sparkplug group; a group not named
    here is the project of the same id.
EDGESENSE_SPARKPLUG_HOST_ID (`edgesense`)
    The host id of our Sparkplug STATE topic (`spBv1.0/STATE/{host_id}`); empty:
    publish no STATE.

The variables every process shares (`EDGESENSE_MQTT_URL`,
`EDGESENSE_MQTT_TOPIC_PREFIX`, `EDGESENSE_BRIDGE_ADDR` for the DeviceConfig gRPC
server, TLS, keys) are `edgesense.common.config.Settings`; these are the
bridge's alone. Both read each variable with the same functions
(`env_int`, `env_choice`, ...), so a bad value is refused in the same words.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from edgesense.common.config import (
    BrokerUrl,
    check_topic_prefix,
    env_choice,
    env_int,
    env_optional,
    env_text,
)
from edgesense.common.errors import ConfigurationError
from edgesense_bridge.sparkplug.topics import NAMESPACE as SPARKPLUG_NAMESPACE
from edgesense_bridge.topics import ID_RULE, is_valid_id

INPUTS: Final = ("edgesense", "sparkplug")
# Not in one topic level (a Sparkplug id, a shared subscription's group):
# MQTT forbids the wildcards there, and "/" would add a level (Sparkplug 3.0,
# tck-id-intro-group-id-chars and its kin).
NOT_IN_A_LEVEL: Final = "/+#"


def is_one_level(value: str) -> bool:
    return not any(c in value for c in NOT_IN_A_LEVEL)


def parse_inputs(raw: str) -> tuple[str, ...]:
    """EDGESENSE_BRIDGE_TOPICS: `edgesense,sparkplug`, one or both."""
    names = tuple(name.strip() for name in raw.split(","))
    unknown = [name for name in names if name not in INPUTS]
    if unknown or len(set(names)) != len(names):
        raise ConfigurationError(
            f"EDGESENSE_BRIDGE_TOPICS must name {' and/or '.join(INPUTS)}, comma-separated, "
            f"each once, not {raw!r}"
        )
    return names


def check_sparkplug_id(name: str, value: str) -> str:
    if not value or not is_one_level(value):
        raise ConfigurationError(f"{name}: {value[:40]!r} is not a Sparkplug id (no / + #)")
    return value


def parse_sparkplug_groups(raw: str) -> dict[str, str]:
    """EDGESENSE_SPARKPLUG_GROUPS: `group=projectId,...` -> {group: projectId}."""
    name = "EDGESENSE_SPARKPLUG_GROUPS"
    groups: dict[str, str] = {}
    if not raw.strip():
        return groups
    for n, entry in enumerate(raw.split(","), 1):
        group, sep, project = (part.strip() for part in entry.partition("="))
        if not sep or not group or not project:
            raise ConfigurationError(
                f"{name} must look like group=projectId,group2=projectId2; "
                f"entry {n} ({entry.strip()[:40]!r}) has no group or no project"
            )
        check_sparkplug_id(f"{name} entry {n}", group)
        if not is_valid_id(project):
            raise ConfigurationError(
                f"{name} entry {n}: project {project[:40]!r} is not an id ({ID_RULE})"
            )
        if group in groups:
            raise ConfigurationError(f"{name} names group {group!r} twice")
        groups[group] = project
    return groups


@dataclass(frozen=True)
class BridgeSettings:
    broker: BrokerUrl
    topic_prefix: str = "edgesense"
    client_id: str = "edgesense-bridge"
    shared_group: str | None = None
    mqtt5: bool = True
    session_expiry_seconds: int = 86400
    keepalive_seconds: int = 30
    ca_file: str | None = None
    max_payload_bytes: int = 256 * 1024
    reconnect_max_seconds: int = 30
    max_in_flight: int = 1000
    batch_size: int = 200
    batch_linger_seconds: float = 0.002
    pipeline_depth: int = 4
    inputs: tuple[str, ...] = INPUTS
    sparkplug_groups: Mapping[str, str] = field(default_factory=dict)
    sparkplug_host_id: str | None = "edgesense"  # None: publish no STATE

    @property
    def sparkplug(self) -> bool:
        return "sparkplug" in self.inputs

    def __post_init__(self) -> None:
        check_topic_prefix(self.topic_prefix)
        prefix_root = self.topic_prefix.split("/")[0]
        if "edgesense" in self.inputs and self.sparkplug and prefix_root == SPARKPLUG_NAMESPACE:
            raise ConfigurationError(
                f"EDGESENSE_MQTT_TOPIC_PREFIX must not be under {SPARKPLUG_NAMESPACE}/ "
                "while EDGESENSE_BRIDGE_TOPICS takes Sparkplug B too"
            )
        if self.sparkplug_host_id is not None:
            check_sparkplug_id("EDGESENSE_SPARKPLUG_HOST_ID", self.sparkplug_host_id)
        if self.shared_group is not None and not is_one_level(self.shared_group):
            raise ConfigurationError("EDGESENSE_MQTT_SHARED_GROUP must not contain / + or #")

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, *, mqtt_url: str, topic_prefix: str
    ) -> BridgeSettings:
        env = os.environ if env is None else env
        linger_ms = env_int(env, "EDGESENSE_BRIDGE_BATCH_LINGER_MS", 2, 0, 1000)
        return cls(
            broker=BrokerUrl.parse(mqtt_url),
            topic_prefix=topic_prefix,
            client_id=env_text(env, "EDGESENSE_MQTT_CLIENT_ID", "edgesense-bridge"),
            shared_group=env_optional(env, "EDGESENSE_MQTT_SHARED_GROUP"),
            mqtt5=env_choice(env, "EDGESENSE_MQTT_PROTOCOL", "5", ("5", "3.1.1")) == "5",
            session_expiry_seconds=env_int(
                env, "EDGESENSE_MQTT_SESSION_EXPIRY_SECONDS", 86400, 0, 2**32 - 1
            ),
            keepalive_seconds=env_int(env, "EDGESENSE_MQTT_KEEPALIVE_SECONDS", 30, 5, 65535),
            ca_file=env_optional(env, "EDGESENSE_MQTT_CA_FILE"),
            max_payload_bytes=env_int(
                env, "EDGESENSE_MQTT_MAX_PAYLOAD_BYTES", 256 * 1024, 1, 256 * 1024 * 1024
            ),
            reconnect_max_seconds=env_int(env, "EDGESENSE_MQTT_RECONNECT_MAX_SECONDS", 30, 1, 3600),
            max_in_flight=env_int(env, "EDGESENSE_BRIDGE_MAX_IN_FLIGHT", 1000, 1, 65535),
            batch_size=env_int(env, "EDGESENSE_BRIDGE_BATCH_SIZE", 200, 1, 10000),
            batch_linger_seconds=linger_ms / 1000,
            pipeline_depth=env_int(env, "EDGESENSE_BRIDGE_PIPELINE_DEPTH", 4, 1, 64),
            inputs=parse_inputs(env.get("EDGESENSE_BRIDGE_TOPICS", ",".join(INPUTS))),
            sparkplug_groups=parse_sparkplug_groups(env.get("EDGESENSE_SPARKPLUG_GROUPS", "")),
            sparkplug_host_id=env.get("EDGESENSE_SPARKPLUG_HOST_ID", "edgesense") or None,
        )
