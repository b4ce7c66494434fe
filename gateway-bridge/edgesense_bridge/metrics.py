"""The bridge's Prometheus metrics (served by `edgesense.common.metrics_http`).

Process-wide, like every prometheus_client default-registry metric: two
bridges in one process (tests) add up.
"""

from __future__ import annotations

from typing import Final

from prometheus_client import Counter, Gauge, Histogram

RECEIVED: Final = Counter(
    "edgesense_bridge_messages_received_total", "MQTT messages received from the broker"
)
FORWARDED: Final = Counter(
    "edgesense_bridge_events_forwarded_total",
    "Events the delivery service confirmed as stored (then acknowledged to the broker)",
)
REJECTED: Final = Counter(
    "edgesense_bridge_messages_rejected_total",
    "Malformed MQTT messages, acknowledged and dropped",
    ["reason"],
)
IGNORED: Final = Counter(
    "edgesense_bridge_messages_ignored_total",
    "MQTT messages that are not events (retained replays, our own config pushes)",
    ["reason"],
)
IN_FLIGHT: Final = Gauge(
    "edgesense_bridge_in_flight_messages",
    "MQTT messages received and not yet acknowledged (waiting for delivery)",
)
FORWARD_LATENCY: Final = Histogram(
    "edgesense_bridge_forward_latency_seconds",
    "From receiving a message to delivery confirming its event",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
BATCH_EVENTS: Final = Histogram(
    "edgesense_bridge_batch_events",
    "Events per Publish message sent to delivery",
    buckets=(1, 2, 5, 10, 25, 50, 100, 200, 500, 1000),
)
STREAM_RESTARTS: Final = Counter(
    "edgesense_bridge_delivery_stream_failures_total",
    "Publish streams to delivery that ended, by gRPC status",
    ["code"],
)
MQTT_CONNECTED: Final = Gauge(
    "edgesense_bridge_mqtt_connected", "1 while the bridge has a broker session"
)
MQTT_CONNECT_ATTEMPTS: Final = Counter(
    "edgesense_bridge_mqtt_connect_attempts_total", "Connection attempts to the broker", ["result"]
)
READING_PAUSED: Final = Gauge(
    "edgesense_bridge_mqtt_reading_paused",
    "1 while the bridge stops reading from the broker (in-flight limit reached)",
)
CONFIG_PUSHES: Final = Counter(
    "edgesense_bridge_config_pushes_total", "PushConfig calls, by result", ["result"]
)
SPARKPLUG_REBIRTH_REQUESTS: Final = Counter(
    "edgesense_bridge_sparkplug_rebirth_requests_total",
    "Rebirth requests (NCMD Node Control/Rebirth) to Sparkplug edge nodes, by why (asked "
    "of the connection; one it could not publish is logged)",
    ["reason"],
)
SPARKPLUG_METRICS_LEFT_OUT: Final = Counter(
    "edgesense_bridge_sparkplug_metrics_left_out_total",
    "Sparkplug metrics not put into an event's payload (datasets, templates...), by reason",
    ["reason"],
)
SPARKPLUG_SEQ_GAPS: Final = Counter(
    "edgesense_bridge_sparkplug_seq_gaps_total",
    "Sparkplug messages whose seq did not follow the edge node's previous one",
)
