"""Serving and fetching content over ``/flock/blob/1`` and ``/flock/model/1``.

Wire layout: ``flocknode.p2p.framing``. Rules (PROTOCOL.md steps 4 and 9):
- blobs are served only to the elected voters of the round named in the
  request (``Membership.is_voter``), models to any member;
- a server holds at most ``max_streams_per_peer`` streams per peer and
  ``max_streams_total`` in all (more are refused as busy), waits at most
  ``request_timeout`` for the request and ``write_timeout`` per frame;
- ``fetch`` tries the holders in turn and moves on at refusal, not found, a
  wrong announced hash or size, an oversized or short frame, truncation, a
  wrong hash at the end, or ``read_timeout`` without progress. It allocates
  nothing before the announced size passed the caller's ``expected_size`` and
  ``max_size``, and never more than that size.

Throughput: 1 MiB frames; the requester hashes and writes each frame on a
worker thread (hashlib releases the GIL) while the event loop keeps reading.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import BinaryIO

import trio
from libp2p.abc import INetStream
from libp2p.network.stream.exceptions import StreamEOF, StreamReset
from libp2p.peer.id import ID

from flocknode.p2p.content import BlobSource, Sink
from flocknode.p2p.framing import (
    FRAME_HEADER,
    MAX_FRAME,
    OK_HEADER,
    PROTOCOL_BLOB,
    PROTOCOL_MODEL,
    REQUEST,
    FramingError,
    RefuseReason,
    Request,
    Status,
    decode_frame_header,
    decode_ok,
    decode_request,
    encode_not_found,
    encode_ok,
    encode_refused,
    encode_request,
)
from flocknode.p2p.host import P2PHost
from flocknode.p2p.metrics import (
    BYTES_FETCHED,
    BYTES_SERVED,
    FETCH,
    FETCH_ATTEMPT_FAILED,
    STREAM_REFUSED,
    STREAM_SERVED,
)

log = logging.getLogger(__name__)

READ_MAX = 4 << 20  # the most a requester asks one stream read for
PIPELINE_DEPTH = 4  # reads queued between the network and the disk (<= 16 MiB)


@dataclass(frozen=True)
class StreamLimits:
    max_streams_per_peer: int = 4
    max_streams_total: int = 64
    request_timeout: float = 10.0  # server: to receive the 41-byte request
    write_timeout: float = 30.0  # server: per frame
    open_timeout: float = 10.0  # requester: dial and negotiate the stream
    read_timeout: float = 10.0  # requester: per read without progress


# -- server ------------------------------------------------------------------
class _Slots:
    """Per-peer and total counts of open server streams."""

    def __init__(self, per_peer: int, total: int) -> None:
        self._per_peer, self._total = per_peer, total
        self._open: Counter[ID] = Counter()

    def try_acquire(self, peer: ID) -> bool:
        if self._open[peer] >= self._per_peer or sum(self._open.values()) >= self._total:
            return False
        self._open[peer] += 1
        return True

    def release(self, peer: ID) -> None:
        self._open[peer] -= 1
        if self._open[peer] <= 0:
            del self._open[peer]


class ContentServer:
    """Serves blobs and models from ``BlobSource``s on a running ``P2PHost``."""

    def __init__(
        self,
        p2p: P2PHost,
        blobs: BlobSource,
        models: BlobSource,
        limits: StreamLimits | None = None,
    ) -> None:
        self._p2p = p2p
        self._sources = {PROTOCOL_BLOB: blobs, PROTOCOL_MODEL: models}
        self.limits = limits or StreamLimits()
        self._slots = _Slots(self.limits.max_streams_per_peer, self.limits.max_streams_total)

    def install(self) -> None:
        async def blob(stream: INetStream) -> None:
            await self._serve(stream, PROTOCOL_BLOB)

        async def model(stream: INetStream) -> None:
            await self._serve(stream, PROTOCOL_MODEL)

        self._p2p.set_stream_handler(PROTOCOL_BLOB, blob)
        self._p2p.set_stream_handler(PROTOCOL_MODEL, model)

    async def _serve(self, stream: INetStream, protocol: str) -> None:
        peer = stream.muxed_conn.peer_id
        if not self._slots.try_acquire(peer):
            await self._refuse(stream, RefuseReason.BUSY)
            return
        try:
            await self._serve_one(stream, protocol, peer)
        except Exception as e:
            self._p2p.metrics.inc(STREAM_SERVED, "aborted")
            log.info("serving aborted protocol=%s peer=%s error=%r", protocol, peer, e)
            await _reset(stream)
        finally:
            self._slots.release(peer)

    async def _serve_one(self, stream: INetStream, protocol: str, peer: ID) -> None:
        membership = self._p2p.membership
        try:
            with trio.fail_after(self.limits.request_timeout):
                req = decode_request(await _read_exact(stream, REQUEST.size))
        except (FramingError, _Truncated, trio.TooSlowError):
            await self._refuse(stream, RefuseReason.BAD_REQUEST)
            return
        if not membership.is_member(peer):
            await self._refuse(stream, RefuseReason.NOT_MEMBER)
            return
        if protocol == PROTOCOL_BLOB and not membership.is_voter(req.round, peer):
            await self._refuse(stream, RefuseReason.NOT_VOTER)
            return
        path = self._sources[protocol].path(req.content_id)
        f = await trio.to_thread.run_sync(_open_or_none, path) if path is not None else None
        if f is None:
            self._p2p.metrics.inc(STREAM_REFUSED, "not_found")
            with trio.move_on_after(self.limits.write_timeout):
                await stream.write(encode_not_found())
                await stream.close()
            return
        try:
            size = os.fstat(f.fileno()).st_size
            await self._write(stream, encode_ok(size, req.content_id))
            await self._send_frames(stream, f, size)
        finally:
            f.close()
        await stream.close()
        self._p2p.metrics.inc(STREAM_SERVED, "ok")
        self._p2p.metrics.inc(BYTES_SERVED, n=size)

    async def _send_frames(self, stream: INetStream, f: BinaryIO, size: int) -> None:
        """Frames of up to MAX_FRAME; the next one is read from disk while one is sent."""
        send, receive = trio.open_memory_channel[bytearray](1)

        async def read_ahead() -> None:
            async with send:
                left = size
                while left:
                    frame = await trio.to_thread.run_sync(_read_frame, f, min(MAX_FRAME, left))
                    await send.send(frame)
                    left -= len(frame) - FRAME_HEADER.size

        async def write_out() -> None:
            async with receive:
                async for frame in receive:
                    await self._write(stream, frame)

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(read_ahead)
                nursery.start_soon(write_out)
        except BaseExceptionGroup as group:
            raise _first_error(group) from None

    async def _write(self, stream: INetStream, data: bytes | bytearray) -> None:
        with trio.fail_after(self.limits.write_timeout):
            await stream.write(data)  # type: ignore[arg-type]  # yamux slices bytes-likes

    async def _refuse(self, stream: INetStream, reason: RefuseReason) -> None:
        self._p2p.metrics.inc(STREAM_REFUSED, RefuseReason.label(reason))
        try:
            with trio.move_on_after(self.limits.write_timeout):
                await stream.write(encode_refused(reason))
                await stream.close()
        except Exception:
            await _reset(stream)


def _read_frame(f: BinaryIO, length: int) -> bytearray:
    """One frame (header + ``length`` bytes of the file), read straight into place."""
    frame = bytearray(FRAME_HEADER.size + length)
    FRAME_HEADER.pack_into(frame, 0, length)
    view = memoryview(frame)[FRAME_HEADER.size :]
    got = 0
    while got < length:
        n = f.readinto(view[got:])  # type: ignore[attr-defined]
        if not n:
            raise OSError("content file shrank while being served")
        got += n
    return frame


def _open_or_none(path: os.PathLike[str]) -> BinaryIO | None:
    try:
        return open(path, "rb", buffering=0)
    except OSError:
        return None


# -- requester -----------------------------------------------------------------
@dataclass(frozen=True)
class Attempt:
    holder: ID
    reason: str


@dataclass(frozen=True)
class FetchResult:
    holder: ID
    size: int
    failed_attempts: tuple[Attempt, ...]


class FetchFailed(Exception):
    """Every holder failed; ``attempts`` says why, holder by holder."""

    def __init__(self, content_id: bytes, attempts: Sequence[Attempt]) -> None:
        self.content_id = content_id
        self.attempts = tuple(attempts)
        why = ", ".join(f"{a.holder}: {a.reason}" for a in attempts) or "no holders"
        super().__init__(f"fetch of {content_id.hex()[:16]} failed ({why})")


class _AttemptFailed(Exception):
    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class _Truncated(Exception):
    pass


async def fetch(
    p2p: P2PHost,
    protocol: str,
    content_id: bytes,
    holders: Sequence[ID],
    sink: Sink,
    *,
    max_size: int,
    expected_size: int | None = None,
    round_number: int = 0,
    limits: StreamLimits | None = None,
) -> FetchResult:
    """Fetch ``content_id`` into ``sink`` from the first holder that delivers it."""
    if protocol not in (PROTOCOL_BLOB, PROTOCOL_MODEL):
        raise ValueError(f"unknown content protocol {protocol}")
    limits = limits or StreamLimits()
    request = encode_request(Request(content_id, round_number))
    attempts: list[Attempt] = []
    for holder in dict.fromkeys(holders):  # dedupe, keep order
        if holder == p2p.peer_id:
            continue
        if not p2p.membership.is_member(holder):  # we never talk to non-members
            attempts.append(Attempt(holder, "not_member"))
            p2p.metrics.inc(FETCH_ATTEMPT_FAILED, "not_member")
            continue
        try:
            size = await _fetch_from(
                p2p, protocol, holder, request, content_id, sink, max_size, expected_size, limits
            )
        except _AttemptFailed as e:
            attempts.append(Attempt(holder, e.reason))
            p2p.metrics.inc(FETCH_ATTEMPT_FAILED, e.reason)
            log.info("fetch attempt failed holder=%s reason=%s", holder, e.reason)
            continue
        p2p.metrics.inc(FETCH, "ok")
        p2p.metrics.inc(BYTES_FETCHED, n=size)
        return FetchResult(holder, size, tuple(attempts))
    p2p.metrics.inc(FETCH, "failed")
    raise FetchFailed(content_id, attempts)


async def _fetch_from(
    p2p: P2PHost,
    protocol: str,
    holder: ID,
    request: bytes,
    content_id: bytes,
    sink: Sink,
    max_size: int,
    expected_size: int | None,
    limits: StreamLimits,
) -> int:
    try:
        with trio.fail_after(limits.open_timeout):
            stream = await p2p.open_stream(holder, [protocol])
    except trio.TooSlowError:
        raise _AttemptFailed("open_timeout") from None
    except Exception:
        raise _AttemptFailed("open_failed") from None
    began = done = False
    try:
        with trio.fail_after(limits.read_timeout):
            await stream.write(request)
        size = await _read_response_header(stream, content_id, limits.read_timeout)
        if expected_size is not None and size != expected_size:
            raise _AttemptFailed("wrong_size")
        if size > max_size:
            raise _AttemptFailed("too_large")
        await trio.to_thread.run_sync(sink.begin, size)
        began = True
        digest = await _receive_frames(stream, size, sink, limits.read_timeout)
        if digest != content_id:
            raise _AttemptFailed("wrong_hash")
        await trio.to_thread.run_sync(sink.commit)
        done = True
        return size
    except _AttemptFailed:
        raise
    except trio.TooSlowError:
        raise _AttemptFailed("timeout") from None
    except (_Truncated, StreamEOF):
        raise _AttemptFailed("truncated") from None
    except FramingError:
        raise _AttemptFailed("bad_frame") from None
    except _SinkError as e:
        raise e.error from None  # a local failure (disk full...), not the holder's fault
    except StreamReset:
        raise _AttemptFailed("reset") from None
    except Exception as e:
        raise _AttemptFailed("stream_error_" + type(e).__name__) from None
    finally:
        if began and not done:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(sink.abort)
        if done:
            with trio.move_on_after(1):
                with contextlib.suppress(Exception):
                    await stream.close()
        else:
            await _reset(stream)


async def _read_response_header(stream: INetStream, content_id: bytes, timeout: float) -> int:
    with trio.fail_after(timeout):
        status = (await _read_exact(stream, 1))[0]
        if status == Status.REFUSED:
            code = (await _read_exact(stream, 1))[0]
            raise _AttemptFailed("refused_" + RefuseReason.label(code))
        if status == Status.NOT_FOUND:
            raise _AttemptFailed("not_found")
        if status != Status.OK:
            raise _AttemptFailed("bad_status")
        size, digest = decode_ok(await _read_exact(stream, OK_HEADER.size))
    if digest != content_id:
        raise _AttemptFailed("wrong_announced_hash")
    return size


class _SinkError(Exception):
    def __init__(self, error: BaseException) -> None:
        self.error = error


def _consume(hasher: hashlib._Hash, sink: Sink, pieces: list[memoryview]) -> None:
    try:
        for piece in pieces:
            hasher.update(piece)
            sink.write(piece)
    except Exception as e:
        raise _SinkError(e) from e


class _FrameParser:
    """Splits received bytes into frame bodies without copying them.

    Reads may end anywhere, inside a frame header too. ``remaining`` counts the
    content bytes still expected; a frame longer than that, or any byte after
    the last one, is a ``FramingError``.
    """

    def __init__(self, size: int) -> None:
        self.remaining = size
        self._body_left = 0
        self._header = b""

    def feed(self, data: bytes) -> list[memoryview]:
        mv = memoryview(data)
        pos, end = 0, len(data)
        pieces: list[memoryview] = []
        while pos < end:
            if self._body_left == 0:
                if self.remaining == 0:
                    raise FramingError("bytes after the announced size")
                need = FRAME_HEADER.size - len(self._header)
                self._header += bytes(mv[pos : pos + need])
                pos = min(end, pos + need)
                if len(self._header) == FRAME_HEADER.size:
                    self._body_left = decode_frame_header(self._header, self.remaining)
                    self._header = b""
                continue
            take = min(self._body_left, end - pos)
            pieces.append(mv[pos : pos + take])
            pos += take
            self._body_left -= take
            self.remaining -= take
        return pieces

    def next_read_size(self) -> int:
        """How much to ask for: the rest of the content and its frame headers, capped."""
        headers = FRAME_HEADER.size * (self.remaining // MAX_FRAME + 1)
        return min(READ_MAX, self.remaining + headers)


async def _receive_frames(stream: INetStream, size: int, sink: Sink, timeout: float) -> bytes:
    """Stream ``size`` bytes of frames into ``sink``; returns their SHA-256.

    Two tasks: the reader asks the stream for up to ``READ_MAX`` at a time
    (fewer, larger reads are what make a py-libp2p stream fast) and splits the
    frames; the writer hashes and writes them on a worker thread. At most
    ``PIPELINE_DEPTH`` reads wait between the two, so the network keeps moving
    while the disk works, with a bounded amount of memory.
    """
    hasher = hashlib.sha256()
    parser = _FrameParser(size)
    send, receive = trio.open_memory_channel[list[memoryview]](PIPELINE_DEPTH)

    async def write_out() -> None:
        async with receive:
            async for pieces in receive:
                await trio.to_thread.run_sync(_consume, hasher, sink, pieces)

    async def read_in() -> None:
        async with send:
            while parser.remaining:
                with trio.fail_after(timeout):
                    data = await stream.read(parser.next_read_size())
                if not data:
                    raise _Truncated()
                pieces = parser.feed(data)
                if pieces:
                    await send.send(pieces)

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(write_out)
            nursery.start_soon(read_in)
    except BaseExceptionGroup as group:
        raise _first_error(group) from None
    return hasher.digest()


def _first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error that ended a two-task nursery (the other task was only cancelled)."""
    leaves: list[BaseException] = []

    def walk(e: BaseException) -> None:
        if isinstance(e, BaseExceptionGroup):
            for inner in e.exceptions:
                walk(inner)
        else:
            leaves.append(e)

    walk(group)
    for leaf in leaves:
        if not isinstance(leaf, trio.Cancelled):
            return leaf
    return group


async def _read_exact(stream: INetStream, n: int) -> bytes:
    """Exactly ``n`` bytes (n is small: headers); _Truncated at EOF."""
    buf = b""
    while len(buf) < n:
        try:
            piece = await stream.read(n - len(buf))
        except StreamEOF:
            raise _Truncated() from None
        if not piece:
            raise _Truncated()
        buf += piece
    return buf


async def _reset(stream: INetStream) -> None:
    with contextlib.suppress(Exception):
        await stream.reset()
