"""Content store and journal: verified, atomic, crash-safe."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from flocknode.store import ContentStore, Journal, StoreError
from flocknode.store.journal import JournalError, VoteRecord


def test_objects_are_named_by_their_sha256(tmp_path: Path) -> None:
    s = ContentStore(tmp_path)
    data = b"x" * 3_000_000
    cid = s.put_bytes(data)
    assert cid == hashlib.sha256(data).digest()
    assert s.has(cid) and s.size(cid) == len(data)
    assert s.read_bytes(cid) == data
    assert not s.has(bytes(32))


def test_wrong_hash_or_oversize_publishes_nothing(tmp_path: Path) -> None:
    s = ContentStore(tmp_path)
    with pytest.raises(StoreError, match="expected"):
        s.put_bytes(b"abc", expect_id=bytes(32))
    with pytest.raises(StoreError, match="size limit"), s.writer(max_size=10) as w:
        w.write(b"0123456789A")
    with s.writer() as w:  # left without commit: discarded
        w.write(b"partial")
    assert list(tmp_path.iterdir()) == []


def test_stale_incoming_files_are_cleaned_on_start(tmp_path: Path) -> None:
    (tmp_path / ".incoming.abc").write_bytes(b"torn")
    ContentStore(tmp_path)
    assert not (tmp_path / ".incoming.abc").exists()


def test_journal_is_durable_and_reloads(tmp_path: Path) -> None:
    j = Journal(tmp_path)
    vote = VoteRecord("ab" * 32, 0b101, 0b010, 0, -1200, "cd" * 32)
    j.update(3, role="voter", seat=1, vote=vote)
    j.update(3, committed=True)
    j.update(4, role="proposer", seat=0, blob_id="ee" * 32)
    again = Journal(tmp_path)
    assert again.rounds() == [3, 4]
    rec = again.get(3)
    assert rec.vote == vote and rec.committed and not rec.revealed
    assert again.get(9).role == ""


def test_unreadable_journal_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "round-2.json").write_text("{")
    with pytest.raises(JournalError, match=r"round-2\.json"):
        Journal(tmp_path)
