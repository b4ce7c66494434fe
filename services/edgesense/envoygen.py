"""The production Envoy configuration, generated from the protos (`make envoy`).

`python -m edgesense.envoygen deploy/envoy` writes `envoy.yaml` (Envoy v3:
listener 0.0.0.0:8080 with the gRPC-JSON transcoder and router, an HTTP/2
STRICT_DNS cluster per gRPC service, admin on 127.0.0.1:9901) and
`edgesense.binpb`, the descriptor set of `make protos` (copied: no protoc here)
plus the `google.rpc` error model. `tests/test_deploy_envoy.py` fails if stale.
Subtle points, checked against Envoy's transcoder docs and source:
- Routes match the gRPC path, not the REST one: the transcoder rewrites a REST
  request to `POST /edgesense.v1.Service/Method` and clears the route cache
  ("Route configs for transcoded requests"; `match_incoming_request_route` off).
- Only `google.api.http` methods get a route, an exact `path` each. Native gRPC
  requests skip transcoding but use the same routes, so internal RPCs
  (WatchWebhooks, WatchRules, ReportDeliveryFailure, Publish) are unreachable through Envoy
  either way; a per-service prefix route would expose them. `auto_mapping` is
  off; `reject_unknown_method` answers 404 to REST paths no annotation maps.
- `services` come from the descriptor set: Envoy won't start on one it lacks.
- `convert_grpc_status` renders `grpc-status-details-bin` as the JSON body only
  if every detail type is in the descriptor set, else it sends no body at all;
  our servers attach `google.rpc.BadRequest`, hence `google/rpc/error_details`.
- gRPC health checks ask for the server's overall status (empty service name).
- Upstreams speak mutual TLS (the services' EDGESENSE_GRPC_TLS_CLIENT_AUTH=require):
  Envoy presents `tls.crt`/`tls.key` from `/etc/envoy/tls`, checks the service's
  certificate against `ca.crt` and for the upstream's host name (Envoy checks
  no name unless told: `match_typed_subject_alt_names`), and offers ALPN h2.
  `--plaintext-upstreams` leaves TLS out, for services without it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from google.api import annotations_pb2
from google.protobuf import descriptor, descriptor_pb2, descriptor_pool
from google.rpc import error_details_pb2, status_pb2

from edgesense.common.errors import ConfigurationError

CONFIG_NAME = "envoy.yaml"
DESCRIPTOR_NAME = "edgesense.binpb"
DEFAULT_DESCRIPTOR_PATH = f"/etc/envoy/{DESCRIPTOR_NAME}"
DEFAULT_TLS_DIR = "/etc/envoy/tls"
LISTEN_PORT = 8080
ADMIN_PORT = 9901
HEADER = "# Generated from protos/ by `make envoy` (edgesense.envoygen): do not edit by hand.\n"
_TYPE = "type.googleapis.com/envoy.extensions"

Config = dict[str, Any]


@dataclass(frozen=True)
class Upstream:
    """Where Envoy sends one gRPC service: a cluster name and a DNS address."""

    cluster: str
    host: str
    port: int

    def __post_init__(self) -> None:
        if not (self.cluster and self.host and 0 < self.port < 65536):
            raise ConfigurationError(f"{self}: needs a cluster, a host and a port in 1..65535")

    @classmethod
    def parse(cls, text: str) -> Upstream:
        """`cluster@host:port`, as `--upstream` takes it."""
        cluster, _, address = text.partition("@")
        host, _, port = address.rpartition(":")
        if not port.isdigit():
            raise ConfigurationError(f"upstream {text!r}: expected cluster@host:port")
        return cls(cluster, host, int(port))


DEFAULT_UPSTREAMS: Mapping[str, Upstream] = {
    "edgesense.v1.WebhookRegistry": Upstream("registry", "registry", 50051),
    "edgesense.v1.AlertRules": Upstream("registry", "registry", 50051),
    "edgesense.v1.Delivery": Upstream("delivery", "delivery", 50052),
    "edgesense.v1.Devices": Upstream("delivery", "delivery", 50052),
    "edgesense.v1.DeviceConfig": Upstream("bridge", "bridge", 50053),
}


def annotated_services(descriptor_set: bytes) -> dict[str, list[str]]:
    """Each service with `google.api.http` methods -> those methods' full names."""
    files = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set).file
    pool = descriptor_pool.DescriptorPool()
    for file in files:  # protoc writes imports first, as the pool needs
        pool.AddSerializedFile(file.SerializeToString())
    found: dict[str, list[str]] = {}
    http = annotations_pb2.http
    for file in files:
        for service in pool.FindFileByName(file.name).services_by_name.values():
            methods = [m.full_name for m in service.methods if m.GetOptions().HasExtension(http)]
            if methods:
                found[service.full_name] = methods
    return dict(sorted(found.items()))


