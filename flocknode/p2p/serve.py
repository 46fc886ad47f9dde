"""The content server: ``/flock/blob/1`` to the round's voters, ``/flock/model/1`` to members.

Wire layout: ``flocknode.p2p.framing``. Every check on the requester comes
before it can hold anything (docs/protocol.md "Content-server access"):
1. the peer must be a member (no request read otherwise);
2. it may wait at most ``request_timeout`` with at most ``max_pending_per_peer``
   requests not yet sent (a slow or silent member holds only its own share);
3. a blob is served only if this node holds it as a blob of the round the
   request names (``RoundBlobSource``) and the requester holds a voter seat in
   that round; ``/flock/model/1`` serves only the model source (the node's
   model files, never an update blob);
4. then a serving slot: at most ``max_streams_per_peer`` per peer and
   ``max_streams_total`` in all (more are refused as busy).
Each block of frames must be written within ``write_timeout``; the next block
is read from disk while the current one is sent.
"""

from __future__ import annotations

import io
import logging
import os
from collections import Counter
from typing import cast

import trio
from libp2p.abc import INetStream
from libp2p.peer.id import ID

from flocknode.logs import PeerLog
from flocknode.p2p.content import BlobSource, RoundBlobSource
from flocknode.p2p.framing import (
    FRAME_HEADER,
    MAX_FRAME,
    PROTOCOL_BLOB,
    PROTOCOL_MODEL,
    REQUEST,
    WRITE_SEGMENT,
    FramingError,
    RefuseReason,
    decode_request,
    encode_not_found,
    encode_ok,
    encode_refused,
)
from flocknode.p2p.host import P2PHost
from flocknode.p2p.metrics import BYTES_SERVED, STREAM_REFUSED, STREAM_SERVED
from flocknode.p2p.stream_io import (
    StreamLimits,
    Truncated,
    first_error,
    read_exact,
    reset_quietly,
)

log = logging.getLogger(__name__)
peer_log = PeerLog(log)  # lines a peer can cause: rate-limited

FRAMES_PER_BLOCK = 4  # frames read from disk per worker-thread call and sent per write


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

    def held(self, peer: ID) -> int:
        return self._open[peer]

    def release(self, peer: ID) -> None:
        self._open[peer] -= 1
        if self._open[peer] <= 0:
            del self._open[peer]


