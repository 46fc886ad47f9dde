"""The gossip codec: round trips, and any malformed input is one DecodeError."""

from __future__ import annotations

import contextlib

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flocknode.p2p.codec import (
    MAX_MESSAGE_BYTES,
    DecodeError,
    decode_message,
    encode_message,
)
from flocknode.p2p.messages import (
    MAX_CONTENT_SIZE,
    MAX_ROUND,
    MAX_WRAPPED_KEY_LEN,
    MAX_WRAPS,
    KeyWraps,
    ModelAvailable,
    UpdateAnnounce,
    WireKeyWrap,
)

hashes = st.binary(min_size=32, max_size=32)
rounds = st.integers(0, MAX_ROUND)
sizes = st.integers(0, MAX_CONTENT_SIZE)
wraps = st.builds(WireKeyWrap, hashes, st.binary(min_size=1, max_size=MAX_WRAPPED_KEY_LEN))
messages = st.one_of(
    st.builds(UpdateAnnounce, rounds, hashes, sizes, st.none() | hashes),
    st.builds(KeyWraps, rounds, hashes, st.lists(wraps, max_size=40).map(tuple)),
    st.builds(ModelAvailable, rounds, hashes, sizes),
)


@given(messages)
@settings(max_examples=300, deadline=None)
def test_round_trip(msg: object) -> None:
    data = encode_message(msg)  # type: ignore[arg-type]
    assert len(data) <= MAX_MESSAGE_BYTES
    assert decode_message(data) == msg


def test_full_key_wraps_fit_under_the_size_cap() -> None:
    msg = KeyWraps(
        1,
        b"\x01" * 32,
        tuple(WireKeyWrap(bytes([i]) * 32, b"\x02" * 128) for i in range(MAX_WRAPS)),
    )
    assert decode_message(encode_message(msg)) == msg


@given(st.binary(max_size=2000))
@settings(max_examples=1000, deadline=None)
def test_random_bytes_raise_only_decode_error(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        decode_message(data)


@given(messages, st.data())
@settings(max_examples=500, deadline=None)
def test_mutated_encodings_raise_only_decode_error(msg: object, data: st.DataObject) -> None:
    raw = bytearray(encode_message(msg))  # type: ignore[arg-type]
    op = data.draw(st.sampled_from(["flip", "truncate", "insert", "append"]))
    pos = data.draw(st.integers(0, len(raw) - 1))
    if op == "flip":
        raw[pos] ^= data.draw(st.integers(1, 255))
    elif op == "truncate":
        del raw[pos:]
    elif op == "insert":
        raw[pos:pos] = data.draw(st.binary(min_size=1, max_size=8))
    else:
        raw += data.draw(st.binary(min_size=1, max_size=8))
    try:
        out = decode_message(bytes(raw))
    except DecodeError:
        return
    # a mutation can land on another valid message; it must then re-encode exactly
    assert decode_message(encode_message(out)) == out


@given(
    st.recursive(
        st.none()
        | st.booleans()
        | st.integers(-(1 << 63), (1 << 64) - 1)
        | st.floats()
        | st.text(max_size=5)
        | st.binary(max_size=40)
        | st.sampled_from([1, 2, 3]),
        lambda inner: (
            st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=2), inner, max_size=5)
        ),
        max_leaves=20,
    )
)
@settings(max_examples=500, deadline=None)
def test_arbitrary_msgpack_values_raise_only_decode_error(value: object) -> None:
    with contextlib.suppress(DecodeError):
        decode_message(msgpack.packb(value, use_bin_type=True))


def _packed(**fields: object) -> bytes:
    base: dict[str, object] = {"t": 3, "v": 1, "r": 1, "m": b"\x01" * 32, "s": 5}
    base.update(fields)
    return msgpack.packb({k: v for k, v in base.items() if v is not _DROP}, use_bin_type=True)


_DROP = object()


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (_packed(), None),
        (_packed(v=2), "bad_version"),
        (_packed(t=99), "unknown_type"),
        (_packed(t=True), "malformed"),  # a bool is not a type id
        (_packed(r=True), "malformed"),
        (_packed(r=-1), "malformed"),
        (_packed(s=1.0), "malformed"),
        (_packed(s=MAX_CONTENT_SIZE + 1), "malformed"),
        (_packed(m=b"\x01" * 31), "malformed"),
        (_packed(m="01" * 16), "malformed"),  # str, not bin
        (_packed(x=1), "malformed"),  # unknown key
        (_packed(s=_DROP), "malformed"),  # missing key
        (_packed() + b"\x00", "malformed"),  # trailing bytes
        (b"\x83\xa1t\x03\xa1t\x03\xa1v\x01", "malformed"),  # duplicate key
        (msgpack.packb([3, 1, 1]), "malformed"),
        (b"", "malformed"),
        (b"\xc1", "malformed"),
        (b"\x00" * (MAX_MESSAGE_BYTES + 1), "too_large"),
    ],
)
def test_specific_rejections(data: bytes, reason: str | None) -> None:
    if reason is None:
        assert decode_message(data) == ModelAvailable(1, b"\x01" * 32, 5)
        return
    with pytest.raises(DecodeError) as err:
        decode_message(data)
    assert err.value.reason == reason


def test_key_wraps_shape_checks() -> None:
    ok = {"t": 2, "v": 1, "r": 1, "b": b"\x01" * 32, "w": [[b"\x02" * 32, b"\x03" * 72]]}
    assert decode_message(msgpack.packb(ok)) == KeyWraps(
        1, b"\x01" * 32, (WireKeyWrap(b"\x02" * 32, b"\x03" * 72),)
    )
    for bad_w in (
        [[b"\x02" * 32]],
        [[b"\x02" * 31, b"\x03"]],
        [[b"\x02" * 32, b""]],
        [[b"\x02" * 32, b"\x03" * (MAX_WRAPPED_KEY_LEN + 1)]],
        [(b"\x02" * 32, b"\x03", b"")],
        {"a": 1},
        [[b"\x02" * 32, b"\x03"]] * (MAX_WRAPS + 1),
    ):
        with pytest.raises(DecodeError):
            decode_message(msgpack.packb({**ok, "w": bad_w}))


def test_decode_accepts_only_bytes_like() -> None:
    with pytest.raises(DecodeError):
        decode_message("a string")  # type: ignore[arg-type]
    assert decode_message(memoryview(encode_message(ModelAvailable(1, b"\x01" * 32, 5)))).round == 1


def test_encode_refuses_what_would_not_decode() -> None:
    with pytest.raises(ValueError):
        encode_message(UpdateAnnounce(1, b"short", 5))
    with pytest.raises(ValueError):
        encode_message(ModelAvailable(-1, b"\x01" * 32, 5))
    with pytest.raises(ValueError):
        encode_message("not a message")  # type: ignore[arg-type]


def test_key_wraps_encoding_is_fixed() -> None:
    """The wire bytes of a KeyWraps message (field names and order are the protocol)."""
    msg = KeyWraps(
        7,
        b"\x01" * 32,
        (WireKeyWrap(b"\x02" * 32, b"\x03" * 72), WireKeyWrap(b"\x04" * 32, b"\x05" * 72)),
    )
    expected = bytes.fromhex(
        "85a17402a17601a17207a162c420"
        + "01" * 32
        + "a1779292c420"
        + "02" * 32
        + "c448"
        + "03" * 72
        + "92c420"
        + "04" * 32
        + "c448"
        + "05" * 72
    )
    assert encode_message(msg) == expected
    assert decode_message(expected) == msg
