"""Fetching content by id from the holders that announced it, one after another.

``fetch`` tries the holders in turn (members only) and moves on at refusal, not
found, a wrong announced hash or size, a frame of the wrong length,
truncation, a wrong hash at the end, ``read_timeout`` without progress, or an
average below ``min_rate``. It allocates nothing before the announced size
passed the caller's ``expected_size`` and ``max_size``, and never more than
that size.

A caller that serves a deadline passes it (``deadline``, trio's clock): no
attempt starts after it and none runs past it. ``attempt_seconds`` (a function
of the time left) caps each attempt, so a holder that is slow but not slow
enough to trip ``min_rate`` is dropped for the next one while time is left.

Throughput: reads of up to 4 MiB (after a short read, 1 ms pause so the next one
is larger) are split into frame bodies without copying; a second task hashes
and writes them on a worker thread (hashlib releases the GIL) while the event
loop keeps reading.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import trio
from libp2p.abc import INetStream
from libp2p.network.stream.exceptions import StreamEOF, StreamReset
from libp2p.peer.id import ID

from flocknode.logs import PeerLog
from flocknode.p2p.content import Sink
from flocknode.p2p.framing import (
    FRAME_HEADER,
    MAX_FRAME,
    OK_HEADER,
    PROTOCOL_BLOB,
    PROTOCOL_MODEL,
    FramingError,
    RefuseReason,
    Request,
    Status,
    decode_frame_header,
    decode_ok,
    encode_request,
)
from flocknode.p2p.host import P2PHost
from flocknode.p2p.metrics import BYTES_FETCHED, FETCH, FETCH_ATTEMPT_FAILED
from flocknode.p2p.stream_io import (
    StreamLimits,
    Truncated,
    first_error,
    read_exact,
    reset_quietly,
)

log = logging.getLogger(__name__)
peer_log = PeerLog(log)  # lines a peer can cause: rate-limited

READ_MAX = 4 << 20  # the most a requester asks one stream read for
BATCH_BYTES = 1 << 20  # content handed to the hashing/writing thread at a time
BATCH_PIECES = 64  # ... or this many pieces (a sender dribbling tiny reads)
# Every py-libp2p read costs a yamux window update and several task switches;
# a reader that wakes for each 64 KiB frame spends ~1 ms/MiB more CPU than one
# that lets data pile up (measured with bench/transfer.py). After a short read,
# pause briefly so the next one takes a larger batch.
LAZY_READ_BELOW = 256 << 10
LAZY_READ_PAUSE = 0.001
PIPELINE_DEPTH = 4  # batches queued between the network and the disk


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
    deadline: float = math.inf,
    attempt_seconds: Callable[[float], float] | None = None,
) -> FetchResult:
    """Fetch ``content_id`` into ``sink`` from the first holder that delivers it.

    Raises ``FetchFailed`` (with every attempt's reason) when no holder did,
    ``deadline`` passed included (the holders not tried are named "deadline").
    An error of the sink itself (a full disk) is ours, not the holder's: it is
    raised as is, after ``sink.abort()``.
    """
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
        now = trio.current_time()
        if now >= deadline:
            attempts.append(Attempt(holder, "deadline"))
            continue
        budget = attempt_seconds(deadline - now) if attempt_seconds is not None else math.inf
        try:
            with trio.move_on_at(min(deadline, now + budget)) as attempt:
                size = await _fetch_from(
                    p2p,
                    protocol,
                    holder,
                    request,
                    content_id,
                    sink,
                    max_size,
                    expected_size,
                    limits,
                )
            if attempt.cancelled_caught:
                raise _AttemptFailed("too_slow")
        except _AttemptFailed as e:
            attempts.append(Attempt(holder, e.reason))
            p2p.metrics.inc(FETCH_ATTEMPT_FAILED, e.reason)
            peer_log.info("attempt", "fetch attempt failed holder=%s reason=%s", holder, e.reason)
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
        await trio.to_thread.run_sync(_sink_call, sink.begin, size)
        began = True
        # a holder that dribbles (one byte per read timeout) is dropped as well
        with trio.move_on_after(limits.read_timeout + size / limits.min_rate) as whole:
            digest = await _receive_frames(stream, size, sink, limits.read_timeout)
        if whole.cancelled_caught:
            raise _AttemptFailed("too_slow")
        if digest != content_id:
            raise _AttemptFailed("wrong_hash")
        await trio.to_thread.run_sync(_sink_call, sink.commit)
        done = True
        return size
    except _AttemptFailed:
        raise
    except trio.TooSlowError:
        raise _AttemptFailed("timeout") from None
    except (Truncated, StreamEOF):
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
        # shielded: an attempt cut off by the caller's deadline still resets its
        # stream (reset_quietly is bounded by its own timeout)
        with trio.CancelScope(shield=True):
            if done:
                with trio.move_on_after(1):
                    with contextlib.suppress(Exception):
                        await stream.close()
            else:
                await reset_quietly(stream)


async def _read_response_header(stream: INetStream, content_id: bytes, timeout: float) -> int:
    with trio.fail_after(timeout):
        status = (await read_exact(stream, 1))[0]
        if status == Status.REFUSED:
            code = (await read_exact(stream, 1))[0]
            raise _AttemptFailed("refused_" + RefuseReason.label(code))
        if status == Status.NOT_FOUND:
            raise _AttemptFailed("not_found")
        if status != Status.OK:
            raise _AttemptFailed("bad_status")
        size, digest = decode_ok(await read_exact(stream, OK_HEADER.size))
    if digest != content_id:
        raise _AttemptFailed("wrong_announced_hash")
    return size


class _SinkError(Exception):
    def __init__(self, error: BaseException) -> None:
        self.error = error


def _sink_call(method: Callable[..., None], *args: int) -> None:
    try:
        method(*args)
    except Exception as e:
        raise _SinkError(e) from e


def _consume(hasher: hashlib._Hash, sink: Sink, pieces: list[memoryview]) -> None:
    try:
        for piece in pieces:
            hasher.update(piece)
        sink.write(pieces)
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
    frames; the writer hashes and writes them on a worker thread, about
    ``BATCH_BYTES`` at a time. At most ``PIPELINE_DEPTH`` batches wait between the
    two, so the network keeps moving while the disk works, in bounded memory
    (a batch may hold the tail of one read: < BATCH_BYTES + READ_MAX each).
    """
    hasher = hashlib.sha256()
    parser = _FrameParser(size)
    send, receive = trio.open_memory_channel[list[memoryview]](PIPELINE_DEPTH)

    async def write_out() -> None:
        async with receive:
            async for pieces in receive:
                await trio.to_thread.run_sync(_consume, hasher, sink, pieces)

    async def read_in() -> None:
        batch: list[memoryview] = []
        batched = 0
        # one deadline pushed forward after every read: cheaper than a scope per read
        with trio.CancelScope(deadline=trio.current_time() + timeout) as progress:
            async with send:
                while parser.remaining:
                    data = await stream.read(parser.next_read_size())
                    progress.deadline = trio.current_time() + timeout
                    if not data:
                        raise Truncated()
                    if len(data) < LAZY_READ_BELOW and parser.remaining > len(data):
                        await trio.sleep(LAZY_READ_PAUSE)  # let the next read take more
                    pieces = parser.feed(data)
                    batch += pieces
                    batched += sum(len(p) for p in pieces)
                    # reads often return ~100 KiB; a thread hand-off per read costs
                    # more CPU than the hashing, so hand over about a MiB at a time
                    full = batched >= BATCH_BYTES or len(batch) >= BATCH_PIECES
                    if full or (batch and not parser.remaining):
                        progress.deadline = math.inf  # waiting for our disk is not the peer's fault
                        await send.send(batch)
                        progress.deadline = trio.current_time() + timeout
                        batch, batched = [], 0
        if progress.cancelled_caught:
            raise trio.TooSlowError()

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(write_out)
            nursery.start_soon(read_in)
    except BaseExceptionGroup as group:
        raise first_error(group) from None
    return hasher.digest()
