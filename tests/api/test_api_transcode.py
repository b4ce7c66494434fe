"""Request messages from path, body and query; JSON answers."""

from __future__ import annotations

import json
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pool, field_mask_pb2, json_format
from google.protobuf.message import Message

from edgesense.api.router import Router
from edgesense.api.rules import load_routes
from edgesense.api.status import TranscodeError
from edgesense.api.transcode import build_request, render_response
from edgesense.v1 import delivery_pb2, registry_pb2

EDGESENSE = Router(load_routes(["edgesense.v1.WebhookRegistry", "edgesense.v1.Delivery"]))


@pytest.fixture(scope="module")
def things(things_pool: descriptor_pool.DescriptorPool) -> Router:
    return Router(load_routes(["gwtest.Things"], things_pool))


def request(
    router: Router,
    method: str,
    path: str,
    body: bytes = b"",
    query: list[tuple[str, str]] | None = None,
) -> Any:
    return build_request(router.match(method, path), body, query or [])


def rejected(router: Router, method: str, path: str, body: bytes = b"", **query: str) -> str:
    with pytest.raises(TranscodeError) as caught:
        request(router, method, path, body, list(query.items()))
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.status == 400
    return caught.value.message


def test_path_variable_and_query_by_json_and_proto_names() -> None:
    query = [("status", "failed"), ("pageSize", "20"), ("page_token", "tok")]
    message = request(EDGESENSE, "GET", "/api/webhooks/wh_1/deliveries", query=query)
    assert message == delivery_pb2.ListDeliveriesRequest(
        webhook_id="wh_1", status="failed", page_size=20, page_token="tok"
    )


def test_body_star_fills_the_message() -> None:
    body = b'{"url": "https://x.test/h", "events": ["device.data", "device.alert"], '
    body += b'"secret": "s3", "deviceIds": ["d1"], "description": "mine"}'
    message = request(EDGESENSE, "POST", "/api/webhooks/register", body)
    assert message == registry_pb2.RegisterWebhookRequest(
        url="https://x.test/h",
        events=["device.data", "device.alert"],
        secret="s3",
        device_ids=["d1"],
        description="mine",
    )


def test_empty_body_is_an_empty_message() -> None:
    assert (
        request(EDGESENSE, "POST", "/api/webhooks/register")
        == registry_pb2.RegisterWebhookRequest()
    )


def test_rule_without_body_ignores_the_body() -> None:
    message = request(EDGESENSE, "POST", "/api/webhooks/wh_1/enable", b"not json at all")
    assert message == registry_pb2.EnableWebhookRequest(webhook_id="wh_1")


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"{not json", "not valid JSON"),
        (b'["url"]', "must be a JSON object, not an array"),
        (b'"text"', "must be a JSON object, not a string"),
        (b"42", "must be a JSON object, not a number"),
        (b'{"url": "https://x", "colour": "red"}', "colour"),
        (b'{"events": "device.data"}', "events"),
        (b"\xff\xfe{", "UTF-16 byte order mark"),
        (b"\xff{", "not UTF-8"),
    ],
)
def test_bad_bodies_answer_400_naming_the_problem(body: bytes, expected: str) -> None:
    assert expected in rejected(EDGESENSE, "POST", "/api/webhooks/register", body)


def test_unknown_query_parameter_is_named() -> None:
    message = rejected(EDGESENSE, "GET", "/api/webhooks/wh_1/deliveries", pagesize="3")
    assert "'pagesize'" in message


def test_query_cannot_override_the_path() -> None:
    message = rejected(EDGESENSE, "GET", "/api/webhooks/wh_1/deliveries", webhookId="other")
    assert "webhookId" in message


def test_query_on_a_body_star_route_is_rejected() -> None:
    assert "'url'" in rejected(EDGESENSE, "POST", "/api/webhooks/register", b"{}", url="x")


def test_bad_query_values_name_the_parameter() -> None:
    message = rejected(EDGESENSE, "GET", "/api/webhooks/wh/deliveries", pageSize="ten")
    assert "pageSize" in message
    message = rejected(EDGESENSE, "GET", "/api/webhooks/wh/deliveries", pageSize="99999999999")
    assert "pageSize" in message


def test_a_singular_field_given_twice_is_rejected() -> None:
    with pytest.raises(TranscodeError, match="given 2 times"):
        request(
            EDGESENSE,
            "GET",
            "/api/webhooks/wh/deliveries",
            query=[("pageSize", "1"), ("page_size", "2")],
        )


def test_nested_enum_repeated_bool_bytes_query(things: Router) -> None:
    query = [
        ("inner.count", "-12"),
        ("inner.tags", "x"),
        ("inner.tags", "y"),
        ("inner.at", "2025-07-24T10:35:17Z"),
        ("numbers", "1"),
        ("numbers", "2"),
        ("color", "GREEN"),
        ("flag", "true"),
        ("ratio", "0.5"),
        ("blob", "aGk"),
        ("small", "7"),
        ("a", "first"),
    ]
    message = request(things, "GET", "/v1/projects/p/things/t", query=query)
    as_dict = _as_dict(message)
    assert as_dict["parent"] == "projects/p/things/t"
    assert as_dict["inner"] == {
        "count": "-12",
        "tags": ["x", "y"],
        "at": "2025-07-24T10:35:17Z",
    }
    assert (as_dict["numbers"], as_dict["color"], as_dict["flag"]) == ([1, 2], "GREEN", True)
    assert (as_dict["ratio"], as_dict["blob"], as_dict["small"], as_dict["a"]) == (
        0.5,
        "aGk=",
        7,
        "first",
    )


