"""Every Prometheus metric name an EdgeSense process can expose, for tests
that hold documentation against the code.

The modules are found, not listed: every module of `edgesense` and
`edgesense_bridge` that imports prometheus_client is imported (which
registers its module-level metrics in the default registry), so a metric
moved to another module is still found. The REST process's metrics live in
one registry per app (`ApiMetrics`), so one is made here to read its names.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.metrics_core import Metric

from edgesense.api.metrics import ApiMetrics

REPO = Path(__file__).resolve().parents[2]
PACKAGES = {
    "edgesense": REPO / "services" / "edgesense",
    "edgesense_bridge": REPO / "gateway-bridge" / "edgesense_bridge",
}
GENERATED = "v1"  # protobuf code: no metrics


def metric_modules() -> list[str]:
    """Dotted names of the modules that import prometheus_client."""
    found = []
    for package, folder in PACKAGES.items():
        for path in sorted(folder.rglob("*.py")):
            relative = path.relative_to(folder)
            if relative.parts[0] == GENERATED:
                continue
            if "prometheus_client" in path.read_text(encoding="utf-8"):
                parts = [package, *relative.with_suffix("").parts]
                if parts[-1] == "__init__":
                    parts.pop()
                found.append(".".join(parts))
    return found


def metric_families() -> list[Metric]:
    """Every family registered by our modules (and prometheus_client's own
    process and platform collectors)."""
    for module in metric_modules():
        importlib.import_module(module)
    return [
        family
        for registry in (REGISTRY, ApiMetrics(CollectorRegistry()).registry)
        for family in registry.collect()
    ]


def exposed_metric_names() -> set[str]:
    """Metric names as /metrics shows them (a counter `x` as `x_total`, a
    histogram by its base name)."""
    names: set[str] = set()
    for family in metric_families():
        names.add(family.name)
        if family.type == "counter":
            names.add(family.name + "_total")
    return names


def our_metric_names() -> set[str]:
    """Each EdgeSense metric once, by the name the docs give it: a counter `x`
    as `x_total`, a gauge or a histogram by its name."""
    return {
        family.name + "_total" if family.type == "counter" else family.name
        for family in metric_families()
        if family.name.startswith("edgesense_")
    }
