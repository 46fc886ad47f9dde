"""The wallet's transactions after they were mined (docs/protocol.md, "Chain
reorganisations and confirmations").

On every snapshot the chain feed publishes (each new block), ``TxWatch`` asks the wallet's
sender to broadcast again whatever a reorganisation dropped
(``Sender.recheck``): one ``eth_getTransactionCount`` when nothing was
dropped, one run at a time. A transaction the node counted as done (its
receipt was seen) and the chain then lost is thus mined again with the same
nonce and bytes, whatever role or keeper path sent it, and the wallet's later
transactions are not held behind the gap it left.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import Protocol

import trio

from flocknode.rounds.metrics import RoundMetrics
from flocknode.rounds.service import SingleFlight, SnapshotService
from flocknode.rounds.snapshot import ChainFeed, ChainSnapshot

log = logging.getLogger(__name__)


class Rechecker(Protocol):
    def recheck_sent(self) -> Awaitable[int]: ...


class TxWatch(SnapshotService):
    name = "txwatch"

    def __init__(self, client: Rechecker, feed: ChainFeed, metrics: RoundMetrics) -> None:
        super().__init__(metrics, feed)
        self.client = client
        self._flight = SingleFlight(clock=trio.current_time)

    def on_snapshot(self, snapshot: ChainSnapshot) -> None:
        # the follower publishes on a new block and on its full read every few
        # seconds (which sees a reorganisation that kept the height)
        self._flight.start(self.spawn, self._recheck)

    async def _recheck(self) -> None:
        sent = await self.client.recheck_sent()
        if sent:
            self.metrics.inc("tx_rebroadcast", n=sent)
