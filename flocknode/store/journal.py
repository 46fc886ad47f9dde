"""The round journal: what this node did in each round, durable before it acts.

One small JSON file per round, rewritten atomically (temp file, fsync, rename)
on every change. The order of writes is the crash-safety argument: the vote and
its salt are journaled *before* the commit transaction is sent, so a node killed
at any moment can still reveal what it committed.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from flocknode.fsutil import atomic_write_text


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


class Journal:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._cache: dict[int, RoundRecord] = {}
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
        return sorted(self._cache)

    def update(self, round: int, **changes: Any) -> RoundRecord:
        """Apply ``changes`` to the round's record and make it durable before returning."""
        rec = replace(self.get(round), **changes)
        atomic_write_text(self.root / f"round-{round}.json", json.dumps(asdict(rec), indent=1))
        self._cache[round] = rec
        return rec
