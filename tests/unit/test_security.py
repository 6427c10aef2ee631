"""swarm.security and the private-swarm parts of swarm.rpc: files checked at start, the
token's interceptors (client adds it, server refuses without it), the port check."""

from __future__ import annotations

import datetime
import ipaddress
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from swarm.rpc import (
    PUBLIC,
    PortInUse,
    TokenCheck,
    check_port,
    token_interceptors,
    with_token,
)
from swarm.security import TOKEN_METADATA_KEY, RpcSecurity, SecurityConfigError, token_matches
from swarm.settings import swarm_token


@dataclass(frozen=True)
class TlsFiles:
    """A self-signed CA and a server certificate for 127.0.0.1 signed by it (PEM files)."""

    ca: Path
    cert: Path
    key: Path


def write_tls_files(directory: Path, name: str = "server") -> TlsFiles:
    """Writes a fresh CA and a 127.0.0.1/localhost server certificate under `directory`."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def certificate(subject: str, key: Any, issuer: str, signer: Any, ca: bool) -> Any:
        builder = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
                   .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if not ca:
            builder = builder.add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]), critical=False)
        return builder.sign(signer, hashes.SHA256())

    ca_key, server_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_cert = certificate(f"{name} test CA", ca_key, f"{name} test CA", ca_key, ca=True)
    server_cert = certificate("127.0.0.1", server_key, f"{name} test CA", ca_key, ca=False)
    directory.mkdir(parents=True, exist_ok=True)
    files = TlsFiles(directory / f"{name}-ca.pem", directory / f"{name}.pem", directory / f"{name}.key")
    files.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    files.cert.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(server_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                   serialization.NoEncryption()))
    return files


def test_public_by_default() -> None:
    assert not PUBLIC.private and PUBLIC == RpcSecurity()
    assert PUBLIC.describe().startswith("public swarm")


def test_load_reads_and_checks_the_files(tmp_path: Path) -> None:
    files = write_tls_files(tmp_path)
    server = RpcSecurity.load(tls_cert=files.cert, tls_key=files.key, tls_ca=files.ca, swarm_token="s3cret")
    assert server.serves_tls and server.dials_tls and server.swarm_token == "s3cret"
    assert server.tls_cert == files.cert.read_bytes()
    assert "s3cret" not in repr(server) and "s3cret" not in server.describe()
    client = RpcSecurity.load(tls_ca=files.ca)
    assert client.dials_tls and not client.serves_tls and client.swarm_token is None


@pytest.mark.parametrize("case, message", [
    ("missing ca", "--tls-ca"),
    ("cert without key", "go together"),
    ("not pem", "not a PEM file"),
    ("key of another cert", "matching private key"),
    ("ca is a key", "--tls-ca"),
])
def test_bad_files_are_a_clear_error_naming_the_flag(tmp_path: Path, case: str, message: str) -> None:
    files, other = write_tls_files(tmp_path / "a"), write_tls_files(tmp_path / "b")
    junk = tmp_path / "junk.pem"
    junk.write_text("hello\n")
    arguments: dict[str, dict[str, Path]] = {
        "missing ca": {"tls_ca": tmp_path / "nope.pem"},
        "cert without key": {"tls_cert": files.cert},
        "not pem": {"tls_cert": junk, "tls_key": files.key},
        "key of another cert": {"tls_cert": files.cert, "tls_key": other.key},
        "ca is a key": {"tls_ca": files.key},
    }
    with pytest.raises(SecurityConfigError, match=message):
        RpcSecurity.load(**arguments[case])


@pytest.mark.parametrize("token", ["", "has space", "x" * 1025, "caf\u00e9"])
def test_tokens_that_cannot_travel_as_a_header_are_refused(token: str) -> None:
    with pytest.raises(SecurityConfigError, match="swarm token"):
        RpcSecurity(swarm_token=token)


def test_token_comparison() -> None:
    assert token_matches("abc", "abc") and token_matches("abc", b"abc")
    assert not token_matches("abc", "abd") and not token_matches("abc", None)
    assert not token_matches("abc", "ab") and not token_matches("abc", "abcd")


def test_token_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SWARM_TOKEN", raising=False)
    assert swarm_token() is None
    monkeypatch.setenv("SWARM_TOKEN", "from-env")
    assert swarm_token() == "from-env"
    monkeypatch.setenv("SWARM_TOKEN", "")
    assert swarm_token() is None


def test_client_interceptor_adds_the_token_and_keeps_other_metadata() -> None:
    details = grpc.aio.ClientCallDetails("/swarm.v1.BlockService/Info", 1.0,
                                         grpc.aio.Metadata(("trace", "7")), None, None)
    sent = with_token(details, "s3cret")
    assert list(sent.metadata) == [("trace", "7"), (TOKEN_METADATA_KEY, "s3cret")]
    assert (sent.method, sent.timeout) == (details.method, details.timeout)
    bare = with_token(grpc.aio.ClientCallDetails("/m", None, None, None, None), "t")
    assert list(bare.metadata) == [(TOKEN_METADATA_KEY, "t")]


def test_every_kind_of_call_gets_the_token() -> None:
    # a channel files each interceptor under the FIRST kind it is an instance of: one
    # object for all four kinds would leave streams (Inference, PushStream) without it
    kinds = (grpc.aio.UnaryUnaryClientInterceptor, grpc.aio.UnaryStreamClientInterceptor,
             grpc.aio.StreamUnaryClientInterceptor, grpc.aio.StreamStreamClientInterceptor)
    interceptors = token_interceptors("t")
    assert [[isinstance(i, kind) for kind in kinds] for i in interceptors] == [
        [k == j for k in range(4)] for j in range(4)]


@dataclass
class _CallDetails:
    method: str
    invocation_metadata: tuple[tuple[str, str], ...]


class _AbortContext:
    def __init__(self) -> None:
        self.aborted: tuple[grpc.StatusCode, str] | None = None

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.aborted = (code, details)
        raise RuntimeError("aborted")


async def _handler_for(check: TokenCheck, method: str, metadata: tuple[tuple[str, str], ...],
                       streaming: bool) -> tuple[Any, Any]:
    async def real(_request: Any, _context: Any) -> str:
        return "served"

    handler = grpc.stream_stream_rpc_method_handler(real) if streaming else grpc.unary_unary_rpc_method_handler(real)

    async def continuation(_details: Any) -> Any:
        return handler

    details: Any = _CallDetails(method, metadata)
    return handler, await check.intercept_service(continuation, details)


@pytest.mark.parametrize("metadata, refused, reason", [
    ((), True, "requires a swarm token"),
    (((TOKEN_METADATA_KEY, "wrong"),), True, "wrong swarm token"),
    (((TOKEN_METADATA_KEY, "s3cret"), (TOKEN_METADATA_KEY, "s3cret")), True, "wrong swarm token"),
    (((TOKEN_METADATA_KEY, "s3cret"),), False, ""),
])
@pytest.mark.parametrize("streaming", [False, True])
async def test_server_interceptor_guards_the_block_service(
        metadata: tuple[tuple[str, str], ...], refused: bool, reason: str, streaming: bool) -> None:
    check = TokenCheck("s3cret")
    real, got = await _handler_for(check, "/swarm.v1.BlockService/Inference", metadata, streaming)
    if not refused:
        assert got is real
        return
    assert got is not real
    assert (got.request_streaming, got.response_streaming) == (streaming, streaming)
    behaviour = got.stream_stream if streaming else got.unary_unary
    context = _AbortContext()
    with pytest.raises(RuntimeError, match="aborted"):
        await behaviour(None, context)
    assert context.aborted is not None
    code, details = context.aborted
    assert code is grpc.StatusCode.UNAUTHENTICATED and reason in details and "s3cret" not in details


async def test_health_checks_stay_open() -> None:
    real, got = await _handler_for(TokenCheck("s3cret"), "/grpc.health.v1.Health/Check", (), streaming=False)
    assert got is real


def test_a_taken_port_is_refused_with_one_clear_line() -> None:
    for kind, udp in ((socket.SOCK_STREAM, False), (socket.SOCK_DGRAM, True)):
        with socket.socket(socket.AF_INET, kind) as holder:
            holder.bind(("127.0.0.1", 0))
            if not udp:
                holder.listen()
            port = holder.getsockname()[1]
            with pytest.raises(PortInUse) as caught:
                check_port("127.0.0.1", port, "DHT" if udp else "gRPC", "--dht-port" if udp else "--port", udp=udp)
            assert str(caught.value) == (f"{'DHT' if udp else 'gRPC'} port 127.0.0.1:{port} is in use "
                                         f"(another server?); choose another {'--dht-port' if udp else '--port'}")
        check_port("127.0.0.1", port, "gRPC", "--port", udp=udp)  # free again
    check_port("127.0.0.1", 0, "gRPC", "--port")  # 0: any free port
