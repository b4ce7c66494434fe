"""Does an MQTT broker answer at host:port, and in which protocol version?

A raw CONNECT over a plain (or TLS) socket, read back up to the CONNACK's
return code: any CONNACK but "unacceptable protocol version" (3.1.1's 1, MQTT
5's 0x84), even one refusing our (absent) credentials, proves a broker that
speaks the version asked. No MQTT library: `edgesense up`
asks before it starts anything, and the bridge asks when an MQTT 5 connection
gets no answer, to tell "this broker speaks only 3.1.1" (a configuration
error) from "this broker is down or slow" (retried).
"""

from __future__ import annotations

import secrets
import socket
import ssl
from urllib.parse import urlsplit

MQTT_311 = 4
MQTT_5 = 5
CONNACK = 0x20
WRONG_VERSION = (0x01, 0x84)


def broker_address(mqtt_url: str) -> tuple[str, int]:
    parts = urlsplit(mqtt_url)
    default = 8883 if parts.scheme == "mqtts" else 1883
    return parts.hostname or "127.0.0.1", parts.port or default


def connect_packet(level: int, client_id: str) -> bytes:
    """A CONNECT with a clean session, keepalive 60 s, no will, no credentials."""
    body = b"\x00\x04MQTT" + bytes([level, 0x02]) + (60).to_bytes(2, "big")
    if level == MQTT_5:
        body += b"\x00"  # no properties
    body += len(client_id).to_bytes(2, "big") + client_id.encode()
    assert len(body) < 128, "one-byte remaining length"
    return bytes([0x10, len(body)]) + body


def broker_answers(
    host: str,
    port: int,
    timeout: float = 1.0,
    *,
    level: int = MQTT_311,
    tls: ssl.SSLContext | None = None,
) -> bool:
    """True if a broker at host:port answers a CONNECT of this protocol level with a
    CONNACK, so that a port held by something else does not count as a broker."""
    client_id = f"edgesense-probe-{secrets.token_hex(3)}"
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw:
            sock = tls.wrap_socket(raw, server_hostname=host) if tls is not None else raw
            sock.settimeout(timeout)
            sock.sendall(connect_packet(level, client_id))
            answer = b""
            while len(answer) < 4 and (more := sock.recv(4 - len(answer))):
                answer += more
            if answer[:1] == bytes([CONNACK]):
                sock.sendall(b"\xe0\x00")  # DISCONNECT (MQTT 5: reason 0, normal)
    except OSError:  # ssl.SSLError and timeouts included
        return False
    # fixed header, remaining length (< 128), flags, return (reason) code
    return len(answer) == 4 and answer[0] == CONNACK and answer[3] not in WRONG_VERSION


def speaks_only_311(host: str, port: int, tls: ssl.SSLContext | None = None) -> bool:
    """True if the broker answers MQTT 3.1.1 and not MQTT 5 (amqtt, old Mosquitto 1.4)."""
    return broker_answers(host, port, 2.0, level=MQTT_311, tls=tls) and not broker_answers(
        host, port, 2.0, level=MQTT_5, tls=tls
    )
