"""What block servers and clients share: wire contract, codec, records, DHT, errors."""

from swarm.settings import choose_grpc_io

__version__ = "0.1.0"

choose_grpc_io()  # before any module of ours loads gRPC: it reads its experiments once, at load
