"""What the node learned from gossip: announced blobs, key wraps, model holders.

Facts only; whether a fact is *useful* (the origin is the proposer that
submitted this blob on chain, the wrap opens) is decided where it is used.

Bounded per origin, so one member cannot crowd out the others (docs/protocol.md
"Gossip table caps"):
- rounds: only the last ``GOSSIP_ROUNDS_KEPT`` rounds are kept
  (flocknode.rounds.windows; the validator admits only the current and the
  next round);
- blobs: an origin announces, and sends wraps for, at most ``blobs_per_origin``
  blob ids per round (an honest proposer names one; an honest voter relays key
  wraps for each seat it opened, so the node sets it to the task's proposers
  per round, never below ``BLOBS_PER_ORIGIN``);
- models: an origin holds at most ``MODELS_PER_ORIGIN`` model hashes; announcing
  a newer one forgets the origin's oldest, never another origin's entry; a hash
  nobody announced in the last ``GOSSIP_ROUNDS_KEPT`` rounds is forgotten.
What a cap refuses is counted in ``dropped`` (by reason) and logged rate-limited.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict

import trio
from libp2p.peer.id import ID

from flocknode.logs import PeerLog
from flocknode.p2p.gossip import Received
from flocknode.p2p.messages import KeyWraps, ModelAvailable, UpdateAnnounce
from flocknode.rounds.windows import GOSSIP_ROUNDS_KEPT

log = logging.getLogger(__name__)
peer_log = PeerLog(log)  # lines a peer can cause: rate-limited

BLOBS_PER_ORIGIN = 2  # the least blob ids one origin may announce (and wrap) per round
MODELS_PER_ORIGIN = 2  # model hashes one origin is recorded as holding
MAX_MODEL_HOLDERS = 64  # holders kept per model hash


class Inbox:
    def __init__(self, my_box_public_key: bytes, blobs_per_origin: int = BLOBS_PER_ORIGIN) -> None:
        self._me = my_box_public_key
        self._blobs_per_origin = max(BLOBS_PER_ORIGIN, blobs_per_origin)
        # round -> blob id -> peers that announced it
        self.announced: dict[int, dict[bytes, set[ID]]] = defaultdict(lambda: defaultdict(set))
        # (round, blob id, origin) -> the wrap addressed to this node's box key
        self.wraps: dict[tuple[int, bytes, ID], bytes] = {}
        # model hash -> peers that hold it
        self.model_holders: dict[bytes, set[ID]] = defaultdict(set)
        self.dropped: Counter[str] = Counter()  # messages a cap refused, by reason
        self._blobs_of: dict[tuple[int, ID], set[bytes]] = {}  # (round, origin) -> blob ids
        self._models_of: dict[ID, list[bytes]] = {}  # origin -> model hashes, oldest first
        self._model_round: dict[bytes, int] = {}  # model hash -> newest round announced
        self._changed = trio.Event()

    def on_message(self, received: Received) -> None:
        msg, origin = received.message, received.origin
        if isinstance(msg, UpdateAnnounce | KeyWraps):
            if not self._admit_blob(msg.round, msg.blob_id, origin):
                return
            if isinstance(msg, UpdateAnnounce):
                self.announced[msg.round][msg.blob_id].add(origin)
            else:
                for w in msg.wraps:
                    if w.recipient == self._me:
                        self.wraps[(msg.round, msg.blob_id, origin)] = w.wrapped
        elif isinstance(msg, ModelAvailable):
            self._add_model_holder(msg.model_hash, msg.round, origin)
        self._prune(msg.round)
        self._changed.set()
        self._changed = trio.Event()

    def wrap_for(self, round: int, blob_id: bytes, origin: ID) -> bytes | None:
        return self.wraps.get((round, blob_id, origin))

    def holders(self, round: int, blob_id: bytes) -> set[ID]:
        return set(self.announced.get(round, {}).get(blob_id, ()))

    async def changed(self) -> None:
        await self._changed.wait()

    async def wait_changed(self, timeout: float) -> None:
        with trio.move_on_after(timeout):
            await self._changed.wait()

    def _admit_blob(self, round: int, blob_id: bytes, origin: ID) -> bool:
        """True if ``origin`` may name ``blob_id`` in ``round`` (within its cap)."""
        blobs = self._blobs_of.setdefault((round, origin), set())
        if blob_id in blobs:
            return True
        if len(blobs) >= self._blobs_per_origin:
            self._drop("blobs_per_origin", origin)
            return False
        blobs.add(blob_id)
        return True

    def _add_model_holder(self, model_hash: bytes, round: int, origin: ID) -> None:
        holders = self.model_holders.get(model_hash)
        if holders is not None and origin not in holders and len(holders) >= MAX_MODEL_HOLDERS:
            self._drop("model_holders_full", origin)
            return
        mine = self._models_of.setdefault(origin, [])
        if model_hash in mine:
            mine.remove(model_hash)
        elif len(mine) >= MODELS_PER_ORIGIN:  # the origin moved on: forget its oldest
            self._forget_holder(mine.pop(0), origin)
        mine.append(model_hash)
        self.model_holders[model_hash].add(origin)
        self._model_round[model_hash] = max(round, self._model_round.get(model_hash, 0))

    def _forget_holder(self, model_hash: bytes, origin: ID) -> None:
        holders = self.model_holders.get(model_hash)
        if holders is None:
            return
        holders.discard(origin)
        if not holders:
            del self.model_holders[model_hash]
            self._model_round.pop(model_hash, None)

    def _drop(self, reason: str, origin: ID) -> None:
        self.dropped[reason] += 1
        peer_log.info(reason, "gossip fact dropped reason=%s origin=%s", reason, origin)

    def _prune(self, newest: int) -> None:
        oldest = newest - GOSSIP_ROUNDS_KEPT
        for r in [r for r in self.announced if r < oldest]:
            del self.announced[r]
        for k in [k for k in self.wraps if k[0] < oldest]:
            del self.wraps[k]
        for ro in [ro for ro in self._blobs_of if ro[0] < oldest]:
            del self._blobs_of[ro]
        for h in [h for h, r in self._model_round.items() if r < oldest]:
            for origin in self.model_holders.pop(h, ()):
                mine = self._models_of.get(origin, [])
                if h in mine:
                    mine.remove(h)
                if not mine:
                    self._models_of.pop(origin, None)
            del self._model_round[h]
