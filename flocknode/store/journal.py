"""The round journal: what this node did in each round, durable before it acts.

One small JSON file per round, rewritten atomically (temp file, fsync, rename)
on every change. The order of writes is the crash-safety argument: the vote and
its salt are journaled *before* the commit transaction is sent, so a node killed
at any moment can still reveal what it committed.

The round services write through ``update_async``: the write and its fsyncs
run in a worker thread, so the event loop (gossip, streams, the chain follower)
goes on meanwhile, and the caller resumes only once the record is durable.
Records of finished rounds are dropped by the store's retention
(``flocknode.store.retention``) from a worker thread too, hence the lock.
"""

from __future__ import annotations

import functools
import json
import os
import re
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import trio

from flocknode.fsutil import atomic_write_text, fsync_dir


class JournalError(Exception):
    """A journal file that cannot be read back (edited by hand or a broken disk)."""


_NAME = re.compile(r"^round-(\d{1,12})\.json$")


@dataclass(frozen=True)
class VoteRecord:
    aggregate_hash: str  # hex
    included_bits: int
    rejected_bits: int
    flag_bits: int
    score: int
    salt: str  # hex, 32 bytes


@dataclass(frozen=True)
class RoundRecord:
    round: int
    role: str = ""  # "proposer", "voter" or "" (not elected)
    seat: int = -1
    # proposer path
    update_hash: str = ""
    blob_id: str = ""
    blob_size: int = 0
    submitted: bool = False
    wraps_sent: bool = False
    # voter path
    vote: VoteRecord | None = None
    committed: bool = False
    revealed: bool = False
    # every node
    applied_model: str = ""
    notes: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> RoundRecord:
        vote = doc.pop("vote", None)
        rec = cls(**doc)
        return replace(rec, vote=VoteRecord(**vote)) if vote else rec


def noted_seconds(notes: dict[str, Any], key: str, since: float) -> dict[str, Any]:
    """``notes`` plus ``key``: the seconds since ``since`` (``time.monotonic``), a timing
    for reports (bench/scale.py), never decided on."""
    return {**notes, key: time.monotonic() - since}


class Journal:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._cache: dict[int, RoundRecord] = {}
        self._lock = threading.Lock()
        for p in self.root.iterdir():
            m = _NAME.match(p.name)
            if m:
                try:
                    rec = RoundRecord.from_json(json.loads(p.read_text()))
                except (ValueError, TypeError) as e:
                    raise JournalError(f"{p}: unreadable journal record ({e})") from None
                self._cache[rec.round] = rec

    def get(self, round: int) -> RoundRecord:
        return self._cache.get(round) or RoundRecord(round=round)

    def rounds(self) -> list[int]:
        with self._lock:
            return sorted(self._cache)

    def records(self) -> dict[int, RoundRecord]:
        """A copy of every record, by round."""
        with self._lock:
            return dict(self._cache)

    def update(self, round: int, **changes: Any) -> RoundRecord:
        """Apply ``changes`` to the round's record and make it durable before returning."""
        with self._lock:
            return self._write(replace(self.get(round), **changes))

    async def update_async(self, round: int, **changes: Any) -> RoundRecord:
        """``update`` in a worker thread; durable when it returns, as ``update``.

        A write that has started is not abandoned when the caller is cancelled:
        it completes (whole, by the atomic rename) before Cancelled is
        delivered, so the record on disk is the one the caller would have
        acted on, and the caller does not act.
        """
        write = functools.partial(self.update, round, **changes)
        rec = await trio.to_thread.run_sync(write)
        await trio.lowlevel.checkpoint_if_cancelled()  # cancelled meanwhile: do not act
        return rec

    def rewrite(self, rec: RoundRecord) -> None:
        """Replace a round's record as a whole (durable before returning)."""
        with self._lock:
            self._write(rec)

    def drop(self, rounds: list[int]) -> int:
        """Delete the records of ``rounds`` (blocking); returns how many existed.

        A crash part-way leaves some of them: a record is whole or gone, never torn.
        """
        dropped = 0
        for r in rounds:
            with self._lock:
                try:
                    os.unlink(self._path(r))
                    dropped += 1
                except FileNotFoundError:
                    pass
                self._cache.pop(r, None)
        if dropped:
            fsync_dir(self.root)
        return dropped

    def _write(self, rec: RoundRecord) -> RoundRecord:
        atomic_write_text(self._path(rec.round), json.dumps(asdict(rec), indent=1))
        self._cache[rec.round] = rec
        return rec

    def _path(self, round: int) -> Path:
        return self.root / f"round-{round}.json"
