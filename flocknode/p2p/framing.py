"""Byte layout of the content streams ``/flock/blob/1`` and ``/flock/model/1``.

Pure encode/decode, no I/O. All integers big-endian.

Request (requester -> server), fixed 41 bytes::

    u8 version (1) | 32 bytes content id (SHA-256) | u64 round (blob: the round
    whose voters may fetch it; model: 0)

Response (server -> requester), first byte is the status::

    OK         u8 0 | u64 total size | 32 bytes SHA-256 of the content
               then frames  u32 length | length bytes, every frame MAX_FRAME
               long except the last, which carries the rest; then the server
               closes. (Full frames keep a sender from making the requester
               track a million one-byte frames.)
    REFUSED    u8 1 | u8 reason (RefuseReason)
    NOT_FOUND  u8 2

The SHA-256 up front must equal the content id; the requester checks size and
hash while it streams (a sender killed mid-transfer looks like a clean close).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

PROTOCOL_BLOB = "/flock/blob/1"
PROTOCOL_MODEL = "/flock/model/1"
REQUEST_VERSION = 1
HASH_LEN = 32
# The server writes content in segments of WRITE_SEGMENT bytes, one stream write
# each: py-libp2p's yamux turns a write into data frames of up to 64 KiB - 12
# bytes, and its Noise layer splits anything over 65,519 bytes (the largest
# Noise plaintext) into two messages, so a full 64 KiB yamux frame costs both
# sides a second, 17-byte Noise message (a read, a decrypt, a wake-up) and the
# stream moves about 40 % less per CPU second (bench/transfer.py, variants
# bare_read_4mib_paced and bare_noise_segments). A segment of 65,519 - 12 bytes
# is one yamux frame in one Noise message. A frame with its 4-byte header is
# exactly 16 segments, so a block of whole frames splits into whole segments.
NOISE_MAX_PLAINTEXT = 65535 - 16  # a Noise transport message minus its MAC
YAMUX_HEADER = 12
WRITE_SEGMENT = NOISE_MAX_PLAINTEXT - YAMUX_HEADER  # 65,507 bytes
MAX_FRAME = 16 * WRITE_SEGMENT - 4  # 1,048,108 bytes

REQUEST = struct.Struct(">B32sQ")
OK_HEADER = struct.Struct(">Q32s")  # after the status byte
FRAME_HEADER = struct.Struct(">I")


class Status(IntEnum):
    OK = 0
    REFUSED = 1
    NOT_FOUND = 2


class RefuseReason(IntEnum):
    NOT_MEMBER = 1
    NOT_VOTER = 2
    BUSY = 3
    BAD_REQUEST = 4
    INTERNAL = 5

    @classmethod
    def label(cls, code: int) -> str:
        try:
            return cls(code).name.lower()
        except ValueError:
            return f"code_{code}"


class FramingError(Exception):
    """Bytes that do not follow the layout above."""


@dataclass(frozen=True)
class Request:
    content_id: bytes
    round: int = 0


def encode_request(req: Request) -> bytes:
    if len(req.content_id) != HASH_LEN:
        raise ValueError("content id must be 32 bytes")
    return REQUEST.pack(REQUEST_VERSION, req.content_id, req.round)


def decode_request(data: bytes) -> Request:
    if len(data) != REQUEST.size:
        raise FramingError(f"request must be {REQUEST.size} bytes, got {len(data)}")
    version, cid, rnd = REQUEST.unpack(data)
    if version != REQUEST_VERSION:
        raise FramingError(f"unknown request version {version}")
    return Request(cid, rnd)


def encode_ok(size: int, sha256: bytes) -> bytes:
    return bytes([Status.OK]) + OK_HEADER.pack(size, sha256)


def decode_ok(data: bytes) -> tuple[int, bytes]:
    """(size, sha256) from the 40 bytes after an OK status byte."""
    if len(data) != OK_HEADER.size:
        raise FramingError("short OK header")
    size, digest = OK_HEADER.unpack(data)
    return size, digest


def encode_refused(reason: RefuseReason) -> bytes:
    return bytes([Status.REFUSED, reason])


def encode_not_found() -> bytes:
    return bytes([Status.NOT_FOUND])


def encode_frame_header(length: int) -> bytes:
    if not 0 < length <= MAX_FRAME:
        raise ValueError(f"frame length {length} out of range")
    return FRAME_HEADER.pack(length)


def decode_frame_header(data: bytes, remaining: int) -> int:
    """The frame length: MAX_FRAME, or exactly what is left for the last frame."""
    (length,) = FRAME_HEADER.unpack(data)
    if length != min(MAX_FRAME, remaining):
        raise FramingError(f"frame of {length} bytes with {remaining} left")
    return length
