"""The gossip intake: every validated gossip message goes into the ``Inbox``.

A message the inbox cannot take (it raises) is counted and dropped; the loop
goes on.
"""

from __future__ import annotations

from collections.abc import AsyncIterable

import trio

from flocknode.p2p.gossip import Received
from flocknode.rounds.inbox import Inbox
from flocknode.rounds.metrics import RoundMetrics
from flocknode.rounds.service import Service, count_error


class GossipIntake(Service):
    name = "gossip"

    def __init__(
        self, messages: AsyncIterable[Received], inbox: Inbox, metrics: RoundMetrics
    ) -> None:
        super().__init__(metrics)
        self.messages = messages
        self.inbox = inbox

    async def start(self, nursery: trio.Nursery) -> None:
        nursery.start_soon(self._loop)

    async def _loop(self) -> None:
        async for received in self.messages:
            try:
                self.inbox.on_message(received)
            except Exception as e:  # one message, not the loop
                count_error(self.metrics, "gossip", e)
