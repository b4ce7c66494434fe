"""Sparkplug B topics (spec chapter 4): what a topic names, and the topics we publish.

    spBv1.0/{group_id}/{NBIRTH|NDATA|NDEATH|NCMD}/{edge_node_id}
    spBv1.0/{group_id}/{DBIRTH|DDATA|DDEATH|DCMD}/{edge_node_id}/{device_id}
    spBv1.0/STATE/{host_id}                      a host application's STATE (3.0)

The edge node is the gateway, the device the device; a node's own metrics
(NBIRTH/NDATA) are the node's as a device (device id = edge node id). The
group maps to a project through `groups`, by default the group id is the
project id. The project, edge node and device ids must be ids as our own
topics' are (`edgesense_bridge.topics.check_id`); the group id itself only
when it is the project id, so that a group named "Plant 1" can still be
mapped to a project "plant-1".

Anything else under spBv1.0/ raises `TopicError` ("sparkplug_bad_topic", or
"bad_id" like our own topics), the detail naming the problem.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

# Re-exported: the intake, the settings and the server take it from here.
from edgesense.common.sparkplug_names import NAMESPACE as NAMESPACE
from edgesense_bridge.topics import TopicError, check_id

STATE: Final = "STATE"
NODE_TYPES: Final = ("NBIRTH", "NDATA", "NDEATH", "NCMD")
DEVICE_TYPES: Final = ("DBIRTH", "DDATA", "DDEATH", "DCMD")
COMMAND_TYPES: Final = ("NCMD", "DCMD")
BAD_TOPIC: Final = "sparkplug_bad_topic"


@dataclass(frozen=True)
class SparkplugTopic:
    """A node or device message's topic; ids already checked.

    `device_id` is None for node messages; `project_id` is the group's project.
    """

    group_id: str
    message_type: str
    edge_node_id: str
    device_id: str | None
    project_id: str


@dataclass(frozen=True)
class StateTopic:
    """A host application's STATE topic (ours or another host's)."""

    host_id: str


def parse_topic(topic: str, groups: Mapping[str, str] | None = None) -> SparkplugTopic | StateTopic:
    """What a topic under spBv1.0/ names; raises TopicError."""
    head = NAMESPACE + "/"
    if not topic.startswith(head):
        raise TopicError(BAD_TOPIC, f"topic is not under {head}")
    levels = topic[len(head) :].split("/")
    if levels[0] == STATE:
        if len(levels) != 2 or not levels[1]:
            raise TopicError(BAD_TOPIC, f"expected {NAMESPACE}/STATE/host_id, got {topic[:200]!r}")
        return StateTopic(levels[1])
    if len(levels) < 3:
        raise TopicError(
            BAD_TOPIC,
            f"expected {NAMESPACE}/group/type/edge_node[/device], got {len(levels)} levels",
        )
    group, message_type, edge_node = levels[0], levels[1], levels[2]
    if message_type in NODE_TYPES:
        if len(levels) != 3:
            raise TopicError(
                BAD_TOPIC,
                f"{message_type} takes {NAMESPACE}/group/{message_type}/edge_node, "
                f"got {len(levels)} levels",
            )
        device = None
    elif message_type in DEVICE_TYPES:
        if len(levels) != 4:
            raise TopicError(
                BAD_TOPIC,
                f"{message_type} takes {NAMESPACE}/group/{message_type}/edge_node/device, "
                f"got {len(levels)} levels",
            )
        device = levels[3]
    else:
        raise TopicError(
            BAD_TOPIC,
            f"message type {message_type[:40]!r} is not one of {NODE_TYPES + DEVICE_TYPES}",
        )
    if not group:
        raise TopicError(BAD_TOPIC, "group id is empty")
    project = group if groups is None else groups.get(group, group)
    check_id("project_id" if project != group else "group_id", project)
    check_id("edge_node_id", edge_node)
    if device is not None:
        check_id("device_id", device)
    return SparkplugTopic(group, message_type, edge_node, device, project)


def ncmd_topic(group_id: str, edge_node_id: str) -> str:
    """Where a command (such as a rebirth request) to an edge node goes."""
    return f"{NAMESPACE}/{group_id}/NCMD/{edge_node_id}"


def state_topic(host_id: str) -> str:
    """Where a host application publishes its STATE (retained, and as its Will)."""
    return f"{NAMESPACE}/{STATE}/{host_id}"
