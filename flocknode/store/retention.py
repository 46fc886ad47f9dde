"""Retention: what the content store and the round journal keep, and the pruner.

A node runs for weeks and every round adds to its data dir: its update blob (as
proposer), the blobs it fetched and the aggregate it computed (as voter), the
new global model, and a journal record. After each finished round the round
engine asks the pruner to drop what fell out of the window of the last
``keep_rounds`` finished rounds (``[store] keep_rounds``).

What references what:
- a journal record names its proposer blob (``blob_id``), its vote's aggregate
  model (``vote.aggregate_hash``) and the global model that round produced
  (``applied_model``, written by the engine once the node holds that model);
- the blobs a voter fetched are named only on chain: like every object they age
  by the round in which the pruner first saw them (``first_seen``, kept in
  ``retention.json`` beside the objects) or of the oldest record naming them.

Never deleted: the chain's current global model (the node serves it to late
joiners over /flock/model/1); the newest ``keep_rounds`` applied models (an
old record that names one is trimmed to just that); a record of a round that is
not finished on chain (a vote may still be committed or revealed, its blobs
fetched) and every object a kept record names. An object whose age is unknown
starts a new window: kept longer, never dropped early.

Crash safety: records are trimmed or dropped before the objects they name go,
and the index is written last, so a crash between steps leaves only objects nothing names, which the
next prune finds again. The restart path reads the current round's record and
the current global model, and neither is ever in a plan.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from flocknode.fsutil import atomic_write_text
from flocknode.store.content import ContentStore
from flocknode.store.journal import Journal, RoundRecord

log = logging.getLogger(__name__)

INDEX_NAME = "retention.json"  # not a 64-hex name: never taken for an object
INDEX_VERSION = 1


@dataclass(frozen=True)
class RetentionView:
    """What the chain says, as the engine saw it when the round finished."""

    current_round: int
    finished_through: int  # every round up to this one is finalized or voided
    global_model: bytes  # the chain's current global model hash
    keep_rounds: int


@dataclass(frozen=True)
class PrunePlan:
    records: tuple[int, ...]  # journal rounds to drop
    objects: tuple[bytes, ...]  # content ids to delete
    first_seen: dict[bytes, int]  # the age index of what stays
    trimmed: tuple[int, ...] = ()  # old rounds kept for their applied model only


def _content_id(text: str) -> bytes | None:
    """A record's hex reference as a content id; None for empty or malformed ones."""
    try:
        cid = bytes.fromhex(text)
    except ValueError:
        return None
    return cid if len(cid) == 32 else None


def record_refs(rec: RoundRecord) -> set[bytes]:
    """The content ids a journal record names."""
    texts = [rec.blob_id, rec.applied_model, rec.vote.aggregate_hash if rec.vote else ""]
    return {cid for t in texts if (cid := _content_id(t)) is not None}


def newest_applied(records: Mapping[int, RoundRecord], keep: int) -> dict[int, bytes]:
    """The rounds whose records hold the newest ``keep`` distinct applied models."""
    chosen: dict[int, bytes] = {}
    for r in sorted(records, reverse=True):
        if len(chosen) >= keep:
            break
        h = _content_id(records[r].applied_model)
        if h is not None and h not in chosen.values():
            chosen[r] = h
    return chosen


