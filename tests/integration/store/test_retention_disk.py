"""Retention on disk: a real ContentStore and Journal over many rounds, then a restart.

Each simulated round leaves what a node leaves: blobs fetched as voter, its own
blob as proposer, its aggregate as voter, the applied global model (real
canonical model bytes through ModelBook) and journal records.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from flocknode.rounds.models import ModelBook
from flocknode.store import ContentStore, Journal
from flocknode.store.journal import RoundRecord, VoteRecord
from flocknode.store.retention import INDEX_NAME, StorePruner

KEEP = 3


def model(r: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(r)
    return {"w": torch.randn(64, 32, generator=g), "b": torch.randn(32, generator=g)}


def vote(aggregate: bytes) -> VoteRecord:
    return VoteRecord(aggregate.hex(), 0b11, 0, 0, 1500, os.urandom(32).hex())


class Node:
    """The data dir of one node, opened the way node.py opens it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.store = ContentStore(root / "store")
        self.journal = Journal(root / "journal")
        self.models = ModelBook(self.store, None)
        self.pruner = StorePruner(self.store, self.journal, KEEP)

    def play_round(self, r: int) -> tuple[set[bytes], bytes]:
        """One finished round; returns the objects it added and its global model."""
        added = {
            self.store.put_bytes(os.urandom(4096) + f"fetched {r} {i}".encode()) for i in (0, 1)
        }
        if r % 2 == 0:
            blob = self.store.put_bytes(os.urandom(8192))
            self.journal.update(r, role="proposer", seat=0, blob_id=blob.hex(), submitted=True)
            added.add(blob)
        new = self.models.put(model(r))
        if r % 2 == 1:  # a voter whose aggregate won
            self.journal.update(r, role="voter", seat=1, vote=vote(new), committed=True)
            self.journal.update(r, revealed=True)
        self.journal.update(r, applied_model=new.hex())
        return added | {new}, new


def test_old_rounds_go_current_model_and_open_round_stay_and_a_restart_carries_on(
    tmp_path: Path,
) -> None:
    node = Node(tmp_path)
    init = node.models.put(model(0))
    by_round: dict[int, set[bytes]] = {0: {init}}
    freed = 0
    for r in range(1, 11):
        by_round[r], current = node.play_round(r)
        report = node.pruner.prune(r, r, current)  # round r finalized, r + 1 not open yet
        freed += report.bytes_freed
        if r > KEEP:  # bounded: exactly the last KEEP rounds' objects stay
            window = set().union(*(by_round[x] for x in range(r - KEEP + 1, r + 1)))
            assert set(node.store.objects()) == window, r
            assert node.journal.rounds() == list(range(r - KEEP + 1, r + 1))
    assert freed > 0 and not node.store.has(init)

    # Round 11 is open: the node committed its vote and has not revealed it yet.
    agg11 = node.models.put(model(11))
    fetched11 = node.store.put_bytes(b"fetched in round 11")
    node.journal.update(11, role="voter", seat=0, vote=vote(agg11), committed=True)
    (node.store.root / ".incoming.tmp").write_bytes(b"a write in progress")
    report = node.pruner.prune(11, 10, current)

    window = set().union(*(by_round[x] for x in range(10 - KEEP + 1, 11)))
    assert set(node.store.objects()) == window | {agg11, fetched11}
    assert node.journal.rounds() == [8, 9, 10, 11]
    assert (node.store.root / ".incoming.tmp").exists(), "temp files are not objects"
    assert sorted(p.name for p in node.journal.root.iterdir()) == [
        f"round-{r}.json" for r in (10, 11, 8, 9)
    ]
    reopened = Journal(tmp_path / "journal").get(11)  # what a restart would reveal
    assert reopened.committed and not reopened.revealed
    assert reopened.vote == node.journal.get(11).vote and reopened.vote is not None
    old = by_round[1] | by_round[7]
    assert not any(node.store.has(c) for c in old)

    # Rounds 11..30 produce no model (rejected or voided): the current model and the
    # newest applied ones stay however old they get; the rest of the window moves on.
    for r in range(11, 31):
        report = node.pruner.prune(r + 1, r, current)
    assert node.store.has(current), "the current global model is never deleted"
    applied = {bytes.fromhex(node.journal.get(r).applied_model) for r in (8, 9, 10)}
    assert all(node.store.has(m) for m in applied)
    assert node.journal.rounds() == [8, 9, 10]
    # ... their records trimmed to just that: round 10's own blob is gone
    assert node.journal.get(10) == RoundRecord(10, applied_model=current.hex())
    assert by_round[10] & set(node.store.objects()) == {current}
    assert not node.store.has(agg11) and not node.store.has(fetched11)
    assert report.records == 0 and report.objects == 0  # a steady state prunes nothing

    # Restart: the same data dir opened again works and keeps its ages.
    again = Node(tmp_path)
    assert not (again.store.root / ".incoming.tmp").exists()
    assert again.journal.rounds() == [8, 9, 10]
    assert again.journal.get(9).applied_model in {m.hex() for m in applied}
    assert again.models.load(current)["w"].equal(model(10)["w"])
    blob = again.store.put_bytes(b"after the restart")
    assert again.store.read_bytes(blob) == b"after the restart"
    report = again.pruner.prune(32, 31, current)
    assert again.store.has(blob) and again.store.has(current)
    ages = json.loads((again.store.root / INDEX_NAME).read_text())["first_seen"]
    assert ages[blob.hex()] == 32 and ages[current.hex()] == 10
    # ... and the blob ages out KEEP rounds later like anything else
    again.pruner.prune(32 + KEEP + 1, 32 + KEEP, current)
    assert not again.store.has(blob)


def test_a_crash_between_steps_leaves_a_state_the_next_prune_finishes(tmp_path: Path) -> None:
    node = Node(tmp_path)
    for r in range(1, 5):
        _, current = node.play_round(r)
        node.pruner.prune(r + 1, r, current)
    blob2 = bytes.fromhex(node.journal.get(2).blob_id)
    assert node.journal.rounds() == [2, 3, 4]
    # Killed after the records went and before the objects did: a record is
    # whole or gone, the objects it named are left with nothing naming them.
    node.journal.drop([2, 3])
    again = Node(tmp_path)
    assert again.journal.rounds() == [4]
    assert again.store.has(blob2)
    again.pruner.prune(6, 5, current)  # horizon 2: round 2's blob is old by its index age
    assert not again.store.has(blob2)
    assert again.journal.rounds() == [4] and again.store.has(current)

    # A lost or mangled age index only makes objects start a new window.
    (again.store.root / INDEX_NAME).write_text("{not json")
    third = Node(tmp_path)
    before = set(third.store.objects())
    third.pruner.prune(7, 6, current)
    assert set(third.store.objects()) == before
    assert json.loads((third.store.root / INDEX_NAME).read_text())["version"] == 1


def test_an_object_written_again_after_the_listing_is_not_removed(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    c = store.put_bytes(b"same content")
    listed = store.objects()[c]
    store.put_bytes(b"same content")  # written again (a new file under the same name)
    assert not store.remove(c, listed)
    assert store.read_bytes(c) == b"same content"
    assert store.remove(c, store.objects()[c]) and not store.has(c)
