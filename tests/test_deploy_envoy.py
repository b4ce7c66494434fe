"""The generated Envoy config: what it exposes, where it routes, and that it is never stale.

Expectations come from the generated `edgesense.v1` modules (their DESCRIPTORs),
not from the descriptor set the generator reads, so a generator that drops or
invents a service or route fails here.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from google.api import annotations_pb2
from google.protobuf import descriptor_pb2

import edgesense.v1
from edgesense import envoygen
from edgesense.common.errors import ConfigurationError

COMMITTED = Path(__file__).resolve().parents[1] / "deploy" / "envoy"
TRANSCODER = "envoy.filters.http.grpc_json_transcoder"


def _methods_by_annotation() -> tuple[dict[str, set[str]], set[str]]:
    """(service -> its google.api.http methods, every un-annotated method), full names."""
    annotated: dict[str, set[str]] = {}
    internal: set[str] = set()
    for info in pkgutil.iter_modules(edgesense.v1.__path__):
        if not info.name.endswith("_pb2"):
            continue
        module = importlib.import_module(f"edgesense.v1.{info.name}")
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                if method.GetOptions().HasExtension(annotations_pb2.http):
                    annotated.setdefault(service.full_name, set()).add(method.full_name)
                else:
                    internal.add(method.full_name)
    return annotated, internal


ANNOTATED, INTERNAL = _methods_by_annotation()


def _grpc_path(method_full_name: str) -> str:
    service, _, method = method_full_name.rpartition(".")
    return f"/{service}/{method}"


@pytest.fixture
def generated(tmp_path: Path) -> tuple[dict[str, Any], bytes]:
    envoygen.write(tmp_path)
    config = yaml.safe_load((tmp_path / "envoy.yaml").read_text(encoding="utf-8"))
    assert isinstance(config, dict)
    return config, (tmp_path / "edgesense.binpb").read_bytes()


def _manager(config: dict[str, Any]) -> dict[str, Any]:
    (listener,) = config["static_resources"]["listeners"]
    (chain,) = listener["filter_chains"]
    (hcm,) = chain["filters"]
    assert hcm["name"] == "envoy.filters.network.http_connection_manager"
    manager: dict[str, Any] = hcm["typed_config"]
    return manager


def _routes(config: dict[str, Any]) -> dict[str, str]:
    (host,) = _manager(config)["route_config"]["virtual_hosts"]
    routes = host["routes"]
    assert all(set(route["match"]) == {"path"} for route in routes), "exact path matches only"
    return {route["match"]["path"]: route["route"]["cluster"] for route in routes}


def test_the_protos_have_both_kinds_of_methods() -> None:
    assert set(ANNOTATED) == {
        "edgesense.v1.WebhookRegistry",
        "edgesense.v1.AlertRules",
        "edgesense.v1.Delivery",
        "edgesense.v1.Devices",
        "edgesense.v1.DeviceConfig",
    }
    assert {
        "edgesense.v1.WebhookRegistry.WatchWebhooks",
        "edgesense.v1.WebhookRegistry.ReportDeliveryFailure",
        "edgesense.v1.AlertRules.WatchRules",
        "edgesense.v1.Delivery.Publish",
    } <= INTERNAL


def test_transcoder_names_every_annotated_service(generated: tuple[dict[str, Any], bytes]) -> None:
    manager = _manager(generated[0])
    assert manager["codec_type"] == "AUTO"
    assert manager["access_log"][0]["name"] == "envoy.access_loggers.stdout"
    filters = manager["http_filters"]
    assert [f["name"] for f in filters] == [TRANSCODER, "envoy.filters.http.router"]
    transcoder = filters[0]["typed_config"]
    assert transcoder["@type"].endswith("grpc_json_transcoder.v3.GrpcJsonTranscoder")
    assert set(transcoder["services"]) == set(ANNOTATED)
    assert transcoder["proto_descriptor"] == "/etc/envoy/edgesense.binpb"
    assert transcoder["print_options"]["always_print_primitive_fields"] is True
    assert transcoder["print_options"]["preserve_proto_field_names"] is False
    assert transcoder["convert_grpc_status"] is True
    assert transcoder["request_validation_options"] == {
        "reject_unknown_method": True,
        "reject_unknown_query_parameters": True,
    }
    assert not transcoder.get("auto_mapping"), "auto_mapping would expose internal RPCs"


def test_descriptor_set_holds_the_services_and_is_closed(
    generated: tuple[dict[str, Any], bytes],
) -> None:
    files = descriptor_pb2.FileDescriptorSet.FromString(generated[1]).file
    seen: set[str] = set()
    methods: set[str] = set()
    messages: set[str] = set()
    for file in files:
        assert set(file.dependency) <= seen, f"{file.name} comes before its imports"
        seen.add(file.name)
        for service in file.service:
            methods |= {f"{file.package}.{service.name}.{m.name}" for m in service.method}
        messages |= {f"{file.package}.{message.name}" for message in file.message_type}
    assert {m for group in ANNOTATED.values() for m in group} | INTERNAL <= methods
    assert {"google.rpc.Status", "google.rpc.BadRequest"} <= messages


def test_every_annotated_method_and_no_internal_one_is_routed(
    generated: tuple[dict[str, Any], bytes],
) -> None:
    routes = _routes(generated[0])
    clusters = {
        "edgesense.v1.WebhookRegistry": "registry",
        "edgesense.v1.AlertRules": "registry",
        "edgesense.v1.Delivery": "delivery",
        "edgesense.v1.Devices": "delivery",
        "edgesense.v1.DeviceConfig": "bridge",
    }
    expected = {
        _grpc_path(method): clusters[service]
        for service, methods in ANNOTATED.items()
        for method in methods
    }
    assert routes == expected
    assert not {_grpc_path(method) for method in INTERNAL} & set(routes)


def test_clusters_speak_http2_and_are_health_checked(
    generated: tuple[dict[str, Any], bytes],
) -> None:
    clusters = {c["name"]: c for c in generated[0]["static_resources"]["clusters"]}
    assert set(clusters) == {"registry", "delivery", "bridge"}
    for name, port in (("registry", 50051), ("delivery", 50052), ("bridge", 50053)):
        cluster = clusters[name]
        assert cluster["type"] == "STRICT_DNS"
        assert cluster["connect_timeout"]
        options = cluster["typed_extension_protocol_options"][
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
        ]
        assert "http2_protocol_options" in options["explicit_http_config"]
        (group,) = cluster["load_assignment"]["endpoints"]
        (endpoint,) = group["lb_endpoints"]
        socket = endpoint["endpoint"]["address"]["socket_address"]
        assert (socket["address"], socket["port_value"]) == (name, port)
        assert "grpc_health_check" in cluster["health_checks"][0]


def test_upstreams_speak_mutual_tls_and_check_the_service_name(
    generated: tuple[dict[str, Any], bytes], tmp_path: Path
) -> None:
    for cluster in generated[0]["static_resources"]["clusters"]:
        socket = cluster["transport_socket"]
        assert socket["name"] == "envoy.transport_sockets.tls"
        context = socket["typed_config"]
        assert context["@type"].endswith("transport_sockets.tls.v3.UpstreamTlsContext")
        assert context["sni"] == cluster["name"]
        common = context["common_tls_context"]
        assert common["alpn_protocols"] == ["h2"]  # gRPC needs HTTP/2 over TLS
        (identity,) = common["tls_certificates"]
        assert identity["certificate_chain"]["filename"] == "/etc/envoy/tls/tls.crt"
        assert identity["private_key"]["filename"] == "/etc/envoy/tls/tls.key"
        validation = common["validation_context"]
        assert validation["trusted_ca"]["filename"] == "/etc/envoy/tls/ca.crt"
        assert validation["match_typed_subject_alt_names"] == [
            {"san_type": "DNS", "matcher": {"exact": cluster["name"]}}
        ]
    assert envoygen.main([str(tmp_path), "--plaintext-upstreams"]) == 0
    plain = yaml.safe_load((tmp_path / "envoy.yaml").read_text(encoding="utf-8"))
    assert all("transport_socket" not in c for c in plain["static_resources"]["clusters"])


def test_listener_and_admin_addresses(generated: tuple[dict[str, Any], bytes]) -> None:
    config = generated[0]
    socket = config["static_resources"]["listeners"][0]["address"]["socket_address"]
    assert (socket["address"], socket["port_value"]) == ("0.0.0.0", 8080)
    admin = config["admin"]["address"]["socket_address"]
    assert (admin["address"], admin["port_value"]) == ("127.0.0.1", 9901)


def test_committed_files_match_a_fresh_generation(tmp_path: Path) -> None:
    envoygen.write(tmp_path)
    committed = (COMMITTED / "envoy.yaml").read_text(encoding="utf-8")
    assert committed.startswith("# Generated")
    assert committed == (tmp_path / "envoy.yaml").read_text(encoding="utf-8"), "run `make envoy`"
    fresh = (tmp_path / "edgesense.binpb").read_bytes()
    assert (COMMITTED / "edgesense.binpb").read_bytes() == fresh, "run `make envoy`"


def test_command_line_overrides_an_upstream_and_the_descriptor_path(tmp_path: Path) -> None:
    argv = [str(tmp_path), "--descriptor-path", "/srv/es.binpb"]
    argv += ["--upstream", "edgesense.v1.Delivery=outbox@10.0.0.7:7000"]
    # Devices is served by delivery too: an operator moving delivery names both.
    argv += ["--upstream", "edgesense.v1.Devices=outbox@10.0.0.7:7000"]
    assert envoygen.main(argv) == 0
    config = yaml.safe_load((tmp_path / "envoy.yaml").read_text(encoding="utf-8"))
    clusters = {c["name"] for c in config["static_resources"]["clusters"]}
    assert clusters == {"outbox", "registry", "bridge"}
    assert set(_routes(config).values()) == {"outbox", "registry", "bridge"}
    assert _routes(config)["/edgesense.v1.Delivery/Redeliver"] == "outbox"
    assert _routes(config)["/edgesense.v1.Devices/ListDevices"] == "outbox"
    transcoder = _manager(config)["http_filters"][0]["typed_config"]
    assert transcoder["proto_descriptor"] == "/srv/es.binpb"


def test_build_takes_ports_and_refuses_an_unmapped_service() -> None:
    config = envoygen.build_envoy_config(
        {"edgesense.v1.Delivery": ["edgesense.v1.Delivery.Redeliver"]}, listen_port=9000
    )
    assert config["static_resources"]["listeners"][0]["address"]["socket_address"] == {
        "address": "0.0.0.0",
        "port_value": 9000,
    }
    with pytest.raises(ConfigurationError, match=r"edgesense\.v1\.Other"):
        envoygen.build_envoy_config({"edgesense.v1.Other": ["edgesense.v1.Other.Do"]})


@pytest.mark.parametrize("text", ["registry", "registry@host", "@host:1", "c@host:0", "c@:80"])
def test_bad_upstreams_are_refused(text: str) -> None:
    with pytest.raises(ConfigurationError):
        envoygen.Upstream.parse(text)


def test_a_descriptor_set_without_http_annotations_has_no_services() -> None:
    files = descriptor_pb2.FileDescriptorSet.FromString(envoygen.envoy_descriptor_set(b""))
    assert [file.name for file in files.file][-1] == "google/rpc/error_details.proto"
    assert envoygen.annotated_services(files.SerializeToString()) == {}
