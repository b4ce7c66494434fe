"""One name per thing: "gateway" is the industrial gateway, never the REST process.

The device that publishes over MQTT is the gateway (`gatewayId`, gateway
topics, its Last Will, `gateway-bridge/`, the bridge to the gateways). The
REST/JSON -> gRPC process was called `gateway` too; it is `api` now
(`edgesense api`, services/edgesense/api/, `edgesense_api_*`, the `api`
service of compose and Kubernetes). These checks keep the old name from
coming back in the code, deploy/ and the docs (tests/ is not read: its
`Gateway` is the simulated device).

1. Nowhere: the forms that can only mean the REST process.
2. Outside the few files about the device itself, no "gateway" at all but
   the allowed compounds (`grpc-gateway`, the Go project; `gateway-bridge`;
   gateway ids; "gateways").
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# What the checks read: the package (not v1/, generated from the protos,
# whose comments are the protos'), the bridge, deploy/, the docs, bench code.
SCANNED = ("services/edgesense", "gateway-bridge", "deploy", "bench", "README.md", "Makefile")
SKIPPED = ("services/edgesense/v1/", "bench/results/")

# Forms that name the REST process (check 1), wherever they appear.
REST_PROCESS = re.compile(
    r"\b(?:REST|HTTP|Python)[ -]gateway\b"  # "the REST gateway"
    r"|\bedgesense[ _./-]gateway(?!-bridge)"  # the command, metrics, package
    r"|\b(?:registry|delivery|bridge)\|gateway\b|\bgateway\|"  # command lists
    r"|\b(?:registry|delivery|bridge|senders)(?:,| and|, and| /| \|) gateway\b"  # process lists
    r"|\bgateway(?:,| and| /) (?:registry|delivery|bridge)\b|^\| gateway \|"  # and tables
    r"|\btls[/-]gateway\b"  # its certificate folder and Secret
    r"|(?<![\w/-])gateway/"  # its old package folder (not a topic level)
    r"|\bgateway:\d"  # compose host:port
    r'|\["(?:edgesense", ")?gateway"\]'  # compose and Kubernetes commands
    r"|\bname: gateway\b"  # Kubernetes objects
    r"|\bGateway(?:Error|Metrics)\b|\bGATEWAY_KEY\b|\b(?:run|start)_gateway\b|\bRunningGateway\b",
    re.IGNORECASE,
)

# Compounds that are fine everywhere (check 2).
ALLOWED = re.compile(
    r"grpc-gateway|gateway-bridge|gateway[_-]?ids?\b|gatewayIds?\b|gateways\b", re.I
)
GATEWAY = re.compile(r"gateway", re.IGNORECASE)

# Files whose subject is the device: what it publishes and how the broker,
# the bridge and the simulator treat it (check 2 does not read them).
ABOUT_THE_DEVICE = (
    "README.md",
    "deploy/README.md",
    "deploy/.env.example",
    "deploy/mosquitto/",
    "deploy/kubernetes/bridge.yaml",
    "deploy/kubernetes/configmap.yaml",
    "gateway-bridge/",
    "bench/publisher.py",
    "bench/rules.py",
    "services/edgesense/__init__.py",
    # The console's devices and rules pages (gateway ids, a gateway's Last Will).
    "services/edgesense/api/console/js/alerts.js",
    "services/edgesense/api/console/js/devices.js",
    "services/edgesense/common/events.py",
    "services/edgesense/common/event_types.py",
    "services/edgesense/delivery/accept/samples.py",
    "services/edgesense/delivery/devices/",
    "services/edgesense/tools/devices_args.py",
    "services/edgesense/tools/devices_cmd.py",
    "services/edgesense/common/log_throttle.py",
    "services/edgesense/tools/__init__.py",
    "services/edgesense/tools/alerts_cmd.py",
    "services/edgesense/tools/local_commands.py",
    "services/edgesense/tools/sim_edges.py",
    "services/edgesense/tools/sim_publisher.py",
    "services/edgesense/tools/sim_sparkplug.py",
    "services/edgesense/tools/simulate.py",
)


def scanned_files() -> dict[str, str]:
    """Relative path -> text of every text file the checks read."""
    found: dict[str, str] = {}
    for top in SCANNED:
        path = ROOT / top
        for file in [path] if path.is_file() else sorted(path.rglob("*")):
            name = file.relative_to(ROOT).as_posix()
            if not file.is_file() or name.startswith(SKIPPED) or "__pycache__" in name:
                continue
            try:
                found[name] = file.read_text(encoding="utf-8")
            except UnicodeDecodeError:  # descriptor sets, certificates in DER
                continue
    return found


def lines_matching(text: str, pattern: re.Pattern[str]) -> list[str]:
    return [
        f"{number}: {line.strip()}"
        for number, line in enumerate(text.splitlines(), 1)
        if pattern.search(line)
    ]


def test_the_checks_read_the_files_that_matter() -> None:
    files = scanned_files()
    for expected in ("README.md", "deploy/docker-compose.yml", "services/edgesense/api/server.py"):
        assert expected in files
    assert not [name for name in files if name.startswith(SKIPPED)]
    # The patterns catch what the REST process used to be called.
    old_names = (
        "the REST gateway",
        "edgesense gateway",
        "edgesense_gateway_requests_total",
        "registry|delivery|gateway|bridge",
        "registry, delivery, gateway, bridge",
        "| gateway | REST/JSON → gRPC transcoder |",
        "source: ./tls/gateway",
        "so `gateway/connections.py` adds",
        "services/edgesense/gateway/server.py",
        "gateway:8081/metrics",
        'command: ["gateway"]',
        'command: ["edgesense", "gateway"]',
        "  name: gateway",
        "raise GatewayError(",
    )
    for old in old_names:
        assert REST_PROCESS.search(old), old
    for device in ("{prefix}/project/gateway/status", "a gateway publishes", "gateway-bridge/"):
        assert not REST_PROCESS.search(device), device


def test_nothing_names_the_rest_process_gateway() -> None:
    found = {
        name: hits
        for name, text in scanned_files().items()
        if (hits := lines_matching(text, REST_PROCESS))
    }
    assert not found, f"the REST process is `api`, not gateway: {found}"


def test_gateway_means_the_device() -> None:
    found: dict[str, list[str]] = {}
    for name, text in scanned_files().items():
        if name.startswith(ABOUT_THE_DEVICE):
            continue
        hits = lines_matching(ALLOWED.sub("", text), GATEWAY)
        if hits:
            found[name] = hits
    assert not found, (
        f'"gateway" is the industrial gateway; the REST process is `api`: {found} '
        "(a file about the device itself belongs in ABOUT_THE_DEVICE)"
    )