def envoy_descriptor_set(base: bytes) -> bytes:
    """`base` plus the `google.rpc` error model files (and their imports) it lacks."""
    files = descriptor_pb2.FileDescriptorSet.FromString(base)
    present = {file.name for file in files.file}

    def add(file: descriptor.FileDescriptor) -> None:
        if file.name not in present:
            for dependency in file.dependencies:
                add(dependency)
            present.add(file.name)
            file.CopyToProto(files.file.add())

    add(status_pb2.DESCRIPTOR)
    add(error_details_pb2.DESCRIPTOR)
    return files.SerializeToString(deterministic=True)


def _socket(address: str, port: int) -> Config:
    return {"socket_address": {"address": address, "port_value": port}}


def _extension(name: str, type_name: str, **config: Any) -> Config:
    return {"name": name, "typed_config": {"@type": f"{_TYPE}.{type_name}", **config}}


def _upstream_tls(upstream: Upstream, tls_dir: str) -> Config:
    """Mutual TLS to one service: our certificate, its CA, its name."""
    return _extension(
        "envoy.transport_sockets.tls",
        "transport_sockets.tls.v3.UpstreamTlsContext",
        sni=upstream.host,
        common_tls_context={
            "alpn_protocols": ["h2"],
            "tls_certificates": [
                {
                    "certificate_chain": {"filename": f"{tls_dir}/tls.crt"},
                    "private_key": {"filename": f"{tls_dir}/tls.key"},
                }
            ],
            "validation_context": {
                "trusted_ca": {"filename": f"{tls_dir}/ca.crt"},
                "match_typed_subject_alt_names": [
                    {"san_type": "DNS", "matcher": {"exact": upstream.host}}
                ],
            },
        },
    )


def _cluster(upstream: Upstream, tls_dir: str | None) -> Config:
    address = _socket(upstream.host, upstream.port)
    endpoints = [{"lb_endpoints": [{"endpoint": {"address": address}}]}]
    transport = {"transport_socket": _upstream_tls(upstream, tls_dir)} if tls_dir else {}
    return {
        "name": upstream.cluster,
        "type": "STRICT_DNS",
        "connect_timeout": "2s",
        "lb_policy": "ROUND_ROBIN",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": f"{_TYPE}.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        },
        "load_assignment": {"cluster_name": upstream.cluster, "endpoints": endpoints},
        **transport,
        "health_checks": [
            {
                "timeout": "1s",
                "interval": "5s",
                "unhealthy_threshold": 2,
                "healthy_threshold": 1,
                "grpc_health_check": {},
            }
        ],
    }


