"""Is a gRPC service up? `grpc.health.v1.Health/Check` over the process's TLS settings.

    python -m edgesense.common.healthcheck ADDRESS [--server-name NAME]

exits 0 when the server at ADDRESS answers SERVING, 1 otherwise, 2 for a
configuration error. `edgesense up` waits on the same check; docker compose
health checks and Kubernetes exec probes run the command, because the
kubelet's built-in gRPC probe cannot present a client certificate (mutual
TLS) nor check the server's. `--server-name` is the name the server's
certificate must carry when ADDRESS is 127.0.0.1 (a probe inside the pod).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from edgesense.common.errors import ConfigurationError
from edgesense.common.grpc_tls import open_channel
from edgesense.common.tls import GrpcTls


async def grpc_serving(
    addr: str, tls: GrpcTls, *, server_name: str | None = None, seconds: float = 1.0
) -> bool:
    """True when the server at `addr` reports SERVING within `seconds`."""
    try:
        async with open_channel(addr, tls, server_name=server_name) as channel:
            answer = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=seconds
            )
            return bool(answer.status == health_pb2.HealthCheckResponse.SERVING)
    except grpc.aio.AioRpcError:
        return False


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgesense.common.healthcheck")
    parser.add_argument("address", help="host:port of a registry, delivery or bridge")
    parser.add_argument("--server-name", help="the name the server's certificate must carry")
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds (default 2)")
    args = parser.parse_args(argv)
    try:
        tls = GrpcTls.from_env(os.environ)
    except ConfigurationError as exc:
        sys.stderr.write(f"healthcheck: {exc.message}\n")
        return 2
    serving = asyncio.run(
        grpc_serving(args.address, tls, server_name=args.server_name, seconds=args.timeout)
    )
    if not serving:
        sys.stderr.write(f"healthcheck: {args.address} is not serving\n")
    return 0 if serving else 1


if __name__ == "__main__":
    sys.exit(main())