def test_enum_by_number_and_invalid_enum(things: Router) -> None:
    assert request(things, "GET", "/v1/things/x", query=[("color", "1")]).color == 1
    assert "not one of" in rejected(things, "GET", "/v1/things/x", color="BLUE")
    assert "not one of" in rejected(things, "GET", "/v1/things/x", color="9")


def test_oneof_members_cannot_both_be_set(things: Router) -> None:
    assert "oneof" in rejected(things, "GET", "/v1/things/x", a="1", b="2")


@pytest.mark.parametrize(
    ("name", "value"),
    [("flag", "yes"), ("small", "-1"), ("ratio", "1e999"), ("blob", "!!"), ("inner", "x")],
)
def test_bad_typed_query_values(things: Router, name: str, value: str) -> None:
    with pytest.raises(TranscodeError) as caught:
        request(things, "GET", "/v1/things/x", query=[(name, value)])
    assert caught.value.status == 400
    assert name in caught.value.message


def test_nested_path_variable_from_additional_binding(things: Router) -> None:
    message = request(things, "GET", "/v1/things/hello%20world")
    assert message.inner.name == "hello world"


def test_body_field_and_path(things: Router) -> None:
    message = request(
        things, "PATCH", "/v1/projects/p1", b'{"name": "n", "count": "5"}', [("flag", "1")]
    )
    assert _as_dict(message) == {
        "parent": "projects/p1",
        "inner": {"name": "n", "count": "5"},
        "flag": True,
    }
    assert "JSON object" in rejected(things, "PATCH", "/v1/projects/p1", b"[1]")
    assert "body" in rejected(things, "PATCH", "/v1/projects/p1", b"{}", **{"inner.name": "x"})


def test_path_wins_over_body_and_verb_route(things: Router) -> None:
    message = request(things, "POST", "/v1/a/b:create", b'{"parent": "ignored", "ratio": 2}')
    assert (message.parent, message.ratio) == ("a/b", 2.0)


def test_deep_path_keeps_encoded_slash(things: Router) -> None:
    assert request(things, "GET", "/v1/files/dir/a%2Fb").path == "dir/a%2Fb"


def mask_of(router: Router, path: str, body: bytes, **query: str) -> list[str]:
    return list(request(router, "PATCH", path, body, list(query.items())).update_mask.paths)


def test_patch_infers_the_update_mask_from_the_body_fields(things: Router) -> None:
    body = (
        b'{"name": "n", "tags": ["a"], "sub": {"maxCount": 3}, "labels": {"k": "v"},'
        b' "at": "2025-07-24T10:35:17Z", "extra": {"a": {"b": 1}}}'
    )
    # Proto names, relative to the body's message, sorted; repeated, map and
    # well-known fields are one path each, nested messages are entered.
    assert mask_of(things, "/v1/patches/p", body) == [
        "at",
        "extra",
        "labels",
        "name",
        "sub.max_count",
        "tags",
    ]


def test_inferred_mask_takes_proto_names_empty_objects_and_nulls(things: Router) -> None:
    assert mask_of(things, "/v1/patches/p", b'{"sub": {"max_count": 1}}') == ["sub.max_count"]
    assert mask_of(things, "/v1/patches/p", b'{"sub": {}, "count": null}') == ["count", "sub"]


def test_a_mask_in_the_query_wins_and_no_body_infers_nothing(things: Router) -> None:
    body = b'{"name": "n", "count": "1"}'
    assert mask_of(things, "/v1/patches/p", body, updateMask="name") == ["name"]
    assert mask_of(things, "/v1/patches/p", b"") == []
    assert mask_of(things, "/v1/patches/p", b"{}") == []


def test_patch_webhook_infers_its_mask() -> None:
    body = b'{"url": "https://x.test/h", "deviceIds": [], "headers": {"X-Token": "t"}}'
    message = request(EDGESENSE, "PATCH", "/api/webhooks/wh_1", body)
    assert message == registry_pb2.UpdateWebhookRequest(
        webhook_id="wh_1",
        webhook=registry_pb2.WebhookUpdate(url="https://x.test/h", headers={"X-Token": "t"}),
        update_mask=field_mask_pb2.FieldMask(paths=["device_ids", "headers", "url"]),
    )


def test_response_prints_unset_fields_but_not_optional_ones() -> None:
    route = EDGESENSE.match("GET", "/api/webhooks/x").route
    answer = json.loads(render_response(route, registry_pb2.Webhook(webhook_id="wh_1")))
    assert answer == {
        "webhookId": "wh_1",
        "url": "",
        "events": [],
        "status": "",
        "description": "",
        "deviceIds": [],
        "headers": {},
        "rateLimitPerSecond": 0,
        "ordered": False,
    }


def _as_dict(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(message)
