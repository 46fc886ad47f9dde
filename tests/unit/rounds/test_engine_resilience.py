"""The round services survive bad ticks and retry their roles (MockClock, a fake chain reader).

The services run for real (their loops and nurseries, the feed, ModelBook,
journal and store on disk); only the chain reader is a fake, so a test can
make one read fail.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
import trio
import trio.testing
from eth_utils import to_checksum_address

from flocknode.chain.registry import Registry
from flocknode.chain.types import Phase, RoundView, TaskParams
from flocknode.crypto import update_hash
from flocknode.rounds.engine import RoundServices
from flocknode.rounds.inbox import Inbox
from flocknode.rounds.membership import ChainMembership
from flocknode.rounds.metrics import RoundMetrics
from flocknode.rounds.models import ModelBook
from flocknode.rounds.roles import ROLE_RETRY, RoleRunner
from flocknode.rounds.snapshot import ChainFeed
from flocknode.store import ContentStore, Journal
from tests.unit.rounds.views import make_view

WALLET = to_checksum_address("0x" + "ab" * 20)
BLOCK_TIME = 1_000_000
STATE = {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3)}
PARAMS = TaskParams(
    token="0x" + "11" * 20,
    model_spec_hash=bytes(32),
    config_hash=bytes(32),
    initial_model_hash=bytes(32),
    total_rounds=0,  # no keeper transactions
)


class FakeChainReader:
    """The reads a tick makes; ``fail`` raises once from the named read."""

    def __init__(self, model: bytes, view: RoundView | None = None) -> None:
        self.model = model
        self.view = view
        self.block = 1
        self.fail: dict[str, BaseException] = {}

    def _maybe_fail(self, name: str) -> None:
        e = self.fail.pop(name, None)
        if e is not None:
            raise e

    async def block_number(self) -> int:
        self._maybe_fail("block_number")
        self.block += 1  # a new block every tick: every tick is a full read
        return self.block

    async def current_round(self, block: int | None = None) -> int:
        return self.view.round if self.view else 0

    async def get_round(self, r: int, block: int | None = None) -> RoundView | None:
        return self.view

    async def latest_block(self) -> tuple[int, int]:
        return self.block, BLOCK_TIME + int(trio.current_time())  # chain time follows the clock

    async def global_model_hash(self, block: int | None = None) -> bytes:
        return self.model

    async def global_model_round(self) -> int:
        return 0

    async def registry(self) -> Registry:
        self._maybe_fail("registry")
        return Registry((), 0)

    async def recheck_sent(self) -> int:
        return 0  # no wallet transactions to watch here


class FakeGossip:
    def __init__(self) -> None:
        self.send, self.messages = trio.open_memory_channel[Any](16)

    async def publish(self, message: Any) -> None:
        pass


RolePath = Callable[[Any, RoundView, int], Any]


def make_services(
    tmp_path: Path,
    reader: FakeChainReader,
    models: ModelBook,
    proposer: RolePath | None = None,
) -> RoundServices:
    deps = SimpleNamespace(
        feed=ChainFeed(),
        client=reader,
        params=PARAMS,
        membership=ChainMembership(),
        metrics=RoundMetrics(),
        inbox=Inbox(bytes(32)),
        models=models,
        store=models.store,
        journal=Journal(tmp_path / "journal"),
        gossip=FakeGossip(),
        learner=None,  # no evaluation: not under test
        wallet=WALLET,
    )
    services = RoundServices(deps, poll=0.1)  # type: ignore[arg-type]
    if proposer is not None:
        services.roles = RoleRunner(deps, proposer=proposer)  # type: ignore[arg-type]
    return services


@asynccontextmanager
async def running(services: RoundServices) -> AsyncIterator[None]:
    """Start the services in order, stop them in reverse (as the node does)."""
    async with trio.open_nursery() as nursery:
        for s in services.services:
            await nursery.start(s.run)
        yield
        for s in reversed(services.services):
            s.stop()


async def until(pred: Callable[[], bool], seconds: float = 120.0) -> None:
    """Poll ``pred`` on the (mock) clock; fail after ``seconds``."""
    with trio.fail_after(seconds):
        while not pred():
            await trio.sleep(0.05)


def role_view(view_round: int = 1, open_for: int = 100) -> RoundView:
    return dataclasses.replace(
        make_view(view_round, Phase.TRAIN),
        proposers=(WALLET,),
        train_end=BLOCK_TIME + open_for // 2,
        commit_end=BLOCK_TIME + open_for * 3 // 4,
        reveal_end=BLOCK_TIME + open_for,
    )


async def test_finding1_a_tick_exception_does_not_end_the_follower(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    models = ModelBook(ContentStore(tmp_path / "store"), None)
    reader = FakeChainReader(models.put(STATE))
    # what web3 raised for a non-UTF-8 registered multiaddr
    reader.fail["registry"] = UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")
    services = make_services(tmp_path, reader, models)
    feed, metrics = services.feed, services.follower.metrics
    async with running(services):
        await until(lambda: feed.published >= 5)
        assert metrics.total("engine_errors") == 1 and metrics.get("engine_errors", "tick") == 1
        assert services.ready and services.last_error == ""  # the later ticks went through
        # a read that fails again later is survived the same way
        reader.fail["block_number"] = RuntimeError("bad RPC answer")
        seen = feed.published
        await until(lambda: not services.follower.healthy)
        assert services.last_error == "RuntimeError: bad RPC answer" and not services.ready
        await until(lambda: feed.published >= seen + 3)
        assert metrics.get("engine_errors", "tick") == 2 and services.ready


async def test_finding1_a_spawned_task_or_gossip_message_that_raises_is_counted(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    models = ModelBook(ContentStore(tmp_path / "store"), None)
    services = make_services(tmp_path, FakeChainReader(models.put(STATE)), models)

    async def broken() -> None:
        raise ValueError("bad entry")

    metrics = services.follower.metrics
    async with running(services):
        services.keeper.spawn(broken)
        await services.deps.gossip.send.send(object())  # not a Received: on_message raises
        await until(lambda: metrics.total("engine_errors") >= 2)
        assert metrics.get("engine_errors", "broken") == metrics.get("engine_errors", "gossip") == 1
        await trio.sleep(5)
        assert all(s.running for s in services.services)  # every service still up


async def test_finding3_a_role_that_raised_is_retried_while_its_phase_is_open(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    models = ModelBook(ContentStore(tmp_path / "store"), None)
    reader = FakeChainReader(models.put(STATE), role_view())
    calls: list[float] = []

    async def proposer(deps: Any, view: RoundView, seat: int) -> None:
        calls.append(trio.current_time())
        if len(calls) == 1:  # e.g. sealing raised for a bad recipient key
            raise RuntimeError("seal failed")

    services = make_services(tmp_path, reader, models, proposer)
    async with running(services):
        await until(lambda: len(calls) >= 2)
        await trio.sleep(30)
        assert len(calls) == 2  # done after the successful run: not run a third time
        assert calls[1] - calls[0] >= ROLE_RETRY.first
        assert services.roles.metrics.counters["role_errors"] == 1


async def test_finding3_a_role_starts_once_the_model_arrives_in_time(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    models = ModelBook(ContentStore(tmp_path / "store"), None)
    reader = FakeChainReader(update_hash(STATE), role_view())  # a model this node lacks
    held_when_called: list[bool] = []

    async def proposer(deps: Any, view: RoundView, seat: int) -> None:
        held_when_called.append(deps.models.has(deps.feed.global_model_hash))

    services = make_services(tmp_path, reader, models, proposer)
    async with running(services):
        await trio.sleep(10)
        assert held_when_called == []  # waiting for the model, not given up
        await models.put_async(STATE)  # the model arrives (fetched, in the node)
        await until(lambda: bool(held_when_called))
        assert held_when_called == [True]


async def test_finding3_a_role_without_the_model_ends_when_its_phase_closes(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    models = ModelBook(ContentStore(tmp_path / "store"), None)
    reader = FakeChainReader(update_hash(STATE), role_view(open_for=20))
    called: list[int] = []

    async def proposer(deps: Any, view: RoundView, seat: int) -> None:
        called.append(seat)

    services = make_services(tmp_path, reader, models, proposer)
    async with running(services):
        await until(lambda: services.roles.metrics.counters["role_no_model"] == 1)
        assert called == []
