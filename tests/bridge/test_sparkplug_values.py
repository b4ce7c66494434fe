"""Sparkplug metric values -> JSON: every datatype, encoded by pysparkplug (an
independent encoder) or, for what it cannot produce (Tahu Java's encodings,
broken arrays, values in the wrong field), by its own protobuf schema."""

from __future__ import annotations

import math
import struct
from datetime import UTC, datetime
from typing import Any

import pytest
from pysparkplug import DataType, Metric, MetricValue
from pysparkplug import _protobuf as their_pb

from edgesense.sparkplug import sparkplug_b_pb2 as spb
from edgesense_bridge.sparkplug.values import JsonValue, LeftOut, metric_value


def ours(metric: Any) -> spb.Payload.Metric:
    """A metric from pysparkplug (or its schema), as the bridge decodes it."""
    payload = their_pb.Payload()
    payload.metrics.append(metric)
    return spb.Payload.FromString(payload.SerializeToString()).metrics[0]


def value_of(datatype: DataType, value: MetricValue | None) -> JsonValue | LeftOut:
    metric = Metric(timestamp=None, name="m", datatype=datatype, value=value)
    return metric_value(ours(metric.to_pb(include_dtype=True)), int(datatype))


def raw(datatype: int, **field: object) -> JsonValue | LeftOut:
    metric = their_pb.Payload.Metric(name="m", datatype=datatype, **field)
    return metric_value(ours(metric), datatype)


@pytest.mark.parametrize(
    ("datatype", "value", "expected"),
    [
        (DataType.INT8, -128, -128),
        (DataType.INT8, -1, -1),
        (DataType.INT8, 127, 127),
        (DataType.INT16, -32768, -32768),
        (DataType.INT16, 1234, 1234),
        (DataType.INT32, -(2**31), -(2**31)),
        (DataType.INT32, 2**31 - 1, 2**31 - 1),
        (DataType.INT64, -5, -5),
        (DataType.INT64, -(2**53), -(2**53)),
        (DataType.INT64, -(2**53) - 1, str(-(2**53) - 1)),
        (DataType.INT64, -(2**63), str(-(2**63))),
        (DataType.INT64, 2**63 - 1, str(2**63 - 1)),
        (DataType.UINT8, 255, 255),
        (DataType.UINT16, 65535, 65535),
        (DataType.UINT32, 2**32 - 1, 2**32 - 1),
        (DataType.UINT64, 2**53, 2**53),
        (DataType.UINT64, 2**53 + 1, "9007199254740993"),
        (DataType.UINT64, 2**64 - 1, "18446744073709551615"),
        (DataType.FLOAT, 1.23, 1.23),
        (DataType.FLOAT, -0.5, -0.5),
        (DataType.DOUBLE, 1022.9123213, 1022.9123213),
        (DataType.BOOLEAN, True, True),
        (DataType.BOOLEAN, False, False),
        (DataType.STRING, "héllo", "héllo"),
        (DataType.TEXT, "a\nlong text", "a\nlong text"),
        (
            DataType.UUID,
            "0b1c8e0a-5d4b-4d7e-9c1f-2a3b4c5d6e7f",
            "0b1c8e0a-5d4b-4d7e-9c1f-2a3b4c5d6e7f",
        ),
        (
            DataType.DATETIME,
            datetime(2026, 12, 1, 10, 0, 0, 123000, tzinfo=UTC),
            "2026-12-01T10:00:00.123Z",
        ),
        (DataType.DATETIME, datetime(1970, 1, 1, tzinfo=UTC), "1970-01-01T00:00:00.000Z"),
    ],
)
def test_scalars_by_datatype(datatype: DataType, value: MetricValue, expected: JsonValue) -> None:
    got = value_of(datatype, value)
    assert got == expected
    assert type(got) is type(expected)


@pytest.mark.parametrize(
    ("datatype", "value", "expected"),
    [
        (DataType.INT8_ARRAY, (-23, 123), [-23, 123]),
        (DataType.INT16_ARRAY, (-30000, 30000), [-30000, 30000]),
        (DataType.INT32_ARRAY, (-1, 315338746), [-1, 315338746]),
        (
            DataType.INT64_ARRAY,
            (-4270929666821191986, 5),
            ["-4270929666821191986", 5],
        ),
        (DataType.UINT8_ARRAY, (23, 250), [23, 250]),
        (DataType.UINT16_ARRAY, (30, 52360), [30, 52360]),
        (DataType.UINT32_ARRAY, (52, 3293969225), [52, 3293969225]),
        (DataType.UINT64_ARRAY, (52, 16444743074749521625), [52, "16444743074749521625"]),
        (DataType.FLOAT_ARRAY, (1.23, 89.341), [1.23, 89.341]),
        (DataType.DOUBLE_ARRAY, (12.354213, 1022.9123213), [12.354213, 1022.9123213]),
        (
            DataType.BOOLEAN_ARRAY,
            (False, False, True, True, False, True, False, False, True, True, False, True),
            [False, False, True, True, False, True, False, False, True, True, False, True],
        ),
        (DataType.BOOLEAN_ARRAY, (), []),
        (DataType.STRING_ARRAY, ("ABC", "hello", ""), ["ABC", "hello", ""]),
        (
            DataType.DATETIME_ARRAY,
            (
                datetime(2009, 10, 21, 5, 27, 55, 335000, tzinfo=UTC),
                datetime(2022, 6, 24, 21, 57, 55, tzinfo=UTC),
            ),
            ["2009-10-21T05:27:55.335Z", "2022-06-24T21:57:55.000Z"],
        ),
    ],
)
def test_arrays_become_lists(datatype: DataType, value: MetricValue, expected: JsonValue) -> None:
    assert value_of(datatype, value) == expected


