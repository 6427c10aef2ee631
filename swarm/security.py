"""Private swarms: TLS material and the swarm token, read and checked once at start.

    security = RpcSecurity.load(tls_ca=Path("ca.pem"), swarm_token="s3cret")   # a client
    security = RpcSecurity.load(tls_cert=..., tls_key=..., tls_ca=..., swarm_token=...)  # a server

A public swarm (the default) has no TLS and no token: `RpcSecurity()`. With a token,
every BlockService call carries it in its metadata (`TOKEN_METADATA_KEY`) and servers
refuse calls without it (UNAUTHENTICATED); the DHT is handed the same token. With TLS,
servers serve over TLS with their certificate and key, and clients (and a server's own
outgoing calls) verify servers against the CA file.

`load` reads every file and checks it (PEM that parses, a key that matches its
certificate) so that a bad file is a `SecurityConfigError` at start, before any work,
with the file's name; it never prints key or token material. Not here: channels and
interceptors (`swarm.rpc`), the DHT's datagram MAC (`swarm.dht`), flags (`node.config`,
`client.config`), the `SWARM_TOKEN` variable (`swarm.settings`).
"""

from __future__ import annotations

import hmac
import ssl
from dataclasses import dataclass, field
from pathlib import Path

from swarm.errors import SwarmError

TOKEN_METADATA_KEY = "x-swarm-token"
"""Call metadata key of the swarm token (gRPC metadata keys are lower case)."""

MAX_TOKEN_LENGTH = 1024
"""Longest token accepted (it travels in every call's headers)."""


class SecurityConfigError(SwarmError):
    """A TLS file or a swarm token that cannot be used (said at start, before any work)."""


@dataclass(frozen=True)
class RpcSecurity:
    """How gRPC calls are secured: TLS material (PEM bytes) and the swarm token.

    Every field empty (the default) is a public swarm: plaintext gRPC, no token.
    """

    tls_ca: bytes | None = field(default=None, repr=False)
    """Certificate(s) a client trusts for servers; None: plaintext channels."""
    tls_cert: bytes | None = field(default=None, repr=False)
    """The server's certificate chain; with `tls_key`, the server serves TLS."""
    tls_key: bytes | None = field(default=None, repr=False)
    """The server's private key."""
    swarm_token: str | None = field(default=None, repr=False)
    """Shared secret every BlockService call carries; None: calls need none."""

    def __post_init__(self) -> None:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise SecurityConfigError("--tls-cert and --tls-key go together: give both or neither")
        if self.swarm_token is not None:
            check_token(self.swarm_token)

    @classmethod
    def load(cls, *, tls_ca: Path | None = None, tls_cert: Path | None = None, tls_key: Path | None = None,
             swarm_token: str | None = None) -> RpcSecurity:
        """Reads and checks the files; raises `SecurityConfigError` naming what is wrong."""
        if (tls_cert is None) != (tls_key is None):
            raise SecurityConfigError("--tls-cert and --tls-key go together: give both or neither")
        security = cls(
            tls_ca=_read_pem(tls_ca, "--tls-ca") if tls_ca is not None else None,
            tls_cert=_read_pem(tls_cert, "--tls-cert") if tls_cert is not None else None,
            tls_key=_read_pem(tls_key, "--tls-key") if tls_key is not None else None,
            swarm_token=swarm_token or None,
        )
        if tls_ca is not None:
            _check_ca(tls_ca)
        if tls_cert is not None and tls_key is not None:
            _check_key_pair(tls_cert, tls_key)
        return security

    @property
    def serves_tls(self) -> bool:
        """Whether a server with these settings serves TLS."""
        return self.tls_cert is not None

    @property
    def dials_tls(self) -> bool:
        """Whether channels with these settings use TLS (verifying servers against `tls_ca`)."""
        return self.tls_ca is not None

    @property
    def private(self) -> bool:
        """Whether anything differs from a public swarm."""
        return self.serves_tls or self.dials_tls or self.swarm_token is not None

    def describe(self) -> str:
        """What is on, for logs (never the token or key material)."""
        parts = [name for name, on in (("TLS", self.serves_tls), ("TLS to peers", self.dials_tls),
                                       ("swarm token", self.swarm_token is not None)) if on]
        return ", ".join(parts) or "public swarm (no TLS, no token)"


def check_token(token: str) -> None:
    """A token must be printable ASCII (it travels as an HTTP/2 header value), 1..1024 long."""
    if not token or len(token) > MAX_TOKEN_LENGTH:
        raise SecurityConfigError(f"the swarm token must be 1..{MAX_TOKEN_LENGTH} characters long")
    if not all(0x21 <= ord(c) <= 0x7E for c in token):
        raise SecurityConfigError("the swarm token must be printable ASCII without spaces")


def token_matches(expected: str, given: str | bytes | None) -> bool:
    """Constant-time comparison of a call's token with the swarm's."""
    if given is None:
        return False
    given_bytes = given if isinstance(given, bytes) else given.encode("utf-8", "replace")
    return hmac.compare_digest(expected.encode("ascii"), given_bytes)


def _read_pem(path: Path, flag: str) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as error:
        raise SecurityConfigError(f"{flag} {path}: cannot read: {error.strerror or error}") from None
    if b"-----BEGIN " not in data:
        raise SecurityConfigError(f"{flag} {path}: not a PEM file")
    return data


def _check_ca(path: Path) -> None:
    try:
        ssl.create_default_context(cafile=str(path))
    except (ssl.SSLError, ValueError) as error:
        raise SecurityConfigError(f"--tls-ca {path}: not a usable CA certificate ({error})") from None


def _check_key_pair(cert: Path, key: Path) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(str(cert), str(key))
    except ssl.SSLError as error:
        raise SecurityConfigError(
            f"--tls-cert {cert} / --tls-key {key}: not a certificate and its matching private key "
            f"({error.reason or error})") from None

