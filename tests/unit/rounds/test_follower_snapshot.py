"""The chain follower publishes whole, frozen snapshots (MockClock, a fake chain).

The fake chain moves to its next round at a block boundary (its first read of a
tick), and every read of the chain awaits, so other tasks run between the
follower's reads: the place where a half-updated state would show.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest
import trio
import trio.testing

from flocknode.chain.registry import Member, Registry
from flocknode.chain.types import Phase, RoundView
from flocknode.identity import PeerKey
from flocknode.rounds.follower import FULL_READ_SECONDS, ROLLBACK_SECONDS, ChainFollower
from flocknode.rounds.membership import ChainMembership
from flocknode.rounds.metrics import RoundMetrics
from flocknode.rounds.snapshot import ChainFeed, ChainSnapshot
from flocknode.rounds.windows import VIEWS_KEPT_BEHIND
from tests.unit.rounds.views import make_view

READ_SECONDS = 0.01  # every chain read takes this long


def member(wallet: str) -> Member:
    return Member(wallet, PeerKey.generate().peer_id, bytes(32), (), 100, True)


def model_of(r: int) -> bytes:
    return r.to_bytes(32, "big")


class MovingChain:
    """A chain whose round, view, model and block move together, at a block boundary.

    Every read returns a fresh object equal to the last one while nothing moved
    (as a client that decodes each answer does).
    """

    def __init__(self, registry: Registry) -> None:
        self.round = 1
        self.block = 10
        self.phase = Phase.FINALIZABLE  # the follower re-reads the round every tick
        self.voters: tuple[str, ...] = ()
        self.registry_value = registry
        self.move_every: int | None = None  # blocks per round (None: stay)
        self.reads: list[str] = []

    async def _read(self, name: str) -> None:
        self.reads.append(name)
        await trio.sleep(READ_SECONDS)

    async def block_number(self) -> int:
        await self._read("block_number")
        self.block += 1
        if self.move_every and self.block % self.move_every == 0:
            self.round += 1
        return self.block

    async def current_round(self, block: int | None = None) -> int:
        await self._read("current_round")
        return self.round

    async def get_round(self, r: int, block: int | None = None) -> RoundView:
        await self._read("get_round")
        return dataclasses.replace(make_view(r, self.phase), voters=self.voters)

    async def latest_block(self) -> tuple[int, int]:
        await self._read("latest_block")
        return self.block, 1_000 + self.block

    async def global_model_hash(self, block: int | None = None) -> bytes:
        await self._read("global_model_hash")
        return model_of(self.round)

    async def registry(self) -> Registry:
        await self._read("registry")
        return dataclasses.replace(self.registry_value)


class CountingMembership(ChainMembership):
    def __init__(self) -> None:
        super().__init__()
        self.registry_updates = 0
        self.round_updates = 0

    def update_registry(self, registry: Registry) -> None:
        self.registry_updates += 1
        super().update_registry(registry)

    def update_round(self, view: RoundView) -> None:
        self.round_updates += 1
        super().update_round(view)


def consistent(s: ChainSnapshot) -> bool:
    if s.current == 0:
        return s.view is None
    return (
        s.view is not None
        and s.view.round == s.current
        and s.global_model_hash == model_of(s.current)
        and s.block_timestamp == 1_000 + s.block
    )


async def until(pred: Callable[[], bool], seconds: float = 60.0) -> None:
    with trio.fail_after(seconds):
        while not pred():
            await trio.sleep(0.05)


def follower_on(chain: MovingChain, membership: ChainMembership | None = None) -> ChainFollower:
    return ChainFollower(
        chain,  # type: ignore[arg-type]
        ChainFeed(),
        membership or ChainMembership(),
        RoundMetrics(),
        poll=0.05,
    )


async def test_readers_never_see_a_round_without_its_view_or_model(
    autojump_clock: trio.testing.MockClock,
) -> None:
    chain = MovingChain(Registry((member("0xA1"),), 0))
    chain.move_every = 3
    follower = follower_on(chain)
    feed = follower.feed
    seen: list[ChainSnapshot] = []
    bad: list[ChainSnapshot] = []

    async def observe() -> None:
        # wake between the follower's reads (each takes READ_SECONDS)
        while True:
            s = feed.latest
            if feed.published:
                seen.append(s)
                if not consistent(s):
                    bad.append(s)
            await trio.sleep(READ_SECONDS / 3)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(observe)
        await nursery.start(follower.run)
        await until(lambda: feed.current >= 8)
        follower.stop()
        nursery.cancel_scope.cancel()
    assert bad == []
    assert len({s.current for s in seen}) >= 7  # the observer saw the rounds go by
    assert len(seen) > 4 * feed.published  # ... and looked between the reads of a tick


async def test_a_published_snapshot_never_changes(autojump_clock: trio.testing.MockClock) -> None:
    chain = MovingChain(Registry((), 0))
    follower = follower_on(chain)
    first = await follower.tick()
    assert first is not None and first.current == 1
    with pytest.raises(TypeError):
        first.rounds[2] = first.rounds[1]  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.current = 2  # type: ignore[misc]
    for _ in range(2 * VIEWS_KEPT_BEHIND + 2):
        chain.round += 1
        await trio.sleep(FULL_READ_SECONDS)
        assert await follower.tick() is not None
    assert first.current == 1 and list(first.rounds) == [1]  # what it was when published
    latest = follower.feed.latest
    assert sorted(latest.rounds) == list(
        range(latest.current - VIEWS_KEPT_BEHIND, latest.current + 1)
    )


async def test_membership_follows_snapshots_by_value_not_identity(
    autojump_clock: trio.testing.MockClock,
) -> None:
    alice, bob = member("0xA1"), member("0xB2")
    chain = MovingChain(Registry((alice, bob), 0))
    chain.voters = ("0xB2",)
    membership = CountingMembership()
    follower = follower_on(chain, membership)
    for _ in range(5):  # fresh but equal answers: nothing to redo
        await follower.tick()
        await trio.sleep(FULL_READ_SECONDS + 3)  # past the registry refresh too
    assert (membership.registry_updates, membership.round_updates) == (1, 1)
    assert membership.is_voter(1, bob.peer_id)

    chain.voters = ("0xA1",)  # the same round, other seats (a new view value)
    await follower.tick()
    assert membership.round_updates == 2
    assert membership.is_voter(1, alice.peer_id) and not membership.is_voter(1, bob.peer_id)

    carol = member("0xA1")  # alice registers another peer id
    chain.registry_value = Registry((carol, bob), 0)
    await trio.sleep(FULL_READ_SECONDS + 3)
    await follower.tick()
    assert membership.registry_updates == 2
    # the seats are set again from the new registry: alice's voter peer is the new one
    assert membership.is_voter(1, carol.peer_id) and not membership.is_voter(1, alice.peer_id)


async def test_an_unchanged_block_is_not_read_again(autojump_clock: trio.testing.MockClock) -> None:
    chain = MovingChain(Registry((), 0))

    async def same_block() -> int:
        await chain._read("block_number")
        return chain.block

    follower = follower_on(chain)
    assert await follower.tick() is not None
    chain.block_number = same_block  # type: ignore[method-assign]
    chain.reads.clear()
    assert await follower.tick() is None
    assert chain.reads == ["block_number"] and follower.feed.published == 1
    await trio.sleep(FULL_READ_SECONDS)  # forced now and then, new block or not
    assert await follower.tick() is not None and follower.feed.published == 2


async def test_a_failed_tick_publishes_nothing_and_is_reported(
    autojump_clock: trio.testing.MockClock,
) -> None:
    chain = MovingChain(Registry((), 0))
    follower = follower_on(chain)
    broken: dict[str, Any] = {"on": False}
    original = chain.global_model_hash

    async def model_hash(block: int | None = None) -> bytes:
        if broken["on"]:
            raise ValueError("undecodable answer")
        return await original()

    chain.global_model_hash = model_hash  # type: ignore[method-assign]
    async with trio.open_nursery() as nursery:
        await nursery.start(follower.run)
        await until(lambda: follower.healthy)
        broken["on"] = True
        chain.round += 1
        await until(lambda: not follower.healthy)
        before = follower.feed.latest
        assert follower.last_error == "ValueError: undecodable answer"
        assert follower.metrics.get("engine_errors", "tick") >= 1
        await trio.sleep(1)
        assert follower.feed.latest is before and before.current == 1  # nothing half-read
        broken["on"] = False
        await until(lambda: follower.healthy and follower.feed.current == 2)
        follower.stop()


class LaggingChain(MovingChain):
    """A chain behind a load balancer: ``lag`` blocks behind on the head reads that
    ``lagging`` names; records the block each state read was pinned to."""

    def __init__(self, registry: Registry) -> None:
        super().__init__(registry)
        self.lag = 0
        self.lagging: set[str] = set()
        self.pinned: list[int | None] = []

    async def block_number(self) -> int:
        block = await super().block_number()
        return block - self.lag if "block_number" in self.lagging else block

    async def latest_block(self) -> tuple[int, int]:
        block, stamp = await super().latest_block()
        if "latest_block" in self.lagging:
            return block - self.lag, stamp - self.lag
        return block, stamp

    async def current_round(self, block: int | None = None) -> int:
        self.pinned.append(block)
        return await super().current_round(block)

    async def get_round(self, r: int, block: int | None = None) -> RoundView:
        self.pinned.append(block)
        return await super().get_round(r, block)

    async def global_model_hash(self, block: int | None = None) -> bytes:
        self.pinned.append(block)
        return await super().global_model_hash(block)


async def test_reads_are_pinned_and_a_stale_answer_never_moves_the_view_back(
    autojump_clock: trio.testing.MockClock,
) -> None:
    chain = LaggingChain(Registry((), 0))
    follower = follower_on(chain)
    first = await follower.tick()
    assert first is not None
    # every state read of the tick was of the block the snapshot says
    assert chain.pinned and set(chain.pinned) == {first.block}
    for where in ("block_number", "latest_block"):
        chain.lag, chain.lagging = 5, {where}
        published = follower.feed.published
        assert await follower.tick() is None
        assert follower.feed.published == published and follower.feed.latest.block >= first.block
    assert follower.metrics.counters["stale_chain_reads"] == 2
    chain.lag = 0  # a fresh answer: followed again
    again = await follower.tick()
    assert again is not None and again.block > first.block


async def test_a_head_that_stays_older_is_a_rollback_and_is_followed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    chain = LaggingChain(Registry((), 0))
    follower = follower_on(chain)
    first = await follower.tick()
    assert first is not None
    chain.lag, chain.lagging = 50, {"block_number", "latest_block"}
    start = trio.current_time()
    while (s := await follower.tick()) is None:
        await trio.sleep(0.5)
    assert s.block < first.block
    assert ROLLBACK_SECONDS <= trio.current_time() - start < ROLLBACK_SECONDS + 1
    assert follower.metrics.counters["stale_chain_reads"] >= ROLLBACK_SECONDS / 0.5 - 1