def test_boolean_array_bits_as_the_spec_packs_them() -> None:
    # The spec's example: 12 values -> count 0x0C, then 0x34, 0xD? (high bit first).
    data = bytes([0x0C, 0, 0, 0, 0x34, 0xD5])
    expected = [False, False, True, True, False, True, False, False, True, True, False, True]
    assert raw(spb.BooleanArray, bytes_value=data) == expected


@pytest.mark.parametrize(
    ("datatype", "data"),
    [
        (spb.Int16Array, b"\x01\x02\x03"),  # not a whole number of elements
        (spb.DoubleArray, b"\x00" * 12),
        (spb.BooleanArray, b"\x01\x00"),  # no 4-byte count
        (spb.BooleanArray, b"\x10\x00\x00\x00\xff"),  # 16 values, 1 byte of bits
        (spb.BooleanArray, b"\xff\xff\xff\xff\x00"),  # a count its bytes cannot hold
        (spb.StringArray, b"abc"),  # not NUL-terminated
        (spb.StringArray, b"\xff\x00"),  # not UTF-8
    ],
)
def test_malformed_arrays_left_out(datatype: int, data: bytes) -> None:
    assert raw(datatype, bytes_value=data) == LeftOut("bad_array")


def test_not_finite_numbers_left_out() -> None:
    for datatype, value in [
        (DataType.FLOAT, math.nan),
        (DataType.DOUBLE, math.inf),
        (DataType.DOUBLE, -math.inf),
    ]:
        assert value_of(datatype, value) == LeftOut("not_finite")
    packed = struct.pack("<2d", 1.0, math.nan)
    assert raw(spb.DoubleArray, bytes_value=packed) == LeftOut("not_finite")


def test_null_is_json_null_whatever_the_type() -> None:
    for datatype in (DataType.INT32, DataType.STRING, DataType.DATETIME, DataType.DOUBLE):
        assert value_of(datatype, None) is None
    assert raw(spb.DataSet, is_null=True) is None


@pytest.mark.parametrize(
    ("datatype", "field", "reason"),
    [
        (spb.DataSet, {"dataset_value": their_pb.Payload.DataSet(num_of_columns=0)}, "dataset"),
        (spb.Template, {"template_value": their_pb.Payload.Template(version="1")}, "template"),
        (spb.Bytes, {"bytes_value": b"\x00\x01"}, "bytes"),
        (spb.File, {"bytes_value": b"%PDF"}, "file"),
        (spb.PropertySet, {"int_value": 1}, "unknown_type"),
        (spb.PropertySetList, {"int_value": 1}, "unknown_type"),
        (spb.Unknown, {"int_value": 1}, "unknown_type"),
        (99, {"int_value": 1}, "unknown_type"),
        (spb.Int32, {}, "no_value"),
        (spb.Int32, {"string_value": "12"}, "no_value"),
        (spb.Boolean, {"int_value": 1}, "no_value"),
        (spb.String, {"bytes_value": b"x"}, "no_value"),
        (spb.Double, {"string_value": "1.5"}, "no_value"),
        (spb.Int16Array, {"int_value": 1}, "no_value"),
        (spb.DateTime, {"string_value": "2026-01-01"}, "no_value"),
    ],
)
def test_what_json_cannot_carry_is_left_out_with_a_reason(
    datatype: int, field: dict[str, object], reason: str
) -> None:
    assert raw(datatype, **field) == LeftOut(reason)


def test_tahu_java_encodings_read_too() -> None:
    # Java's setIntValue((byte) -1) sign-extends to 32 bits; UInt32 in long_value.
    assert raw(spb.Int8, int_value=2**32 - 1) == -1
    assert raw(spb.Int8, int_value=2**32 - 128) == -128
    assert raw(spb.Int16, int_value=2**32 - 2) == -2
    assert raw(spb.UInt32, long_value=4_000_000_000) == 4_000_000_000
    assert raw(spb.Int32, long_value=2**64 - 3) == -3


@pytest.mark.parametrize(
    ("datatype", "field"),
    [
        (spb.Int8, {"int_value": 300}),  # neither Int8's nor sign-extended
        (spb.Int16, {"int_value": 2**31}),
        (spb.UInt8, {"int_value": 256}),
        (spb.UInt16, {"long_value": 2**16}),
        (spb.UInt32, {"long_value": 2**32}),
        (spb.DateTime, {"long_value": 253_402_300_800_000}),  # past year 9999
    ],
)
def test_numbers_outside_their_type_left_out_not_wrapped(
    datatype: int, field: dict[str, object]
) -> None:
    assert raw(datatype, **field) == LeftOut("out_of_range")


def test_float32_written_as_the_shortest_decimal_that_is_it() -> None:
    # A float32 of 0.1 is 0.10000000149011612 as a double; the reading was 0.1.
    assert raw(spb.Float, float_value=0.1) == 0.1
    assert raw(spb.Float, float_value=16777217.0) == 16777216.0
    assert raw(spb.Double, double_value=0.1) == 0.1
