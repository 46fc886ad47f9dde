"""Sinks and the directory blob source (real files in tmp_path)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from flocknode.p2p.content import DirectoryBlobSource, FileSink, MemorySink


def test_directory_source(tmp_path: Path) -> None:
    cid = hashlib.sha256(b"x").digest()
    (tmp_path / cid.hex()).write_bytes(b"x")
    src = DirectoryBlobSource(tmp_path)
    assert src.path(cid) == tmp_path / cid.hex()
    assert src.path(b"\x00" * 32) is None and src.path(b"short") is None


def test_memory_sink_holds_exactly_the_announced_size() -> None:
    s = MemorySink()
    s.begin(5)
    s.write([b"ab", memoryview(b"c")])
    with pytest.raises(ValueError):
        s.write([b"def"])
    s.write([b"de"])
    s.commit()
    assert s.data == bytearray(b"abcde")
    s.begin(3)
    s.abort()
    assert s.data == bytearray(b"abcde")


def test_file_sink_commit_and_abort(tmp_path: Path) -> None:
    target = tmp_path / "d" / "obj"
    s = FileSink(target)
    s.begin(4)
    s.write([b"ab"])
    s.abort()  # a failed attempt leaves nothing behind
    assert not target.parent.exists() or list(target.parent.iterdir()) == []
    s.begin(4)
    s.write([b"a", memoryview(b"bcd")])
    with pytest.raises(ValueError):
        s.write([b"e"])
    s.commit()
    assert target.read_bytes() == b"abcd"
    assert [p.name for p in target.parent.iterdir()] == ["obj"]


def test_file_sink_reserves_the_announced_size_up_front(tmp_path: Path) -> None:
    size = 8 << 20
    s = FileSink(tmp_path / "obj")
    s.begin(size)
    (tmp,) = list(tmp_path.iterdir())
    st = tmp.stat()
    if st.st_blocks * 512 < size:
        s.abort()
        pytest.skip("this file system does not reserve space (fallocate refused)")
    assert st.st_size == 0  # reserved, not zero-filled: the length grows with the writes
    data = bytes(range(256)) * (size // 256)
    for i in range(0, size, 1 << 20):
        s.write([data[i : i + (1 << 20)]])
    s.commit()
    assert (tmp_path / "obj").read_bytes() == data


def test_file_sink_with_no_room_fails_at_begin_and_leaves_nothing(tmp_path: Path) -> None:
    s = FileSink(tmp_path / "d" / "obj")
    with pytest.raises(OSError):
        s.begin(1 << 62)  # more than any disk: ENOSPC (or EFBIG) before a byte moves
    assert list((tmp_path / "d").iterdir()) == []
