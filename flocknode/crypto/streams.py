"""Sinks, sources and the hashing helper thread used by the envelope.

A *sink* is a ``bytearray`` (appended to) or anything with ``write(bytes)``
(a file, ``io.BytesIO``, :class:`flocknode.crypto.aio.AsyncSink`). A *source*
is ``bytes``/``bytearray``/``memoryview`` or anything with ``read(n)`` that
returns at most ``n`` bytes and ``b""`` at the end.
"""

from __future__ import annotations

import hashlib
import threading
from collections import deque
from collections.abc import Callable
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


# Bytes hashed inline before BackgroundSha256 starts its thread (bench/envelope.py
# raises it to measure the serial pipeline).
THREAD_AFTER = 1 << 20


class BackgroundSha256:
    """SHA-256 over spans of memory that no longer change (input tensors, filled
    output tensors, ciphertext chunks), computed on one helper thread while the
    caller goes on.

    hashlib releases the GIL on large buffers, so the hashing overlaps the
    caller's encryption or decryption on a second core. Until ``thread_after``
    bytes have been added the spans are hashed inline (small inputs start no
    thread); after that they are handed over in batches of ``batch`` bytes
    (each hand-over wakes the helper, a GIL hand-off). With ``max_pending`` the
    caller waits in :meth:`add` while that many bytes are handed over but not
    yet hashed, so spans that would otherwise be freed (ciphertext chunks) do
    not pile up; without it the caller only waits in :meth:`digest`. Use as a
    context manager so an error stops the helper.
    """

    def __init__(
        self,
        thread_after: int | None = None,
        batch: int = 4 << 20,
        max_pending: int | None = None,
    ) -> None:
        self._hash = hashlib.sha256()
        self._thread_after = THREAD_AFTER if thread_after is None else thread_after
        self._batch = batch
        self._max_pending = max_pending
        self._added = 0
        self._local: list[memoryview | bytes] = []  # spans not yet handed over
        self._local_bytes = 0
        self._queue: deque[memoryview | bytes] = deque()
        self._pending = 0  # bytes handed over, not yet hashed
        self._cond = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None
        self._abandoned = False
        self._error: BaseException | None = None

    def add(self, span: memoryview | bytes) -> None:
        if self._thread is None:
            self._added += len(span) if isinstance(span, bytes) else span.nbytes
            if self._added < self._thread_after:
                self._hash.update(span)
                return
            self._thread = threading.Thread(target=self._run, name="flock-sha256", daemon=True)
            self._thread.start()
        self._local.append(span)
        self._local_bytes += len(span) if isinstance(span, bytes) else span.nbytes
        if self._local_bytes >= self._batch:
            self._hand_over()

    def _hand_over(self) -> None:
        with self._cond:
            if self._max_pending is not None:
                while (
                    self._pending
                    and self._pending + self._local_bytes > self._max_pending
                    and self._error is None
                ):
                    self._cond.wait()
            self._queue.extend(self._local)
            self._pending += self._local_bytes
            self._cond.notify_all()
        self._local = []
        self._local_bytes = 0

    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    while not self._queue and not self._closed:
                        self._cond.wait()
                    if not self._queue:
                        return
                    batch = list(self._queue)
                    self._queue.clear()
                for span in batch:
                    if self._abandoned:
                        return
                    self._hash.update(span)
                with self._cond:
                    self._pending -= sum(
                        len(x) if isinstance(x, bytes) else x.nbytes for x in batch
                    )
                    self._cond.notify_all()
        except BaseException as e:  # pragma: no cover - hashlib does not fail
            with self._cond:
                self._error = e
                self._cond.notify_all()

    def _stop(self, abandon: bool) -> None:
        if not abandon and self._local:
            self._hand_over()
        with self._cond:
            if abandon:
                self._abandoned = True
                self._queue.clear()
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join()

    def digest(self) -> bytes:
        self._stop(abandon=False)
        if self._error is not None:  # pragma: no cover
            raise self._error
        return self._hash.digest()

    def __enter__(self) -> BackgroundSha256:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop(abandon=exc_type is not None)
