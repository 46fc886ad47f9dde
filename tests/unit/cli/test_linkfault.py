"""``--chaos latency``: the release schedule of a slowed link (pure, seeded) and
the relay's pipe on in-memory streams under trio's autojump clock (the relay on
real sockets: tests/integration/cli/test_relay.py)."""

from __future__ import annotations

import random

import pytest
import trio
import trio.testing

from flocknode.cluster.linkfault import ActiveFault, LinkFault, Schedule, local_ports
from flocknode.cluster.relay import Connection, Relay

STILL = LinkFault(delay=(0.1, 0.1), jitter=0.0, loss=0.0, cut=0.0)


def _fault(**kw: float) -> ActiveFault:
    settings = LinkFault(**{"delay": (0.1, 0.1), "jitter": 0.0, "loss": 0.0, "cut": 0.0, **kw})
    return ActiveFault(settings, settings.delay[0])


def test_without_a_fault_a_chunk_goes_on_arrival() -> None:
    s = Schedule(random.Random(0))
    assert [s.release(t, None).at for t in (1.0, 1.5, 2.0)] == [1.0, 1.5, 2.0]


def test_a_fault_delays_each_chunk_by_its_delay_and_jitter() -> None:
    s = Schedule(random.Random(1))
    f = _fault(jitter=0.02)
    for t in range(50):
        r = s.release(float(t), f)
        assert 0.08 <= r.at - t <= 0.12 and not r.lost and not r.cut


def test_the_delay_is_drawn_once_per_fault_within_its_range() -> None:
    rng = random.Random(2)
    delays = [ActiveFault.draw(LinkFault(), rng).delay for _ in range(200)]
    assert all(0.05 <= d <= 0.30 for d in delays) and max(delays) - min(delays) > 0.15


def test_a_chunk_is_never_released_before_the_one_ahead_of_it() -> None:
    s = Schedule(random.Random(3))
    f = _fault(jitter=0.09, loss=0.3)
    releases = [s.release(t * 0.001, f).at for t in range(2000)]
    assert releases == sorted(releases)
    # and a chunk behind a held one waits for it, also once the fault is over
    after = s.release(2.0, None).at
    assert after >= releases[-1]


def test_losses_back_off_doubling_up_to_the_cap_and_reset_after_a_delivery() -> None:
    class Draws(random.Random):
        """random() answers from a list (cut draw, then loss draw per chunk)."""

        def __init__(self, values: list[float]) -> None:
            super().__init__(0)
            self.values = values

        def random(self) -> float:
            return self.values.pop(0)

        def uniform(self, a: float, b: float) -> float:
            return (a + b) / 2  # the jitter (0 here)

    lost, kept = 0.0, 0.99  # the loss draw; every cut draw is 0.99 (no cut)
    draws = [x for d in [lost] * 6 + [kept, lost] for x in (0.99, d)]
    s = Schedule(Draws(draws))
    f = _fault(loss=0.5, rto=0.2, rto_cap=3.2)
    holds = []
    for t in range(8):
        r = s.release(float(t * 100), f)  # far apart: FIFO does not add to the hold
        holds.append((round(r.at - t * 100 - 0.1, 6), r.lost))
    assert holds == [
        (0.2, 1),
        (0.4, 2),
        (0.8, 3),
        (1.6, 4),
        (3.2, 5),
        (3.2, 6),  # capped
        (0.0, 0),  # delivered: the backoff starts again
        (0.2, 1),
    ]


def test_a_cut_is_drawn_at_its_share_and_delays_nothing() -> None:
    s = Schedule(random.Random(4))
    f = _fault(cut=0.1)
    cuts = [s.release(float(t), f).cut for t in range(2000)]
    assert 120 < sum(cuts) < 280


def test_a_schedule_is_a_function_of_its_seed() -> None:
    def run(seed: int) -> list[float]:
        s = Schedule(random.Random(seed))
        return [s.release(t * 0.01, _fault(jitter=0.05, loss=0.2)).at for t in range(100)]

    assert run(5) == run(5) != run(6)


@pytest.mark.parametrize(
    "bad",
    [
        {"delay": (0.3, 0.1)},
        {"delay": (-0.1, 0.1)},
        {"loss": 1.0},
        {"cut": -0.1},
        {"rto": 0.0},
        {"rto": 4.0, "rto_cap": 3.2},
    ],
)
def test_a_link_fault_out_of_range_is_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        LinkFault(**bad)  # type: ignore[arg-type]


