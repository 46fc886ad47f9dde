"""The prune service: once per finished round, after the global model is held.

A real store, journal and StorePruner on disk (pruning runs in a worker
thread, so the tests poll with a deadline on the real clock, which MockClock's
autojump would race); the chain is a published snapshot and a reader of the
global model's round.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
import trio
import trio.testing

from flocknode.chain.types import Phase
from flocknode.crypto import update_hash
from flocknode.rounds.metrics import RoundMetrics
from flocknode.rounds.models import ModelBook
from flocknode.rounds.pruning import PruneService, finished_round
from flocknode.rounds.snapshot import ChainFeed, ChainSnapshot
from flocknode.store import ContentStore, Journal
from flocknode.store.retention import StorePruner
from tests.unit.rounds.views import make_view

STATE = {"w": torch.ones(3)}


class Reader:
    def __init__(self, model: bytes) -> None:
        self.round = 0
        self.model = model
        self.fail = False

    async def global_model_round(self) -> int:
        if self.fail:
            raise RuntimeError("RPC answer that does not decode")
        return self.round

    async def global_model_hash(self) -> bytes:
        return self.model


async def until(pred: Callable[[], bool]) -> None:
    with trio.fail_after(30):
        while not pred():
            await trio.sleep(0.01)


async def settled() -> None:
    """Every task (the service's loop included) waits: the last snapshot was handled."""
    await trio.testing.wait_all_tasks_blocked()


def at(current: int, phase: Phase, model: bytes) -> ChainSnapshot:
    return ChainSnapshot(block=current * 10, current=current, global_model_hash=model).with_round(
        make_view(current, phase)
    )


def test_the_finished_round_is_the_current_once_closed_else_the_one_before() -> None:
    assert finished_round(at(4, Phase.TRAIN, b"")) == 3
    assert finished_round(at(4, Phase.FINALIZABLE, b"")) == 3
    assert finished_round(at(4, Phase.FINALIZED, b"")) == 4
    assert finished_round(at(4, Phase.VOIDED, b"")) == 4
    assert finished_round(ChainSnapshot()) == -1


async def test_prunes_once_per_finished_round_and_names_the_applied_model(
    tmp_path: Path,
) -> None:
    store = ContentStore(tmp_path / "store")
    journal = Journal(tmp_path / "journal")
    models = ModelBook(store, None)
    h = update_hash(STATE)
    reader, feed, metrics = Reader(h), ChainFeed(), RoundMetrics()
    service = PruneService(reader, feed, StorePruner(store, journal, 2), journal, models, metrics)
    runs: list[int] = []
    real_prune = service.pruner.prune

    def counting_prune(current: int, finished: int, model: bytes) -> object:
        runs.append(finished)
        return real_prune(current, finished, model)

    service.pruner.prune = counting_prune  # type: ignore[method-assign]
    async with trio.open_nursery() as nursery:
        await nursery.start(service.run)
        feed.publish(at(2, Phase.TRAIN, h))
        await settled()
        assert runs == []  # the global model is not held yet
        await models.put_async(STATE)
        reader.round = 1
        feed.publish(at(2, Phase.TRAIN, h))
        await until(lambda: service.pruned_through == 1)
        for _ in range(5):  # more snapshots of the same round: no second prune
            feed.publish(at(2, Phase.TRAIN, h))
            await settled()
        assert runs == [1] and journal.get(1).applied_model == h.hex()
        reader.fail = True  # a failed prune is counted, and the next round retries
        feed.publish(at(2, Phase.FINALIZED, h))
        await until(lambda: metrics.counters["store_prune_errors"] == 1)
        assert runs == [1] and service.pruned_through == 2
        reader.fail = False
        feed.publish(at(2, Phase.FINALIZED, h))
        await settled()
        assert runs == [1]  # round 2 counts as done for now ...
        feed.publish(at(3, Phase.FINALIZED, h))
        await until(lambda: service.pruned_through == 3)
        assert runs == [1, 3]  # ... and the next finished round prunes again
        service.stop()
