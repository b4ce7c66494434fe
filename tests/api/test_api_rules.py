"""Routes from http annotations, and route matching (404/405)."""

from __future__ import annotations

import grpc
import pytest
from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor_pb2, descriptor_pool

from edgesense.api.router import Router
from edgesense.api.rules import load_routes
from edgesense.api.status import TranscodeError
from edgesense.common.errors import ConfigurationError

EDGESENSE_SERVICES = (
    "edgesense.v1.WebhookRegistry",
    "edgesense.v1.AlertRules",
    "edgesense.v1.Delivery",
)


def test_every_annotated_edgesense_rpc_is_a_route() -> None:
    routes = {
        (r.http_method, r.template.source): r.grpc_path for r in load_routes(EDGESENSE_SERVICES)
    }
    assert routes == {
        ("POST", "/api/webhooks/register"): "/edgesense.v1.WebhookRegistry/RegisterWebhook",
        ("GET", "/api/webhooks"): "/edgesense.v1.WebhookRegistry/ListWebhooks",
        ("GET", "/api/webhooks/{webhook_id}"): "/edgesense.v1.WebhookRegistry/GetWebhook",
        ("DELETE", "/api/webhooks/{webhook_id}"): "/edgesense.v1.WebhookRegistry/DeleteWebhook",
        (
            "POST",
            "/api/webhooks/{webhook_id}/enable",
        ): "/edgesense.v1.WebhookRegistry/EnableWebhook",
        ("GET", "/api/webhooks/{webhook_id}/deliveries"): "/edgesense.v1.Delivery/ListDeliveries",
        ("POST", "/api/deliveries/{delivery_id}/redeliver"): "/edgesense.v1.Delivery/Redeliver",
        ("PATCH", "/api/webhooks/{webhook_id}"): "/edgesense.v1.WebhookRegistry/UpdateWebhook",
        (
            "POST",
            "/api/webhooks/{webhook_id}/rotate-secret",
        ): "/edgesense.v1.WebhookRegistry/RotateWebhookSecret",
        ("GET", "/api/event-types"): "/edgesense.v1.WebhookRegistry/ListEventTypes",
        ("POST", "/api/webhooks/{webhook_id}/test"): "/edgesense.v1.Delivery/SendTestEvent",
        ("POST", "/api/webhooks/{webhook_id}/recover"): "/edgesense.v1.Delivery/RecoverDeliveries",
        ("GET", "/api/webhooks/{webhook_id}/stats"): "/edgesense.v1.Delivery/GetWebhookStats",
        ("GET", "/api/stats"): "/edgesense.v1.Delivery/GetProjectStats",
        ("GET", "/api/deliveries/{delivery_id}"): "/edgesense.v1.Delivery/GetDelivery",
        ("POST", "/api/rules"): "/edgesense.v1.AlertRules/CreateRule",
        ("GET", "/api/rules"): "/edgesense.v1.AlertRules/ListRules",
        ("GET", "/api/rules/{rule_id}"): "/edgesense.v1.AlertRules/GetRule",
        ("PATCH", "/api/rules/{rule_id}"): "/edgesense.v1.AlertRules/UpdateRule",
        ("DELETE", "/api/rules/{rule_id}"): "/edgesense.v1.AlertRules/DeleteRule",
        ("GET", "/api/alerts"): "/edgesense.v1.Delivery/ListAlerts",
    }


def test_additional_bindings_streaming_and_unannotated(
    things_pool: descriptor_pool.DescriptorPool,
) -> None:
    routes = load_routes(["gwtest.Things"], things_pool)
    names = sorted((r.method.name, r.binding) for r in routes)
    assert ("GetThing", 0) in names
    assert ("GetThing", 1) in names
    assert not any(name in ("Watch", "Plain") for name, _ in names)
    extra = next(r for r in routes if r.binding == 1)
    assert extra.template.source == "/v1/things/{inner.name}"
    assert extra.operation_id == "Things_GetThing2"
    assert extra.path_fields() == [("inner", "name")]


def test_unknown_service_stops_the_start() -> None:
    with pytest.raises(ConfigurationError, match=r"no service 'nope\.Nothing'"):
        load_routes(["nope.Nothing"])


def _pool_with_rule(rule: http_pb2.HttpRule) -> descriptor_pool.DescriptorPool:
    pool = descriptor_pool.DescriptorPool()
    for dependency in (descriptor_pb2.DESCRIPTOR, http_pb2.DESCRIPTOR, annotations_pb2.DESCRIPTOR):
        pool.AddSerializedFile(dependency.serialized_pb)
    file = descriptor_pb2.FileDescriptorProto(
        name="bad/bad.proto",
        package="bad",
        syntax="proto3",
        dependency=["google/api/annotations.proto"],
    )
    message = file.message_type.add(name="Req")
    message.field.add(name="id", number=1, type=descriptor_pb2.FieldDescriptorProto.TYPE_STRING)
    method = file.service.add(name="Svc").method.add(
        name="Do", input_type=".bad.Req", output_type=".bad.Req"
    )
    method.options.Extensions[annotations_pb2.http].CopyFrom(rule)
    pool.AddSerializedFile(file.SerializeToString())
    return pool


@pytest.mark.parametrize(
    ("rule", "problem"),
    [
        (http_pb2.HttpRule(get="/v1/{missing}"), "missing"),
        (http_pb2.HttpRule(get="v1/no-slash"), "must start with '/'"),
        (http_pb2.HttpRule(post="/v1/x", body="nothing"), "body names no field"),
        (http_pb2.HttpRule(body="*"), "no get/put/post/delete/patch/custom"),
    ],
)
def test_broken_rules_name_the_method(rule: http_pb2.HttpRule, problem: str) -> None:
    with pytest.raises(ConfigurationError, match=r"bad\.Svc\.Do") as caught:
        load_routes(["bad.Svc"], _pool_with_rule(rule))
    assert problem in str(caught.value)


def test_custom_method_rule() -> None:
    rule = http_pb2.HttpRule(custom=http_pb2.CustomHttpPattern(kind="purge", path="/v1/{id}"))
    (route,) = load_routes(["bad.Svc"], _pool_with_rule(rule))
    assert route.http_method == "PURGE"


def test_router_prefers_literal_over_variable(things_pool: descriptor_pool.DescriptorPool) -> None:
    router = Router(load_routes(["gwtest.Things"], things_pool))
    assert router.match("GET", "/v1/things/special").route.method.name == "Special"
    match = router.match("GET", "/v1/things/other")
    assert (match.route.method.name, match.path_values) == ("GetThing", {"inner.name": "other"})


def test_router_answers_404_and_405() -> None:
    router = Router(load_routes(EDGESENSE_SERVICES))
    with pytest.raises(TranscodeError) as not_found:
        router.match("GET", "/api/nothing")
    assert (not_found.value.status, not_found.value.code) == (404, grpc.StatusCode.NOT_FOUND)
    with pytest.raises(TranscodeError) as wrong_method:
        router.match("PUT", "/api/webhooks/wh_1")
    error = wrong_method.value
    assert (error.status, error.code) == (405, grpc.StatusCode.UNIMPLEMENTED)
    assert error.message.startswith("Method Not Allowed")
    assert set(error.headers["Allow"].split(", ")) == {"GET", "DELETE", "PATCH"}


def test_router_rejects_malformed_escapes_with_400() -> None:
    router = Router(load_routes(EDGESENSE_SERVICES))
    with pytest.raises(TranscodeError) as caught:
        router.match("GET", "/api/webhooks/%zz")
    assert caught.value.status == 400
