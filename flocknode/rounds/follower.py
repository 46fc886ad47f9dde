"""The chain follower: the one service that reads the chain's round state.

Every ``poll`` seconds it asks for the block number; on a new block (or every
``FULL_READ_SECONDS`` regardless) it reads the current round, its view, the
latest block and, when they can have changed, the global model hash and the
registry. It then builds a whole ``ChainSnapshot`` and publishes it to the
``ChainFeed`` in one step: readers never see a half-updated state. It brings the
p2p ``ChainMembership`` in line with the snapshot just before publishing.

The reads of a tick are pinned to the block its latest-block read returned,
and a tick whose block is older than the published one publishes nothing (a
lagging RPC backend answered: "stale_chain_reads" counts them): the node's
view of the chain never goes back (docs/protocol.md, "Faults and the promises
kept under them").

A tick that fails (chain unreachable, bad data from the chain) publishes
nothing: it is counted, ``healthy`` turns false with ``last_error`` saying why,
and the next tick comes after ``TICK_ERROR_PAUSE``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from types import MappingProxyType
from typing import Protocol

import trio

from flocknode.chain.errors import ChainError
from flocknode.chain.registry import Registry
from flocknode.chain.types import Phase, RoundView
from flocknode.rounds.membership import ChainMembership
from flocknode.rounds.metrics import RoundMetrics
from flocknode.rounds.service import Every, Service, count_error, limited_log
from flocknode.rounds.snapshot import ChainFeed, ChainSnapshot
from flocknode.rounds.windows import VIEWS_KEPT_BEHIND

log = logging.getLogger(__name__)

FULL_READ_SECONDS = 3.0  # a full read at least this often, new block or not
REGISTRY_REFRESH_SECONDS = 5.0
TICK_ERROR_PAUSE = 2.0  # after a tick that failed
# Answers older than the published block for this long are a rollback, not a lag.
ROLLBACK_SECONDS = 10.0
# The phases after which the current round or the global model may change.
ROUND_MAY_CHANGE = (Phase.FINALIZABLE, Phase.FINALIZED, Phase.VOIDED)


class ChainReader(Protocol):
    """The reads a tick makes (``AsyncTaskClient`` has them)."""

    def block_number(self) -> Awaitable[int]: ...
    def current_round(self, block: int | None = None) -> Awaitable[int]: ...
    def get_round(self, round_number: int, block: int | None = None, /) -> Awaitable[RoundView]: ...
    def latest_block(self) -> Awaitable[tuple[int, int]]: ...
    def global_model_hash(self, block: int | None = None) -> Awaitable[bytes]: ...
    def registry(self) -> Awaitable[Registry]: ...


class ChainFollower(Service):
    name = "follower"

    def __init__(
        self,
        client: ChainReader,
        feed: ChainFeed,
        membership: ChainMembership,
        metrics: RoundMetrics,
        poll: float = 0.1,
    ) -> None:
        super().__init__(metrics)
        self.client = client
        self.feed = feed
        self.membership = membership
        self.poll = poll
        self.healthy = False  # the last tick read the chain
        self.last_error = ""
        self.clock = feed.clock
        self._slow_read = Every(FULL_READ_SECONDS, feed.clock)
        self._registry_read = Every(REGISTRY_REFRESH_SECONDS, feed.clock)
        self._behind_since: float | None = None  # since when the chain's answers are older

    async def start(self, nursery: trio.Nursery) -> None:
        nursery.start_soon(self._loop)

    async def _loop(self) -> None:
        while True:
            try:
                await self.tick()
                self.healthy, self.last_error = True, ""
            except ChainError as e:
                self.healthy, self.last_error = False, str(e)
                self.metrics.inc("chain_errors")
                limited_log.warning("chain", "chain unavailable: %s", e)
                await trio.sleep(TICK_ERROR_PAUSE)
            except Exception as e:  # bad data from the chain: this tick only
                self.healthy, self.last_error = False, f"{type(e).__name__}: {e}"
                count_error(self.metrics, "tick", e)
                await trio.sleep(TICK_ERROR_PAUSE)
            await trio.sleep(self.poll)

    async def tick(self) -> ChainSnapshot | None:
        """Read the chain and publish a new snapshot; None when nothing could have changed."""
        client, prev = self.client, self.feed.latest
        # The chain's state only changes with a new block: a cheap block-number
        # poll decides whether the full read is needed (forced now and then).
        block = await client.block_number()
        if self._stale(block):
            return None
        if block == prev.block and self.clock() - prev.read_at < FULL_READ_SECONDS:
            return None
        # every read below is of the state at this block
        block, block_timestamp = await client.latest_block()
        read_at = self.clock()
        if self._stale(block):
            return None
        # The round number and the global model hash are read only when they can
        # have changed (the round closed, or now and then), not on every block.
        slow = self._slow_read.due()
        last = prev.view
        if slow or last is None or last.phase in ROUND_MAY_CHANGE:
            current = await client.current_round(block)
        else:
            current = prev.current
        view = await client.get_round(current, block) if current else None
        if (
            slow
            or current != prev.current
            or not prev.global_model_hash
            or (view is not None and view.phase in ROUND_MAY_CHANGE)
        ):
            model = await client.global_model_hash(block)
        else:
            model = prev.global_model_hash
        if slow:
            self._slow_read.mark()
        registry = prev.registry
        # a round not seen before: its voters' peer ids come from the registry
        if self._registry_read.due() or (view is not None and view.round not in prev.rounds):
            registry = await client.registry()
            self._registry_read.mark()
        rounds = {r: v for r, v in prev.rounds.items() if r >= current - VIEWS_KEPT_BEHIND}
        if view is not None:
            rounds[current] = view
        snapshot = ChainSnapshot(
            block=block,
            block_timestamp=block_timestamp,
            read_at=read_at,
            current=current,
            rounds=MappingProxyType(rounds),
            global_model_hash=model,
            registry=registry,
        )
        self.membership.follow(snapshot.registry, snapshot.view)
        self.feed.publish(snapshot)
        self._behind_since = None
        return snapshot

    def _stale(self, block: int) -> bool:
        """True for a block older than the published snapshot's (counted): a lagging
        backend answered. An older head that lasts ``ROLLBACK_SECONDS`` is the
        chain's own (it was rolled back) and is followed."""
        if not self.feed.published or block >= self.feed.latest.block:
            self._behind_since = None
            return False
        now = self.clock()
        if self._behind_since is None:
            self._behind_since = now
        if now - self._behind_since >= ROLLBACK_SECONDS:
            log.warning("chain head went back block=%d published=%d", block, self.feed.latest.block)
            return False
        self.metrics.inc("stale_chain_reads")
        return True
