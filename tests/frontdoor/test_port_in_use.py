"""A service whose address is taken says so in one line and exits with 3, as
`edgesense receive` does: no traceback, no "Event loop is closed" noise, and
nothing left half-started (delivery's senders, open channels)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.frontdoor.conftest import private_env, run_edgesense

CASES = [
    ("registry", "EDGESENSE_REGISTRY_ADDR"),
    ("registry", "EDGESENSE_REGISTRY_METRICS_ADDR"),
    ("delivery", "EDGESENSE_DELIVERY_ADDR"),
    ("delivery", "EDGESENSE_DELIVERY_METRICS_ADDR"),
    ("api", "EDGESENSE_HTTP_ADDR"),
    ("bridge", "EDGESENSE_BRIDGE_ADDR"),
    ("bridge", "EDGESENSE_BRIDGE_METRICS_ADDR"),
]


@pytest.mark.parametrize(("service", "variable"), CASES)
def test_a_taken_address_is_one_line_and_exit_3(
    service: str, variable: str, tmp_path: Path
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        env = private_env(**{variable: address})
        done = run_edgesense(service, "--dev", env=env, cwd=tmp_path)
    output = done.stdout + done.stderr
    errors = [line for line in output.splitlines() if " ERROR " in line]
    assert len(errors) == 1, output
    assert errors[0].endswith(f"{service} cannot listen on {address}: address already in use")
    assert done.returncode == 3, output
    for noise in ("Traceback", "Event loop is closed", "Exception ignored"):
        assert noise not in output, output


def test_a_second_grpc_server_on_a_taken_port_fails(tmp_path: Path) -> None:
    """gRPC's default SO_REUSEPORT would let a second registry share the port of a
    running one (the stale one answering health checks): ours refuse to."""
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        done = run_edgesense(
            "registry", "--dev", env=private_env(EDGESENSE_REGISTRY_ADDR=address), cwd=tmp_path
        )
    assert done.returncode == 3, done.stderr
    assert f"registry cannot listen on {address}" in done.stderr


def test_a_taken_mqtt_address_stops_up_saying_so(tmp_path: Path) -> None:
    """Something that is not a broker holds EDGESENSE_MQTT_URL's port: `up` starts
    the embedded broker there, which says in one line that it cannot listen."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        done = run_edgesense(
            "up", "--dev", env=private_env(EDGESENSE_MQTT_URL=f"mqtt://{address}"), cwd=tmp_path
        )
    assert done.returncode == 1, done.stdout
    assert "broker exited with code 3 (an address it must listen on is taken)" in done.stdout
    assert f"embedded broker cannot listen on {address}: address already in use" in done.stdout
    assert "Traceback" not in done.stdout + done.stderr
