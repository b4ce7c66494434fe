"""EDGESENSE_GRPC_TLS_* and EDGESENSE_GRPC_REFLECTION: what is accepted, and
every half or broken TLS configuration refused at start with the variable named."""

from __future__ import annotations

import datetime
import os
from pathlib import Path

import pytest
import trustme

from edgesense.common.config import Settings
from edgesense.common.errors import ConfigurationError
from edgesense.common.tls import CA_VAR, CERT_VAR, CLIENT_AUTH_VAR, KEY_VAR, GrpcTls
from tests.frontdoor.conftest import run_edgesense
from tests.support.tls_files import TlsFiles, write_identity


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def files(ca: trustme.CA, tmp_path: Path) -> TlsFiles:
    return write_identity(ca, tmp_path / "service")


def refused(env: dict[str, str]) -> str:
    with pytest.raises(ConfigurationError) as caught:
        GrpcTls.from_env(env)
    return caught.value.message


def test_nothing_set_is_plaintext() -> None:
    tls = GrpcTls.from_env({})
    assert not tls.enabled
    assert not tls.has_identity
    assert Settings.from_env({}, dev=False).grpc_tls == tls


def test_a_full_configuration_is_read(files: TlsFiles) -> None:
    tls = files.tls("require")
    assert (tls.enabled, tls.has_identity, tls.require_client_cert) == (True, True, True)
    assert tls.cert is not None
    assert tls.cert.data == files.cert.read_bytes()
    assert tls.ca is not None
    assert b"BEGIN CERTIFICATE" in tls.ca.data
    assert not files.tls("none").require_client_cert
    # A client that only checks the servers (no identity of its own) may give just the CA.
    client = GrpcTls.from_env({CA_VAR: str(files.ca)})
    assert (client.enabled, client.has_identity) == (True, False)


def test_the_mode_is_described_for_the_log(files: TlsFiles) -> None:
    assert GrpcTls().describe() == "plaintext"
    assert files.tls("none").describe() == "TLS"
    assert files.tls("require").describe() == "mutual TLS (client certificates required)"


def test_a_certificate_without_its_key_is_refused(files: TlsFiles) -> None:
    message = refused({CERT_VAR: str(files.cert), CA_VAR: str(files.ca)})
    assert f"{CERT_VAR} is set but {KEY_VAR} is not" in message
    message = refused({KEY_VAR: str(files.key)})
    assert f"{KEY_VAR} is set but {CERT_VAR} is not" in message


def test_require_needs_a_ca_and_an_identity(files: TlsFiles) -> None:
    message = refused(
        {CERT_VAR: str(files.cert), KEY_VAR: str(files.key), CLIENT_AUTH_VAR: "require"}
    )
    assert f"{CLIENT_AUTH_VAR}=require needs {CA_VAR}" in message
    message = refused({CA_VAR: str(files.ca), CLIENT_AUTH_VAR: "require"})
    assert f"{CLIENT_AUTH_VAR}=require needs {CERT_VAR} and {KEY_VAR}" in message
    assert "must be none or require, not 'optional'" in refused({CLIENT_AUTH_VAR: "optional"})


def test_unreadable_and_wrong_files_are_named(files: TlsFiles, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.crt"
    message = refused({**files.env(), CA_VAR: str(missing)})
    assert message.startswith(f"{CA_VAR}: cannot read {missing}")
    message = refused({**files.env(), CERT_VAR: str(files.key)})
    assert message == f"{CERT_VAR} ({files.key}) holds no PEM certificate"
    message = refused({**files.env(), KEY_VAR: str(files.cert)})
    assert message == f"{KEY_VAR} ({files.cert}) holds no unencrypted PEM private key"


def test_a_key_of_another_certificate_is_refused(
    ca: trustme.CA, files: TlsFiles, tmp_path: Path
) -> None:
    other = write_identity(ca, tmp_path / "other")
    message = refused({**files.env(), KEY_VAR: str(other.key)})
    assert message == (
        f"{KEY_VAR} ({other.key}) is not the private key of the certificate in "
        f"{CERT_VAR} ({files.cert})"
    )


def test_an_expired_certificate_is_refused(ca: trustme.CA, tmp_path: Path) -> None:
    ended = datetime.datetime(2024, 1, 2, 3, 4, tzinfo=datetime.UTC)
    old = write_identity(ca, tmp_path / "old", not_after=ended)
    assert "expired on 2024-01-02 03:04 UTC" in refused(old.env())


def test_reflection_is_on_in_dev_and_off_in_production() -> None:
    assert Settings.from_env({}, dev=False).grpc_reflection is False
    assert Settings.from_env({"EDGESENSE_GRPC_REFLECTION": "1"}, dev=False).grpc_reflection
    assert Settings.from_env({"EDGESENSE_API_KEYS": "k=p"}, dev=True).grpc_reflection
    dev_off = Settings.from_env(
        {"EDGESENSE_GRPC_REFLECTION": "0", "EDGESENSE_API_KEYS": "k=p"}, dev=True
    )
    assert dev_off.grpc_reflection is False


def test_a_service_with_half_a_tls_configuration_refuses_to_start(
    files: TlsFiles, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "EDGESENSE_API_KEYS": "key=project",
        "EDGESENSE_SECRET_KEY": "x" * 43 + "=",
        "EDGESENSE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'never.db'}",
        "EDGESENSE_REGISTRY_ADDR": "127.0.0.1:0",
        CERT_VAR: str(files.cert),
    }
    env.pop(KEY_VAR, None)
    env.pop("EDGESENSE_DEV", None)
    done = run_edgesense("registry", env=env, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert f"registry cannot start: {CERT_VAR} is set but {KEY_VAR} is not" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "never.db").exists()
