"""Peer and box keys on disk, and the registration signature."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from flocknode.errors import KeyFileError
from flocknode.identity import (
    load_or_create_box_key,
    load_or_create_peer_key,
    load_peer_key,
    sign_registration,
    verify_registration,
)

TASK = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
WALLET = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"


def test_keys_are_created_0600_and_reloaded(tmp_path: Path) -> None:
    peer = load_or_create_peer_key(tmp_path / "keys" / "peer.key")
    box = load_or_create_box_key(tmp_path / "keys" / "box.key")
    for name in ("peer.key", "box.key"):
        assert (tmp_path / "keys" / name).stat().st_mode & 0o777 == 0o600
    assert load_or_create_peer_key(tmp_path / "keys" / "peer.key").peer_id == peer.peer_id
    assert load_or_create_box_key(tmp_path / "keys" / "box.key").public_bytes == box.public_bytes


def test_key_file_errors_name_the_file(tmp_path: Path) -> None:
    p = tmp_path / "peer.key"
    with pytest.raises(KeyFileError, match="not found"):
        load_peer_key(p)
    load_or_create_peer_key(p)
    os.chmod(p, 0o644)
    with pytest.raises(KeyFileError, match="chmod 600") as ei:
        load_peer_key(p)
    assert str(ei.value).startswith(str(p))
    os.chmod(p, 0o600)
    p.write_bytes(b"short")
    with pytest.raises(KeyFileError, match="malformed"):
        load_peer_key(p)


def test_registration_signature_binds_chain_task_wallet_and_box_key(tmp_path: Path) -> None:
    peer = load_or_create_peer_key(tmp_path / "p")
    box = load_or_create_box_key(tmp_path / "b").public_bytes
    pid = peer.peer_id.to_bytes()
    sig = sign_registration(peer, 31337, TASK, WALLET, box)
    assert verify_registration(pid, sig, 31337, TASK, WALLET, box)
    assert not verify_registration(pid, sig, 1, TASK, WALLET, box)
    assert not verify_registration(pid, sig, 31337, WALLET, WALLET, box)
    assert not verify_registration(pid, sig, 31337, TASK, TASK, box)
    assert not verify_registration(pid, sig, 31337, TASK, WALLET, bytes(32))
    other = load_or_create_peer_key(tmp_path / "q").peer_id.to_bytes()
    assert not verify_registration(other, sig, 31337, TASK, WALLET, box)
    # malformed inputs are False, never an exception
    assert not verify_registration(b"\x00garbage", sig, 31337, TASK, WALLET, box)
    assert not verify_registration(pid, b"", 31337, TASK, WALLET, box)
    assert not verify_registration(pid, sig, 31337, "0xnope", WALLET, box)
    assert not verify_registration(pid, sig, 31337, TASK, WALLET, b"short")


def test_finding2_usable_box_key_refuses_low_order_points() -> None:
    """Every low-order encoding is refused; real keys (and random bytes) are usable."""
    import nacl.exceptions
    from nacl.public import Box, PublicKey

    from flocknode.identity import BoxKey, usable_box_key
    from tests.fixtures.low_order import LOW_ORDER_KEYS

    assert len(set(LOW_ORDER_KEYS)) == 14
    mine = BoxKey.generate()
    for key in LOW_ORDER_KEYS:
        assert not usable_box_key(key), key.hex()
        with pytest.raises(nacl.exceptions.CryptoError):  # what sealing would hit
            Box(mine.private, PublicKey(key))
    for _ in range(50):
        assert usable_box_key(BoxKey.generate().public_bytes)
    assert not usable_box_key(b"\x09" * 31) and not usable_box_key("x" * 32)  # type: ignore[arg-type]
