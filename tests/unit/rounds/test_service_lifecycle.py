"""The services' lifecycle, the single-flight helper and the keeper service (MockClock)."""

from __future__ import annotations

import dataclasses

import pytest
import trio
import trio.testing
from eth_utils import to_checksum_address

from flocknode.chain.registry import Member, Registry
from flocknode.chain.types import Phase, TaskParams
from flocknode.identity import PeerKey
from flocknode.rounds.keeper import KeeperCall
from flocknode.rounds.keeper_service import KEEPER_TURN_SECONDS, KeeperService, keeper_turn
from flocknode.rounds.metrics import RoundMetrics
from flocknode.rounds.service import Every, Service, SingleFlight
from flocknode.rounds.snapshot import ChainFeed, ChainSnapshot
from tests.unit.rounds.views import make_view


class Recorded(Service):
    """A service whose one loop runs until stopped; records starts and exits."""

    def __init__(self, name: str, log: list[str]) -> None:
        super().__init__(RoundMetrics())
        self.name = name
        self.log = log

    async def start(self, nursery: trio.Nursery) -> None:
        self.log.append(f"start {self.name}")
        nursery.start_soon(self._loop)

    async def _loop(self) -> None:
        try:
            await trio.sleep_forever()
        finally:
            self.log.append(f"exit {self.name}")


async def test_services_start_in_order_and_stop_in_reverse(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log: list[str] = []
    services = [Recorded(n, log) for n in ("a", "b", "c")]
    async with trio.open_nursery() as nursery:
        for s in services:
            await nursery.start(s.run)
            assert s.running
        for s in reversed(services):
            s.stop()
            await trio.testing.wait_all_tasks_blocked()
            assert not s.running
    assert log == ["start a", "start b", "start c", "exit c", "exit b", "exit a"]


async def test_a_spawned_task_that_raises_is_counted_and_the_service_goes_on(
    autojump_clock: trio.testing.MockClock,
) -> None:
    service = Recorded("x", [])

    async def bad_job() -> None:
        raise KeyError("gone")

    async with trio.open_nursery() as nursery:
        await nursery.start(service.run)
        service.spawn(bad_job)
        service.spawn(bad_job, where="other")
        await trio.sleep(1)
        assert service.running
        assert service.metrics.total("engine_errors") == 2
        assert service.metrics.by_label()["engine_errors"] == {"bad_job": 1, "other": 1}
        service.stop()


async def test_single_flight_runs_one_at_a_time_and_pauses_after_a_failure(
    autojump_clock: trio.testing.MockClock,
) -> None:
    service = Recorded("x", [])
    flight = SingleFlight(after_success=2.0, after_failure=5.0)
    runs: list[float] = []
    release = trio.Event()
    outcome: list[bool | Exception] = [False]

    async def job() -> bool:
        runs.append(trio.current_time())
        await release.wait()
        result = outcome[0]
        if isinstance(result, Exception):
            raise result
        return result

    async with trio.open_nursery() as nursery:
        await nursery.start(service.run)
        t0 = trio.current_time()
        assert flight.start(service.spawn, job)
        assert not flight.start(service.spawn, job)  # one in flight
        await trio.sleep(10)
        assert len(runs) == 1 and flight.busy
        release.set()
        await trio.testing.wait_all_tasks_blocked()
        assert not flight.busy
        # a falsy result is a failure: no start before the failure pause
        assert not flight.start(service.spawn, job)
        await trio.sleep(5.0)
        outcome[0] = RuntimeError("boom")  # an exception is a failure too (and counted)
        assert flight.start(service.spawn, job)
        await trio.testing.wait_all_tasks_blocked()
        assert service.metrics.get("engine_errors", "job") == 1
        assert not flight.start(service.spawn, job)
        flight.allow_now()  # e.g. the model arrived another way
        outcome[0] = True
        assert flight.start(service.spawn, job)
        await trio.testing.wait_all_tasks_blocked()
        assert not flight.ready()  # the success pause
        await trio.sleep(2.0)
        assert flight.ready()
        assert [t - t0 for t in runs] == [0, pytest.approx(15.0), pytest.approx(15.0)]
        service.stop()


async def test_every_is_due_once_per_period(autojump_clock: trio.testing.MockClock) -> None:
    every = Every(3.0)
    assert every.due()
    every.mark()
    assert not every.due()
    await trio.sleep(2.9)
    assert not every.due()
    await trio.sleep(0.1)
    assert every.due()
    every.mark()
    every.expire()
    assert every.due()


WALLETS = [to_checksum_address(f"0x{i:040x}") for i in range(1, 5)]
PARAMS = TaskParams(
    token="0x" + "11" * 20,
    model_spec_hash=bytes(32),
    config_hash=bytes(32),
    initial_model_hash=bytes(32),
    total_rounds=10,
)


class KeeperClient:
    def __init__(self) -> None:
        self.calls: list[tuple[str, float]] = []

    async def open_round(self) -> None:
        self.calls.append(("open", trio.current_time()))

    async def elect_roles(self, round_number: int) -> None:
        self.calls.append((f"elect {round_number}", trio.current_time()))


def seeding_snapshot(block: int) -> ChainSnapshot:
    members = tuple(Member(w, PeerKey.generate().peer_id, bytes(32), (), 1, True) for w in WALLETS)
    snap = ChainSnapshot(block=block, current=3, registry=Registry(members, 0))
    seeding = dataclasses.replace(make_view(3, Phase.SEEDING), seed_block=block - 1)
    return snap.with_round(seeding)  # elect is due: the seed block is behind


@pytest.mark.parametrize("other_node_acts", [False, True])
async def test_the_keeper_waits_its_turn_and_sends_only_what_is_still_due(
    autojump_clock: trio.testing.MockClock, other_node_acts: bool
) -> None:
    call = KeeperCall("elect", 3)
    wallet = next(w for w in WALLETS if keeper_turn(call, w, WALLETS) == 2)  # third in line
    feed, client = ChainFeed(), KeeperClient()
    keeper = KeeperService(client, feed, PARAMS, wallet, RoundMetrics())
    async with trio.open_nursery() as nursery:
        await nursery.start(keeper.run)
        t0 = trio.current_time()
        snap = seeding_snapshot(block=100)
        feed.publish(snap)  # seed block reached: elect is due
        for _ in range(3):  # more blocks while it waits: still one call in flight
            await trio.sleep(KEEPER_TURN_SECONDS / 2)
            snap = dataclasses.replace(snap, block=snap.block + 1)
            if other_node_acts:  # the first in line elected the round
                elected = dataclasses.replace(snap.view, phase=Phase.TRAIN)  # type: ignore[arg-type]
                snap = snap.with_round(elected)
            feed.publish(snap)
        await trio.sleep(10)
        keeper.stop()
    if other_node_acts:
        assert client.calls == []
    else:
        ((what, at),) = client.calls
        assert what == "elect 3"
        assert 2 * KEEPER_TURN_SECONDS <= at - t0 <= 2 * KEEPER_TURN_SECONDS + 0.1
        assert keeper.metrics.get("keeper_calls", "elect") == 1
