"""Prometheus metrics of the registry service."""

from __future__ import annotations

from prometheus_client import Counter

OPERATIONAL_PUBLISHED = Counter(
    "edgesense_operational_events_published_total",
    "Operational events (webhook.disabled, webhook.enabled) delivery confirmed stored",
)
OPERATIONAL_DROPPED = Counter(
    "edgesense_operational_events_dropped_total",
    "Operational events dropped because delivery refuses them for good (INVALID_ARGUMENT)",
)
