"""GET /api/devices and GET /api/devices/{deviceId} through the REST API, on
SQLite and PostgreSQL: events published as the bridge publishes them show up
(about a second later) with their status, readings and recent events; paging,
filters and totals; 400 naming the field; another project's device is 404."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx

from edgesense.common.ids import new_id
from edgesense.v1 import events_pb2
from tests.integration.cluster import Cluster
from tests.support.waiting import eventually

ONLINE = events_pb2.DeviceStatus.STATE_ONLINE
OFFLINE = events_pb2.DeviceStatus.STATE_OFFLINE


def device_event(
    device: str,
    second: int,
    *,
    gateway: str = "gw-1",
    project: str = "project-a",
    values: dict[str, Any] | None = None,
    status: int | None = None,
) -> events_pb2.Event:
    event = events_pb2.Event(
        event_id=new_id("evt"), project_id=project, gateway_id=gateway, device_id=device
    )
    event.timestamp.FromDatetime(datetime(2025, 7, 24, 10, 0, second, tzinfo=UTC))
    event.received_at.GetCurrentTime()
    if status is not None:
        event.status.state = status  # type: ignore[assignment]
    else:
        event.readings.values.update(values or {"temperature": 20 + second})
    return event


async def get(
    cluster: Cluster, path: str, project: str = "project-a", **query: Any
) -> httpx.Response:
    return await cluster.http.get(path, params=query, headers=cluster.auth(project))


async def listed(cluster: Cluster, count: int, project: str = "project-a") -> dict[str, Any]:
    """GET /api/devices once it lists `count` devices (the view lags by a flush)."""
    found: dict[str, Any] = {}

    async def enough() -> bool:
        nonlocal found
        answer = await get(cluster, "/api/devices", project, pageSize=500)
        assert answer.status_code == 200, answer.text
        found = answer.json()
        return len(found["devices"]) >= count

    await eventually(enough, 20, f"{count} devices listed")
    return found


def field_of(answer: httpx.Response) -> str:
    assert answer.status_code == 400, answer.text
    return str(answer.json()["details"][0]["fieldViolations"][0]["field"])


async def test_devices_show_status_readings_and_recent_events(cluster: Cluster) -> None:
    await cluster.publish(
        [
            device_event("gw-1", 1, gateway="gw-1", status=ONLINE),
            device_event("sensor-1", 2, status=ONLINE),
            device_event("sensor-1", 3, values={"temperature": 21.5, "humidity": 40}),
            device_event("sensor-2", 4, gateway="gw-2"),
            device_event("gw-2", 5, gateway="gw-2", status=OFFLINE),
            device_event("sensor-3", 6, values={"blob": "x" * 9000}),
        ]
    )
    found = await listed(cluster, 5)
    assert [d["deviceId"] for d in found["devices"]] == [
        "gw-1",
        "gw-2",
        "sensor-1",
        "sensor-2",
        "sensor-3",
    ]
    assert (found["online"], found["offline"], found["unknown"]) == (2, 1, 2)
    assert "nextPageToken" not in found or not found["nextPageToken"]
    devices = {d["deviceId"]: d for d in found["devices"]}
    assert devices["gw-1"]["kind"] == "gateway"
    assert devices["gw-2"]["status"] == "offline"
    sensor = devices["sensor-1"]
    assert sensor["kind"] == "device"
    assert sensor["status"] == "online"
    assert sensor["statusChangedAt"] == "2025-07-24T10:00:02Z"
    assert sensor["gatewayId"] == "gw-1"
    assert sensor["lastEvent"] == "device.data"
    assert sensor["lastReadings"] == {"temperature": 21.5, "humidity": 40}
    assert sensor["lastReadingsAt"] == "2025-07-24T10:00:03Z"
    assert sensor["lastSeenAt"]
    assert sensor["firstSeenAt"]
    assert devices["sensor-2"]["status"] == "unknown"
    assert devices["sensor-3"]["lastReadingsOmitted"] is True
    assert "lastReadings" not in devices["sensor-3"]

    detail = await get(cluster, "/api/devices/sensor-1")
    assert detail.status_code == 200, detail.text
    body = detail.json()
    assert body["device"]["deviceId"] == "sensor-1"
    assert [(e["event"], e["timestamp"], e.get("payload")) for e in body["recentEvents"]] == [
        ("device.data", "2025-07-24T10:00:03Z", {"temperature": 21.5, "humidity": 40}),
        ("device.status", "2025-07-24T10:00:02Z", {"status": "online"}),
    ]
    big = (await get(cluster, "/api/devices/sensor-3")).json()
    (event,) = big["recentEvents"]
    assert event["payloadOmitted"] is True
    assert "payload" not in event

    # A later offline takes the device offline; an earlier one (out of order) does not.
    await cluster.publish(
        [device_event("sensor-1", 9, status=OFFLINE), device_event("sensor-2", 0, status=ONLINE)]
    )

    async def offline() -> bool:
        answer = (await get(cluster, "/api/devices", status="offline")).json()
        return [d["deviceId"] for d in answer["devices"]] == ["gw-2", "sensor-1"]

    await eventually(offline, 20, "sensor-1 offline")
    online = (await get(cluster, "/api/devices", status="online")).json()
    assert [d["deviceId"] for d in online["devices"]] == ["gw-1", "sensor-2"]
    assert (online["online"], online["offline"], online["unknown"]) == (2, 2, 1)


async def test_paging_and_filters(cluster: Cluster) -> None:
    await cluster.publish(
        [device_event(f"d-{n:02d}", n, gateway="gw-a" if n % 2 else "gw-b") for n in range(7)]
    )
    await listed(cluster, 7)
    seen: list[str] = []
    token = ""
    while True:
        answer = await get(cluster, "/api/devices", pageSize=3, pageToken=token)
        assert answer.status_code == 200, answer.text
        page = answer.json()
        assert len(page["devices"]) <= 3
        seen += [d["deviceId"] for d in page["devices"]]
        token = page.get("nextPageToken", "")
        if not token:
            break
    assert seen == [f"d-{n:02d}" for n in range(7)]
    by_gateway = (await get(cluster, "/api/devices", gatewayId="gw-a")).json()
    assert [d["deviceId"] for d in by_gateway["devices"]] == ["d-01", "d-03", "d-05"]
    # A token pages only its own listing.
    first = (await get(cluster, "/api/devices", pageSize=2)).json()
    assert (
        field_of(
            await get(cluster, "/api/devices", pageToken=first["nextPageToken"], gatewayId="gw-a")
        )
        == "pageToken"
    )
    assert (
        field_of(await get(cluster, "/api/devices", "project-b", pageToken=first["nextPageToken"]))
        == "pageToken"
    )


async def test_bad_filters_are_400_naming_the_field(cluster: Cluster) -> None:
    assert field_of(await get(cluster, "/api/devices", status="sleeping")) == "status"
    assert field_of(await get(cluster, "/api/devices", pageSize=-1)) == "pageSize"
    assert field_of(await get(cluster, "/api/devices", gatewayId="gw/../x")) == "gatewayId"
    assert field_of(await get(cluster, "/api/devices", pageToken="nonsense")) == "pageToken"
    assert field_of(await get(cluster, "/api/devices/" + "d" * 129)) == "deviceId"


async def test_another_project_s_device_is_not_found(cluster: Cluster) -> None:
    await cluster.publish([device_event("secret-1", 1, project="project-b")])
    theirs = await listed(cluster, 1, "project-b")
    assert [d["deviceId"] for d in theirs["devices"]] == ["secret-1"]
    mine = (await get(cluster, "/api/devices")).json()
    assert mine["devices"] == []
    assert (mine["online"], mine["offline"], mine["unknown"]) == (0, 0, 0)
    answer = await get(cluster, "/api/devices/secret-1")
    assert answer.status_code == 404, answer.text
    assert answer.json()["code"] == 5  # google.rpc NOT_FOUND
    assert (await get(cluster, "/api/devices/secret-1", "project-b")).status_code == 200
    assert (await get(cluster, "/api/devices/never-seen")).status_code == 404


async def test_openapi_describes_the_devices_routes(cluster: Cluster) -> None:
    document = (await cluster.http.get("/openapi.json")).json()
    assert {"/api/devices", "/api/devices/{deviceId}"} <= set(document["paths"])
    text = str(document)
    assert "when it never reported a status" in text  # Device.status's comment
