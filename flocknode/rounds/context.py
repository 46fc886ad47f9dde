"""What the round roles share: the node's services and a view of the chain.

``RoundContext`` is built by ``FlockNode`` and passed to the engine and the
proposer and voter paths; it holds references only (no logic of its own
beyond waiting for the chain to move).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import trio

from flocknode.chain.client import AsyncTaskClient
from flocknode.chain.types import RoundView, TaskParams
from flocknode.identity import BoxKey
from flocknode.learning.learner import RoundLearner
from flocknode.learning.settings import TaskSettings
from flocknode.p2p.gossip import TaskGossip
from flocknode.p2p.host import P2PHost
from flocknode.rounds.byzantine import Behaviour
from flocknode.rounds.inbox import Inbox
from flocknode.rounds.membership import ChainMembership
from flocknode.rounds.metrics import RoundMetrics
from flocknode.rounds.models import ModelBook
from flocknode.store import ContentStore, Journal
from flocknode.store.retention import StorePruner


@dataclass
class ChainView:
    """The latest round views the engine read; roles wait on it to change."""

    rounds: dict[int, RoundView] = field(default_factory=dict)
    current: int = 0
    global_model_hash: bytes = b""
    block: int = 0
    block_timestamp: int = 0
    read_at: float = 0.0  # clock() when the block was read
    # the engine's one monotonic clock (its throttles, read_at); a test passes
    # trio.current_time to drive everything with MockClock
    clock: Callable[[], float] = time.monotonic
    _changed: trio.Event = field(default_factory=trio.Event)

    def now(self) -> float:
        """The chain's clock (latest block time plus what passed since): deadlines are in it."""
        if not self.block_timestamp:
            return time.time()
        return self.block_timestamp + (self.clock() - self.read_at)

    async def changed(self) -> None:
        """Return at the next refresh of the views."""
        await self._changed.wait()

    def publish(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for(
        self, round: int, pred: Callable[[RoundView], bool], timeout: float = math.inf
    ) -> RoundView | None:
        """The first view of ``round`` that satisfies ``pred`` (None on timeout)."""
        with trio.move_on_after(timeout):
            while True:
                v = self.rounds.get(round)
                if v is not None and pred(v):
                    return v
                await self._changed.wait()
        return None


@dataclass
class RoundContext:
    client: AsyncTaskClient
    params: TaskParams
    settings: TaskSettings
    learner: RoundLearner
    p2p: P2PHost
    gossip: TaskGossip
    store: ContentStore
    models: ModelBook
    journal: Journal
    inbox: Inbox
    membership: ChainMembership
    box_key: BoxKey
    wallet: str
    behaviour: Behaviour
    metrics: RoundMetrics
    chain: ChainView = field(default_factory=ChainView)
    pruner: StorePruner | None = None  # None: keep every round
