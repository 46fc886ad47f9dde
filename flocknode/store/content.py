"""A content-addressed store: every object is a file named by its SHA-256.

Blobs (encrypted updates; ``blobId = sha256(ciphertext)``) and models (canonical
bytes; ``modelHash = sha256(canonical bytes)``) share one store. Writes go to a
temp file that is hashed while it is written, fsynced, and renamed to its hash,
so a crash leaves either nothing or a complete, verified object.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from flocknode.fsutil import fsync_dir

_OBJECT_NAME = re.compile(r"^[0-9a-f]{64}$")


class StoreError(Exception):
    """A write whose content does not match the id or size it was expected to have."""


@dataclass(frozen=True)
class ObjectStat:
    """One stored object as listed: which file it was (a rewrite is a new inode)."""

    size: int
    inode: int
    mtime_ns: int


class ObjectWriter:
    """A file being written into the store; ``commit()`` checks and publishes it."""

    def __init__(self, store: ContentStore, expect_id: bytes | None, max_size: int | None) -> None:
        self._store = store
        self._expect = expect_id
        self._max = max_size
        self._hash = hashlib.sha256()
        self.size = 0
        self.committed = False
        fd, tmp = tempfile.mkstemp(prefix=".incoming.", dir=store.root)
        self._tmp = Path(tmp)
        self._f: BinaryIO = os.fdopen(fd, "wb")

    def write(self, data: bytes | bytearray | memoryview) -> int:
        n = len(data)
        if self._max is not None and self.size + n > self._max:
            raise StoreError(f"object exceeds its size limit of {self._max} bytes")
        self._hash.update(data)
        self._f.write(data)
        self.size += n
        return n

    def commit(self) -> bytes:
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()
        cid = self._hash.digest()
        if self._expect is not None and cid != self._expect:
            self.abort()
            raise StoreError(f"content hash {cid.hex()} != expected {self._expect.hex()}")
        os.replace(self._tmp, self._store.object_path(cid))
        fsync_dir(self._store.root)
        self.committed = True
        return cid

    def abort(self) -> None:
        if not self._f.closed:
            self._f.close()
        with contextlib.suppress(FileNotFoundError):
            self._tmp.unlink()


class ContentStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        for stale in self.root.glob(".*"):  # temp files left by a crash mid-write
            stale.unlink(missing_ok=True)

    def object_path(self, cid: bytes) -> Path:
        if len(cid) != 32:
            raise ValueError("content ids are 32-byte SHA-256 digests")
        return self.root / cid.hex()

    def has(self, cid: bytes) -> bool:
        return self.object_path(cid).exists()

    def path(self, cid: bytes) -> Path | None:
        p = self.object_path(cid)
        return p if p.exists() else None

    def size(self, cid: bytes) -> int | None:
        p = self.path(cid)
        return p.stat().st_size if p else None

    @contextlib.contextmanager
    def writer(
        self, expect_id: bytes | None = None, max_size: int | None = None
    ) -> Iterator[ObjectWriter]:
        """Write an object; it is published on a clean exit, discarded on an error."""
        w = ObjectWriter(self, expect_id, max_size)
        try:
            yield w
        finally:
            if not w.committed:
                w.abort()

    def put_bytes(self, data: bytes, expect_id: bytes | None = None) -> bytes:
        with self.writer(expect_id) as w:
            w.write(data)
            return w.commit()

    def put_file(self, src: Path, expect_id: bytes | None = None) -> bytes:
        with self.writer(expect_id) as w, open(src, "rb") as f:
            while chunk := f.read(1 << 20):
                w.write(chunk)
            return w.commit()

    def read_bytes(self, cid: bytes) -> bytes:
        p = self.path(cid)
        if p is None:
            raise KeyError(cid.hex())
        return p.read_bytes()

    def open(self, cid: bytes) -> BinaryIO:
        p = self.path(cid)
        if p is None:
            raise KeyError(cid.hex())
        return open(p, "rb")

    def objects(self) -> dict[bytes, ObjectStat]:
        """Every complete object (blocking; temp files of writes in progress are skipped)."""
        out: dict[bytes, ObjectStat] = {}
        with os.scandir(self.root) as entries:
            for e in entries:
                if not _OBJECT_NAME.match(e.name):
                    continue
                try:
                    st = e.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                out[bytes.fromhex(e.name)] = ObjectStat(st.st_size, st.st_ino, st.st_mtime_ns)
        return out

    def remove(self, cid: bytes, listed: ObjectStat) -> bool:
        """Delete an object if it is still the file ``objects()`` listed (blocking).

        An object written again since (same content, new file) is left alone: it
        was wanted after the listing. A reader that has the file open keeps
        reading it; the content server answers "not found" to new requests.
        """
        p = self.object_path(cid)
        try:
            st = p.stat()
        except FileNotFoundError:
            return False
        if (st.st_ino, st.st_mtime_ns) != (listed.inode, listed.mtime_ns):
            return False
        p.unlink(missing_ok=True)
        return True

    def sync(self) -> None:
        """Make removals durable (one directory fsync)."""
        fsync_dir(self.root)

    def copy_out(self, cid: bytes, dst: Path) -> None:
        p = self.path(cid)
        if p is None:
            raise KeyError(cid.hex())
        shutil.copyfile(p, dst)
