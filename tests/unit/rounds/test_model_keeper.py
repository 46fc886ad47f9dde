"""The model keeper: one fetch at a time with a pause after a failed one, then
one evaluation and an announcement every MODEL_ANNOUNCE_SECONDS (MockClock).

A real ModelBook and store without a network: with no holder known, a fetch
fails at once, which is the case the pause is for.
"""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
import trio
import trio.testing

from flocknode.chain.types import TaskParams
from flocknode.crypto import update_hash
from flocknode.p2p.messages import ModelAvailable
from flocknode.rounds.inbox import Inbox
from flocknode.rounds.metrics import RoundMetrics
from flocknode.rounds.model_keeper import MODEL_ANNOUNCE_SECONDS, MODEL_FETCH_PAUSE, ModelKeeper
from flocknode.rounds.models import ModelBook
from flocknode.rounds.snapshot import ChainFeed, ChainSnapshot
from flocknode.store import ContentStore

STATE = {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3)}
PARAMS = TaskParams(
    token="0x" + "11" * 20,
    model_spec_hash=bytes(32),
    config_hash=bytes(32),
    initial_model_hash=bytes(32),
    total_rounds=5,
)


class CountingBook(ModelBook):
    def __init__(self, store: ContentStore) -> None:
        super().__init__(store, None)
        self.fetches: list[float] = []
        self.in_flight = 0
        self.most_in_flight = 0

    async def fetch(self, *args: Any, **kwargs: Any) -> bool:
        self.fetches.append(trio.current_time())
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await trio.sleep(0.3)  # a fetch that finds no holder in time
            return await super().fetch(*args, **kwargs)
        finally:
            self.in_flight -= 1


class Reader:
    async def global_model_round(self) -> int:
        return 0


class Learner:
    def __init__(self, has_test: bool = True) -> None:
        self.evaluated: list[bytes] = []
        self.has_test = has_test

    async def evaluate_async(self, state: Any, split: str) -> Any:
        self.evaluated.append(update_hash(state))
        return SimpleNamespace(accuracy=0.5)


class Gossip:
    def __init__(self) -> None:
        self.sent: list[tuple[float, ModelAvailable]] = []

    async def publish(self, message: ModelAvailable) -> None:
        self.sent.append((trio.current_time(), message))


def make_keeper(book: ModelBook, learner: Learner, gossip: Gossip, feed: ChainFeed) -> ModelKeeper:
    """A keeper for task PARAMS over these fakes, with a chain reader at round 0."""
    return ModelKeeper(
        Reader(),  # type: ignore[arg-type]
        feed,
        book,
        Inbox(bytes(32)),
        gossip,
        learner,  # type: ignore[arg-type]
        PARAMS,
        "0x" + "ab" * 20,
        RoundMetrics(),
    )


async def test_fetch_retries_pause_then_the_held_model_is_evaluated_once_and_announced(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    book = CountingBook(ContentStore(tmp_path / "store"))
    learner, gossip, feed = Learner(), Gossip(), ChainFeed()
    keeper = make_keeper(book, learner, gossip, feed)
    h = update_hash(STATE)

    async def blocks(seconds: float) -> None:
        """A new snapshot every 0.1 s (a block), naming ``h`` as the global model."""
        end = trio.current_time() + seconds
        while trio.current_time() < end:
            feed.publish(ChainSnapshot(block=feed.published + 1, current=3, global_model_hash=h))
            await trio.sleep(0.1)

    async with trio.open_nursery() as nursery:
        await nursery.start(keeper.run)
        await blocks(10)
        # one fetch at a time, each failed one followed by the pause
        assert book.most_in_flight == 1
        gaps = [b - a for a, b in zip(book.fetches, book.fetches[1:], strict=False)]
        assert len(book.fetches) >= 5 and min(gaps) >= 0.3 + MODEL_FETCH_PAUSE
        assert learner.evaluated == [] and gossip.sent == []

        await book.put_async(STATE)  # the model arrives (e.g. from another fetch path)
        fetched = len(book.fetches)
        await blocks(2 * MODEL_ANNOUNCE_SECONDS + 1)
        assert len(book.fetches) == fetched  # held: no more fetches
        assert learner.evaluated == [h]  # evaluated once, not per snapshot
        times = [t for t, _ in gossip.sent]
        assert len(times) == 3 and all(m.model_hash == h and m.round == 3 for _, m in gossip.sent)
        assert times[1] - times[0] >= MODEL_ANNOUNCE_SECONDS
        keeper.stop()


async def test_a_participant_without_a_test_split_evaluates_nothing_and_warns_nothing(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    book = ModelBook(ContentStore(tmp_path / "store"), None)
    learner, gossip, feed = Learner(has_test=False), Gossip(), ChainFeed()
    keeper = make_keeper(book, learner, gossip, feed)
    caplog.set_level(logging.INFO, logger="flocknode.rounds")
    async with trio.open_nursery() as nursery:
        await nursery.start(keeper.run)
        for r in range(1, 6):  # a new global model every round
            h = await book.put_async({"w": STATE["w"] + r})
            feed.publish(ChainSnapshot(block=r, current=r, global_model_hash=h))
            await trio.sleep(1)
        assert learner.evaluated == []
        assert gossip.sent  # the models are still announced
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
        keeper.stop()
