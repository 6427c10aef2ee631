"""Server identities: an Ed25519 key pair, the server id derived from it, and signatures.

A server's id is the hex of the first 20 bytes of SHA-256 of its raw 32-byte public key,
so nobody can claim an id without holding the matching private key. The key lives in a
file (PKCS#8 PEM, created with mode 0600 on first run) so a restarted server keeps its id;
a file holding the raw 32 private-key bytes is accepted too.

This module signs and verifies bytes; what gets signed (DHT payloads) is decided in
`swarm.codec.entries`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from swarm.errors import InvalidInput

logger = logging.getLogger(__name__)

PUBLIC_KEY_BYTES = 32
"""Length of a raw Ed25519 public key."""
SIGNATURE_BYTES = 64
"""Length of an Ed25519 signature."""
SERVER_ID_BYTES = 20
"""Bytes of SHA-256(public key) kept in a server id (hex: twice as many characters)."""
_MAX_KEY_FILE_BYTES = 4096  # a PEM Ed25519 key is ~120 bytes; refuse to read anything huge


def server_id_of(public_key: bytes) -> str:
    """The server id (40 hex characters) of a raw 32-byte Ed25519 public key."""
    if len(public_key) != PUBLIC_KEY_BYTES:
        raise InvalidInput(f"an Ed25519 public key has {PUBLIC_KEY_BYTES} bytes, got {len(public_key)}")
    return hashlib.sha256(public_key).digest()[:SERVER_ID_BYTES].hex()


def is_server_id(text: str) -> bool:
    """True if `text` looks like a server id (40 lowercase hex characters)."""
    return len(text) == 2 * SERVER_ID_BYTES and all(c in "0123456789abcdef" for c in text)


def verify(public_key: bytes, data: bytes, signature: bytes) -> bool:
    """True if `signature` is a valid Ed25519 signature of `data` by `public_key`.

    Malformed keys or signatures are simply invalid (False), never an exception: the
    inputs come from untrusted peers.
    """
    if len(public_key) != PUBLIC_KEY_BYTES or len(signature) != SIGNATURE_BYTES:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, data)
    except (InvalidSignature, ValueError):
        return False
    return True


class Identity:
    """An Ed25519 private key and what derives from it (public key, server id)."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._private_key = private_key
        self.public_key: bytes = private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        """Raw 32-byte public key."""
        self.server_id: str = server_id_of(self.public_key)
        """Hex of the first 20 bytes of SHA-256(public_key)."""

    def __repr__(self) -> str:
        return f"Identity(server_id={self.server_id!r})"

    @classmethod
    def generate(cls) -> Identity:
        """A fresh random identity (not saved anywhere)."""
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_private_bytes(cls, raw: bytes) -> Identity:
        """The identity of a raw 32-byte Ed25519 private key."""
        if len(raw) != 32:
            raise InvalidInput(f"a raw Ed25519 private key has 32 bytes, got {len(raw)}")
        return cls(Ed25519PrivateKey.from_private_bytes(raw))

    @classmethod
    def load_or_create(cls, path: str | os.PathLike[str]) -> Identity:
        """Loads the key in `path`, or creates it there (mode 0600) if the file is missing."""
        file = Path(path)
        try:
            return cls._load(file)
        except FileNotFoundError:
            pass
        identity = cls.generate()
        try:
            identity._save_new(file)
        except FileExistsError:  # another process created it meanwhile: use theirs
            return cls._load(file)
        logger.info("created identity %s in %s", identity.server_id, file)
        return identity

    def sign(self, data: bytes) -> bytes:
        """The 64-byte Ed25519 signature of `data`."""
        return self._private_key.sign(data)

    def private_pem(self) -> bytes:
        """The private key as unencrypted PKCS#8 PEM (what `load_or_create` writes)."""
        return self._private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    @classmethod
    def _load(cls, file: Path) -> Identity:
        with file.open("rb") as handle:
            data = handle.read(_MAX_KEY_FILE_BYTES + 1)
            mode = os.fstat(handle.fileno()).st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            logger.warning("identity file %s is readable by others (mode %o)", file, mode & 0o777)
        if len(data) == 32:
            return cls.from_private_bytes(data)
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as e:
            raise InvalidInput(f"identity file {file} does not hold an unencrypted PEM key: {e}") from e
        if not isinstance(key, Ed25519PrivateKey):
            raise InvalidInput(f"identity file {file} holds a {type(key).__name__}, not an Ed25519 key")
        identity = cls(key)
        logger.debug("loaded identity %s from %s", identity.server_id, file)
        return identity

    def _save_new(self, file: Path) -> None:
        file.parent.mkdir(parents=True, exist_ok=True)
        # O_EXCL: never overwrite a key (that would change the server's id for good)
        fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(self.private_pem())
