"""Where served content comes from and where fetched content goes.

``BlobSource`` is what the stream server reads for ``/flock/model/1``:
``path(content_id)`` of a file whose bytes hash to ``content_id`` (SHA-256), or
None. The content store (``flocknode.store.ContentStore``) has exactly this
method; ``PrefixedSource`` narrows a source to files of one format (the node
serves only canonical model files as models), and ``DirectoryBlobSource`` is a
directory of content files for tests and benchmarks.

``RoundBlobSource`` is what it reads for ``/flock/blob/1``:
``path_in_round(content_id, round)``, the file only if this node holds the
blob as an update of ``round`` (the server then checks the requester against
that round's voters). ``SealedBlobs`` answers it from a source and a check
(the node: the round journal names the blob it sealed for each round).
``DirectoryBlobSource`` offers every file to every round.

A ``Sink`` receives one fetch attempt. The fetcher calls its methods from a
worker thread (they may block): ``begin(size)`` once the server announced a
size the caller accepts, ``write(pieces)`` with the next pieces of the content
in order (about a MiB at a time), then ``commit()`` after the hash checked out,
or ``abort()`` (the next holder may follow with a fresh ``begin``). A sink never
holds more than the announced size.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO, Protocol

from flocknode.fsutil import fsync_dir, reserve_space, start_writeback

Pieces = Sequence[bytes | memoryview]


class BlobSource(Protocol):
    def path(self, content_id: bytes) -> Path | None:
        """A file holding the content whose SHA-256 is ``content_id``, or None."""
        ...


class RoundBlobSource(Protocol):
    def path_in_round(self, content_id: bytes, round: int) -> Path | None:
        """The file of update blob ``content_id`` if held as a blob of ``round``, or None."""
        ...


class DirectoryBlobSource:
    """Content files named by the hex SHA-256 in one directory (tests, benchmarks).

    As a ``RoundBlobSource`` it offers every file to every round.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, content_id: bytes) -> Path | None:
        if len(content_id) != 32:
            return None
        p = self.root / content_id.hex()
        return p if p.is_file() else None

    def path_in_round(self, content_id: bytes, round: int) -> Path | None:
        return self.path(content_id)


class SealedBlobs:
    """The blobs of ``source`` that ``sealed_in(content_id, round)`` says belong to ``round``."""

    def __init__(self, source: BlobSource, sealed_in: Callable[[bytes, int], bool]) -> None:
        self._source, self._sealed_in = source, sealed_in

    def path_in_round(self, content_id: bytes, round: int) -> Path | None:
        if not self._sealed_in(content_id, round):
            return None
        return self._source.path(content_id)


class PrefixedSource:
    """The files of ``source`` whose first bytes are ``prefix`` (blocking: reads them)."""

    def __init__(self, source: BlobSource, prefix: bytes) -> None:
        self._source, self._prefix = source, prefix

    def path(self, content_id: bytes) -> Path | None:
        p = self._source.path(content_id)
        if p is None:
            return None
        try:
            with open(p, "rb") as f:
                head = f.read(len(self._prefix))
        except OSError:
            return None
        return p if head == self._prefix else None


class Sink(Protocol):
    def begin(self, size: int) -> None: ...
    def write(self, pieces: Pieces) -> None: ...
    def commit(self) -> None: ...
    def abort(self) -> None: ...


class MemorySink:
    """Collects the content in one buffer of exactly the announced size."""

    def __init__(self) -> None:
        self._buf: bytearray | None = None
        self._pos = 0
        self.data: bytes | bytearray | None = None  # set by commit()

    def begin(self, size: int) -> None:
        self._buf = bytearray(size)
        self._pos = 0

    def write(self, pieces: Pieces) -> None:
        assert self._buf is not None
        for data in pieces:
            end = self._pos + len(data)
            if end > len(self._buf):
                raise ValueError("write past the announced size")
            self._buf[self._pos : end] = data
            self._pos = end

    def commit(self) -> None:
        self.data, self._buf = self._buf, None

    def abort(self) -> None:
        self._buf = None


WRITEBACK_EVERY = 8 << 20  # bytes written between two start_writeback calls


class FileSink:
    """Writes to a temp file next to ``path``; commit fsyncs and renames it into place.

    ``begin`` reserves the announced size on disk (a full disk fails before the
    transfer), and writing starts the disk writeback every ``WRITEBACK_EVERY``
    bytes, so ``commit``'s fsync finds little left to do.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._f: BinaryIO | None = None
        self._tmp: Path | None = None
        self._size = 0
        self._written = 0
        self._synced = 0

    def begin(self, size: int) -> None:
        self.abort()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        self._tmp, self._f = Path(tmp), os.fdopen(fd, "wb", buffering=0)
        self._size, self._written, self._synced = size, 0, 0
        try:
            reserve_space(fd, size)
        except OSError:
            self.abort()
            raise

    def write(self, pieces: Pieces) -> None:
        assert self._f is not None
        total = sum(len(p) for p in pieces)
        if self._written + total > self._size:
            raise ValueError("write past the announced size")
        fd = self._f.fileno()
        done = os.writev(fd, pieces)  # one system call for the batch
        if done < total:  # rare (a signal, nearly full disk): write the rest
            rest = memoryview(b"".join(pieces))[done:]
            while rest:
                rest = rest[os.write(fd, rest) :]
        self._written += total
        if self._written - self._synced >= WRITEBACK_EVERY:
            start_writeback(fd, self._synced, self._written - self._synced)
            self._synced = self._written

    def commit(self) -> None:
        assert self._f is not None and self._tmp is not None
        os.fsync(self._f.fileno())
        self._f.close()
        os.replace(self._tmp, self.path)
        fsync_dir(self.path.parent)
        self._f = self._tmp = None

    def abort(self) -> None:
        if self._f is not None:
            self._f.close()
        if self._tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                self._tmp.unlink()
        self._f = self._tmp = None
