"""Sinks, sources, the hashing helper thread and the async adaptors."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
import torch
import trio
import trio.testing
from nacl.public import PrivateKey

from flocknode.crypto.aio import open_update_from, seal_update_to
from flocknode.crypto.envelope import HEAD_LEN, EnvelopeError, SealedUpdate
from flocknode.crypto.streams import BackgroundSha256, read_exact, sink_writer, source_reader

T = TypeVar("T")


def test_background_sha256_inline_and_threaded() -> None:
    spans = [memoryview(bytes([i]) * (300_000 + i)) for i in range(20)]
    want = hashlib.sha256(b"".join(spans)).digest()
    for thread_after in (0, 1_000_000, 1 << 40):
        with BackgroundSha256(thread_after=thread_after) as h:
            for span in spans:
                h.add(span)
            threaded = h._thread is not None
            assert h.digest() == want
        assert threaded == (thread_after < 1 << 40)


def test_background_sha256_bounds_pending_bytes() -> None:
    unit = 1 << 20
    spans = [bytes([i]) * unit for i in range(40)]
    most = 0
    with BackgroundSha256(thread_after=0, batch=2 * unit, max_pending=4 * unit) as h:
        for span in spans:
            h.add(span)
            most = max(most, h._pending)
        assert h.digest() == hashlib.sha256(b"".join(spans)).digest()
    assert 2 * unit <= most <= 4 * unit


def test_background_sha256_stops_on_error() -> None:
    big = memoryview(bytes(8 << 20))
    with pytest.raises(RuntimeError, match="stop"), BackgroundSha256(thread_after=0) as h:
        for _ in range(50):
            h.add(big)
        raise RuntimeError("stop")
    assert h._thread is not None and not h._thread.is_alive()


def test_partial_writes_and_short_reads() -> None:
    got = bytearray()

    class Raw:
        def write(self, data: bytes) -> int:
            got.extend(data[:3])
            return min(3, len(data))

    sink_writer(Raw())(b"0123456789")
    assert got == b"0123456789"
    out = bytearray()
    sink_writer(out)(b"ab")
    assert out == b"ab"

    class Dribble:
        def __init__(self) -> None:
            self.left = b"abcdefgh"

        def read(self, n: int) -> bytearray:
            part, self.left = self.left[:2], self.left[2:]
            return bytearray(part)

    read = source_reader(Dribble())
    assert read_exact(read, 5) == b"abcde"
    assert read_exact(read, 5) == b"fgh"
    assert read_exact(read, 5) == b""
    mem = source_reader(memoryview(b"xyz"))
    assert read_exact(mem, 2) == b"xy" and read_exact(mem, 2) == b"z"


async def _pipe_through(
    data: bytes, receiver: Callable[[trio.abc.ReceiveStream], Awaitable[T]]
) -> T:
    """Feed ``data`` in small pieces into a stream while ``receiver`` consumes it;
    return its result or raise its error."""
    send, receive = trio.testing.memory_stream_pair()
    outcome: list[T | Exception] = []

    async def feed() -> None:
        for i in range(0, len(data), 10_000):
            await send.send_all(data[i : i + 10_000])
        await send.send_eof()

    async def consume() -> None:
        try:
            outcome.append(await receiver(receive))
        except Exception as e:
            outcome.append(e)
            await receive.aclose()

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(feed)
            nursery.start_soon(consume)
    if isinstance(outcome[0], Exception):
        raise outcome[0]
    return outcome[0]


async def test_seal_and_open_through_trio_streams() -> None:
    sender, voter = PrivateKey.generate(), PrivateKey.generate()
    tensors = {"w": torch.randn(3 << 16), "b": torch.randn(9)}  # 768 KiB, 12 chunks
    send, receive = trio.testing.memory_stream_pair()
    received = bytearray()
    sealed: list[SealedUpdate] = []

    async def seal() -> None:
        sealed.append(
            await seal_update_to(
                tensors, send.send_all, sender=sender, recipients=[voter.public_key],
                chunk_size=1 << 16,
            )
        )  # fmt: skip
        await send.send_eof()

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(seal)
            # The pair has no buffer: the sealer's writes wait for these reads.
            while chunk := await receive.receive_some(1 << 16):
                received += chunk
    (result,) = sealed
    assert hashlib.sha256(received).digest() == result.blob_id
    wrap = result.wraps[0]
    kwargs: dict[str, Any] = {
        "recipient": voter,
        "sender": sender.public_key,
        "update_hash": result.update_hash,
    }

    async def open_from(stream: trio.abc.ReceiveStream) -> dict[str, torch.Tensor]:
        return await open_update_from(stream.receive_some, wrap, **kwargs)

    out = await _pipe_through(bytes(received), open_from)
    assert torch.equal(out["w"], tensors["w"]) and torch.equal(out["b"], tensors["b"])
    with pytest.raises(EnvelopeError):
        await _pipe_through(bytes(received[:-5]), open_from)

    class Ended(Exception):
        pass

    async def open_raising_at_end(stream: trio.abc.ReceiveStream) -> dict[str, torch.Tensor]:
        async def receive(n: int) -> bytes:  # like py-libp2p: an exception, not b""
            data = await stream.receive_some(n)
            if not data:
                raise Ended
            return data

        return await open_update_from(receive, wrap, eof_errors=(Ended,), **kwargs)

    out = await _pipe_through(bytes(received), open_raising_at_end)
    assert torch.equal(out["w"], tensors["w"])
    cut = HEAD_LEN + 6 * ((1 << 16) + 17)  # a chunk boundary
    with pytest.raises(EnvelopeError, match="truncated at chunk 6"):
        await _pipe_through(bytes(received[:cut]), open_raising_at_end)
