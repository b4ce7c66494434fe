"""Sparkplug topics: what each names, and the topics the host publishes to."""

from __future__ import annotations

import pytest

from edgesense_bridge.sparkplug.topics import (
    SparkplugTopic,
    StateTopic,
    ncmd_topic,
    parse_topic,
    state_topic,
)
from edgesense_bridge.topics import TopicError


def test_node_and_device_topics() -> None:
    assert parse_topic("spBv1.0/plant/NDATA/gw1") == SparkplugTopic(
        "plant", "NDATA", "gw1", None, "plant"
    )
    assert parse_topic("spBv1.0/plant/DBIRTH/gw1/pump-1", {"plant": "p-1"}) == SparkplugTopic(
        "plant", "DBIRTH", "gw1", "pump-1", "p-1"
    )


def test_a_mapped_group_need_not_be_an_id() -> None:
    address = parse_topic("spBv1.0/Plant 1/NBIRTH/gw1", {"Plant 1": "plant-1"})
    assert isinstance(address, SparkplugTopic)
    assert (address.group_id, address.project_id) == ("Plant 1", "plant-1")
    with pytest.raises(TopicError) as unmapped:
        parse_topic("spBv1.0/Plant 1/NBIRTH/gw1")
    assert unmapped.value.reason == "bad_id"
    assert "group_id" in unmapped.value.detail


def test_state_topic() -> None:
    assert parse_topic("spBv1.0/STATE/scada-1") == StateTopic("scada-1")
    assert state_topic("edgesense-bridge") == "spBv1.0/STATE/edgesense-bridge"
    assert parse_topic(state_topic("h")) == StateTopic("h")


def test_ncmd_topic_is_a_node_command_topic() -> None:
    assert ncmd_topic("plant", "gw1") == "spBv1.0/plant/NCMD/gw1"
    address = parse_topic(ncmd_topic("plant", "gw1"))
    assert isinstance(address, SparkplugTopic)
    assert (address.message_type, address.edge_node_id) == ("NCMD", "gw1")
