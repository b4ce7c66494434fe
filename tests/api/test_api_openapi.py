"""The OpenAPI document generated from the routes."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf import descriptor_pool

from edgesense.api.comments import load_comments
from edgesense.api.openapi import openapi_document
from edgesense.api.rules import load_routes

SERVICES = ["edgesense.v1.WebhookRegistry", "edgesense.v1.AlertRules", "edgesense.v1.Delivery"]


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return openapi_document(load_routes(SERVICES), comments=load_comments())


def _parameters(operation: dict[str, Any], where: str) -> dict[str, dict[str, Any]]:
    return {p["name"]: p for p in operation.get("parameters", []) if p["in"] == where}


def test_every_route_with_its_method(document: dict[str, Any]) -> None:
    operations = {(path, method) for path, item in document["paths"].items() for method in item}
    assert operations == {
        ("/api/webhooks/register", "post"),
        ("/api/webhooks", "get"),
        ("/api/webhooks/{webhookId}", "get"),
        ("/api/webhooks/{webhookId}", "delete"),
        ("/api/webhooks/{webhookId}/enable", "post"),
        ("/api/webhooks/{webhookId}/deliveries", "get"),
        ("/api/deliveries/{deliveryId}", "get"),
        ("/api/deliveries/{deliveryId}/redeliver", "post"),
        ("/api/webhooks/{webhookId}", "patch"),
        ("/api/webhooks/{webhookId}/rotate-secret", "post"),
        ("/api/event-types", "get"),
        ("/api/webhooks/{webhookId}/test", "post"),
        ("/api/webhooks/{webhookId}/recover", "post"),
        ("/api/webhooks/{webhookId}/stats", "get"),
        ("/api/stats", "get"),
        ("/api/rules", "post"),
        ("/api/rules", "get"),
        ("/api/rules/{ruleId}", "get"),
        ("/api/rules/{ruleId}", "patch"),
        ("/api/rules/{ruleId}", "delete"),
        ("/api/alerts", "get"),
    }
    assert document["openapi"].startswith("3.0")


def test_path_and_query_parameters(document: dict[str, Any]) -> None:
    deliveries = document["paths"]["/api/webhooks/{webhookId}/deliveries"]["get"]
    path = _parameters(deliveries, "path")
    assert list(path) == ["webhookId"]
    assert path["webhookId"]["required"] is True
    query = _parameters(deliveries, "query")
    assert set(query) == {"status", "pageSize", "pageToken"}
    assert query["pageSize"]["schema"]["type"] == "integer"
    assert "default 50" in query["pageSize"]["description"]
    get = document["paths"]["/api/webhooks/{webhookId}"]["get"]
    assert _parameters(get, "query") == {}


def test_request_body_and_response_schemas(document: dict[str, Any]) -> None:
    register = document["paths"]["/api/webhooks/register"]["post"]
    body = register["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/edgesense.v1.RegisterWebhookRequest"}
    assert "parameters" not in register
    answer = register["responses"]["200"]["content"]["application/json"]["schema"]
    assert answer == {"$ref": "#/components/schemas/edgesense.v1.RegisterWebhookResponse"}
    error = register["responses"]["default"]["content"]["application/json"]["schema"]
    assert error == {"$ref": "#/components/schemas/google.rpc.Status"}
    assert "requestBody" not in document["paths"]["/api/webhooks/{webhookId}/enable"]["post"]


def test_component_schemas_follow_the_json_mapping(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    webhook = schemas["edgesense.v1.Webhook"]["properties"]
    assert set(webhook) == {
        "webhookId",
        "url",
        "events",
        "status",
        "description",
        "deviceIds",
        "createdAt",
        "disabledAt",
        "disabledReason",
        "headers",
        "updatedAt",
        "secretRotationEndsAt",
        "rateLimitPerSecond",
        "ordered",
    }
    assert webhook["events"]["type"] == "array"
    assert webhook["events"]["items"] == {"type": "string"}
    assert webhook["createdAt"]["type"] == "string"
    assert webhook["createdAt"]["format"] == "date-time"
    attempt = schemas["edgesense.v1.Attempt"]["properties"]
    assert attempt["durationMs"]["type"] == "integer"
    listing = schemas["edgesense.v1.ListDeliveriesResponse"]["properties"]
    assert listing["deliveries"]["items"] == {
        "$ref": "#/components/schemas/edgesense.v1.DeliveryRecord"
    }
    refs = _refs(document)
    assert refs <= {f"#/components/schemas/{name}" for name in schemas}


def test_bearer_security_and_descriptions(document: dict[str, Any]) -> None:
    scheme = document["components"]["securitySchemes"]["bearerAuth"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    assert document["security"] == [{"bearerAuth": []}]
    enable = document["paths"]["/api/webhooks/{webhookId}/enable"]["post"]
    assert enable["summary"].startswith("Turns a disabled webhook active again")


def test_int64_enum_nested_and_multi_segment(things_pool: descriptor_pool.DescriptorPool) -> None:
    document = openapi_document(load_routes(["gwtest.Things"], things_pool))
    schemas = document["components"]["schemas"]
    inner = schemas["gwtest.Inner"]["properties"]
    assert inner["count"] == {"type": "string", "format": "int64"}
    thing = schemas["gwtest.Thing"]["properties"]
    assert thing["color"] == {"type": "string", "enum": ["COLOR_UNSPECIFIED", "RED", "GREEN"]}
    get = document["paths"]["/v1/{parent}"]["get"]
    assert (
        _parameters(get, "path")["parent"]["schema"]["pattern"] == "^projects/[^/]+/things/[^/]+$"
    )
    query = _parameters(get, "query")
    assert {"inner.name", "inner.count", "inner.tags", "color", "numbers"} <= set(query)
    assert "parent" not in query
    assert query["numbers"]["schema"]["type"] == "array"
    assert document["paths"]["/v1/things/{inner.name}"]["get"]["operationId"] == "Things_GetThing2"
    create = document["paths"]["/v1/{parent}:create"]["post"]
    body_schema = create["requestBody"]["content"]["application/json"]["schema"]
    assert "parent" not in body_schema["properties"]
    assert "ratio" in body_schema["properties"]


def _refs(node: Any) -> set[str]:
    if isinstance(node, dict):
        found = {node["$ref"]} if "$ref" in node else set()
        return found.union(*(_refs(value) for value in node.values()))
    if isinstance(node, list):
        return set().union(*(_refs(item) for item in node))
    return set()