def build_envoy_config(
    services: Mapping[str, Sequence[str]],
    *,
    upstreams: Mapping[str, Upstream] = DEFAULT_UPSTREAMS,
    descriptor_path: str = DEFAULT_DESCRIPTOR_PATH,
    listen_port: int = LISTEN_PORT,
    admin_port: int = ADMIN_PORT,
    tls_dir: str | None = DEFAULT_TLS_DIR,
) -> Config:
    """The bootstrap for `services` (as `annotated_services` returns them); upstreams
    over mutual TLS with the files in `tls_dir`, plaintext when it is None."""
    if unmapped := sorted(set(services) - set(upstreams)):
        raise ConfigurationError(f"no upstream for annotated services: {', '.join(unmapped)}")
    clusters = {upstreams[service].cluster: upstreams[service] for service in services}
    routes: list[Config] = []
    for service, methods in services.items():
        cluster = upstreams[service].cluster
        for method in methods:  # the gRPC path, e.g. /edgesense.v1.Delivery/Redeliver
            path = f"/{service}/{method.removeprefix(service + '.')}"
            routes.append({"match": {"path": path}, "route": {"cluster": cluster}})
    transcoder = _extension(
        "envoy.filters.http.grpc_json_transcoder",
        "filters.http.grpc_json_transcoder.v3.GrpcJsonTranscoder",
        proto_descriptor=descriptor_path,
        services=list(services),
        print_options={
            "add_whitespace": False,
            "always_print_primitive_fields": True,
            "always_print_enums_as_ints": False,
            "preserve_proto_field_names": False,
        },
        convert_grpc_status=True,
        request_validation_options={
            "reject_unknown_method": True,
            "reject_unknown_query_parameters": True,
        },
    )
    manager = _extension(
        "envoy.filters.network.http_connection_manager",
        "filters.network.http_connection_manager.v3.HttpConnectionManager",
        stat_prefix="edgesense_http",
        codec_type="AUTO",
        access_log=[
            _extension("envoy.access_loggers.stdout", "access_loggers.stream.v3.StdoutAccessLog")
        ],
        route_config={
            "name": "edgesense",
            "virtual_hosts": [{"name": "edgesense", "domains": ["*"], "routes": routes}],
        },
        http_filters=[
            transcoder,
            _extension("envoy.filters.http.router", "filters.http.router.v3.Router"),
        ],
    )
    listener = {
        "name": "edgesense_http",
        "address": _socket("0.0.0.0", listen_port),
        "filter_chains": [{"filters": [manager]}],
    }
    return {
        "admin": {"address": _socket("127.0.0.1", admin_port)},
        "static_resources": {
            "listeners": [listener],
            "clusters": [_cluster(upstream, tls_dir) for upstream in clusters.values()],
        },
    }


def write(
    out_dir: Path,
    upstreams: Mapping[str, Upstream] = DEFAULT_UPSTREAMS,
    descriptor_path: str = DEFAULT_DESCRIPTOR_PATH,
    tls_dir: str | None = DEFAULT_TLS_DIR,
) -> list[Path]:
    """Write `envoy.yaml` and `edgesense.binpb` into `out_dir`; return their paths."""
    source = resources.files("edgesense.v1") / "descriptors.binpb"
    descriptor_set = envoy_descriptor_set(source.read_bytes())
    services = annotated_services(descriptor_set)
    config = build_envoy_config(
        services, upstreams=upstreams, descriptor_path=descriptor_path, tls_dir=tls_dir
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / DESCRIPTOR_NAME).write_bytes(descriptor_set)
    text = HEADER + yaml.safe_dump(config, sort_keys=False)  # keys in the order built
    (out_dir / CONFIG_NAME).write_text(text, encoding="utf-8")
    return [out_dir / CONFIG_NAME, out_dir / DESCRIPTOR_NAME]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgesense.envoygen")
    parser.add_argument("out_dir", type=Path, help="folder for envoy.yaml and edgesense.binpb")
    parser.add_argument("--descriptor-path", default=DEFAULT_DESCRIPTOR_PATH, help="in Envoy")
    parser.add_argument("--upstream", action="append", default=[], metavar="SVC=CLUSTER@HOST:PORT")
    parser.add_argument("--tls-dir", default=DEFAULT_TLS_DIR, help="tls.crt, tls.key, ca.crt")
    parser.add_argument("--plaintext-upstreams", action="store_true", help="no TLS to the services")
    args = parser.parse_args(argv)
    upstreams = dict(DEFAULT_UPSTREAMS)
    try:
        for override in args.upstream:
            service, _, upstream = override.partition("=")
            upstreams[service] = Upstream.parse(upstream)
        tls_dir = None if args.plaintext_upstreams else args.tls_dir
        written = write(args.out_dir, upstreams, args.descriptor_path, tls_dir)
    except ConfigurationError as exc:
        parser.error(exc.message)
    print(f"wrote {', '.join(str(path) for path in written)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
