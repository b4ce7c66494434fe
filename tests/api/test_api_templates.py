"""Path templates: compilation, matching, verbs, percent-decoding."""

from __future__ import annotations

import pytest

from edgesense.api.templates import (
    MalformedPathError,
    TemplateSyntaxError,
    parse_template,
    percent_decode,
)


def test_literal_template_matches_only_itself() -> None:
    template = parse_template("/api/webhooks")
    assert template.match("/api/webhooks") == {}
    assert template.match("/api/webhooks/") is None
    assert template.match("/api") is None
    assert template.match("/api/hooks") is None


def test_single_variable_binds_one_segment() -> None:
    template = parse_template("/api/webhooks/{webhook_id}/deliveries")
    assert template.match("/api/webhooks/wh_1/deliveries") == {"webhook_id": "wh_1"}
    assert template.match("/api/webhooks/a/b/deliveries") is None
    assert template.match("/api/webhooks//deliveries") is None


def test_nested_field_path() -> None:
    template = parse_template("/v1/{shelf.book.name}")
    assert template.variables[0].field_path == ("shelf", "book", "name")
    assert template.match("/v1/moby") == {"shelf.book.name": "moby"}


def test_variable_with_nested_pattern() -> None:
    template = parse_template("/v1/{name=projects/*/hooks/*}")
    assert template.match("/v1/projects/p1/hooks/h9") == {"name": "projects/p1/hooks/h9"}
    assert template.match("/v1/projects/p1/other/h9") is None
    assert template.match("/v1/projects/p1/hooks") is None


def test_wildcards_outside_variables() -> None:
    template = parse_template("/v1/*/items/{id}")
    assert template.match("/v1/anything/items/7") == {"id": "7"}
    assert template.match("/v1/items/7") is None


def test_deep_wildcard_matches_zero_or_more_segments() -> None:
    template = parse_template("/v1/files/**")
    assert template.match("/v1/files") == {}
    assert template.match("/v1/files/a/b/c") == {}
    assert template.match("/v2/files/a") is None


def test_deep_variable_captures_the_rest() -> None:
    template = parse_template("/v1/files/{path=**}")
    assert template.match("/v1/files/a/b/c.txt") == {"path": "a/b/c.txt"}
    assert template.match("/v1/files") == {"path": ""}


def test_deep_wildcard_followed_by_fixed_segments() -> None:
    template = parse_template("/v1/{name=**}/meta")
    assert template.match("/v1/a/b/meta") == {"name": "a/b"}
    assert template.match("/v1/a/b/other") is None


def test_verb_is_required_and_stripped() -> None:
    template = parse_template("/v1/{name=projects/*}:cancel")
    assert template.verb == "cancel"
    assert template.match("/v1/projects/p1:cancel") == {"name": "projects/p1"}
    assert template.match("/v1/projects/p1") is None
    assert template.match("/v1/projects/p1:undo") is None


def test_template_without_verb_keeps_a_colon_in_the_segment() -> None:
    template = parse_template("/v1/things/{id}")
    assert template.verb is None
    assert template.match("/v1/things/a:b") == {"id": "a:b"}


def test_single_segment_variable_is_fully_decoded() -> None:
    template = parse_template("/api/webhooks/{webhook_id}")
    assert template.match("/api/webhooks/a%2Fb%20c%3A%C3%A9") == {"webhook_id": "a/b c:é"}


def test_multi_segment_variable_keeps_reserved_escapes() -> None:
    template = parse_template("/v1/files/{path=**}")
    assert template.match("/v1/files/dir/a%2Fb%20c%3F") == {"path": "dir/a%2Fb c%3F"}


def test_encoded_slash_does_not_split_segments() -> None:
    template = parse_template("/api/webhooks/{webhook_id}/deliveries")
    assert template.match("/api/webhooks/a%2Fb/deliveries") == {"webhook_id": "a/b"}


@pytest.mark.parametrize("bad", ["/api/webhooks/%zz", "/api/webhooks/%4", "/api/webhooks/%FF"])
def test_malformed_escapes_raise(bad: str) -> None:
    with pytest.raises(MalformedPathError):
        parse_template("/api/webhooks/{webhook_id}").match(bad)


def test_percent_decode_plus_is_not_a_space() -> None:
    assert percent_decode("a+b", keep_reserved=False) == "a+b"
    assert percent_decode("a%2Bb", keep_reserved=True) == "a%2Bb"


@pytest.mark.parametrize(
    "bad",
    [
        "api/webhooks",
        "/v1/{name",
        "/v1/{name}}",
        "/v1/{a={b}}",
        "/v1/{1abc}",
        "/v1/**/x/**",
        "/v1/{id}/{id}",
        "/v1/a b",
        "/v1/{name=a/*}:",
    ],
)
def test_invalid_templates_are_rejected(bad: str) -> None:
    with pytest.raises(TemplateSyntaxError):
        parse_template(bad)


def test_specificity_orders_literals_first() -> None:
    literal = parse_template("/v1/things/special")
    variable = parse_template("/v1/things/{id}")
    deep = parse_template("/v1/{path=**}")
    ordered = sorted([deep, variable, literal], key=lambda t: t.specificity())
    assert ordered == [literal, variable, deep]
