"""`edgesense up --dev` on a machine without a broker: the embedded amqtt one
(MQTT 3.1.1 only) is started and the walkthrough works, from a publish to a
signed delivery at a real receiver; the log stays free of clutter."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from pathlib import Path

from edgesense.tools.sim_publisher import Broker, Publisher
from tests.e2e.conftest import UpCluster
from tests.frontdoor.conftest import private_env
from tests.support.receivers import Receiver
from tests.support.waiting import eventually

SECRET = "my_secret"


def publish(url: str, topic: str, payload: bytes) -> None:
    """As a gateway would: MQTT 3.1.1, QoS 1, until the broker acknowledges."""
    publisher = Publisher(Broker.parse(url), "frontdoor-gw", max_in_flight=10)
    publisher.connect(topic.rsplit("/", 2)[0] + "/status", b"offline")
    try:
        assert publisher.publish(topic, payload, wait=5)
        assert publisher.wait_acknowledged(10), "the broker did not acknowledge"
    finally:
        publisher.close()


async def test_up_dev_with_the_embedded_broker_delivers_signed_events(tmp_path: Path) -> None:
    env = private_env()
    up = UpCluster(env, tmp_path, api_key="", argv=("up", "--dev"))
    receiver = Receiver()
    await receiver.start()
    try:
        await up.start()  # waits for the bridge's health: SERVING once subscribed
        assert "starting an embedded one (amqtt)" in up.log()
        assert "the bridge uses 3.1.1" in up.log()
        up.api_key = (tmp_path / "var" / "dev-api-key").read_text().strip()
        # The console's address, and where its key is; never the key in a URL.
        # (`up` prints it once every service answers; the bridge's health,
        # which start() waits for, may come first.)
        await eventually(
            lambda: any("Console" in line for line in up.output), 30, "up to print the console"
        )
        console = next(line for line in up.output if "Console" in line)
        assert f"{up.api}/console" in console
        assert "sign in with the API key below" in console
        assert not [line for line in up.output if "http" in line and up.api_key in line]
        hook = await up.register(receiver.url, ["device.data"], SECRET)
        topic = "edgesense/dev/gw-1/edge-node-321/data"
        await asyncio.to_thread(publish, env["EDGESENSE_MQTT_URL"], topic, b'{"temperature": 75.3}')
        [request] = await receiver.wait_for(1, seconds=30)
    finally:
        code = await up.stop() if up.process is not None else None
        await receiver.stop()
    # Verified as the integration guide's snippet does, on the raw body.
    expected = hmac.new(SECRET.encode(), request.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(expected, request.headers["X-EdgeSense-Signature"])
    event = json.loads(request.body)
    assert (event["event"], event["deviceId"], event["gatewayId"]) == (
        "device.data",
        "edge-node-321",
        "gw-1",
    )
    assert (event["payload"], event["webhookId"]) == ({"temperature": 75.3}, hook)
    assert code == 0, up.log()
    log = up.log()
    assert "Traceback" not in log
    assert "HTTP Request:" not in log  # httpx's INFO line per health check
    stopping = log[log.index("up       | stopping") :]
    assert "WARNING" not in stopping  # e.g. "Normal disconnection" on a clean stop
    assert "all stopped" in stopping
