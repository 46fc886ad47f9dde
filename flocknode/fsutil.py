"""Atomic, durable file writes: temp file, fsync, rename, fsync the directory.

Every file the node writes goes through here, so ``kill -9`` at any moment leaves
either the old or the new content, never a torn file.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` atomically with file mode ``mode``."""
    atomic_write_pieces(path, [data], mode)


def atomic_write_pieces(
    path: Path, pieces: Iterable[bytes | memoryview], mode: int = 0o644
) -> None:
    """Write the ``pieces`` one after the other to ``path`` atomically (no joined copy)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            for piece in pieces:
                f.write(piece)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str, mode: int = 0o644) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), mode)


# -- large files written piece by piece (fetched content) -----------------------
# Linux system calls that os does not wrap; elsewhere (or on a file system that
# refuses them) both are no-ops and the final fsync does all the work.
_FALLOC_FL_KEEP_SIZE = 0x01
_SYNC_FILE_RANGE_WRITE = 0x2
_CANNOT_RESERVE = {errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS, errno.EINVAL}


def _libc_call(name: str) -> Any | None:
    try:
        fn = getattr(ctypes.CDLL(None, use_errno=True), name)
    except (OSError, AttributeError):
        return None
    fn.restype = ctypes.c_int
    return fn


_fallocate = _libc_call("fallocate")
if _fallocate is not None:
    _fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
_sync_file_range = _libc_call("sync_file_range")
if _sync_file_range is not None:
    _sync_file_range.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]


def reserve_space(fd: int, size: int) -> None:
    """Allocate ``size`` bytes of disk for ``fd`` up front (file length unchanged).

    A full disk then fails here, before a transfer, with ENOSPC; and blocks are
    allocated once instead of write by write. Unlike ``os.posix_fallocate`` it
    never falls back to writing zeros where the file system cannot do it.
    """
    if _fallocate is None or size <= 0:
        return
    while _fallocate(fd, _FALLOC_FL_KEEP_SIZE, 0, size) != 0:
        err = ctypes.get_errno()
        if err == errno.EINTR:
            continue
        if err in _CANNOT_RESERVE:
            return  # the file system cannot reserve: write as usual
        raise OSError(err, os.strerror(err))  # ENOSPC, EDQUOT, EFBIG, EIO...


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to start writing this range to disk now, without waiting.

    A writer calling this as it goes leaves little for its final fsync.
    """
    if _sync_file_range is not None and length > 0:
        _sync_file_range(fd, offset, length, _SYNC_FILE_RANGE_WRITE)
