"""gRPC TLS in deploy/: compose and Kubernetes give every service its certificate,
and the development CA script makes certificates that really work.

deploy/tls/make-dev-certs.sh runs here (openssl) into a temporary folder; its
certificates must name every host the services dial in docker-compose.yml and
envoy.yaml, serve and dial, and carry a registry through a mutual TLS
handshake with delivery's and Envoy's certificates. The Kubernetes workloads
must mount a Secret per service where EDGESENSE_GRPC_TLS_* point, readable by
the pod's user, with a cert-manager Certificate for each in tls.example.yaml.
"""

from __future__ import annotations

import base64
import re
import secrets
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from edgesense.common.config import Settings
from edgesense.common.healthcheck import grpc_serving
from edgesense.common.tls import CA_VAR, CERT_VAR, CLIENT_AUTH_VAR, KEY_VAR, GrpcTls
from edgesense.registry.server import start_registry
from tests.test_deploy_files import (
    DEPLOY,
    DIALS,
    K8S,
    LISTEN_VAR,
    SERVICES,
    by_kind,
    container,
    effective_env,
    environment,
    host_of,
    load_manifests,
    load_yaml,
    mounts,
    services_of,
    workload,
)

SCRIPT = DEPLOY / "tls" / "make-dev-certs.sh"
TLS_VARS = (CERT_VAR, KEY_VAR, CA_VAR)
CONTAINER_UID = 10001


@pytest.fixture(scope="module")
def dev_certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("openssl") is None:
        pytest.skip("deploy/tls/make-dev-certs.sh needs openssl")
    out = tmp_path_factory.mktemp("dev-certs")
    subprocess.run(["sh", str(SCRIPT), str(out)], check=True, capture_output=True, timeout=60)
    return out


def names_in(certificate: Path) -> set[str]:
    cert = x509.load_pem_x509_certificate(certificate.read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return set(sans.get_values_for_type(x509.DNSName))


def tls_mount(env: Mapping[str, Any], mounted: Mapping[str, str], who: str) -> str:
    """The mount holding the TLS files `env` names (all in one folder); its source."""
    assert env.get(CLIENT_AUTH_VAR) == "require", f"{who}: mutual TLS"
    folders = {str(PurePosixPath(str(env[var])).parent) for var in TLS_VARS}
    assert len(folders) == 1, f"{who}: the TLS files are in one folder"
    (folder,) = folders
    assert folder in mounted, f"{who}: {folder} is not mounted"
    return mounted[folder]


# ------------------------------------------------------------ docker compose


def test_compose_services_dial_each_other_over_mutual_tls(dev_certs: Path) -> None:
    compose = load_yaml(DEPLOY / "docker-compose.yml")
    services = services_of(compose)
    cert_of: dict[str, Path] = {}
    for kind, names in by_kind(compose).items():
        for name in names:
            source = tls_mount(environment(services[name]), mounts(services[name]), name)
            assert source.startswith("./tls/"), name
            folder = dev_certs / source.removeprefix("./tls/")
            assert (folder / "tls.crt").is_file(), f"{name}: the script makes no {source}"
            cert_of[kind] = folder / "tls.crt"
    for kind, names in by_kind(compose).items():
        for name in names:
            env = environment(services[name])
            for other in DIALS[kind]:
                host = host_of(env[LISTEN_VAR[other]])
                assert host in names_in(cert_of[other]), f"{name} dials {host}"
            if kind == "bridge":  # the replicas answer under their own names too
                assert name in names_in(cert_of[kind])


def test_compose_envoy_dials_with_its_certificate(dev_certs: Path) -> None:
    services = services_of(load_yaml(DEPLOY / "docker-compose.yml"))
    envoy = load_yaml(DEPLOY / "envoy" / "envoy.yaml")
    mounted = mounts(services["envoy"])
    for cluster in envoy["static_resources"]["clusters"]:
        context = cluster["transport_socket"]["typed_config"]["common_tls_context"]
        (identity,) = context["tls_certificates"]
        files = [
            identity["certificate_chain"]["filename"],
            identity["private_key"]["filename"],
            context["validation_context"]["trusted_ca"]["filename"],
        ]
        for file in files:
            path = PurePosixPath(file)
            source = mounted[str(path.parent)]
            assert (dev_certs / source.removeprefix("./tls/") / path.name).is_file(), file
        (matcher,) = context["validation_context"]["match_typed_subject_alt_names"]
        host = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
        host = host["address"]["socket_address"]["address"]
        assert matcher["matcher"]["exact"] == host
        assert host in names_in(dev_certs / cluster["name"] / "tls.crt"), host


def test_dev_certificates_serve_and_dial_and_the_containers_can_read_them(
    dev_certs: Path,
) -> None:
    ca = x509.load_pem_x509_certificate((dev_certs / "ca.crt").read_bytes())
    assert (dev_certs / "ca.key").stat().st_mode & 0o077 == 0, "the CA key is private"
    for folder in sorted(p for p in dev_certs.iterdir() if p.is_dir()):
        cert = x509.load_pem_x509_certificate((folder / "tls.crt").read_bytes())
        assert cert.issuer == ca.subject
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH} <= set(usages)
        # Mounted as they are: uid 10001 (and Envoy's 101) are not the owner.
        assert (folder / "tls.key").stat().st_mode & 0o004, folder.name
        GrpcTls.from_env(tls_env(folder))  # the services' own checks pass


