"""gRPC between the services over TLS and mutual TLS, with a test CA (trustme).

The whole path with every service holding its own certificate and requiring
the others': a webhook registered over REST (api -> registry), delivery
following the registry's change stream, an event published over MQTT (bridge
-> delivery Publish), a configuration pushed over REST (api -> bridge's
DeviceConfig), and the POST at a receiver. Then the refusals: a client with no
certificate, one from another CA, a plaintext client, a client that does not
trust the server's CA. And reflection, served only when enabled.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import httpx
import pytest
import trustme
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from edgesense import up
from edgesense.api.server import start_api
from edgesense.common.config import Settings
from edgesense.common.errors import ConfigurationError
from edgesense.common.grpc_tls import open_channel
from edgesense.common.healthcheck import grpc_serving
from edgesense.common.tls import CA_VAR, GrpcTls
from edgesense.delivery.server import start_delivery
from edgesense.registry.server import RunningRegistry, start_registry
from edgesense.v1 import registry_pb2, registry_pb2_grpc
from edgesense_bridge.server import Bridge
from edgesense_bridge.settings import BridgeSettings
from tests.conftest import key_of
from tests.support.broker import MOSQUITTO, Gateway, Mosquitto
from tests.support.receivers import Receiver
from tests.support.tls_files import TlsFiles, write_identity
from tests.support.waiting import eventually

REFUSED = (grpc.StatusCode.UNAVAILABLE,)  # a failed handshake never reaches a handler


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def identities(ca: trustme.CA, tmp_path: Path) -> dict[str, TlsFiles]:
    """A certificate of its own for each service (all name 127.0.0.1)."""
    return {
        name: write_identity(ca, tmp_path / name)
        for name in ("registry", "delivery", "bridge", "api")
    }


@pytest.fixture(scope="module")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    if not os.access(MOSQUITTO, os.X_OK):
        pytest.skip(f"this test needs Mosquitto at {MOSQUITTO} (apt-get install mosquitto)")
    broker = Mosquitto(tmp_path_factory.mktemp("tls-broker"))
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
async def mtls_registry(
    settings: Settings, identities: dict[str, TlsFiles]
) -> AsyncIterator[RunningRegistry]:
    tls = identities["registry"].tls("require")
    registry = await start_registry(dataclasses.replace(settings, grpc_tls=tls), "127.0.0.1:0")
    yield registry
    await registry.stop(0)


async def list_webhooks(addr: str, tls: GrpcTls, token: str) -> grpc.StatusCode:
    async with open_channel(addr, tls) as channel:
        try:
            await registry_pb2_grpc.WebhookRegistryStub(channel).ListWebhooks(
                registry_pb2.ListWebhooksRequest(),
                metadata=(("authorization", f"Bearer {token}"),),
                timeout=5,
            )
        except grpc.aio.AioRpcError as exc:
            return exc.code()
    return grpc.StatusCode.OK


async def test_the_whole_path_runs_over_mutual_tls(
    cluster_env: dict[str, str],
    api_keys: dict[str, str],
    identities: dict[str, TlsFiles],
    mosquitto: Mosquitto,
) -> None:
    base = Settings.from_env({**cluster_env, **identities["registry"].env("require")}, dev=False)
    assert base.grpc_tls.require_client_cert
    registry = await start_registry(base, "127.0.0.1:0")
    delivery_settings = dataclasses.replace(
        base,
        registry_addr=f"127.0.0.1:{registry.port}",
        grpc_tls=identities["delivery"].tls("require"),
    )
    delivery = await start_delivery(delivery_settings, "127.0.0.1:0")
    prefix = f"tls-{uuid.uuid4().hex[:8]}"
    options = dataclasses.replace(
        BridgeSettings.from_env({}, mqtt_url=mosquitto.url, topic_prefix=prefix),
        client_id=f"bridge-{uuid.uuid4().hex[:8]}",
    )
    bridge = Bridge(
        dataclasses.replace(
            base,
            delivery_addr=f"127.0.0.1:{delivery.port}",
            grpc_tls=identities["bridge"].tls("require"),
        ),
        options,
    )
    stop_bridge = asyncio.Event()
    bridge_task = asyncio.create_task(bridge.run(stop_bridge, addr="127.0.0.1:0"))
    receiver = Receiver()
    await receiver.start()
    gateway = Gateway(mosquitto.port, f"gw-{uuid.uuid4().hex[:8]}")
    api = None
    try:
        await asyncio.wait_for(bridge.connection.subscribed.wait(), 10)
        api = await start_api(
            {
                "edgesense.v1.WebhookRegistry": f"127.0.0.1:{registry.port}",
                "edgesense.v1.Delivery": f"127.0.0.1:{delivery.port}",
                "edgesense.v1.DeviceConfig": f"127.0.0.1:{bridge.port}",
            },
            tls=identities["api"].tls("require"),
        )
        auth = {"Authorization": f"Bearer {key_of(api_keys, 'project-a')}"}
        async with httpx.AsyncClient(base_url=api.url, timeout=10, headers=auth) as http:
            answer = await http.post(
                "/api/webhooks/register",
                json={"url": receiver.url, "events": ["device.data"], "secret": "s3cret"},
            )
            assert answer.status_code == 200, answer.text
            webhook_id = answer.json()["webhookId"]
            await eventually(  # delivery learns it over the TLS change stream
                lambda: delivery.index.get(webhook_id) is not None, 10, "delivery to know it"
            )

            topic = f"{prefix}/project-a/gw-1/edge-node-7/data"
            await gateway.publish([(topic, b'{"temperature": 75.3}', None)])
            (received,) = await receiver.wait_for(1)
            body = json.loads(received.body)
            assert (body["event"], body["deviceId"], body["webhookId"]) == (
                "device.data",
                "edge-node-7",
                webhook_id,
            )
            assert body["payload"] == {"temperature": 75.3}

            pushed = await http.post(
                "/api/gateways/gw-1/devices/edge-node-7/config", json={"interval": 5}
            )
            assert pushed.status_code == 200, pushed.text
            listed = await http.get(f"/api/webhooks/{webhook_id}/deliveries")
            assert listed.status_code == 200, listed.text
    finally:
        gateway.close()
        if api is not None:
            await api.stop()
        stop_bridge.set()
        await asyncio.wait_for(bridge_task, 15)
        await receiver.stop()
        await delivery.stop(0)
        await registry.stop(0)


async def test_mutual_tls_refuses_clients_without_a_valid_certificate(
    mtls_registry: RunningRegistry,
    settings: Settings,
    identities: dict[str, TlsFiles],
    tmp_path: Path,
) -> None:
    addr = f"127.0.0.1:{mtls_registry.port}"
    token = next(iter(settings.api_keys))  # an API key of a project
    assert (
        await list_webhooks(addr, identities["delivery"].tls("require"), token)
        == grpc.StatusCode.OK
    )

    ca_only = GrpcTls.from_env({CA_VAR: str(identities["delivery"].ca)})
    assert await list_webhooks(addr, ca_only, token) in REFUSED
    stranger = write_identity(trustme.CA(), tmp_path / "stranger", trusts=None)
    # Its certificate is from another CA; it trusts ours, so only the server can refuse.
    stranger_env = {**stranger.env("none"), CA_VAR: str(identities["delivery"].ca)}
    assert await list_webhooks(addr, GrpcTls.from_env(stranger_env), token) in REFUSED


async def test_a_tls_server_refuses_plaintext_and_a_client_checks_the_server(
    settings: Settings, identities: dict[str, TlsFiles], tmp_path: Path
) -> None:
    tls = identities["registry"].tls("none")  # server-side TLS only
    registry = await start_registry(dataclasses.replace(settings, grpc_tls=tls), "127.0.0.1:0")
    try:
        addr = f"127.0.0.1:{registry.port}"
        token = next(iter(settings.api_keys))  # an API key of a project
        ca_only = GrpcTls.from_env({CA_VAR: str(identities["api"].ca)})
        assert await list_webhooks(addr, ca_only, token) == grpc.StatusCode.OK
        assert await list_webhooks(addr, GrpcTls(), token) in REFUSED
        other_ca = write_identity(trustme.CA(), tmp_path / "other")
        trusting_another = GrpcTls.from_env({CA_VAR: str(other_ca.ca)})
        assert await list_webhooks(addr, trusting_another, token) in REFUSED
    finally:
        await registry.stop(0)


async def test_health_checks_speak_tls(
    settings: Settings, identities: dict[str, TlsFiles], ca: trustme.CA, tmp_path: Path
) -> None:
    # A probe inside the pod dials 127.0.0.1, while the certificate names the service.
    named = write_identity(ca, tmp_path / "named", "registry")
    tls = named.tls("require")
    registry = await start_registry(dataclasses.replace(settings, grpc_tls=tls), "127.0.0.1:0")
    try:
        addr = f"127.0.0.1:{registry.port}"
        assert await grpc_serving(addr, tls, server_name="registry")
        assert not await grpc_serving(addr, tls)  # 127.0.0.1 is not in the certificate
        assert not await grpc_serving(addr, GrpcTls(), server_name="registry")

        def probe(env: dict[str, str], *extra: str) -> subprocess.CompletedProcess[str]:
            command = [sys.executable, "-m", "edgesense.common.healthcheck", addr, *extra]
            return subprocess.run(command, env=env, capture_output=True, text=True, timeout=30)

        plain = {k: v for k, v in os.environ.items() if not k.startswith("EDGESENSE_GRPC_TLS")}
        with_tls = {**plain, **named.env("require")}
        served, wrong_name, plaintext = await asyncio.gather(
            asyncio.to_thread(probe, with_tls, "--server-name", "registry"),
            asyncio.to_thread(probe, with_tls),
            asyncio.to_thread(probe, plain, "--server-name", "registry"),
        )
        assert served.returncode == 0, served.stderr
        assert wrong_name.returncode == 1, wrong_name.stderr
        assert f"{addr} is not serving" in wrong_name.stderr
        assert plaintext.returncode == 1, plaintext.stderr
        half = probe({**plain, "EDGESENSE_GRPC_TLS_CERT": str(named.cert)})
        assert half.returncode == 2
        assert "EDGESENSE_GRPC_TLS_KEY is not" in half.stderr
    finally:
        await registry.stop(0)


async def test_a_server_without_a_certificate_of_its_own_refuses_to_start(
    settings: Settings, identities: dict[str, TlsFiles]
) -> None:
    client_only = GrpcTls.from_env({CA_VAR: str(identities["registry"].ca)})
    with pytest.raises(ConfigurationError, match="a gRPC server needs a certificate and key"):
        await start_registry(dataclasses.replace(settings, grpc_tls=client_only), "127.0.0.1:0")


async def test_up_waits_on_health_over_tls(
    mtls_registry: RunningRegistry, settings: Settings, identities: dict[str, TlsFiles]
) -> None:
    addr = f"127.0.0.1:{mtls_registry.port}"
    with_tls = dataclasses.replace(
        settings, registry_addr=addr, grpc_tls=identities["api"].tls("require")
    )
    (registry,) = up.children(with_tls, ["registry"])
    assert await registry.healthy()
    (plaintext,) = up.children(dataclasses.replace(settings, registry_addr=addr), ["registry"])
    assert not await plaintext.healthy()


async def reflected_services(addr: str) -> list[str] | grpc.StatusCode:
    async with grpc.aio.insecure_channel(addr) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        try:
            async for answer in stub.ServerReflectionInfo(iter([request]), timeout=5):
                return [s.name for s in answer.list_services_response.service]
        except grpc.aio.AioRpcError as exc:
            return exc.code()
    raise AssertionError("reflection answered nothing")


@pytest.mark.parametrize("enabled", [True, False], ids=["reflection-on", "reflection-off"])
async def test_reflection_is_served_only_when_enabled(settings: Settings, enabled: bool) -> None:
    registry = await start_registry(
        dataclasses.replace(settings, grpc_reflection=enabled), "127.0.0.1:0"
    )
    try:
        found = await reflected_services(f"127.0.0.1:{registry.port}")
    finally:
        await registry.stop(0)
    if enabled:
        assert isinstance(found, list)
        assert "edgesense.v1.WebhookRegistry" in found
    else:
        assert found == grpc.StatusCode.UNIMPLEMENTED