def plan_prune(
    view: RetentionView,
    records: Mapping[int, RoundRecord],
    objects: Iterable[bytes],
    first_seen: Mapping[bytes, int],
) -> PrunePlan:
    """What to delete. Pure: the caller lists the store and reads the journal.

    A round ``r`` is old when ``r <= finished_through - keep_rounds``; an
    object's age is the oldest of its ``first_seen`` round and the rounds of the
    records naming it, and one never seen before is as old as the current round.
    """
    now = view.current_round
    ages: dict[bytes, int] = {}
    for r, rec in records.items():
        for cid in record_refs(rec):
            ages[cid] = min(ages.get(cid, r), r)
    index: dict[bytes, int] = {}
    for cid in objects:
        index[cid] = min(first_seen.get(cid, now), ages.get(cid, now), now)
    usable = view.keep_rounds > 0 and view.finished_through >= 1 and len(view.global_model) == 32
    if not usable:  # disabled, or the chain not read yet: only age what is there
        return PrunePlan((), (), index)
    horizon = view.finished_through - view.keep_rounds
    applied = newest_applied(records, view.keep_rounds)
    # Records of unfinished rounds are above the horizon (finished_through > horizon).
    window = {r for r in records if r > horizon}
    # An old record kept for its applied model keeps nothing else (its blob goes).
    trimmed = sorted(
        r for r in applied if r not in window and records[r] != _applied_only(r, applied[r])
    )
    protected = {view.global_model, *applied.values()}
    for r in window:
        protected |= record_refs(records[r])
    drop = [cid for cid, age in index.items() if age <= horizon and cid not in protected]
    for cid in drop:
        del index[cid]
    return PrunePlan(
        records=tuple(sorted(set(records) - window - set(applied))),
        objects=tuple(sorted(drop)),
        first_seen=index,
        trimmed=tuple(trimmed),
    )


def _applied_only(r: int, model: bytes) -> RoundRecord:
    return RoundRecord(round=r, applied_model=model.hex())


@dataclass(frozen=True)
class PruneReport:
    records: int  # journal records dropped
    objects: int  # objects deleted
    bytes_freed: int
    removed: tuple[bytes, ...]
    kept_objects: int
    kept_bytes: int


class StorePruner:
    """The I/O around ``plan_prune``: list, plan, delete, save the age index.

    Blocking (directory walk, unlinks, fsyncs): call it from a worker thread.
    """

    def __init__(self, store: ContentStore, journal: Journal, keep_rounds: int) -> None:
        self.store = store
        self.journal = journal
        self.keep_rounds = keep_rounds
        self.index_path = store.root / INDEX_NAME
        self._first_seen: dict[bytes, int] | None = None
        self._lock = threading.Lock()

    def prune(self, current_round: int, finished_through: int, global_model: bytes) -> PruneReport:
        with self._lock:
            listed = self.store.objects()
            view = RetentionView(current_round, finished_through, global_model, self.keep_rounds)
            records = self.journal.records()
            plan = plan_prune(view, records, listed, self._index())
            for r in plan.trimmed:  # records first: nothing kept names what goes
                self.journal.rewrite(_applied_only(r, bytes.fromhex(records[r].applied_model)))
            dropped = self.journal.drop(list(plan.records))
            removed: list[bytes] = []
            index = dict(plan.first_seen)
            for cid in plan.objects:
                if self.store.remove(cid, listed[cid]):
                    removed.append(cid)
                else:  # written again since the listing: wanted, so it starts over
                    index[cid] = current_round
            if removed:
                self.store.sync()
            self._save_index(index)
            freed = sum(listed[c].size for c in removed)
            return PruneReport(
                records=dropped,
                objects=len(removed),
                bytes_freed=freed,
                removed=tuple(removed),
                kept_objects=len(listed) - len(removed),
                kept_bytes=sum(s.size for s in listed.values()) - freed,
            )

    def _index(self) -> dict[bytes, int]:
        if self._first_seen is None:
            self._first_seen = self._load_index()
        return self._first_seen

    def _load_index(self) -> dict[bytes, int]:
        """The saved ages; a missing or unreadable file only makes objects start over."""
        try:
            doc = json.loads(self.index_path.read_text())
            seen = doc["first_seen"]
            if doc.get("version") != INDEX_VERSION or not isinstance(seen, dict):
                raise ValueError("unknown format")
            out = {}
            for k, v in seen.items():
                cid = _content_id(k)
                if cid is not None and isinstance(v, int) and not isinstance(v, bool):
                    out[cid] = v
            return out
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            log.warning(
                "store age index unreadable, ages start over path=%s error=%s", self.index_path, e
            )
            return {}

    def _save_index(self, index: dict[bytes, int]) -> None:
        if index == self._first_seen and self.index_path.exists():
            return
        doc = {
            "version": INDEX_VERSION,
            "first_seen": {k.hex(): v for k, v in sorted(index.items())},
        }
        atomic_write_text(self.index_path, json.dumps(doc, indent=0))
        self._first_seen = index