def tls_env(folder: Path) -> dict[str, str]:
    return {
        CERT_VAR: str(folder / "tls.crt"),
        KEY_VAR: str(folder / "tls.key"),
        CA_VAR: str(folder / "ca.crt"),
        CLIENT_AUTH_VAR: "require",
    }


async def test_dev_certificates_carry_a_mutual_tls_handshake(
    dev_certs: Path, tmp_path: Path
) -> None:
    env = {
        "EDGESENSE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'registry.db'}",
        "EDGESENSE_API_KEYS": "key=project",
        "EDGESENSE_SECRET_KEY": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
        **tls_env(dev_certs / "registry"),
    }
    registry = await start_registry(Settings.from_env(env, dev=False), "127.0.0.1:0")
    try:
        addr = f"127.0.0.1:{registry.port}"
        # As compose dials it (`registry:50051`), and as its own health check does.
        for client in ("delivery", "envoy", "api", "registry"):
            tls = GrpcTls.from_env(tls_env(dev_certs / client))
            assert await grpc_serving(addr, tls, server_name="registry"), client
        delivery = GrpcTls.from_env(tls_env(dev_certs / "delivery"))
        assert not await grpc_serving(addr, delivery, server_name="delivery")  # not its name
        ca_only = GrpcTls.from_env({CA_VAR: str(dev_certs / "ca.crt")})
        assert not await grpc_serving(addr, ca_only, server_name="registry")  # no certificate
    finally:
        await registry.stop(0)


def test_running_the_script_again_keeps_the_ca(dev_certs: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    shutil.copytree(dev_certs, again)
    before = (again / "ca.crt").read_bytes()
    old_leaf = (again / "registry" / "tls.crt").read_bytes()
    subprocess.run(["sh", str(SCRIPT), str(again)], check=True, capture_output=True, timeout=60)
    assert (again / "ca.crt").read_bytes() == before
    assert (again / "registry" / "tls.crt").read_bytes() != old_leaf
    GrpcTls.from_env(tls_env(again / "registry"))


# --------------------------------------------------------------- Kubernetes


@pytest.mark.parametrize("kind", SERVICES)
def test_k8s_workloads_mount_their_tls_secret(kind: str) -> None:
    manifests = load_manifests()
    spec = container(manifests, kind)
    env = effective_env(manifests, spec)
    mounted = {m["mountPath"]: m["name"] for m in spec["volumeMounts"] if m.get("readOnly")}
    volume_name = tls_mount(env, mounted, kind)
    pod = workload(manifests, kind)["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == volume_name]
    assert volume["secret"]["secretName"] == f"edgesense-tls-{kind}"
    # The files belong to root and the pod's fsGroup: group-readable, for uid 10001.
    assert pod["securityContext"]["runAsUser"] == CONTAINER_UID
    assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsGroup"]
    assert volume["secret"]["defaultMode"] & 0o040, "the group must read the key"
    assert not volume["secret"]["defaultMode"] & 0o007, "nobody else"


def test_the_secret_commands_name_every_service() -> None:
    # deploy/README.md and tls.example.yaml tell operators to run
    # `for s in ...; do kubectl create secret ... edgesense-tls-$s`: one per workload.
    for path in (DEPLOY / "README.md", K8S / "tls.example.yaml"):
        loops = re.findall(r"for s in ([a-z ]+); do", path.read_text(encoding="utf-8"))
        assert loops, f"{path.name} shows no loop over the services"
        for loop in loops:
            assert sorted(loop.split()) == sorted(SERVICES), f"{path.name}: for s in {loop}"


def test_k8s_cert_manager_example_issues_what_the_workloads_mount() -> None:
    manifests = load_manifests()
    text = (K8S / "tls.example.yaml").read_text(encoding="utf-8")
    documents = [d for d in yaml.safe_load_all(text) if d]
    certificates = {
        d["spec"]["secretName"]: d["spec"]
        for d in documents
        if d["kind"] == "Certificate" and not d["spec"].get("isCA")
    }
    assert set(certificates) == {f"edgesense-tls-{kind}" for kind in SERVICES}
    for kind in SERVICES:
        spec = certificates[f"edgesense-tls-{kind}"]
        assert "client auth" in spec["usages"], kind
        if kind != "api":
            assert "server auth" in spec["usages"], kind
        env = effective_env(manifests, container(manifests, kind))
        for other in DIALS[kind]:
            host = host_of(env[LISTEN_VAR[other]])
            assert host in certificates[f"edgesense-tls-{other}"]["dnsNames"], (kind, host)
        issuer = spec["issuerRef"]["name"]
        (ca_issuer,) = [
            d for d in documents if d["kind"] == "Issuer" and d["metadata"]["name"] == issuer
        ]
        assert "ca" in ca_issuer["spec"], "service certificates come from the internal CA"
