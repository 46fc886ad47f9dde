"""What the chain follower publishes: one frozen snapshot of the chain at a block.

``ChainFollower`` (flocknode.rounds.follower) builds a whole ``ChainSnapshot``
and only then publishes it to the ``ChainFeed``; nothing else writes chain
state. A reader therefore sees the current round together with its view, the
global model and the registry read for the same tick, never a mix of two.

The feed keeps the latest snapshot and an event that fires on every publish.
Its read accessors (``rounds``, ``current``, ``global_model_hash``, ``now``)
are the latest snapshot's, so a role reads chain state without ever asking the
chain (``RoleDeps.client`` is the one that talks to the chain).
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

import trio

from flocknode.chain.registry import Registry
from flocknode.chain.types import RoundView

_NO_ROUNDS: Mapping[int, RoundView] = MappingProxyType({})


@dataclass(frozen=True)
class ChainSnapshot:
    """The chain as one follower tick read it (all fields from that tick)."""

    block: int = 0
    block_timestamp: int = 0  # the block's chain time (seconds)
    read_at: float = 0.0  # the feed's clock when the block was read
    current: int = 0  # the current round (0: none opened yet)
    rounds: Mapping[int, RoundView] = field(default_factory=lambda: _NO_ROUNDS)  # recent rounds
    global_model_hash: bytes = b""
    registry: Registry = field(default_factory=lambda: Registry((), 0))

    @property
    def view(self) -> RoundView | None:
        """The current round's view (None before the first round)."""
        return self.rounds.get(self.current)

    def with_round(self, view: RoundView) -> ChainSnapshot:
        """A copy holding ``view`` (for tests and for building the next snapshot)."""
        return replace(self, rounds=MappingProxyType({**self.rounds, view.round: view}))


EMPTY = ChainSnapshot()


class ChainFeed:
    """The latest ``ChainSnapshot`` and a "changed" event; any number of readers.

    ``clock`` is the one clock of the round services: the chain time ``now()``
    advances on it between blocks, and the services' throttles and trio
    deadlines (``move_on_at``) are on it, so it is trio's clock (a test drives
    it with MockClock); the parameter exists to say so, not to swap it.
    """

    def __init__(self, clock: Callable[[], float] = trio.current_time) -> None:
        self.clock = clock
        self._latest = EMPTY
        self._changed = trio.Event()
        self.published = 0  # snapshots published so far

    @property
    def latest(self) -> ChainSnapshot:
        return self._latest

    def publish(self, snapshot: ChainSnapshot) -> None:
        """Make ``snapshot`` the latest and wake every waiter (one step, no await)."""
        self._latest = snapshot
        self.published += 1
        self._changed.set()
        self._changed = trio.Event()

    async def changed(self) -> None:
        """Return at the next publish."""
        await self._changed.wait()

    async def snapshots(self) -> AsyncIterator[ChainSnapshot]:
        """The latest snapshot (once one was published), then each newer one.

        A reader that was busy skips to the latest; one that subscribes after
        the first publish starts from the latest at once.
        """
        seen = 0
        while True:
            if self.published != seen:
                seen = self.published
                yield self._latest
            else:
                await self._changed.wait()

    # -- the latest snapshot's fields, as roles read them --------------------
    @property
    def rounds(self) -> Mapping[int, RoundView]:
        return self._latest.rounds

    @property
    def current(self) -> int:
        return self._latest.current

    @property
    def global_model_hash(self) -> bytes:
        return self._latest.global_model_hash

    @property
    def block(self) -> int:
        return self._latest.block

    def now(self) -> float:
        """The chain's clock: the latest block's time plus what passed since it was read.
        Deadlines (train_end, commit_end, ...) are in it."""
        s = self._latest
        return s.block_timestamp + (self.clock() - s.read_at)

    def age(self) -> float | None:
        """Seconds since the latest snapshot was read (None before the first)."""
        return self.clock() - self._latest.read_at if self.published else None

    async def wait_for(
        self, round: int, pred: Callable[[RoundView], bool], timeout: float = math.inf
    ) -> RoundView | None:
        """The first view of ``round`` that satisfies ``pred`` (None on timeout)."""
        with trio.move_on_after(timeout):
            while True:
                v = self._latest.rounds.get(round)
                if v is not None and pred(v):
                    return v
                await self._changed.wait()
        return None