def test_local_ports_of_a_process_sockets() -> None:
    table = (
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt"
        "   uid  timeout inode\n"
        "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000"
        "  1000        0 111 1 0000000000000000 100 0 0 10 0\n"
        "   1: 0100007F:D431 0100007F:1F91 01 00000000:00000000 00:00000000 00000000"
        "  1000        0 222 1 0000000000000000 20 4 30 10 -1\n"
        "   2: 0100007F:D432 0100007F:1F91 01 00000000:00000000 00:00000000 00000000"
        "  1000        0 333 1 0000000000000000 20 4 30 10 -1\n"
        "   garbage\n"
    )
    assert local_ports(table, {111, 222}) == {0x1F90, 0xD431}
    assert local_ports(table, set()) == set()


def _relay(fault: ActiveFault | None) -> Relay:
    return Relay("node-0", 0, 0, random.Random(7), fault=fault)


async def _read_exactly(stream: trio.abc.ReceiveStream, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        data = await stream.receive_some(n - len(buf))
        assert data, f"EOF after {len(buf)} of {n} bytes"
        buf += data
    return buf


async def test_the_pipe_delays_bytes_one_way_and_keeps_their_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    client, down = trio.testing.memory_stream_pair()
    up, node = trio.testing.memory_stream_pair()
    relay = _relay(_fault(loss=0.3, jitter=0.05))
    payload = bytes(range(256)) * 4096  # 1 MiB: more than the pipe holds at once
    async with trio.open_nursery() as nursery:
        nursery.start_soon(relay.pipe_both, Connection(1), down, up)
        t0 = trio.current_time()
        nursery.start_soon(client.send_all, payload)
        got = await _read_exactly(node, len(payload))
        assert got == payload
        assert trio.current_time() - t0 >= 0.05  # at least the delay less the jitter
        # the way back is slowed too
        t1 = trio.current_time()
        await node.send_all(b"pong")
        assert await _read_exactly(client, 4) == b"pong"
        assert trio.current_time() - t1 >= 0.05
        await client.send_eof()
        assert await node.receive_some(10) == b""  # the close goes through, after the bytes
        await node.send_eof()
    assert relay.stats.delayed > 0 and relay.stats.lost > 0
    assert relay.stats.bytes == len(payload) + 4


async def test_the_pipe_without_a_fault_adds_no_delay(
    autojump_clock: trio.testing.MockClock,
) -> None:
    client, down = trio.testing.memory_stream_pair()
    up, node = trio.testing.memory_stream_pair()
    relay = _relay(None)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(relay.pipe_both, Connection(1), down, up)
        t0 = trio.current_time()
        await client.send_all(b"hello")
        assert await _read_exactly(node, 5) == b"hello"
        assert trio.current_time() == t0
        nursery.cancel_scope.cancel()
    assert relay.stats.delayed == 0


async def test_a_fault_set_on_the_connection_slows_it_like_one_on_the_relay(
    autojump_clock: trio.testing.MockClock,
) -> None:
    client, down = trio.testing.memory_stream_pair()
    up, node = trio.testing.memory_stream_pair()
    relay = _relay(None)
    conn = Connection(1, fault=_fault())  # the faulted node dialed it
    async with trio.open_nursery() as nursery:
        nursery.start_soon(relay.pipe_both, conn, down, up)
        t0 = trio.current_time()
        await client.send_all(b"x")
        await _read_exactly(node, 1)
        assert trio.current_time() - t0 == pytest.approx(0.1)
        nursery.cancel_scope.cancel()


async def test_a_cut_ends_both_ways(autojump_clock: trio.testing.MockClock) -> None:
    client, down = trio.testing.memory_stream_pair()
    up, node = trio.testing.memory_stream_pair()
    relay = _relay(_fault(cut=0.999))
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(relay.pipe_both, Connection(1), down, up)
            await client.send_all(b"x")
        # pipe_both returned, with nothing sent on: the connection is over
    assert relay.stats.cuts == 1 and relay.stats.chunks == 1
    with trio.move_on_after(10):
        await node.receive_some(10)
        pytest.fail("the cut chunk went on")
