"""Every decoder fed random and mutated bytes raises nothing but its one error type."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import nacl.bindings as sodium
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nacl.public import PrivateKey

from flocknode.crypto import (
    CanonicalError,
    CanonicalReader,
    EnvelopeError,
    KeyWrap,
    canonical_bytes,
    open_update,
    parse_canonical,
    seal_update,
)
from flocknode.crypto.envelope import encrypt_chunks, unwrap_key, wrap_key

SENDER = PrivateKey.generate()
VOTER = PrivateKey.generate()
CANON = canonical_bytes(
    {"layer.weight": torch.randn(7, 5), "layer.bias": torch.randn(5), "scale": torch.tensor(2.0)}
)
HEADER_LEN = len(CANON) - 4 * (35 + 5 + 1)
_blob = bytearray()
SEALED = seal_update(
    {"w": torch.randn(600), "b": torch.randn(3)}, _blob, sender=SENDER,
    recipients=[VOTER.public_key], chunk_size=1024,
)  # fmt: skip
BLOB = bytes(_blob)
FUZZ = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)  # fmt: skip


def only(error: type[Exception], fn: Callable[[], object]) -> bool:
    """Run fn; True if it raised ``error``, False if it returned; anything else fails."""
    try:
        fn()
    except error:
        return True
    return False


@st.composite
def mutations(draw: st.DrawFn, data: bytes, region: int | None = None) -> bytes:
    """``data`` with 1-4 edits (flip, set, delete, insert, truncate, repeat), all
    inside the first ``region`` bytes when given."""
    b = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        hi = max(min(len(b), region or len(b)) - 1, 0)
        pos = draw(st.integers(0, hi))
        op = draw(st.sampled_from(["flip", "set", "delete", "insert", "truncate", "repeat"]))
        if op == "flip" and b:
            b[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and b:
            b[pos] = draw(st.sampled_from([0, 1, 0x7F, 0x80, 0xFF]))
        elif op == "delete":
            del b[pos : pos + draw(st.integers(1, 64))]
        elif op == "insert":
            b[pos:pos] = draw(st.binary(min_size=1, max_size=32))
        elif op == "truncate":
            del b[pos:]
        else:
            b[pos:pos] = b[pos : pos + draw(st.integers(1, 64))]
    return bytes(b)


@FUZZ
@given(st.binary(max_size=300))
def test_canonical_random_bytes(data: bytes) -> None:
    assert only(CanonicalError, lambda: parse_canonical(data))
    assert only(CanonicalError, lambda: parse_canonical(CANON[:16] + data))


@FUZZ
@given(st.one_of(mutations(CANON), mutations(CANON, region=HEADER_LEN)), st.data())
def test_canonical_mutated_bytes(data: bytes, pieces: st.DataObject) -> None:
    only(CanonicalError, lambda: parse_canonical(data))
    only(CanonicalError, lambda: parse_canonical(data, expected_shapes={"scale": ()}))

    def in_pieces() -> None:
        reader = CanonicalReader(max_bytes=4096)
        pos = 0
        while pos < len(data):
            step = pieces.draw(st.integers(1, 300))
            reader.feed(data[pos : pos + step])
            pos += step
        reader.finish()

    only(CanonicalError, in_pieces)


def _open(blob: bytes, wrap: KeyWrap = SEALED.wraps[0]) -> object:
    return open_update(
        blob, wrap, recipient=VOTER, sender=SENDER.public_key, update_hash=SEALED.update_hash
    )


@FUZZ
@given(st.binary(max_size=2500))
def test_envelope_random_bytes(data: bytes) -> None:
    assert only(EnvelopeError, lambda: _open(data))
    assert only(EnvelopeError, lambda: _open(BLOB[:36] + data))


@FUZZ
@given(mutations(BLOB))
def test_envelope_mutated_bytes_never_open(data: bytes) -> None:
    if data != BLOB:
        assert only(EnvelopeError, lambda: _open(data))


@FUZZ
@given(st.one_of(mutations(CANON), mutations(CANON, region=HEADER_LEN)), st.integers(1024, 2048))
def test_envelope_from_a_malicious_sender(plain: bytes, chunk_size: int) -> None:
    """Authentic chunks around broken plaintext: still only EnvelopeError."""
    key = sodium.crypto_secretstream_xchacha20poly1305_keygen()
    parts = [plain[i : i + chunk_size] for i in range(0, len(plain), chunk_size)] or [b""]
    final = sodium.crypto_secretstream_xchacha20poly1305_TAG_FINAL
    msg = sodium.crypto_secretstream_xchacha20poly1305_TAG_MESSAGE
    tagged = [(p, final if i == len(parts) - 1 else msg) for i, p in enumerate(parts)]
    sink = bytearray()
    encrypt_chunks(tagged, sink, key, chunk_size)
    plain_hash = hashlib.sha256(plain).digest()
    wrap = wrap_key(key, SENDER, VOTER.public_key)
    only(
        EnvelopeError,
        lambda: open_update(
            bytes(sink), wrap, recipient=VOTER, sender=SENDER.public_key, update_hash=plain_hash
        ),
    )


@FUZZ
@given(st.one_of(st.binary(max_size=200), mutations(SEALED.wraps[0].to_bytes())))
def test_key_wrap_bytes(data: bytes) -> None:
    def decode_and_unwrap() -> None:
        unwrap_key(KeyWrap.from_bytes(data), VOTER, SENDER.public_key)

    if data != SEALED.wraps[0].to_bytes():
        assert only(EnvelopeError, decode_and_unwrap)


values = st.one_of(st.binary(max_size=120), st.none(), st.integers(), st.text(max_size=40))


@settings(max_examples=100, deadline=None)
@given(values, values)
def test_key_wrap_fields(recipient: object, sealed: object) -> None:
    only(EnvelopeError, lambda: KeyWrap(recipient, sealed))  # type: ignore[arg-type]


def test_decoders_are_not_vacuous() -> None:
    """The fuzzed entry points do succeed on valid input (so the tests can fail)."""
    assert not only(CanonicalError, lambda: parse_canonical(CANON))
    assert not only(EnvelopeError, lambda: _open(BLOB))
    wrap = SEALED.wraps[0]
    assert not only(EnvelopeError, lambda: KeyWrap.from_bytes(wrap.to_bytes()))
    with pytest.raises(EnvelopeError):
        KeyWrap(b"x" * 32, b"y")
