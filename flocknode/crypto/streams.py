"""Sinks, sources and the hashing helper thread used by the envelope.

A *sink* is a ``bytearray`` (appended to) or anything with ``write(bytes)``
(a file, ``io.BytesIO``, :class:`flocknode.crypto.aio.AsyncSink`). A *source*
is ``bytes``/``bytearray``/``memoryview`` or anything with ``read(n)`` that
returns at most ``n`` bytes and ``b""`` at the end.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType
from typing import Any, Protocol


class SupportsWrite(Protocol):
    def write(self, data: bytes, /) -> Any: ...


class SupportsRead(Protocol):
    def read(self, n: int, /) -> bytes | bytearray | None: ...


Sink = bytearray | SupportsWrite
Source = bytes | bytearray | memoryview | SupportsRead
ReadFn = Callable[[int], bytes]
WriteFn = Callable[[bytes], None]


def sink_writer(sink: Sink) -> WriteFn:
    if isinstance(sink, bytearray):
        return sink.extend
    write = sink.write

    def write_all(data: bytes) -> None:
        n = write(data)
        # Raw (unbuffered) files may write less than asked; buffered ones never do.
        if isinstance(n, int) and 0 <= n < len(data):
            while n < len(data):
                step = write(data[n:])
                if not step:
                    raise OSError("sink accepted no bytes")
                n += step

    return write_all


class _MemoryReader:
    def __init__(self, data: bytes | bytearray | memoryview) -> None:
        self._view = memoryview(data).cast("B")
        self._pos = 0

    def read(self, n: int) -> bytes:
        out = bytes(self._view[self._pos : self._pos + n])
        self._pos += len(out)
        return out


def source_reader(source: Source) -> ReadFn:
    """A ``read(n)`` returning at most ``n`` bytes as ``bytes`` (``b""`` at the end),
    keeping any surplus a careless source hands out for the next call."""
    if isinstance(source, bytes | bytearray | memoryview):
        return _MemoryReader(source).read
    read = source.read
    surplus = b""

    def read_bytes(n: int) -> bytes:
        nonlocal surplus
        if surplus:
            out, surplus = surplus[:n], surplus[n:]
            return out
        data = read(n)
        if not data:
            return b""
        if len(data) > n:
            surplus = bytes(data[n:])
            data = data[:n]
        return data if isinstance(data, bytes) else bytes(data)

    return read_bytes


def read_exact(read: ReadFn, n: int) -> bytes:
    """Exactly ``n`` bytes, or fewer only where the source ends."""
    first = read(n)
    if len(first) == n or not first:
        return first
    parts = [first]
    got = len(first)
    while got < n:
        more = read(n - got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)


class _Hash(Protocol):
    def update(self, data: bytes, /) -> None: ...


def _run(jobs: tuple[tuple[_Hash, bytes], ...]) -> None:
    for h, data in jobs:
        h.update(data)


class HashPipe:
    """Feeds hash objects in order; moves the work to one helper thread once the
    stream passes ``thread_after`` bytes (hashlib releases the GIL on large
    buffers, so hashing then overlaps the caller's encryption). At most
    ``depth`` jobs wait, so memory stays at a few chunks. Read the digests only
    after the ``with`` block has ended.
    """

    def __init__(self, thread_after: int = 4 << 20, depth: int = 2) -> None:
        self._thread_after = thread_after
        self._depth = depth
        self._seen = 0
        self._pool: ThreadPoolExecutor | None = None
        self._pending: deque[Future[None]] = deque()

    def update(self, *jobs: tuple[_Hash, bytes]) -> None:
        self._seen += sum(len(data) for _, data in jobs)
        if self._pool is None:
            if self._seen < self._thread_after:
                _run(jobs)
                return
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="flock-hash")
        self._pending.append(self._pool.submit(_run, jobs))
        while len(self._pending) > self._depth:
            self._pending.popleft().result()

    def __enter__(self) -> HashPipe:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            while self._pending:
                fut = self._pending.popleft()
                if exc_type is None:
                    fut.result()
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=True)
