"""What the round engine learned from gossip: announced blobs, key wraps, model holders.

Facts only; whether a fact is *useful* (the origin is the proposer that
submitted this blob on chain, the wrap opens) is decided where it is used.
Bounded: only the last few rounds are kept.
"""

from __future__ import annotations

from collections import defaultdict

import trio
from libp2p.peer.id import ID

from flocknode.p2p.gossip import Received
from flocknode.p2p.messages import KeyWraps, ModelAvailable, UpdateAnnounce

KEEP_ROUNDS = 4
MAX_MODEL_HOLDERS = 64
KEEP_MODELS = 16


class Inbox:
    def __init__(self, my_box_public_key: bytes) -> None:
        self._me = my_box_public_key
        # round -> blob id -> peers that announced it
        self.announced: dict[int, dict[bytes, set[ID]]] = defaultdict(lambda: defaultdict(set))
        # (round, blob id, origin) -> the wrap addressed to this node's box key
        self.wraps: dict[tuple[int, bytes, ID], bytes] = {}
        # model hash -> peers that hold it
        self.model_holders: dict[bytes, set[ID]] = defaultdict(set)
        self._changed = trio.Event()

    def on_message(self, received: Received) -> None:
        msg, origin = received.message, received.origin
        if isinstance(msg, UpdateAnnounce):
            self.announced[msg.round][msg.blob_id].add(origin)
        elif isinstance(msg, KeyWraps):
            for w in msg.wraps:
                if w.recipient == self._me:
                    self.wraps[(msg.round, msg.blob_id, origin)] = w.wrapped
        elif isinstance(msg, ModelAvailable):
            holders = self.model_holders[msg.model_hash]
            if len(holders) < MAX_MODEL_HOLDERS:
                holders.add(origin)
            while len(self.model_holders) > KEEP_MODELS:  # oldest first (insertion order)
                del self.model_holders[next(iter(self.model_holders))]
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

    def _prune(self, newest: int) -> None:
        for r in [r for r in self.announced if r < newest - KEEP_ROUNDS]:
            del self.announced[r]
        for k in [k for k in self.wraps if k[0] < newest - KEEP_ROUNDS]:
            del self.wraps[k]
