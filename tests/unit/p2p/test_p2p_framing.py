"""Byte layout of the content streams (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flocknode.p2p.fetch import READ_MAX, _FrameParser
from flocknode.p2p.framing import (
    MAX_FRAME,
    REQUEST,
    FramingError,
    RefuseReason,
    Request,
    Status,
    decode_frame_header,
    decode_ok,
    decode_request,
    encode_frame_header,
    encode_not_found,
    encode_ok,
    encode_refused,
    encode_request,
)


@given(st.binary(min_size=32, max_size=32), st.integers(0, (1 << 64) - 1))
def test_request_round_trip(cid: bytes, rnd: int) -> None:
    data = encode_request(Request(cid, rnd))
    assert len(data) == REQUEST.size == 41
    assert decode_request(data) == Request(cid, rnd)


@given(st.binary(max_size=64))
@settings(max_examples=300)
def test_decode_request_raises_only_framing_error(data: bytes) -> None:
    try:
        req = decode_request(data)
    except FramingError:
        return
    assert len(req.content_id) == 32 and data[0] == 1


def test_request_rejections() -> None:
    with pytest.raises(FramingError):
        decode_request(b"\x02" + b"\x00" * 40)  # unknown version
    with pytest.raises(ValueError):
        encode_request(Request(b"short"))


def test_response_headers() -> None:
    ok = encode_ok(123, b"\x07" * 32)
    assert ok[0] == Status.OK and decode_ok(ok[1:]) == (123, b"\x07" * 32)
    assert encode_refused(RefuseReason.NOT_VOTER) == bytes([Status.REFUSED, 2])
    assert encode_not_found() == bytes([Status.NOT_FOUND])
    assert RefuseReason.label(3) == "busy" and RefuseReason.label(200) == "code_200"
    with pytest.raises(FramingError):
        decode_ok(ok[1:-1])


def test_frame_header_bounds() -> None:
    assert decode_frame_header(encode_frame_header(MAX_FRAME), MAX_FRAME) == MAX_FRAME
    assert decode_frame_header(encode_frame_header(MAX_FRAME), 1 << 30) == MAX_FRAME
    assert decode_frame_header(encode_frame_header(10), 10) == 10  # the last one
    bad = ((0, 10), (MAX_FRAME + 1, 1 << 30), (11, 10), (5, 10), (1, 1 << 30))
    for length, remaining in bad:  # only full frames, and the rest in the last
        with pytest.raises(FramingError):
            decode_frame_header(length.to_bytes(4, "big"), remaining)
    for length in (0, MAX_FRAME + 1):
        with pytest.raises(ValueError):
            encode_frame_header(length)


# -- the requester's frame splitter (reads may end anywhere) --------------------
def _wire(body: bytes, frame_sizes: list[int]) -> bytes:
    out, pos = b"", 0
    for n in frame_sizes:
        out += encode_frame_header(n) + body[pos : pos + n]
        pos += n
    return out


@st.composite
def framed(draw: st.DrawFn) -> tuple[bytes, bytes, list[int]]:
    """Content of up to 3.5 frames, in full frames, cut into reads anywhere."""
    size = draw(st.integers(0, 3 * MAX_FRAME + MAX_FRAME // 2))
    body = (bytes(range(256)) * (size // 256 + 1))[:size]
    sizes = [MAX_FRAME] * (size // MAX_FRAME) + ([size % MAX_FRAME] if size % MAX_FRAME else [])
    wire = _wire(body, sizes)
    cuts = sorted(draw(st.lists(st.integers(0, len(wire)), max_size=12)))
    return body, wire, cuts


@given(framed())
@settings(max_examples=150, deadline=None)
def test_frame_parser_reassembles_across_any_read_boundaries(
    case: tuple[bytes, bytes, list[int]],
) -> None:
    body, wire, cuts = case
    parser = _FrameParser(len(body))
    got = b""
    for a, b in zip([0, *cuts], [*cuts, len(wire)], strict=True):
        got += b"".join(bytes(p) for p in parser.feed(wire[a:b]))
    assert got == body and parser.remaining == 0


def test_frame_parser_rejects_bytes_past_the_end_and_long_frames() -> None:
    parser = _FrameParser(4)
    assert b"".join(parser.feed(_wire(b"abcd", [4]))) == b"abcd"
    with pytest.raises(FramingError):
        parser.feed(b"\x00")
    with pytest.raises(FramingError):
        _FrameParser(4).feed(encode_frame_header(5) + b"abcde")
    with pytest.raises(FramingError):  # short frames before the last are refused
        _FrameParser(MAX_FRAME + 1).feed(encode_frame_header(1) + b"a")
    assert _FrameParser(10 * MAX_FRAME).next_read_size() == READ_MAX
    assert _FrameParser(10).next_read_size() == 14


def test_a_write_segment_is_one_yamux_frame_in_one_noise_message() -> None:
    """WRITE_SEGMENT is chosen against py-libp2p's yamux and Noise sizes; an upgrade
    that changes them shows up here (the wire format would still work, only slower)."""
    from libp2p.security.noise.io import MAX_PLAINTEXT_LENGTH
    from libp2p.stream_muxer.yamux.yamux import HEADER_SIZE, MAX_MESSAGE_SIZE

    from flocknode.p2p.framing import FRAME_HEADER, WRITE_SEGMENT

    assert WRITE_SEGMENT + HEADER_SIZE == MAX_PLAINTEXT_LENGTH  # one Noise message
    assert WRITE_SEGMENT <= MAX_MESSAGE_SIZE - HEADER_SIZE  # one yamux frame
    assert (FRAME_HEADER.size + MAX_FRAME) % WRITE_SEGMENT == 0
