"""Wiring of the bridge process: MQTT in, delivery out, DeviceConfig served.

    broker ──MqttConnection──> Intake ──> Forwarder ══Publish stream══> delivery
       ^    ^      └─ PUBACK <── on_confirmed <──────────┘
       │    └── Sparkplug rebirth NCMD <── Intake (SparkplugHost asked for it)
       └── config/set <── DeviceConfigService <── gRPC (EDGESENSE_BRIDGE_ADDR)

Inputs (EDGESENSE_BRIDGE_TOPICS): our topics, `{prefix}/#`, shared among
bridges when EDGESENSE_MQTT_SHARED_GROUP is set; Sparkplug B, `spBv1.0/#`,
never shared: a shared subscription would hand an edge node's NBIRTH to one
bridge and its NDATA to another, which knows no alias and asks for a rebirth,
whose NBIRTH goes to a third... Every bridge takes all Sparkplug traffic
instead, and delivery stores each message once: SparkplugHost derives event
ids from the message itself. With Sparkplug on and EDGESENSE_SPARKPLUG_HOST_ID
set, the bridge is a host application with a STATE (`inbound.Presence`).

Stopping (SIGTERM/SIGINT, or `stop`): the gRPC server stops taking calls, the
bridge stops reading from the broker, waits up to `DRAIN_SECONDS` for delivery
to confirm what it holds (and acknowledges it), then disconnects cleanly.
Whatever is still unconfirmed stays unacknowledged: the broker keeps it in our
session and sends it again on the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from edgesense.common.auth import Authenticator
from edgesense.common.config import Settings
from edgesense.common.errors import ConfigurationError
from edgesense.common.grpc_runtime import GrpcServer
from edgesense.common.log_throttle import LogThrottle, ThrottledLog
from edgesense.common.metrics_http import MetricsServer
from edgesense.common.runtime import stop_on_signals
from edgesense.v1 import devices_pb2_grpc
from edgesense_bridge.batching import Outbox
from edgesense_bridge.config_push import SERVICE_NAME, DeviceConfigService
from edgesense_bridge.errors import MqttUnavailable
from edgesense_bridge.forwarder import Forwarder, delivery_channel
from edgesense_bridge.inbound import MqttOptions, Presence
from edgesense_bridge.intake import LOG_BUDGET, LOG_INTERVAL_SECONDS, Intake
from edgesense_bridge.mqtt_adapter import MqttConnection
from edgesense_bridge.parsing import ParseRules
from edgesense_bridge.settings import BridgeSettings
from edgesense_bridge.sparkplug import control
from edgesense_bridge.sparkplug.host import Rebirth, SparkplugHost
from edgesense_bridge.sparkplug.topics import NAMESPACE, state_topic
from edgesense_bridge.topics import TopicLayout

log = logging.getLogger(__name__)

DRAIN_SECONDS = 5.0
GRPC_GRACE_SECONDS = 2.0


class Bridge:
    """One bridge: built from settings, then `run` until `stop` is set."""

    intake: Intake

    def __init__(self, settings: Settings, options: BridgeSettings) -> None:
        self.settings = settings
        self.options = options
        layout = TopicLayout(options.topic_prefix)
        auth = Authenticator(settings.require_api_keys(), settings.service_token())
        subscriptions: list[str] = []
        if "edgesense" in options.inputs:
            subscriptions.append(layout.subscription(options.shared_group))
        presence, sparkplug = None, None
        if options.sparkplug:
            subscriptions.append(f"{NAMESPACE}/#")
            if options.sparkplug_host_id is not None:
                presence = Presence(state_topic(options.sparkplug_host_id), control.state_payload)
            sparkplug = SparkplugHost(
                options.sparkplug_groups, max_payload_bytes=options.max_payload_bytes
            )
        mqtt_options = MqttOptions(
            broker=options.broker,
            client_id=options.client_id,
            subscriptions=tuple(subscriptions),
            presence=presence,
            mqtt5=options.mqtt5,
            session_expiry_seconds=options.session_expiry_seconds,
            keepalive_seconds=options.keepalive_seconds,
            receive_maximum=options.max_in_flight,
            ca_file=options.ca_file,
            reconnect_max_seconds=options.reconnect_max_seconds,
        )
        self.connection = MqttConnection(
            mqtt_options,
            on_message=lambda message: self.intake.on_message(message),
            on_session=lambda epoch, present: self.intake.on_session(epoch, present),
        )
        self.channel = delivery_channel(settings.delivery_addr, settings.grpc_tls)
        self.forwarder = Forwarder(
            self.channel,
            settings.service_token(),
            Outbox(options.batch_size, options.pipeline_depth),
            on_confirmed=lambda batch: self.intake.on_confirmed(batch),
            linger_seconds=options.batch_linger_seconds,
        )
        rules = ParseRules(layout, options.max_payload_bytes)
        self.intake = Intake(
            rules,
            self.forwarder,
            self.connection,
            options.max_in_flight,
            sparkplug,
            self._request_rebirth,
            None if presence is None else (presence.topic, self.connection.reassert_presence),
        )
        self._rebirth_failures = ThrottledLog(log, LogThrottle(LOG_INTERVAL_SECONDS, LOG_BUDGET))
        service = DeviceConfigService(auth, self.connection, layout, options.max_payload_bytes)
        self.server = GrpcServer.for_service(
            lambda server: devices_pb2_grpc.add_DeviceConfigServicer_to_server(service, server),
            SERVICE_NAME,
            settings,
            auth,
        )
        self.port = 0
        self.drain_seconds = DRAIN_SECONDS

    async def run(self, stop: asyncio.Event, addr: str | None = None) -> None:
        try:
            self.port = await self.server.start(addr or self.settings.bridge_addr, serving=False)
            async with asyncio.TaskGroup() as tasks:
                mqtt = tasks.create_task(self.connection.run())
                forwarder = tasks.create_task(self.forwarder.run())
                health = tasks.create_task(self._report_health())
                log.info(
                    "bridge: DeviceConfig on port %d, %s -> delivery at %s",
                    self.port,
                    self.options.broker,
                    self.settings.delivery_addr,
                )
                await stop.wait()  # or a task fails: the group cancels this wait
                health.cancel()
                await self._drain()
                await self.connection.close()
                await mqtt
                forwarder.cancel()
        except* ConfigurationError as group:  # the broker refused our protocol version
            raise group.exceptions[0] from None
        finally:
            await self.server.stop(GRPC_GRACE_SECONDS)
            await self.channel.close()

    def _request_rebirth(self, rebirth: Rebirth) -> None:
        """From the intake: the NCMD goes out at QoS 0, nothing to wait for."""
        try:
            self.connection.publish_now(rebirth.topic, rebirth.payload)
        except MqttUnavailable as exc:  # the next message without a session asks again
            self._rebirth_failures.warning(
                (rebirth.group_id, rebirth.edge_node_id),
                "sparkplug: rebirth request to %s/%s not published: %s",
                rebirth.group_id,
                rebirth.edge_node_id,
                exc,
            )

    async def _report_health(self) -> None:
        """gRPC health: SERVING only while connected and subscribed to the broker
        (`edgesense up` and Kubernetes' readiness probe wait for it)."""
        while True:
            await self.connection.wait_ready(True)
            await self.server.set_serving(True)
            await self.connection.wait_ready(False)
            await self.server.set_serving(False)

    async def _drain(self) -> None:
        log.info("bridge stopping: forwarding the %d events held", len(self.forwarder.outbox))
        await self.server.stop(GRPC_GRACE_SECONDS)
        self.connection.pause_reading()
        if not await self.forwarder.drain(self.drain_seconds):
            log.warning(
                "bridge: %d events not confirmed in %.1f s; left unacknowledged, "
                "the broker sends them again",
                len(self.forwarder.outbox),
                self.drain_seconds,
            )


async def run_bridge(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """The `edgesense bridge` process: until SIGTERM/SIGINT (or `stop`)."""
    options = BridgeSettings.from_env(
        mqtt_url=settings.mqtt_url, topic_prefix=settings.topic_prefix
    )
    metrics = await MetricsServer.start(settings.metrics_addr("bridge"))
    log.info("bridge: metrics on %s", metrics.address)
    shutdown = stop or asyncio.Event()
    try:
        bridge = Bridge(settings, options)
        with stop_on_signals(shutdown) if stop is None else contextlib.nullcontext():
            await bridge.run(shutdown)
    finally:
        await metrics.stop()
