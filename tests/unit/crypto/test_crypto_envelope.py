"""The update envelope: round trips, recipients, tampering, malicious senders."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

import nacl.bindings as sodium
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.public import PrivateKey

from flocknode.crypto import (
    EnvelopeError,
    KeyWrap,
    SealedUpdate,
    canonical_bytes,
    open_update,
    seal_update,
    update_hash,
)
from flocknode.crypto.canonical import TensorLike
from flocknode.crypto.envelope import HEAD_LEN, encrypt_chunks, wrap_key
from tests.unit.crypto.crypto_helpers import assert_same_tensors, tensor_dicts

MSG = sodium.crypto_secretstream_xchacha20poly1305_TAG_MESSAGE
FINAL = sodium.crypto_secretstream_xchacha20poly1305_TAG_FINAL
PUSH = sodium.crypto_secretstream_xchacha20poly1305_TAG_PUSH
PROPOSER = PrivateKey.generate()
VOTERS = [PrivateKey.generate() for _ in range(3)]
OUTSIDER = PrivateKey.generate()
CHUNK = 1024


def small_update() -> dict[str, torch.Tensor]:
    """About 2.6 KB of canonical bytes: three 1 KiB chunks, the last one short."""
    g = torch.Generator().manual_seed(7)
    return {"w": torch.randn(20, 30, generator=g), "b": torch.randn(30, generator=g)}


def seal_small() -> tuple[bytes, SealedUpdate]:
    sink = bytearray()
    sealed = seal_update(
        small_update(), sink, sender=PROPOSER, recipients=[v.public_key for v in VOTERS],
        chunk_size=CHUNK,
    )  # fmt: skip
    return bytes(sink), sealed


BLOB, SEALED = seal_small()


def open_as(
    voter: PrivateKey, blob: bytes, wrap: KeyWrap | None = None, **kw: Any
) -> dict[str, torch.Tensor]:
    args: dict[str, Any] = {
        "recipient": voter,
        "sender": PROPOSER.public_key,
        "update_hash": SEALED.update_hash,
        **kw,
    }
    return open_update(blob, wrap or SEALED.wrap_for(voter.public_key), **args)


@settings(max_examples=40, deadline=None)
@given(tensor_dicts(max_dim=40, max_rank=2), st.integers(1024, 4096), st.integers(1, 3))
def test_round_trip_every_recipient(
    tensors: dict[str, TensorLike], chunk_size: int, n_voters: int
) -> None:
    voters = VOTERS[:n_voters]
    sink = bytearray()
    sealed = seal_update(
        tensors, sink, sender=PROPOSER, recipients=[v.public_key for v in voters],
        chunk_size=chunk_size,
    )  # fmt: skip
    plain = canonical_bytes(tensors)
    assert sealed.update_hash == hashlib.sha256(plain).digest() == update_hash(tensors)
    assert sealed.blob_id == hashlib.sha256(sink).digest()
    assert sealed.size == len(sink) == HEAD_LEN + len(plain) + 17 * -(-len(plain) // chunk_size)
    assert len(sealed.wraps) == n_voters
    for voter in voters:
        wrap = sealed.wrap_for(voter.public_key)
        assert len(wrap.to_bytes()) == 104
        assert KeyWrap.from_bytes(wrap.to_bytes()) == wrap
        out = open_update(
            bytes(sink), wrap, recipient=voter, sender=PROPOSER.public_key,
            update_hash=sealed.update_hash, blob_id=sealed.blob_id,
            expected_shapes={k: tuple(v.shape) for k, v in tensors.items()},
        )  # fmt: skip
        assert_same_tensors(out, tensors)


def test_each_seal_uses_a_fresh_key() -> None:
    again = bytearray()
    sealed = seal_update(small_update(), again, sender=PROPOSER, recipients=[OUTSIDER.public_key])
    assert sealed.update_hash == SEALED.update_hash
    assert sealed.blob_id != SEALED.blob_id


def test_a_voter_not_among_the_recipients_cannot_open() -> None:
    for wrap in SEALED.wraps:
        with pytest.raises(EnvelopeError, match="another recipient"):
            open_as(OUTSIDER, BLOB, wrap=wrap)
        # Relabelling someone else's wrap with the outsider's key does not help.
        forged = KeyWrap(bytes(OUTSIDER.public_key), wrap.sealed)
        with pytest.raises(EnvelopeError, match="does not open"):
            open_as(OUTSIDER, BLOB, wrap=forged)
    with pytest.raises(KeyError):
        SEALED.wrap_for(OUTSIDER.public_key)


def test_wrap_from_another_sender_or_for_another_blob_fails() -> None:
    with pytest.raises(EnvelopeError, match="does not open"):
        open_as(VOTERS[0], BLOB, sender=OUTSIDER.public_key)
    # A genuine wrap of a different content key: the first chunk fails.
    other = wrap_key(bytes(32), PROPOSER, VOTERS[0].public_key)
    with pytest.raises(EnvelopeError, match="chunk 0 fails authentication"):
        open_as(VOTERS[0], BLOB, wrap=other)


def test_every_single_byte_corruption_is_caught() -> None:
    assert len(BLOB) > 2 * (CHUNK + 17) + HEAD_LEN  # three chunks
    for pos in range(len(BLOB)):
        bad = bytearray(BLOB)
        bad[pos] ^= 0x01 if pos % 2 else 0x80
        with pytest.raises(EnvelopeError):
            open_as(VOTERS[pos % 3], bytes(bad))


def test_every_truncation_and_extension_is_caught() -> None:
    for end in range(len(BLOB)):
        with pytest.raises(EnvelopeError):
            open_as(VOTERS[end % 3], BLOB[:end])
    for extra in (b"\x00", b"x" * 17, BLOB[-100:], BLOB[HEAD_LEN : HEAD_LEN + CHUNK + 17]):
        # A short final chunk absorbs what follows it and fails authentication.
        with pytest.raises(EnvelopeError, match="chunk 2 fails authentication"):
            open_as(VOTERS[0], BLOB + extra)
    # A full-size final chunk is followed by nothing, or the blob is refused.
    blob = bytearray()
    sealed = seal_update(
        {"w": torch.ones(762)}, blob, sender=PROPOSER, recipients=[VOTERS[0].public_key],
        chunk_size=CHUNK,
    )  # fmt: skip
    assert len(blob) == HEAD_LEN + 3 * (CHUNK + 17)
    for extra in (b"\x00", bytes(blob[-CHUNK - 17 :])):
        with pytest.raises(EnvelopeError, match="after the final"):
            open_update(
                bytes(blob + extra), sealed.wraps[0], recipient=VOTERS[0],
                sender=PROPOSER.public_key, update_hash=sealed.update_hash,
            )  # fmt: skip


def test_reordered_dropped_and_repeated_chunks_are_caught() -> None:
    head, body = BLOB[:HEAD_LEN], BLOB[HEAD_LEN:]
    c = [body[i : i + CHUNK + 17] for i in range(0, len(body), CHUNK + 17)]
    assert len(c) == 3
    for chunks in ([c[1], c[0], c[2]], [c[0], c[2]], [c[0], c[0], c[1], c[2]], [c[0], c[1]]):
        with pytest.raises(EnvelopeError):
            open_as(VOTERS[1], head + b"".join(chunks))


def test_wrong_update_hash_blob_id_or_shapes_are_caught() -> None:
    with pytest.raises(EnvelopeError, match="updateHash"):
        open_as(VOTERS[0], BLOB, update_hash=bytes(32))
    with pytest.raises(EnvelopeError, match="blobId"):
        open_as(VOTERS[0], BLOB, blob_id=bytes(32))
    with pytest.raises(EnvelopeError, match="shapes"):
        open_as(VOTERS[0], BLOB, expected_shapes={"w": (30, 20), "b": (30,)})
    with pytest.raises(EnvelopeError, match="limit"):
        open_as(VOTERS[0], BLOB, max_bytes=1000)
    out = open_as(VOTERS[2], BLOB, blob_id=SEALED.blob_id)
    assert_same_tensors(out, small_update())


def craft(pieces: list[tuple[bytes, int]], chunk_size: int = CHUNK) -> tuple[bytes, KeyWrap, bytes]:
    """A blob from a malicious proposer that holds the key: any plaintext, any tags."""
    key = sodium.crypto_secretstream_xchacha20poly1305_keygen()
    sink = bytearray()
    encrypt_chunks(pieces, sink, key, chunk_size)
    plain_hash = hashlib.sha256(b"".join(p for p, _ in pieces)).digest()
    return bytes(sink), wrap_key(key, PROPOSER, VOTERS[0].public_key), plain_hash


def split(data: bytes, size: int = CHUNK) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def tagged(parts: list[bytes]) -> list[tuple[bytes, int]]:
    return [(p, FINAL if i == len(parts) - 1 else MSG) for i, p in enumerate(parts)]


GOOD = canonical_bytes(small_update())  # its last chunk is short
EXACT = canonical_bytes({"w": torch.ones(762)})  # exactly three chunks
assert len(EXACT) == 3 * CHUNK


@pytest.mark.parametrize(
    ("pieces", "match"),
    [
        (tagged(split(b"\x00" * 3000)), "known version"),
        ([(p, FINAL) for p in split(EXACT)[:1]], "ends before"),
        ([(p, MSG) for p in split(EXACT)], "truncated at chunk 3"),
        ([*[(p, MSG) for p in split(EXACT)], (b"", FINAL)], "truncated at chunk 3"),
        ([(p, MSG) for p in split(GOOD)], "chunk 2 has a bad tag or length"),
        ([*tagged(split(EXACT)), (b"more", FINAL)], "after the final"),
        ([(p, PUSH if i == 1 else t) for i, (p, t) in enumerate(tagged(split(EXACT)))], "tag"),
        (tagged([EXACT[:500], EXACT[500:1524], EXACT[1524:]]), "chunk 0 fails auth"),
        (tagged(split(EXACT + b"\x00" * 4)), "after the end"),
        (tagged(split(EXACT[:-4])), "ends before"),
        (
            tagged(split(canonical_bytes({"w": torch.tensor([1.0, float("nan")])}))),
            "non-finite",
        ),
    ],
)
def test_malicious_sender_streams_are_rejected(pieces: list, match: str) -> None:
    blob, wrap, plain_hash = craft(pieces)
    with pytest.raises(EnvelopeError, match=match):
        open_update(
            blob, wrap, recipient=VOTERS[0], sender=PROPOSER.public_key, update_hash=plain_hash
        )


def test_chunk_size_field_is_authenticated() -> None:
    for size in (2048, 1 << 20):
        bad = bytearray(BLOB)
        bad[8:12] = size.to_bytes(4, "little")
        with pytest.raises(EnvelopeError, match="chunk 0 fails authentication"):
            open_as(VOTERS[0], bytes(bad))
    for size in (0, 1023, (1 << 24) + 1):
        bad = bytearray(BLOB)
        bad[8:12] = size.to_bytes(4, "little")
        with pytest.raises(EnvelopeError, match="chunk size"):
            open_as(VOTERS[0], bytes(bad))


def test_seal_argument_checks() -> None:
    bad: list[dict[str, Any]] = [
        {"recipients": []},
        {"recipients": [OUTSIDER.public_key] * 2},
        {"chunk_size": 10},
    ]
    for kw in bad:
        args: dict[str, Any] = {"sender": PROPOSER, "recipients": [OUTSIDER.public_key], **kw}
        with pytest.raises(ValueError):
            seal_update(small_update(), bytearray(), **args)


class RecordingSink:
    def __init__(self) -> None:
        self.writes: list[int] = []
        self.data = bytearray()

    def write(self, data: bytes) -> int:
        self.writes.append(len(data))
        self.data += data
        return len(data)


class TrickleSource:
    """Hands out at most a few bytes per read, like a slow socket."""

    def __init__(self, data: bytes) -> None:
        self._buf = io.BytesIO(data)
        self.calls = 0

    def read(self, n: int) -> bytes:
        self.calls += 1
        return self._buf.read(min(n, 1 + self.calls % 7))


def test_streams_chunk_by_chunk_through_sinks_and_sources(tmp_path: Path) -> None:
    tensors = {"w": torch.randn(5 << 18), "b": torch.randn(10)}  # 5 MiB: the hash thread runs
    sink = RecordingSink()
    sealed = seal_update(
        tensors, sink, sender=PROPOSER, recipients=[VOTERS[0].public_key], chunk_size=1 << 20
    )
    assert sink.writes[0] == HEAD_LEN and max(sink.writes[1:]) == (1 << 20) + 17
    assert len(sink.writes) == 1 + 6 and sum(sink.writes) == sealed.size
    assert sealed.update_hash == update_hash(tensors)
    assert sealed.blob_id == hashlib.sha256(sink.data).digest()
    path = tmp_path / "blob"
    path.write_bytes(sink.data)
    common: dict[str, Any] = {
        "recipient": VOTERS[0],
        "sender": PROPOSER.public_key,
        "update_hash": sealed.update_hash,
        "blob_id": sealed.blob_id,
    }
    with path.open("rb") as f:
        assert_same_tensors(open_update(f, sealed.wraps[0], **common), tensors)
    with path.open("rb", buffering=0) as raw:
        assert_same_tensors(open_update(raw, sealed.wraps[0], **common), tensors)
    with tmp_path.joinpath("s").open("wb") as f:
        small = seal_update(
            {"x": np.ones(700, np.float32)}, f, sender=PROPOSER,
            recipients=[VOTERS[1].public_key], chunk_size=CHUNK,
        )  # fmt: skip
    trickle = TrickleSource(tmp_path.joinpath("s").read_bytes())
    out = open_update(
        trickle, small.wraps[0], recipient=VOTERS[1], sender=PROPOSER.public_key,
        update_hash=small.update_hash,
    )  # fmt: skip
    assert out["x"].sum().item() == 700.0 and trickle.calls > 100


def test_finding2_seal_skips_a_low_order_recipient() -> None:
    """One recipient with a low-order box key among good ones: the seal does not
    fail, every good recipient gets a wrap that opens, the bad one is listed."""
    from nacl.public import PublicKey

    from tests.fixtures.low_order import LOW_ORDER_KEYS

    for bad in LOW_ORDER_KEYS:
        recipients = [VOTERS[0].public_key, PublicKey(bad), VOTERS[1].public_key]
        sink = bytearray()
        sealed = seal_update(
            small_update(), sink, sender=PROPOSER, recipients=recipients, chunk_size=CHUNK
        )
        assert [w.recipient for w in sealed.wraps] == [
            bytes(VOTERS[0].public_key),
            bytes(VOTERS[1].public_key),
        ]
        assert sealed.skipped == (bad,)
        for voter in VOTERS[:2]:
            got = open_as(
                voter,
                bytes(sink),
                sealed.wrap_for(voter.public_key),
                update_hash=sealed.update_hash,
            )
            assert_same_tensors(got, small_update())


def test_finding2_seal_with_only_low_order_recipients_writes_nothing() -> None:
    from nacl.public import PublicKey

    from tests.fixtures.low_order import LOW_ORDER_KEYS

    sink = bytearray()
    with pytest.raises(EnvelopeError, match="no recipient has a usable box key"):
        seal_update(
            small_update(),
            sink,
            sender=PROPOSER,
            recipients=[PublicKey(k) for k in LOW_ORDER_KEYS[:3]],
            chunk_size=CHUNK,
        )
    assert sink == bytearray()
