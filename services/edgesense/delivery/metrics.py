"""Prometheus metrics of the delivery service."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

DELIVERIES = Counter(
    "edgesense_deliveries_total",
    "Delivery outcomes: succeeded, retried, deferred, failed, held, expired "
    "(deferred: not sent, due again later)",
    ["outcome"],
)
ATTEMPT_SECONDS = Histogram(
    "edgesense_delivery_attempt_seconds",
    "Duration of one POST attempt",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
EVENTS_ACCEPTED = Counter("edgesense_events_accepted_total", "Events stored by Publish")
EVENTS_DUPLICATE = Counter("edgesense_events_duplicate_total", "Published events already stored")
QUEUE_DEPTH = Gauge("edgesense_delivery_queue_depth", "Pending deliveries in the outbox")
HELD = Gauge("edgesense_delivery_held", "Deliveries held for disabled webhooks")
RATE_LIMITED = Counter(
    "edgesense_delivery_rate_limited_total",
    "Times a webhook was passed over for a send slot: its rateLimitPerSecond had no token",
)
IN_FLIGHT = Gauge("edgesense_delivery_in_flight", "Attempts under way in this process")
RETENTION_DELETED = Counter(
    "edgesense_retention_deleted_total",
    "Rows deleted by retention (EDGESENSE_RETENTION_DAYS): "
    "deliveries, attempts, events, alerts, devices",
    ["kind"],
)
DEVICES_VIEW_WRITTEN = Counter(
    "edgesense_devices_view_written_total",
    "Device rows written by the devices view's flusher (GET /api/devices)",
)
DEVICES_VIEW_DROPPED = Counter(
    "edgesense_devices_view_dropped_total",
    "Events or device states left out of the devices view: its memory bound "
    "was reached while the database was down or behind (the events are stored)",
)
ALERTS = Counter(
    "edgesense_alerts_total",
    "Alert transitions raised by threshold rules, by state (triggered, resolved)",
    ["state"],
)
INDEXES_BUILT = Gauge(
    "edgesense_outbox_indexes_built",
    "1 once the outbox's online indexes (built in the background on PostgreSQL "
    "after an upgrade) are all there; 0 until then",
)
