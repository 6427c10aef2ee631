"""`python -m node.healthcheck [HOST:PORT]`: exit 0 when a block server's gRPC health says SERVING.

The container HEALTHCHECK of the Dockerfile (no grpc_health_probe binary needed): it
asks the standard `grpc.health.v1.Health/Check` for `swarm.v1.BlockService`, which a
server reports SERVING once it serves and NOT_SERVING while it drains. Health calls need
no swarm token; with `--tls-ca` it speaks TLS to a server of a private swarm. Exit 1
(one line on stderr) when the server is not serving or does not answer in time.

Synchronous gRPC on purpose: a one-shot probe, no event loop to run.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

logger = logging.getLogger(__name__)

SERVICE = "swarm.v1.BlockService"


def check(address: str, service: str = SERVICE, timeout: float = 3.0, tls_ca: Path | None = None) -> bool:
    """True when the server at `address` answers SERVING for `service` within `timeout` s."""
    if tls_ca is None:
        channel = grpc.insecure_channel(address)
    else:
        channel = grpc.secure_channel(address, grpc.ssl_channel_credentials(tls_ca.read_bytes()))
    with channel:
        try:
            answer = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service),
                                                               timeout=timeout)
        except grpc.RpcError as error:
            logger.error("%s: no health answer: %s", address, error.code())
            return False
    serving: bool = answer.status == health_pb2.HealthCheckResponse.SERVING
    if not serving:
        logger.error("%s: %s is %s", address, service, health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status))
    return serving


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m node.healthcheck", description=__doc__.splitlines()[0])
    parser.add_argument("address", nargs="?", default="127.0.0.1:31330", help="the server's gRPC HOST:PORT "
                        "(default: %(default)s, the port of docker-compose.yml)")
    parser.add_argument("--service", default=SERVICE, help="service to ask about (default: %(default)s)")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds to wait (default: %(default)s)")
    parser.add_argument("--tls-ca", type=Path, help="CA certificate(s) (PEM) of a server that serves TLS")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="healthcheck: %(message)s")
    return 0 if check(args.address, args.service, args.timeout, args.tls_ca) else 1


if __name__ == "__main__":
    sys.exit(main())
