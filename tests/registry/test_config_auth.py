"""Configuration parsing, API keys and the secret box (pure logic)."""

from __future__ import annotations

import base64

import pytest

from edgesense.common.auth import Authenticator, bearer_token, derive_internal_token
from edgesense.common.config import Settings, parse_api_keys
from edgesense.common.errors import ConfigurationError, PermissionDenied, Unauthenticated
from edgesense.registry.secretbox import SecretBox

KEY = base64.urlsafe_b64encode(b"k" * 32).decode()


def test_api_keys_parse_into_projects() -> None:
    assert parse_api_keys("a=p1, b=p2,") == {"a": "p1", "b": "p2"}


@pytest.mark.parametrize("raw", ["a", "a=", "=p", "a=p,a=q"])
def test_bad_api_keys_are_refused(raw: str) -> None:
    with pytest.raises(ConfigurationError, match="EDGESENSE_API_KEYS"):
        parse_api_keys(raw)


def test_missing_keys_refuse_to_start_outside_dev() -> None:
    settings = Settings.from_env({}, dev=False)
    with pytest.raises(ConfigurationError, match="EDGESENSE_API_KEYS"):
        settings.require_api_keys()
    with pytest.raises(ConfigurationError, match="EDGESENSE_SECRET_KEY"):
        settings.require_secret_key()


def test_a_short_secret_key_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="32 bytes"):
        Settings.from_env({"EDGESENSE_SECRET_KEY": base64.urlsafe_b64encode(b"x" * 16).decode()})


@pytest.mark.parametrize(
    ("name", "value"),
    [("EDGESENSE_ALLOW_INSECURE_URLS", "maybe"), ("EDGESENSE_DELIVERY_TIMEOUT_SECONDS", "soon")],
)
def test_bad_values_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigurationError, match=name):
        Settings.from_env({name: value})


def test_authenticator_scopes_keys_to_projects() -> None:
    auth = Authenticator({"k1": "p1"}, internal_token="internal")
    assert auth.project([("authorization", "Bearer k1")]) == "p1"
    with pytest.raises(Unauthenticated, match="invalid"):
        auth.project([("authorization", "Bearer nope")])
    with pytest.raises(Unauthenticated, match="missing"):
        auth.project([])
    with pytest.raises(Unauthenticated, match="Bearer"):
        auth.project([("authorization", "Basic k1")])
    with pytest.raises(PermissionDenied):
        auth.project([("authorization", "Bearer internal")])
    with pytest.raises(PermissionDenied):
        auth.require_internal([("authorization", "Bearer k1")])
    auth.require_internal([("authorization", "Bearer internal")])


def test_bearer_token_is_case_insensitive_in_scheme() -> None:
    assert bearer_token([("authorization", "bearer  tok ")]) == "tok"


def test_internal_token_depends_on_the_secret_key() -> None:
    assert derive_internal_token(b"a") != derive_internal_token(b"b")


def test_secret_box_round_trip_and_binding() -> None:
    box = SecretBox(KEY.encode())
    sealed = box.seal("wh_1", "s3cret")
    assert "s3cret" not in sealed
    assert box.open("wh_1", sealed) == "s3cret"
    with pytest.raises(ConfigurationError, match="another webhook"):
        box.open("wh_2", sealed)
    other = SecretBox(base64.urlsafe_b64encode(b"z" * 32))
    with pytest.raises(ConfigurationError, match="does not decrypt"):
        other.open("wh_1", sealed)