class ContentServer:
    """Serves blobs and models on a running ``P2PHost``."""

    def __init__(
        self,
        p2p: P2PHost,
        blobs: RoundBlobSource,
        models: BlobSource,
        limits: StreamLimits | None = None,
    ) -> None:
        self._p2p = p2p
        self._blobs, self._models = blobs, models
        self.limits = limits or StreamLimits()
        self._pending = _Slots(self.limits.max_pending_per_peer, self.limits.max_pending_total)
        self._slots = _Slots(self.limits.max_streams_per_peer, self.limits.max_streams_total)

    def awaiting_request(self, peer: ID) -> int:
        """Streams of ``peer`` admitted and waiting for their request (``max_pending_per_peer``)."""
        return self._pending.held(peer)

    def install(self) -> None:
        async def blob(stream: INetStream) -> None:
            await self._serve(stream, PROTOCOL_BLOB)

        async def model(stream: INetStream) -> None:
            await self._serve(stream, PROTOCOL_MODEL)

        self._p2p.set_stream_handler(PROTOCOL_BLOB, blob)
        self._p2p.set_stream_handler(PROTOCOL_MODEL, model)

    async def _serve(self, stream: INetStream, protocol: str) -> None:
        peer = stream.muxed_conn.peer_id
        try:
            admitted = await self._admit(stream, protocol, peer)
        except Exception as e:
            await self._abort(stream, protocol, peer, e)
            return
        if admitted is None:
            return
        f, content_id = admitted
        try:
            if not self._slots.try_acquire(peer):
                await self._refuse(stream, RefuseReason.BUSY)
                return
            try:
                await self._send(stream, f, content_id)
            finally:
                self._slots.release(peer)
        except Exception as e:
            await self._abort(stream, protocol, peer, e)
        finally:
            f.close()

    async def _admit(
        self, stream: INetStream, protocol: str, peer: ID
    ) -> tuple[io.FileIO, bytes] | None:
        """The open file and id of what ``peer`` asks for, if it may have it; else refuse."""
        membership = self._p2p.membership
        if not membership.is_member(peer):
            await self._refuse(stream, RefuseReason.NOT_MEMBER)
            return None
        if not self._pending.try_acquire(peer):
            await self._refuse(stream, RefuseReason.BUSY)
            return None
        try:
            with trio.fail_after(self.limits.request_timeout):
                req = decode_request(await read_exact(stream, REQUEST.size))
        except (FramingError, Truncated, trio.TooSlowError):
            await self._refuse(stream, RefuseReason.BAD_REQUEST)
            return None
        finally:
            self._pending.release(peer)
        if protocol == PROTOCOL_BLOB and not membership.is_voter(req.round, peer):
            await self._refuse(stream, RefuseReason.NOT_VOTER)
            return None
        f = await trio.to_thread.run_sync(self._open, protocol, req.content_id, req.round)
        if f is None:
            self._p2p.metrics.inc(STREAM_REFUSED, "not_found")
            with trio.move_on_after(self.limits.write_timeout):
                await stream.write(encode_not_found())
                await stream.close()
            return None
        return f, req.content_id

    def _open(self, protocol: str, content_id: bytes, round: int) -> io.FileIO | None:
        """Blocking (the sources stat and may read files): run in a worker thread."""
        if protocol == PROTOCOL_BLOB:
            path = self._blobs.path_in_round(content_id, round)
        else:
            path = self._models.path(content_id)
        return _open_or_none(path) if path is not None else None

    async def _send(self, stream: INetStream, f: io.FileIO, content_id: bytes) -> None:
        size = os.fstat(f.fileno()).st_size
        await self._write(stream, encode_ok(size, content_id))
        await self._send_frames(stream, f, size)
        with trio.fail_after(self.limits.write_timeout):  # the FIN waits on the socket too
            await stream.close()
        self._p2p.metrics.inc(STREAM_SERVED, "ok")
        self._p2p.metrics.inc(BYTES_SERVED, n=size)

    async def _abort(self, stream: INetStream, protocol: str, peer: ID, e: Exception) -> None:
        self._p2p.metrics.inc(STREAM_SERVED, "aborted")
        peer_log.info("aborted", "serving aborted protocol=%s peer=%s error=%r", protocol, peer, e)
        await reset_quietly(stream)

    async def _send_frames(self, stream: INetStream, f: io.FileIO, size: int) -> None:
        """Frames of up to MAX_FRAME, laid out with their headers straight from disk.

        Two buffers of ``FRAMES_PER_BLOCK`` frames each: a worker thread fills one
        (``readinto`` between the headers, no copy) while the other is sent with
        one write per ``WRITE_SEGMENT`` (see framing.WRITE_SEGMENT: whole segments per block).
        """
        block_len = FRAMES_PER_BLOCK * (FRAME_HEADER.size + MAX_FRAME)
        free_send, free = trio.open_memory_channel[bytearray](2)
        full_send, full = trio.open_memory_channel[memoryview](2)
        for _ in range(2):
            free_send.send_nowait(
                bytearray(min(block_len, size + FRAMES_PER_BLOCK * FRAME_HEADER.size))
            )

        async def read_ahead() -> None:
            async with full_send:
                left = size
                while left:
                    buf = await free.receive()
                    n = min(left, FRAMES_PER_BLOCK * MAX_FRAME)
                    used = await trio.to_thread.run_sync(_read_framed, f, buf, n)
                    await full_send.send(memoryview(buf)[:used])
                    left -= n

        async def write_out() -> None:
            async with full:
                async for view in full:
                    await self._write(stream, view)
                    buf = view.obj
                    view.release()
                    assert isinstance(buf, bytearray)
                    free_send.send_nowait(buf)

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(read_ahead)
                nursery.start_soon(write_out)
        except BaseExceptionGroup as group:
            raise first_error(group) from None

    async def _write(self, stream: INetStream, data: bytes | memoryview) -> None:
        """One write per WRITE_SEGMENT: a yamux frame in a single Noise message."""
        # typed bytes, but yamux only slices and concatenates: any bytes-like works,
        # and a memoryview of the block saves copying it
        with trio.fail_after(self.limits.write_timeout):
            for start in range(0, len(data), WRITE_SEGMENT):
                await stream.write(cast(bytes, data[start : start + WRITE_SEGMENT]))

    async def _refuse(self, stream: INetStream, reason: RefuseReason) -> None:
        self._p2p.metrics.inc(STREAM_REFUSED, RefuseReason.label(reason))
        try:
            with trio.move_on_after(self.limits.write_timeout):
                await stream.write(encode_refused(reason))
                await stream.close()
        except Exception:
            await reset_quietly(stream)


def _read_framed(f: io.FileIO, buf: bytearray, content: int) -> int:
    """Fill ``buf`` with the next ``content`` bytes of ``f`` as frames; the bytes used.

    The file must not shrink while it is served (the content store never
    rewrites a file in place).
    """
    view = memoryview(buf)
    pos = 0
    while content:
        body = min(MAX_FRAME, content)
        FRAME_HEADER.pack_into(buf, pos, body)
        pos += FRAME_HEADER.size
        end = pos + body
        while pos < end:
            n = f.readinto(view[pos:end])
            if not n:
                raise OSError("content file shrank while being served")
            pos += n
        content -= body
    view.release()
    return pos


def _open_or_none(path: os.PathLike[str]) -> io.FileIO | None:
    try:
        return io.FileIO(path, "rb")
    except OSError:
        return None
