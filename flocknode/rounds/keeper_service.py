"""The keeper service: sends the keeper transaction that is due (``keeper.keeper_call``).

On every published snapshot it works out the call due (open, which finalizes
the due round, or elect) and, with no call of its own in flight, takes its turn
at it: nodes queue in an order every node derives from the registry
(``keeper_turn``) and a node sends only if the call is still due when its turn
comes.
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections.abc import Awaitable, Iterable
from typing import Protocol

import trio

from flocknode.chain.errors import ChainError, ContractRevert
from flocknode.chain.types import TaskParams
from flocknode.rounds.keeper import BENIGN_REVERTS, KeeperCall, keeper_call
from flocknode.rounds.metrics import RoundMetrics
from flocknode.rounds.service import SingleFlight, SnapshotService
from flocknode.rounds.snapshot import ChainFeed, ChainSnapshot

log = logging.getLogger(__name__)

KEEPER_TURN_SECONDS = 0.5  # from one keeper's turn to the next one's
TURN_JITTER_SECONDS = 0.05


class KeeperClient(Protocol):
    def open_round(self) -> Awaitable[object]: ...
    def elect_roles(self, round_number: int, /) -> Awaitable[object]: ...


def keeper_turn(call: KeeperCall, wallet: str, members: Iterable[str]) -> int:
    """This wallet's place in the queue of keepers for ``call`` (0 goes first).

    Every node computes the same order from the registry (a hash of the call
    and the wallet, so a different order per round and action): one node sends
    the transaction and the next steps in only when it has not landed a turn
    later. Without a queue, every node whose gas estimate ran before the first
    transaction was mined would send one too; each of those reverts in a block
    of its own, and those blocks count towards the seed delay, so a round could
    be elected before the nodes hold the new global model.
    """

    def key(w: str) -> bytes:
        return hashlib.sha256(f"{call.action}:{call.round}:{w}".encode()).digest()

    order = sorted({w.lower() for w in members}, key=key)
    me = wallet.lower()
    return order.index(me) if me in order else len(order)


def due_call(snapshot: ChainSnapshot, params: TaskParams) -> KeeperCall | None:
    return keeper_call(snapshot.current, snapshot.view, params, snapshot.block)


class KeeperService(SnapshotService):
    name = "keeper"

    def __init__(
        self,
        client: KeeperClient,
        feed: ChainFeed,
        params: TaskParams,
        wallet: str,
        metrics: RoundMetrics,
    ) -> None:
        super().__init__(metrics, feed)
        self.client = client
        self.params = params
        self.wallet = wallet
        self._flight = SingleFlight(clock=feed.clock)

    def on_snapshot(self, snapshot: ChainSnapshot) -> None:
        call = due_call(snapshot, self.params)
        if call is not None:
            self._flight.start(self.spawn, self._keeper, call)

    async def _my_turn(self, call: KeeperCall) -> bool:
        """Wait for this node's turn at ``call``; False once it is no longer due."""
        members = [m.wallet for m in self.feed.latest.registry.members if m.eligible]
        turn = keeper_turn(call, self.wallet, members)
        clock = self.feed.clock
        at = clock() + turn * KEEPER_TURN_SECONDS + random.uniform(0, TURN_JITTER_SECONDS)
        while clock() < at:
            with trio.move_on_at(at):
                await self.feed.changed()
            if due_call(self.feed.latest, self.params) != call:
                return False
        return True

    async def _keeper(self, call: KeeperCall) -> None:
        try:
            if not await self._my_turn(call):
                return
            if call.action == "open":
                await self.client.open_round()
            else:
                await self.client.elect_roles(call.round)
            self.metrics.inc("keeper_calls", call.action)
            log.info("keeper %s round=%d", call.action, call.round)
        except ContractRevert as e:
            if e.name not in BENIGN_REVERTS:
                log.warning("keeper %s round=%d refused: %s", call.action, call.round, e)
        except ChainError as e:
            log.warning("keeper %s round=%d failed: %s", call.action, call.round, e)
