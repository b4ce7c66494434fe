"""`edgesense devices list|get` against the real in-process cluster, as a
user runs them: a subprocess with EDGESENSE_API_URL and EDGESENSE_API_KEY."""

from __future__ import annotations

import json

from tests.integration.cluster import Cluster
from tests.integration.test_devices_api import OFFLINE, ONLINE, device_event, listed
from tests.tools.conftest import api_env, run_cli


async def test_list_and_get_devices(cluster: Cluster) -> None:
    await cluster.publish(
        [
            device_event("gw-1", 1, gateway="gw-1", status=ONLINE),
            device_event("sensor-1", 2, values={"temperature": 21.5}),
            device_event("sensor-2", 3, gateway="gw-2", status=OFFLINE),
        ]
    )
    await listed(cluster, 3)
    env = api_env(cluster)

    listing = await run_cli("devices", "list", env=env)
    assert listing.code == 0, listing.err
    assert listing.lines[0].split() == [
        "DEVICE", "ID", "KIND", "STATUS", "GATEWAY", "ID", "LAST", "SEEN", "LAST", "EVENT",
        "LAST", "READINGS",
    ]  # fmt: skip
    assert [line.split()[:4] for line in listing.lines[1:]] == [
        ["gw-1", "gateway", "online", "gw-1"],
        ["sensor-1", "device", "unknown", "gw-1"],
        ["sensor-2", "device", "offline", "gw-2"],
    ]
    assert listing.lines[2].endswith('{"temperature":21.5}')
    assert "project: 1 online, 1 offline, 1 unknown" in listing.err

    offline = await run_cli("devices", "list", "--status", "offline", env=env)
    assert [line.split()[0] for line in offline.lines[1:]] == ["sensor-2"]
    through = await run_cli("devices", "list", "--gateway", "gw-1", "--json", env=env)
    body = json.loads(through.out)
    assert [d["deviceId"] for d in body["devices"]] == ["gw-1", "sensor-1"]
    assert (body["online"], body["offline"], body["unknown"]) == (1, 1, 1)

    shown = await run_cli("devices", "get", "sensor-1", env=env)
    assert shown.code == 0, shown.err
    assert "deviceId:        sensor-1" in shown.lines
    assert 'lastReadings:    {"temperature":21.5}' in shown.lines
    assert any(line.split()[1:2] == ["device.data"] for line in shown.lines)

    missing = await run_cli("devices", "get", "nowhere", env=env)
    assert missing.code == 1
    assert "device nowhere not found" in missing.err
    bad = await run_cli("devices", "list", "--status", "asleep", env=env)
    assert bad.code == 2
