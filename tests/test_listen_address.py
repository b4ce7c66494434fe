"""Addresses a client on this machine can open, from those servers listen on."""

import pytest

from edgesense.common.listen import local_address


@pytest.mark.parametrize(
    ("listen", "open_"),
    [
        (":8080", "127.0.0.1:8080"),
        ("0.0.0.0:8080", "127.0.0.1:8080"),
        ("[::]:8080", "[::1]:8080"),
        ("127.0.0.1:8080", "127.0.0.1:8080"),
        ("[::1]:9", "[::1]:9"),
        ("api.internal:8081", "api.internal:8081"),
    ],
)
def test_a_wildcard_listen_address_is_opened_on_loopback(listen: str, open_: str) -> None:
    assert local_address(listen) == open_


def test_a_malformed_address_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="'8080' is not host:port"):
        local_address("8080")
