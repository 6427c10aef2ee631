"""Identities: ids derived from keys, signatures, key files that survive restarts."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from swarm.errors import InvalidInput
from swarm.identity import Identity, is_server_id, server_id_of, verify


def test_server_id_is_first_20_bytes_of_sha256_of_public_key() -> None:
    identity = Identity.generate()
    assert len(identity.public_key) == 32
    assert identity.server_id == hashlib.sha256(identity.public_key).digest()[:20].hex()
    assert server_id_of(identity.public_key) == identity.server_id
    assert is_server_id(identity.server_id)
    assert Identity.generate().server_id != identity.server_id


def test_sign_and_verify() -> None:
    identity, other = Identity.generate(), Identity.generate()
    signature = identity.sign(b"payload")
    assert len(signature) == 64
    assert verify(identity.public_key, b"payload", signature)
    assert not verify(identity.public_key, b"payload!", signature)
    assert not verify(other.public_key, b"payload", signature)
    assert not verify(identity.public_key, b"payload", signature[:-1] + bytes([signature[-1] ^ 1]))
    assert not verify(identity.public_key[:31], b"payload", signature)
    assert not verify(identity.public_key, b"payload", signature[:63])


def test_server_id_of_rejects_wrong_length() -> None:
    with pytest.raises(InvalidInput):
        server_id_of(b"\0" * 31)


def test_key_file_created_private_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "server.pem"
    first = Identity.load_or_create(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    again = Identity.load_or_create(path)
    assert again.server_id == first.server_id
    assert verify(first.public_key, b"x", again.sign(b"x"))


def test_raw_key_file_accepted(tmp_path: Path) -> None:
    raw = os.urandom(32)
    path = tmp_path / "raw.key"
    path.write_bytes(raw)
    assert Identity.load_or_create(path).server_id == Identity.from_private_bytes(raw).server_id


@pytest.mark.parametrize("content", [b"garbage", b"-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n"])
def test_bad_key_file_rejected(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.pem"
    path.write_bytes(content)
    with pytest.raises(InvalidInput):
        Identity.load_or_create(path)
    assert path.read_bytes() == content  # never overwritten


def test_key_of_another_algorithm_rejected(tmp_path: Path) -> None:
    path = tmp_path / "x25519.pem"
    path.write_bytes(
        X25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    with pytest.raises(InvalidInput, match="not an Ed25519 key"):
        Identity.load_or_create(path)
