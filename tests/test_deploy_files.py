"""The production deployment files under deploy/: they parse, and give each service what it needs.

Static checks of docker-compose.yml (services, ports, each service's
environment, mounts, replicas, health checks), the Kubernetes manifests
(workloads running `edgesense <service>`, Services reaching container ports,
probes, secrets), the Dockerfile, Mosquitto's config and ACL, and the metric
names deploy/README.md tells operators to watch. Addresses are followed across
files: what one service dials (or Envoy routes to) must be a service that
listens there.

Then the ACL for real: the machine's Mosquitto 2.0 runs deploy/mosquitto's
config (listener, file paths and persistence directory moved into a temporary
directory, nothing else changed) and paho clients check who may publish and
receive what.
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import subprocess
import threading
import time
import tomllib
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as paho
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from edgesense import cli
from tests.support.metrics import exposed_metric_names
from tests.support.ports import free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"
MOSQUITTO_DIR = DEPLOY / "mosquitto"

SERVICES = ("registry", "delivery", "api", "bridge")
LISTEN_VAR = {
    "registry": "EDGESENSE_REGISTRY_ADDR",
    "delivery": "EDGESENSE_DELIVERY_ADDR",
    "api": "EDGESENSE_HTTP_ADDR",
    "bridge": "EDGESENSE_BRIDGE_ADDR",
}
# The services each one calls, by the variable naming the address it dials.
DIALS = {
    "registry": (),
    "delivery": ("registry",),
    "api": ("registry", "delivery", "bridge"),
    "bridge": ("delivery",),
}
SECRETS = {
    "registry": ("EDGESENSE_API_KEYS", "EDGESENSE_SECRET_KEY", "EDGESENSE_DATABASE_URL"),
    "delivery": ("EDGESENSE_API_KEYS", "EDGESENSE_SECRET_KEY", "EDGESENSE_DATABASE_URL"),
    "api": (),
    "bridge": ("EDGESENSE_API_KEYS", "EDGESENSE_SECRET_KEY", "EDGESENSE_MQTT_URL"),
}
METRICS_VAR = {
    "registry": "EDGESENSE_REGISTRY_METRICS_ADDR",
    "delivery": "EDGESENSE_DELIVERY_METRICS_ADDR",
    "bridge": "EDGESENSE_BRIDGE_METRICS_ADDR",
}
BRIDGE_USER = "edgesense-bridge"
BRIDGE_MAX_PAYLOAD = 256 * 1024
K8S_SECRET = "edgesense-secrets"
HEALTHCHECK_MODULE = "edgesense.common.healthcheck"


# Modules whose metrics live in prometheus_client's default registry (the
# REST API's have a registry of their own).
def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def port_of(address: str) -> int:
    host, sep, port = address.rpartition(":")
    assert sep, f"{address!r} is not host:port"
    assert host, f"{address!r} has no host"
    assert port.isdigit(), f"{address!r} has no port"
    return int(port)


def host_of(address: str) -> str:
    return address.rpartition(":")[0].strip("[]")


# What `docker compose` would substitute from deploy/.env, for parsing URLs.
SAMPLE_ENV = {
    "POSTGRES_PASSWORD": "pg-password",
    "EDGESENSE_BRIDGE_MQTT_PASSWORD": "mqtt-password",
    "EDGESENSE_API_KEYS": "key=project",
    "EDGESENSE_SECRET_KEY": "secret-key",
}
INTERPOLATION = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def interpolated(value: str) -> str:
    """`value` with `${VAR}`, `${VAR:-default}` and `${VAR:?error}` substituted as compose does."""

    def substitute(match: re.Match[str]) -> str:
        name, how, argument = match.groups()
        if name in SAMPLE_ENV:
            return SAMPLE_ENV[name]
        assert how in (":-", "-"), f"${{{name}}} is required but has no sample value"
        return str(argument)

    return INTERPOLATION.sub(substitute, value)


def seconds(duration: str | int) -> float:
    """A compose duration ('90s', '1m30s', 60) in seconds."""
    if isinstance(duration, int):
        return float(duration)
    parts = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", duration)
    assert duration, "empty duration"
    assert parts, f"unreadable duration {duration!r}"
    hours, minutes, secs = (int(p or 0) for p in parts.groups())
    return hours * 3600.0 + minutes * 60.0 + secs


# ---------------------------------------------------------------- every file


def test_the_services_deployed_are_the_commands_of_the_cli() -> None:
    # Every file here runs `edgesense <service>` for these names: a renamed
    # command (the REST process was `gateway`, it is `api`) must be renamed here.
    assert set(SERVICES) == set(cli.SERVICES)


def test_every_yaml_file_parses() -> None:
    paths = sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yml", ".yaml"))
    assert DEPLOY / "docker-compose.yml" in paths
    assert K8S / "kustomization.yaml" in paths
    for path in paths:
        documents = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
        assert documents, f"{path} is empty"
        for document in documents:
            assert isinstance(document, dict), f"{path}: a document is not a mapping"
            assert document, f"{path}: an empty document"


# ------------------------------------------------------------ docker compose


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = load_yaml(DEPLOY / "docker-compose.yml")
    assert isinstance(loaded, dict)
    return loaded


def services_of(compose: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    services = compose["services"]
    assert isinstance(services, dict)
    return services


def environment(service: Mapping[str, Any]) -> dict[str, str]:
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) for item in raw)
    return {str(k): str(v) for k, v in raw.items()}


def edgesense_kind(service: Mapping[str, Any]) -> str | None:
    """Which `edgesense` subcommand a compose service runs (the image's entrypoint)."""
    command = service.get("command")
    if "build" in service and isinstance(command, list) and command and command[0] in SERVICES:
        return str(command[0])
    return None


def by_kind(compose: Mapping[str, Any]) -> dict[str, list[str]]:
    kinds: dict[str, list[str]] = {kind: [] for kind in SERVICES}
    for name, service in services_of(compose).items():
        kind = edgesense_kind(service)
        if kind is not None:
            kinds[kind].append(name)
    return kinds


def replicas(service: Mapping[str, Any]) -> int:
    return int((service.get("deploy") or {}).get("replicas", 1))


def mounts(service: Mapping[str, Any]) -> dict[str, str]:
    """Container path -> host path (or volume name) of a service's volumes."""
    found: dict[str, str] = {}
    for volume in service.get("volumes") or []:
        if isinstance(volume, str):
            source, target, *_ = volume.split(":")
        else:
            source, target = volume["source"], volume["target"]
        found[target] = source
    return found


def published_ports(service: Mapping[str, Any]) -> set[int]:
    ports: set[int] = set()
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            ports.add(int(entry["published"]))
        else:
            ports.add(int(str(entry).split(":")[-2].rsplit("/", 1)[0]))
    return ports


def test_compose_runs_every_service_and_its_infrastructure(compose: dict[str, Any]) -> None:
    services = services_of(compose)
    kinds = by_kind(compose)
    for kind in SERVICES:
        assert kinds[kind], f"no compose service runs `edgesense {kind}`"
    for name in ("postgres", "mosquitto", "envoy"):
        assert name in services, f"compose has no {name} service"
    assert services["postgres"]["image"].startswith("postgres:16")
    # 2.0.x: the ACL's slash usernames rely on 2.0's %u substitution.
    assert services["mosquitto"]["image"].startswith("eclipse-mosquitto:2.0")
    assert services["envoy"]["image"].startswith("envoyproxy/envoy:")
    for name, service in services.items():
        if edgesense_kind(service):
            assert service["build"]["dockerfile"] == "deploy/Dockerfile", name
            assert (DEPLOY / service["build"]["context"] / "pyproject.toml").is_file(), name
            assert service.get("image"), f"{name}: the built image needs a name to be shared"


def test_compose_publishes_mqtt_and_rest(compose: dict[str, Any]) -> None:
    services = services_of(compose)
    assert 1883 in published_ports(services["mosquitto"])
    assert 8080 in published_ports(services["envoy"])


def test_compose_delivery_and_bridge_run_at_least_twice(compose: dict[str, Any]) -> None:
    services = services_of(compose)
    kinds = by_kind(compose)
    for kind in ("delivery", "bridge"):
        count = sum(replicas(services[name]) for name in kinds[kind])
        assert count >= 2, f"{kind} runs {count} time(s)"


def test_compose_bridges_split_the_load_under_their_own_client_ids(
    compose: dict[str, Any],
) -> None:
    services = services_of(compose)
    bridges = [services[name] for name in by_kind(compose)["bridge"]]
    groups = {environment(b).get("EDGESENSE_MQTT_SHARED_GROUP") for b in bridges}
    assert len(groups) == 1, f"the bridges are in different groups: {groups}"
    assert groups - {None, ""}, "the bridges have no EDGESENSE_MQTT_SHARED_GROUP"
    # One session per bridge: a shared client id would make them kick each other off.
    ids = [environment(b).get("EDGESENSE_MQTT_CLIENT_ID") for b in bridges]
    assert None not in ids, ids
    assert len(set(ids)) == len(ids), ids
    assert all(replicas(b) == 1 for b in bridges), "replicas of one service share a client id"


def compose_listeners(compose: Mapping[str, Any]) -> dict[str, set[int]]:
    """Host name on the compose network -> ports an EdgeSense service listens on there."""
    listening: dict[str, set[int]] = {}
    for name, service in services_of(compose).items():
        kind = edgesense_kind(service)
        if kind is None:
            continue
        address = environment(service)[LISTEN_VAR[kind]]
        assert host_of(address) == "0.0.0.0", f"{name} listens on {address}, not 0.0.0.0"
        aliases = (service.get("networks") or {}).get("default", {}).get("aliases", [])
        for host in (name, *aliases):
            listening.setdefault(host, set()).add(port_of(address))
    return listening


def test_compose_services_listen_everywhere_and_dial_each_other(
    compose: dict[str, Any],
) -> None:
    services = services_of(compose)
    listening = compose_listeners(compose)
    for kind, names in by_kind(compose).items():
        for name in names:
            env = environment(services[name])
            for other in DIALS[kind]:
                address = env.get(LISTEN_VAR[other])
                assert address, f"{name} does not know where {other} is"
                assert port_of(address) in listening.get(host_of(address), set()), (
                    f"{name} dials {other} at {address}, where nothing listens"
                )
            if kind in METRICS_VAR:
                assert host_of(env[METRICS_VAR[kind]]) == "0.0.0.0", name


def test_compose_envoy_routes_to_services_that_listen(compose: dict[str, Any]) -> None:
    listening = compose_listeners(compose)
    envoy = load_yaml(DEPLOY / "envoy" / "envoy.yaml")
    for cluster in envoy["static_resources"]["clusters"]:
        for group in cluster["load_assignment"]["endpoints"]:
            for endpoint in group["lb_endpoints"]:
                socket_address = endpoint["endpoint"]["address"]["socket_address"]
                host, port = socket_address["address"], socket_address["port_value"]
                assert port in listening.get(host, set()), (
                    f"Envoy cluster {cluster['name']} sends to {host}:{port}, "
                    "which no compose service serves"
                )


def test_compose_gives_each_service_its_secrets_from_the_env_file(
    compose: dict[str, Any],
) -> None:
    services = services_of(compose)
    for kind, names in by_kind(compose).items():
        for name in names:
            env = environment(services[name])
            for var in SECRETS[kind]:
                assert var in env, f"{name} lacks {var}"
            for var in ("EDGESENSE_API_KEYS", "EDGESENSE_SECRET_KEY"):
                if var in SECRETS[kind]:
                    assert re.fullmatch(rf"\$\{{{var}:\?[^}}]+\}}", env[var]), (
                        f"{name}: {var} must come from deploy/.env, required (${{{var}:?…}})"
                    )
            if "EDGESENSE_DATABASE_URL" in SECRETS[kind]:
                url = urlsplit(interpolated(env["EDGESENSE_DATABASE_URL"]))
                assert url.scheme == "postgresql+asyncpg", name
                assert url.hostname == "postgres", name
                postgres = environment(services["postgres"])
                assert url.username == postgres["POSTGRES_USER"], name
                assert url.password == interpolated(postgres["POSTGRES_PASSWORD"]), name
                assert url.path == "/" + postgres["POSTGRES_DB"], name
            else:
                assert "EDGESENSE_DATABASE_URL" not in env, f"{name} needs no database"


def test_compose_bridge_logs_in_to_mosquitto_as_the_acl_bridge_user(
    compose: dict[str, Any],
) -> None:
    services = services_of(compose)
    listener_ports = {v.split()[0] for v in mosquitto_conf()["listener"]}
    for name in by_kind(compose)["bridge"]:
        raw = environment(services[name])["EDGESENSE_MQTT_URL"]
        url = urlsplit(interpolated(raw))
        assert url.scheme == "mqtt", name
        assert url.hostname == "mosquitto", name
        assert str(url.port or 1883) in listener_ports, name
        assert url.username == BRIDGE_USER, f"{name} logs in as {url.username!r}"
        assert url.password == SAMPLE_ENV["EDGESENSE_BRIDGE_MQTT_PASSWORD"], (
            f"{name}: the MQTT password must come from deploy/.env"
        )
        assert "${EDGESENSE_BRIDGE_MQTT_PASSWORD:?" in raw, f"{name}: the password is optional"


def test_every_compose_variable_is_in_the_env_example_without_a_value(
    compose: dict[str, Any],
) -> None:
    text = (DEPLOY / "docker-compose.yml").read_text(encoding="utf-8")
    referenced = dict(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)(:?[-?]?)", text))
    assert "EDGESENSE_API_KEYS" in referenced
    example: dict[str, str] = {}
    for line in (DEPLOY / ".env.example").read_text(encoding="utf-8").splitlines():
        match = re.fullmatch(r"#?([A-Z_][A-Z0-9_]*)=(.*)", line.strip())
        if match:
            example[match.group(1)] = match.group(2)
    for var, how in referenced.items():
        assert var in example, f"deploy/.env.example does not mention {var}"
        if how == ":?":
            assert example[var] == "", f".env.example commits a value for {var}"


def test_compose_mounts_mosquitto_and_envoy_files_where_they_are_read(
    compose: dict[str, Any],
) -> None:
    services = services_of(compose)
    conf = mosquitto_conf()
    broker = mounts(services["mosquitto"])
    assert broker["/mosquitto/config/mosquitto.conf"] == "./mosquitto/mosquitto.conf"
    assert broker[conf["acl_file"][0]] == "./mosquitto/acl"
    assert broker[conf["password_file"][0]] == "./mosquitto/passwd"
    assert conf["persistence_location"][0].rstrip("/") in broker, "broker state not on a volume"
    for source in ("./mosquitto/mosquitto.conf", "./mosquitto/acl", "./mosquitto/passwd.example"):
        assert (DEPLOY / source).is_file(), source

    envoy_config = load_yaml(DEPLOY / "envoy" / "envoy.yaml")
    (listener,) = envoy_config["static_resources"]["listeners"]
    filters = listener["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"]
    transcoder = next(f for f in filters if f["name"].endswith("grpc_json_transcoder"))
    descriptor = transcoder["typed_config"]["proto_descriptor"]
    envoy = mounts(services["envoy"])
    assert envoy["/etc/envoy/envoy.yaml"] == "./envoy/envoy.yaml"
    assert envoy[descriptor] == "./envoy/edgesense.binpb"
    assert "/etc/envoy/envoy.yaml" in services["envoy"]["command"]
    for source in envoy.values():
        # The TLS folder is made by deploy/tls/make-dev-certs.sh (tests/test_deploy_tls.py).
        assert source.startswith("./tls/") or (DEPLOY / source).is_file(), source


def test_compose_health_checks_and_start_order(compose: dict[str, Any]) -> None:
    services = services_of(compose)
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    for kind, names in by_kind(compose).items():
        for name in names:
            service = services[name]
            env = environment(service)
            test = service["healthcheck"]["test"]
            if kind in ("registry", "delivery", "bridge"):
                # gRPC health over the service's own (mutual) TLS settings; the
                # bridge's is SERVING only while it is connected to the broker.
                assert test[:4] == ["CMD", "python", "-m", HEALTHCHECK_MODULE], name
                assert test[5:] == ["--server-name", kind], name
                checked = test[4]
            else:
                assert test[:3] == ["CMD", "python", "-c"], name
                compile(test[3], f"<{name} healthcheck>", "exec")
                checked = test[3]
            (port,) = re.findall(r"127\.0\.0\.1:(\d+)", checked)
            assert int(port) == port_of(env[LISTEN_VAR[kind]]), f"{name} checks port {port}"
            if kind in ("registry", "delivery"):
                assert service["depends_on"]["postgres"]["condition"] == "service_healthy"
            if kind == "bridge":
                assert "mosquitto" in service["depends_on"], name


def test_compose_gives_delivery_time_to_hand_work_back(compose: dict[str, Any]) -> None:
    services = services_of(compose)
    for name in by_kind(compose)["delivery"]:
        assert seconds(services[name].get("stop_grace_period", "10s")) >= 30, name


# --------------------------------------------------------------- Dockerfile


def test_dockerfile_installs_the_package_with_edgesense_as_entrypoint() -> None:
    lines = [
        line.strip()
        for line in (DEPLOY / "Dockerfile").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert lines[0] == "FROM python:3.11-slim"
    assert 'ENTRYPOINT ["edgesense"]' in lines
    assert any(line.startswith("RUN pip install") and " ." in line for line in lines)
    assert any(line.startswith("USER ") and not line.startswith("USER root") for line in lines)
    copied = {
        part.strip("./")
        for line in lines
        if line.startswith("COPY ")
        for part in line.split()[1:-1]
    }
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    needed = {"pyproject.toml", pyproject["project"]["readme"]}
    needed |= set(pyproject["tool"]["setuptools"]["packages"]["find"]["where"])
    assert needed <= copied, f"the image build lacks {sorted(needed - copied)}"


# --------------------------------------------------------------- Kubernetes


@pytest.fixture(scope="module")
def manifests() -> list[dict[str, Any]]:
    return load_manifests()


def load_manifests() -> list[dict[str, Any]]:
    """Every document of the resources kustomization.yaml applies."""
    kustomization = load_yaml(K8S / "kustomization.yaml")
    resources = kustomization["resources"]
    on_disk = {
        p.name
        for p in K8S.glob("*.yaml")
        if p.name != "kustomization.yaml" and not p.name.endswith(".example.yaml")
    }
    assert set(resources) == on_disk, "kustomization.yaml must list every manifest"
    documents: list[dict[str, Any]] = []
    for resource in resources:
        documents += [d for d in yaml.safe_load_all((K8S / resource).read_text("utf-8")) if d]
    return documents


def find(manifests: list[dict[str, Any]], kinds: tuple[str, ...], name: str) -> dict[str, Any]:
    found = [m for m in manifests if m["kind"] in kinds and m["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {'/'.join(kinds)} named {name}, found {len(found)}"
    return found[0]


def workload(manifests: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    return find(manifests, ("Deployment", "StatefulSet"), kind)


def container(manifests: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (only,) = workload(manifests, kind)["spec"]["template"]["spec"]["containers"]
    assert isinstance(only, dict)
    return only


def container_port(spec: Mapping[str, Any], port: int | str) -> int:
    """A probe's or Service's target port (number or name) -> the container port it is."""
    for declared in spec.get("ports", []):
        if port in (declared["containerPort"], declared.get("name")):
            return int(declared["containerPort"])
    raise AssertionError(f"{spec['name']} declares no port {port!r}")


def effective_env(manifests: list[dict[str, Any]], spec: Mapping[str, Any]) -> dict[str, Any]:
    """Variable -> value (str) or valueFrom (dict); `env` overrides `envFrom` as in Kubernetes."""
    env: dict[str, Any] = {}
    for source in spec.get("envFrom", []):
        config_map = find(manifests, ("ConfigMap",), source["configMapRef"]["name"])
        env.update(config_map["data"])
    for item in spec.get("env", []):
        env[item["name"]] = item["value"] if "value" in item else item["valueFrom"]
    return env


@pytest.mark.parametrize("kind", SERVICES)
def test_k8s_workload_runs_the_service(manifests: list[dict[str, Any]], kind: str) -> None:
    spec = container(manifests, kind)
    assert [*spec.get("command", []), *spec.get("args", [])] == ["edgesense", kind]
    template = workload(manifests, kind)["spec"]
    labels = template["template"]["metadata"]["labels"]
    assert template["selector"]["matchLabels"].items() <= labels.items()
    for section in ("requests", "limits"):
        assert {"cpu", "memory"} <= spec["resources"][section].keys(), f"{kind}: {section}"


@pytest.mark.parametrize("kind", SERVICES)
def test_k8s_service_reaches_the_container(manifests: list[dict[str, Any]], kind: str) -> None:
    service = find(manifests, ("Service",), kind)["spec"]
    pod_labels = workload(manifests, kind)["spec"]["template"]["metadata"]["labels"]
    assert service["selector"].items() <= pod_labels.items()
    spec = container(manifests, kind)
    listen = port_of(effective_env(manifests, spec)[LISTEN_VAR[kind]])
    targets = {container_port(spec, p["targetPort"]) for p in service["ports"]}
    assert listen in targets, f"the {kind} Service does not reach port {listen}"


@pytest.mark.parametrize("kind", SERVICES)
def test_k8s_addresses(manifests: list[dict[str, Any]], kind: str) -> None:
    env = effective_env(manifests, container(manifests, kind))
    listen = env[LISTEN_VAR[kind]]
    assert host_of(listen) == "0.0.0.0", f"{kind} listens on {listen}"
    if kind in METRICS_VAR:
        assert host_of(env[METRICS_VAR[kind]]) == "0.0.0.0", f"{kind} metrics"
    for other in DIALS[kind]:
        address = env[LISTEN_VAR[other]]
        service = find(manifests, ("Service",), host_of(address))["spec"]
        (port,) = [p for p in service["ports"] if p["port"] == port_of(address)]
        target = container_port(container(manifests, other), port["targetPort"])
        other_listen = effective_env(manifests, container(manifests, other))[LISTEN_VAR[other]]
        assert target == port_of(other_listen), f"{kind} dials {other} at {address}"


@pytest.mark.parametrize("kind", SERVICES)
def test_k8s_probes(manifests: list[dict[str, Any]], kind: str) -> None:
    spec = container(manifests, kind)
    env = effective_env(manifests, spec)
    listen = port_of(env[LISTEN_VAR[kind]])
    # /healthz is on the REST API's own port, and beside the metrics of the others.
    healthz = listen if kind == "api" else port_of(env[METRICS_VAR[kind]])
    readiness, liveness = spec["readinessProbe"], spec["livenessProbe"]
    for probe in (readiness, liveness, spec.get("startupProbe")):
        if probe is None:
            continue
        # The kubelet's gRPC probe cannot do mutual TLS: gRPC health is asked by
        # edgesense.common.healthcheck, with the pod's TLS settings and the service's name.
        assert "grpc" not in probe, f"{kind}: a native gRPC probe cannot pass mutual TLS"
        if "exec" in probe:
            assert kind != "api", "the REST API serves no gRPC"
            command = probe["exec"]["command"]
            assert command == [
                "python",
                "-m",
                HEALTHCHECK_MODULE,
                f"127.0.0.1:{listen}",
                "--server-name",
                kind,
            ], f"{kind}: {probe}"
            assert probe.get("timeoutSeconds", 1) >= 5, f"{kind}: a Python process needs time"
        else:
            assert probe["httpGet"]["path"] == "/healthz", f"{kind}: {probe}"
            assert container_port(spec, probe["httpGet"]["port"]) == healthz, f"{kind}: {probe}"
    if kind in ("registry", "delivery"):
        assert "exec" in readiness, f"{kind}: readiness is gRPC health"
        assert "exec" in liveness, f"{kind}: liveness is gRPC health"
    if kind == "bridge":
        assert "httpGet" in liveness, "the bridge's liveness: /healthz on its metrics port"


@pytest.mark.parametrize("kind", SERVICES)
def test_k8s_secrets(manifests: list[dict[str, Any]], kind: str) -> None:
    env = effective_env(manifests, container(manifests, kind))
    example = load_yaml(K8S / "secret.example.yaml")
    assert example["metadata"]["name"] == K8S_SECRET
    for var in SECRETS[kind]:
        ref = env.get(var)
        assert isinstance(ref, dict), f"{kind}: {var} must come from the Secret"
        assert ref["secretKeyRef"]["name"] == K8S_SECRET, f"{kind}: {var}"
        assert ref["secretKeyRef"]["key"] in example["stringData"], f"{kind}: {var}"
    for var, value in env.items():
        if var in ("EDGESENSE_API_KEYS", "EDGESENSE_SECRET_KEY", "EDGESENSE_DATABASE_URL"):
            assert isinstance(value, dict), f"{kind}: {var} written in plain text"
    # Only the shared group has a value: a placeholder to replace, since an
    # empty group makes every bridge replica take every message.
    values = dict(example["stringData"])
    assert values.pop("EDGESENSE_MQTT_SHARED_GROUP").startswith("REPLACE"), "no placeholder"
    assert all(v == "" for v in values.values()), "the example holds a secret"


@pytest.mark.parametrize("kind", SERVICES)
def test_k8s_prometheus_annotations(manifests: list[dict[str, Any]], kind: str) -> None:
    spec = container(manifests, kind)
    env = effective_env(manifests, spec)
    annotations = workload(manifests, kind)["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics"
    metrics_var = METRICS_VAR.get(kind, LISTEN_VAR[kind])
    expected = port_of(env[metrics_var])
    assert int(annotations["prometheus.io/port"]) == expected
    assert container_port(spec, expected) == expected


def test_k8s_delivery_and_bridge_replicas_and_grace(manifests: list[dict[str, Any]]) -> None:
    for kind in ("delivery", "bridge"):
        assert workload(manifests, kind)["spec"]["replicas"] >= 2, kind
    delivery = workload(manifests, "delivery")["spec"]["template"]["spec"]
    assert delivery["terminationGracePeriodSeconds"] >= 30


def test_k8s_bridges_have_stable_client_ids_of_their_own(manifests: list[dict[str, Any]]) -> None:
    # Replicas need distinct client ids, and the same one after a restart so
    # that a bridge resumes the broker session holding its queued messages.
    bridge = workload(manifests, "bridge")
    assert bridge["kind"] == "StatefulSet"
    env = effective_env(manifests, container(manifests, "bridge"))
    assert env["EDGESENSE_MQTT_CLIENT_ID"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["EDGESENSE_MQTT_SHARED_GROUP"]


def test_the_bridges_shared_group_is_a_secret(
    compose: dict[str, Any], manifests: list[dict[str, Any]]
) -> None:
    # Anyone who knows the name can join the group (see the ACL test below).
    for name in by_kind(compose)["bridge"]:
        group = environment(services_of(compose)[name])["EDGESENSE_MQTT_SHARED_GROUP"]
        assert group.startswith("${EDGESENSE_MQTT_SHARED_GROUP:?"), f"{name}: {group!r}"
    env = effective_env(manifests, container(manifests, "bridge"))
    reference = {"secretKeyRef": {"name": K8S_SECRET, "key": "EDGESENSE_MQTT_SHARED_GROUP"}}
    assert env["EDGESENSE_MQTT_SHARED_GROUP"] == reference


# ---------------------------------------------------------------- Mosquitto


def mosquitto_conf(text: str | None = None) -> dict[str, list[str]]:
    """Option -> its values, in order (comments and blank lines left out)."""
    if text is None:
        text = (MOSQUITTO_DIR / "mosquitto.conf").read_text(encoding="utf-8")
    options: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition(" ")
            options.setdefault(key, []).append(value.strip())
    return options


def test_mosquitto_conf_essentials() -> None:
    conf = mosquitto_conf()
    assert conf["listener"] == ["1883"]
    assert conf["allow_anonymous"] == ["false"]
    assert conf["password_file"] == ["/mosquitto/config/passwd"]
    assert conf["acl_file"] == ["/mosquitto/config/acl"]
    assert conf["persistence"] == ["true"]
    assert conf["persistence_location"]
    assert int(conf["max_queued_messages"][0]) >= 100_000
    assert int(conf["max_inflight_messages"][0]) >= 100
    assert BRIDGE_MAX_PAYLOAD < int(conf["max_packet_size"][0]) <= 1024 * 1024
    assert conf["set_tcp_nodelay"] == ["true"]
    assert conf["log_dest"]
    # The TLS listener, ready to uncomment.
    commented = mosquitto_conf(
        "\n".join(
            line.lstrip("#")
            for line in (MOSQUITTO_DIR / "mosquitto.conf").read_text("utf-8").splitlines()
        )
    )
    assert "8883" in commented["listener"]
    assert {"cafile", "certfile", "keyfile"} <= commented.keys()


@dataclass(frozen=True)
class AclRule:
    user: str | None  # the `user` block it is in; None before any
    kind: str  # topic or pattern
    access: str
    topic: str


def acl_rules() -> list[AclRule]:
    rules: list[AclRule] = []
    user: str | None = None
    for line in (MOSQUITTO_DIR / "acl").read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        if keyword == "user":
            user = rest.strip()
            continue
        assert keyword in ("topic", "pattern"), line
        access, _, topic = rest.strip().partition(" ")
        if not topic:  # `topic <topic>` means readwrite
            access, topic = "readwrite", access
        rules.append(AclRule(user, keyword, access, topic.strip()))
    return rules


def test_mosquitto_acl_essentials() -> None:
    rules = acl_rules()
    patterns = {(r.access, r.topic) for r in rules if r.kind == "pattern"}
    assert patterns == {
        ("write", "edgesense/%u/#"),
        ("read", "edgesense/%u/+/config/set"),
    }
    bridge = {(r.access, r.topic) for r in rules if r.kind == "topic" and r.user == BRIDGE_USER}
    assert bridge == {
        ("read", "edgesense/#"),
        ("write", "edgesense/+/+/+/config/set"),
        # a Sparkplug B host application: all Sparkplug traffic, rebirth NCMDs, its STATE
        ("read", "spBv1.0/#"),
        ("write", "spBv1.0/+/NCMD/+"),
        ("write", "spBv1.0/STATE/+"),
    }
    # A `topic` line before any `user` line would apply to clients without a username.
    assert all(r.user is not None for r in rules if r.kind == "topic")
    users = {r.user for r in rules if r.kind == "topic"}
    assert users == {BRIDGE_USER}, f"unexpected users in the ACL: {users - {BRIDGE_USER}}"


# ------------------------------------------------------------------ README


def test_readme_metrics_exist() -> None:
    text = (DEPLOY / "README.md").read_text(encoding="utf-8")
    section = text.split("## What to monitor", 1)[1]
    listed = set(re.findall(r"`(edgesense_[a-z_]+)`", section))
    assert len(listed) >= 20, "the monitoring table lost its metrics"
    unknown = listed - exposed_metric_names()
    assert not unknown, f"deploy/README.md names metrics nobody exposes: {sorted(unknown)}"


# ------------------------------------------------- the ACL on a real broker

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
NOT_AUTHORIZED = 0x87
WAIT = 5.0
EDGE_NODE = "acme/line-4"  # mosquitto/acl's commented Sparkplug B example
PASSWORDS = {
    "acme/gw-1": "pw-gw-1",
    "acme/gw-2": "pw-gw-2",
    BRIDGE_USER: "pw-bridge",
    EDGE_NODE: "pw-line-4",
}


def replace_once(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, f"mosquitto.conf should have {old!r} once"
    return text.replace(old, new)


def config_for_test(port: int, directory: Path) -> str:
    """deploy/mosquitto/mosquitto.conf with the listener and file paths moved; nothing else."""
    text = (MOSQUITTO_DIR / "mosquitto.conf").read_text(encoding="utf-8")
    text = replace_once(text, "\nlistener 1883\n", f"\nlistener {port} 127.0.0.1\n")
    text = replace_once(text, "/mosquitto/config/passwd", str(directory / "passwd"))
    text = replace_once(text, "/mosquitto/config/acl", str(directory / "acl"))
    text = replace_once(text, "/mosquitto/data/", f"{directory / 'data'}/")
    if os.geteuid() == 0:  # don't switch to the mosquitto user, who can't read tmp_path
        text += "user root\n"
    return text


@dataclass
class Broker:
    port: int
    log: Path


def _mosquitto_version() -> tuple[int, int]:
    out = subprocess.run([MOSQUITTO, "-h"], capture_output=True, text=True, check=False).stdout
    match = re.search(r"mosquitto version (\d+)\.(\d+)", out)
    assert match, f"cannot read the version of {MOSQUITTO}: {out[:200]!r}"
    return int(match.group(1)), int(match.group(2))


def acl_with_example() -> str:
    """mosquitto/acl with its commented example rules (lines `#user …`,
    `#topic …`; the explanations have a space after the `#`) in force."""
    text = (MOSQUITTO_DIR / "acl").read_text(encoding="utf-8")
    example = re.compile(r"^#((?:user|topic) .*)$", re.MULTILINE)
    assert example.search(text), "mosquitto/acl lost its commented Sparkplug B example"
    return example.sub(r"\1", text)


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    yield from _broker(tmp_path_factory, (MOSQUITTO_DIR / "acl").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def example_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """The deploy config with the ACL's commented examples in force."""
    yield from _broker(tmp_path_factory, acl_with_example())


def _broker(tmp_path_factory: pytest.TempPathFactory, acl: str) -> Iterator[Broker]:
    for binary in (MOSQUITTO, MOSQUITTO_PASSWD):
        if not os.access(binary, os.X_OK):
            pytest.skip(f"the ACL test needs {binary} (apt-get install mosquitto)")
    if _mosquitto_version()[:2] != (2, 0):
        pytest.skip("deploy/ pins Mosquitto 2.0 (slash usernames in %u); this machine has another")
    directory = tmp_path_factory.mktemp("deploy-mosquitto")
    (directory / "data").mkdir()
    (directory / "acl").write_text(acl, encoding="utf-8")
    passwd = directory / "passwd"
    passwd.touch(mode=0o600)
    for user, password in PASSWORDS.items():
        subprocess.run([MOSQUITTO_PASSWD, "-b", str(passwd), user, password], check=True)
    port = free_port()
    conf = directory / "mosquitto.conf"
    conf.write_text(config_for_test(port, directory), encoding="utf-8")
    log = directory / "mosquitto.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [MOSQUITTO, "-c", str(conf)], stdout=out, stderr=subprocess.STDOUT
        )
    try:
        try:
            wait_for_port(port, WAIT, process)
        except AssertionError as failed:
            raise AssertionError(f"{failed}; mosquitto's log:\n{log.read_text()}") from None
        yield Broker(port, log)
    finally:
        process.terminate()
        process.wait(10)


class Client:
    """A paho MQTT 5 client on its own network thread, recording what it is told."""

    def __init__(
        self,
        broker: Broker,
        username: str | None,
        password: str | None = None,
        *,
        will_topic: str | None = None,
        protocol: MQTTProtocolVersion = paho.MQTTv5,
    ) -> None:
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"test-{uuid.uuid4().hex[:12]}",
            protocol=protocol,
            reconnect_on_failure=False,
        )
        if username is not None:
            self.client.username_pw_set(username, password)
        if will_topic is not None:
            self.client.will_set(will_topic, b"offline", qos=1, retain=True)
        self.broker = broker
        self.connacks: queue.Queue[ReasonCode] = queue.Queue()
        self.messages: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.subacks: queue.Queue[list[ReasonCode]] = queue.Queue()
        self.pubacks: dict[int, ReasonCode] = {}
        self.puback_arrived = threading.Condition()
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.client.on_publish = self._on_publish

    def _on_connect(
        self,
        _client: paho.Client,
        _userdata: Any,
        _flags: paho.ConnectFlags,
        reason: ReasonCode,
        _properties: Properties | None,
    ) -> None:
        self.connacks.put(reason)

    def _on_message(self, _client: paho.Client, _userdata: Any, message: paho.MQTTMessage) -> None:
        if not message.retain:  # replays of earlier tests' status messages
            self.messages.put((message.topic, bytes(message.payload)))

    def _on_subscribe(
        self,
        _client: paho.Client,
        _userdata: Any,
        _mid: int,
        reasons: list[ReasonCode],
        _properties: Properties | None,
    ) -> None:
        self.subacks.put(reasons)

    def _on_publish(
        self,
        _client: paho.Client,
        _userdata: Any,
        mid: int,
        reason: ReasonCode,
        _properties: Properties | None,
    ) -> None:
        with self.puback_arrived:
            self.pubacks[mid] = reason
            self.puback_arrived.notify_all()

    def connect(self) -> ReasonCode:
        self.client.connect("127.0.0.1", self.broker.port)
        self.client.loop_start()
        return self.connacks.get(timeout=WAIT)

    def subscribe(self, topic: str) -> None:
        self.client.subscribe(topic, qos=1)
        (granted,) = self.subacks.get(timeout=WAIT)
        assert not granted.is_failure, f"subscribing to {topic}: {granted}"

    def publish(self, topic: str, payload: bytes = b"{}") -> ReasonCode:
        """Publish with QoS 1 and return the broker's PUBACK reason code."""
        mid = self.client.publish(topic, payload, qos=1).mid
        with self.puback_arrived:
            assert self.puback_arrived.wait_for(lambda: mid in self.pubacks, WAIT), topic
            return self.pubacks.pop(mid)

    def received_until(self, marker_topic: str) -> list[str]:
        """Topics received up to and including the marker (which must arrive)."""
        topics: list[str] = []
        deadline = time.monotonic() + WAIT
        while not topics or topics[-1] != marker_topic:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"{marker_topic} never arrived; got {topics}"
            try:
                topics.append(self.messages.get(timeout=remaining)[0])
            except queue.Empty:
                continue
        return topics

    def disconnect_with_will(self) -> None:
        """Leave as a crashed gateway would: the broker publishes the Last Will."""
        self.client.disconnect(ReasonCode(PacketTypes.DISCONNECT, "Disconnect with will message"))
        self.client.loop_stop()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def clients(broker: Broker) -> Iterator[list[Client]]:
    made: list[Client] = []
    yield made
    for client in made:
        client.close()


def connected(
    broker: Broker,
    clients: list[Client],
    user: str,
    *,
    will_topic: str | None = None,
    protocol: MQTTProtocolVersion = paho.MQTTv5,
) -> Client:
    client = Client(broker, user, PASSWORDS[user], will_topic=will_topic, protocol=protocol)
    clients.append(client)
    reason = client.connect()
    assert not reason.is_failure, f"{user} could not connect: {reason}"
    return client


def test_a_gateway_publishes_only_under_its_own_project_and_id(
    broker: Broker, clients: list[Client]
) -> None:
    device = f"dev-{uuid.uuid4().hex[:8]}"
    bridge = connected(broker, clients, BRIDGE_USER)
    bridge.subscribe(f"$share/deploy-test-{device}/edgesense/#")  # as the bridges do
    gateway = connected(broker, clients, "acme/gw-1", will_topic="edgesense/acme/gw-1/status")

    own = f"edgesense/acme/gw-1/{device}/data"
    assert not gateway.publish(own).is_failure
    for foreign in (
        f"edgesense/acme/gw-2/{device}/data",  # another gateway of the project
        f"edgesense/other/gw-1/{device}/data",  # the same gateway id in another project
        "edgesense/acme/status",
    ):
        assert gateway.publish(foreign).value == NOT_AUTHORIZED, foreign
    marker = f"edgesense/acme/gw-1/{device}/alert"
    assert not gateway.publish(marker).is_failure

    # In order from one publisher: the denied ones would have come before the marker.
    assert bridge.received_until(marker) == [own, marker]


def test_an_mqtt_3_gateway_is_acknowledged_but_publishes_nothing_for_others(
    broker: Broker, clients: list[Client]
) -> None:
    # MQTT 3.1.1 has no reason code: the PUBACK says nothing, the message goes nowhere.
    device = f"dev-{uuid.uuid4().hex[:8]}"
    bridge = connected(broker, clients, BRIDGE_USER)
    bridge.subscribe("edgesense/#")
    gateway = connected(broker, clients, "acme/gw-1", protocol=paho.MQTTv311)
    for topic in (
        f"edgesense/globex/gw-1/{device}/data",
        f"edgesense/acme/gw-2/{device}/alert",
        f"edgesense/acme/gw-2/{device}/config/set",
    ):
        assert not gateway.publish(topic).is_failure
    own = f"edgesense/acme/gw-1/{device}/data"
    assert not gateway.publish(own).is_failure

    assert bridge.received_until(own) == [own]


def test_a_gateway_cannot_leave_a_last_will_for_another(
    broker: Broker, clients: list[Client]
) -> None:
    # Mosquitto 2.0 accepts the CONNECT and checks the Will when it publishes it.
    bridge = connected(broker, clients, BRIDGE_USER)
    bridge.subscribe("edgesense/acme/+/status")
    spoofer = connected(broker, clients, "acme/gw-1", will_topic="edgesense/acme/gw-2/status")
    spoofer.disconnect_with_will()
    honest = connected(broker, clients, "acme/gw-1", will_topic="edgesense/acme/gw-1/status")
    honest.disconnect_with_will()

    assert bridge.received_until("edgesense/acme/gw-1/status") == ["edgesense/acme/gw-1/status"]


def test_a_gateway_receives_its_own_config_and_nobody_elses_events(
    broker: Broker, clients: list[Client]
) -> None:
    device = f"dev-{uuid.uuid4().hex[:8]}"
    gateway = connected(broker, clients, "acme/gw-1")
    gateway.subscribe("edgesense/#")
    other = connected(broker, clients, "acme/gw-2")
    bridge = connected(broker, clients, BRIDGE_USER)

    assert not other.publish(f"edgesense/acme/gw-2/{device}/data").is_failure
    assert not bridge.publish(f"edgesense/acme/gw-2/{device}/config/set").is_failure
    # The bridge may push configuration, not speak for a gateway.
    assert bridge.publish(f"edgesense/acme/gw-1/{device}/data").value == NOT_AUTHORIZED
    own = f"edgesense/acme/gw-1/{device}/config/set"
    assert not bridge.publish(own).is_failure

    assert gateway.received_until(own) == [own]


def test_a_gateway_joining_shared_groups_takes_nothing_from_the_bridges(
    broker: Broker, clients: list[Client], compose: dict[str, Any]
) -> None:
    # Mosquitto lets any client subscribe, $share included, and drops a message
    # it hands a group member that may not read it: a gateway in the bridges'
    # group would make a share of every project's events vanish. The deploy
    # files keep the group's name secret; a gateway can only guess.
    [bridge_service, *_] = by_kind(compose)["bridge"]
    configured = environment(services_of(compose)[bridge_service])["EDGESENSE_MQTT_SHARED_GROUP"]
    group = f"g{uuid.uuid4().hex}" if configured.startswith("${") else configured
    guesses = {"edgesense", "edgesense-bridge", "bridge", "bridges", BRIDGE_USER}
    guesses |= {v for v in re.findall(r"\$share/([^/\s]+)/", deploy_text()) if "{" not in v}
    device = f"dev-{uuid.uuid4().hex[:8]}"
    bridge = connected(broker, clients, BRIDGE_USER)
    bridge.subscribe(f"$share/{group}/edgesense/#")
    thief = connected(broker, clients, "acme/gw-2")
    for guess in sorted(guesses):
        thief.subscribe(f"$share/{guess}/edgesense/#")
    gateway = connected(broker, clients, "acme/gw-1")
    sent = [f"edgesense/acme/gw-1/{device}-{n}/data" for n in range(20)]
    for topic in sent:
        assert not gateway.publish(topic).is_failure

    assert bridge.received_until(sent[-1]) == sent


def deploy_text() -> str:
    """Every text file under deploy/ (where a group name could be written down)."""
    files = [p for p in DEPLOY.rglob("*") if p.is_file() and p.suffix not in (".binpb", ".pb")]
    return "\n".join(p.read_text(encoding="utf-8", errors="replace") for p in files)


def test_anonymous_clients_are_refused(broker: Broker, clients: list[Client]) -> None:
    anonymous = Client(broker, None)
    clients.append(anonymous)
    assert anonymous.connect().is_failure


def test_a_wrong_password_is_refused(broker: Broker, clients: list[Client]) -> None:
    intruder = Client(broker, "acme/gw-1", "not-the-password")
    clients.append(intruder)
    assert intruder.connect().is_failure


def test_the_acl_s_sparkplug_example_lets_one_edge_node_speak_for_itself_only(
    example_broker: Broker, clients: list[Client]
) -> None:
    # Without the example, no edge node may publish Sparkplug (the essentials
    # test: no `user` but the bridge); with it, node line-4 of project acme.
    node = connected(example_broker, clients, EDGE_NODE, will_topic="spBv1.0/acme/NDEATH/line-4")
    bridge = connected(example_broker, clients, BRIDGE_USER)
    bridge.subscribe("spBv1.0/#")
    node.subscribe("spBv1.0/#")
    run = uuid.uuid4().hex[:8]
    own = [
        "spBv1.0/acme/NBIRTH/line-4",
        "spBv1.0/acme/NDATA/line-4",
        f"spBv1.0/acme/DBIRTH/line-4/{run}",
        f"spBv1.0/acme/DDATA/line-4/{run}",
        f"spBv1.0/acme/DDEATH/line-4/{run}",
        "spBv1.0/acme/NDEATH/line-4",
    ]
    for topic in own:
        assert not node.publish(topic).is_failure, topic
    for foreign in (
        "spBv1.0/acme/NBIRTH/line-5",  # another node of the project
        f"spBv1.0/acme/DDATA/line-5/{run}",
        "spBv1.0/globex/NBIRTH/line-4",  # the same node id in another project
        f"spBv1.0/globex/DDATA/line-4/{run}",
        "spBv1.0/acme/NCMD/line-4",  # commands are the hosts'
        f"spBv1.0/acme/DCMD/line-4/{run}",
        "spBv1.0/STATE/edgesense",  # and so is STATE
        f"edgesense/acme/line-5/{run}/data",
    ):
        assert node.publish(foreign).value == NOT_AUTHORIZED, foreign
    assert bridge.received_until(own[-1]) == own

    # It reads the hosts' commands to it and their STATE, nothing else (not
    # even its own data, nor commands to other nodes).
    state = "spBv1.0/STATE/edgesense"
    for topic in ("spBv1.0/acme/NCMD/line-5", "spBv1.0/globex/NCMD/line-4",
                  "spBv1.0/acme/NCMD/line-4", state):  # fmt: skip
        assert not bridge.publish(topic).is_failure, topic
    assert node.received_until(state) == ["spBv1.0/acme/NCMD/line-4", state]
