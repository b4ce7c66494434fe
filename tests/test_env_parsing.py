"""The single-variable parsers every process's settings use (common/config.py):
unset and empty mean the default, and a bad value is refused with a message
that names the variable and quotes what it was."""

from __future__ import annotations

import pytest

from edgesense.common.config import env_choice, env_flag, env_int, env_number
from edgesense.common.errors import ConfigurationError


@pytest.mark.parametrize("env", [{}, {"X": ""}])
def test_unset_or_empty_is_the_default(env: dict[str, str]) -> None:
    assert env_number(env, "X", 2.5) == 2.5
    assert env_int(env, "X", 7) == 7
    assert env_flag(env, "X", True) is True
    assert env_choice(env, "X", "a", ["a", "b"]) == "a"


@pytest.mark.parametrize(
    ("raw", "expected"), [("1.5", 1.5), ("0", 0.0), ("10", 10.0), (" 3 ", 3.0)]
)
def test_numbers_within_limits(raw: str, expected: float) -> None:
    assert env_number({"X": raw}, "X", 1.0, minimum=0.0, maximum=10.0) == expected


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("soon", "X must be a number, not 'soon'"),
        ("nan", "X must be a finite number, not 'nan'"),
        ("inf", "X must be a finite number, not 'inf'"),
        ("-Infinity", "X must be a finite number, not '-Infinity'"),
        ("-1", "X must be at least 0.0, not '-1'"),
        ("11", "X must be at most 10.0, not '11'"),
    ],
)
def test_bad_numbers_are_named(raw: str, message: str) -> None:
    with pytest.raises(ConfigurationError) as refused:
        env_number({"X": raw}, "X", 1.0, minimum=0.0, maximum=10.0)
    assert str(refused.value) == message


def test_inf_is_refused_even_without_a_maximum() -> None:
    with pytest.raises(ConfigurationError, match="finite"):
        env_number({"X": "inf"}, "X", 1.0)


@pytest.mark.parametrize(
    ("raw", "message"),
    [("1.5", "X must be a whole number, not '1.5'"), ("0", "X must be at least 1, not '0'")],
)
def test_bad_whole_numbers_are_named(raw: str, message: str) -> None:
    with pytest.raises(ConfigurationError) as refused:
        env_int({"X": raw}, "X", 5, minimum=1)
    assert str(refused.value) == message


@pytest.mark.parametrize(("raw", "expected"), [("YES", True), ("off", False), ("1", True)])
def test_flags(raw: str, expected: bool) -> None:
    assert env_flag({"X": raw}, "X") is expected


def test_a_bad_flag_or_choice_is_named() -> None:
    with pytest.raises(ConfigurationError, match="X must be 0 or 1, not 'maybe'"):
        env_flag({"X": "maybe"}, "X")
    with pytest.raises(ConfigurationError, match="X must be a or b, not 'c'"):
        env_choice({"X": "c"}, "X", "a", ["a", "b"])
