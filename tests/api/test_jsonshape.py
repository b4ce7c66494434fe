"""The body check on nested messages, enums, integers and well-known types (pure)."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf import descriptor_pool
from google.protobuf.descriptor import Descriptor

from edgesense.api.jsonshape import BodyFieldError, check_object


@pytest.fixture(scope="module")
def thing(things_pool: descriptor_pool.DescriptorPool) -> Descriptor:
    return things_pool.FindMessageTypeByName("gwtest.Thing")


@pytest.mark.parametrize(
    "document",
    [
        {"parent": "p", "inner": {"name": "n", "count": "12", "tags": ["a"]}, "flag": False},
        {"ratio": 1, "numbers": [1, -2, "3"], "color": "GREEN", "small": 4294967295.0},
        {"inner": {"at": "2025-07-24T10:35:17Z"}, "blob": "AAE=", "a": None, "color": 1},
    ],
)
def test_what_json_format_accepts_passes(thing: Descriptor, document: dict[str, Any]) -> None:
    check_object(document, thing)


@pytest.mark.parametrize(
    ("document", "field", "problem"),
    [
        ({"inner": {"nmae": "n"}}, "inner.nmae", 'unknown field "nmae"'),
        ({"inner": "n"}, "inner", "must be an object, not a string"),
        ({"inner": {"tags": "a"}}, "inner.tags", "must be a list of strings, not a string"),
        ({"color": "BLUE"}, "color", "must be one of COLOR_UNSPECIFIED, RED, GREEN, not a string"),
        ({"small": -1}, "small", "must be an integer in [0, 4294967295], not a number"),
        (
            {"numbers": [1, 2.5]},
            "numbers[1]",
            "must be an integer in [-2147483648, 2147483647], not a number",
        ),
        (
            {"numbers": 1},
            "numbers",
            "must be a list of integers in [-2147483648, 2147483647], not a number",
        ),
        ({"flag": "true"}, "flag", "must be a boolean, not a string"),
        ({"ratio": True}, "ratio", "must be a number, not a boolean"),
    ],
)
def test_the_first_problem_is_named_by_its_json_path(
    thing: Descriptor, document: dict[str, Any], field: str, problem: str
) -> None:
    with pytest.raises(BodyFieldError) as caught:
        check_object(document, thing)
    assert (caught.value.field, caught.value.problem) == (field, problem)


def test_a_bad_timestamp_is_named_by_its_path(thing: Descriptor) -> None:
    with pytest.raises(BodyFieldError) as caught:
        check_object({"inner": {"at": "yesterday"}}, thing)
    assert caught.value.field == "inner.at"
    assert (
        caught.value.problem
        == "must be an RFC 3339 time such as 2025-07-24T10:35:17Z, not 'yesterday'"
    )
