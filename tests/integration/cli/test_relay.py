"""The ``--chaos latency`` relay (flocknode/cluster/relay.py) on real loopback
sockets: bytes arrive complete and in order, a fault delays them both ways and
ends on ``clear``, a connection the faulted process dialed through another
node's relay is slowed too, and the relays stop on ``close``."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio

from flocknode.cluster.launcher import free_ports
from flocknode.cluster.linkfault import LinkFault
from flocknode.cluster.relay import Relays

pytestmark = pytest.mark.integration

STEADY = LinkFault(delay=(0.15, 0.15), jitter=0.0, loss=0.0, cut=0.0)


async def _echo(stream: trio.SocketStream) -> None:
    async with stream:
        while data := await stream.receive_some(1 << 16):
            await stream.send_all(data)


@asynccontextmanager
async def _cluster(settings: LinkFault) -> AsyncIterator[tuple[Relays, dict[str, int]]]:
    """Two echo "nodes" on loopback, each behind a relay of its own."""
    relay_a, relay_b, node_a, node_b = free_ports(4)
    async with trio.open_nursery() as nursery:
        for port in (node_a, node_b):
            await nursery.start(trio.serve_tcp, _echo, port)
        ports = {"a": (relay_a, node_a), "b": (relay_b, node_b)}
        relays = await trio.to_thread.run_sync(lambda: Relays.start(ports, 1, settings=settings))
        try:
            yield relays, {"a": relay_a, "b": relay_b}
        finally:
            await trio.to_thread.run_sync(relays.close)
            nursery.cancel_scope.cancel()


async def _round_trip(stream: trio.SocketStream, payload: bytes) -> tuple[bytes, float]:
    t0 = time.monotonic()
    got = b""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(stream.send_all, payload)
        while len(got) < len(payload):
            data = await stream.receive_some(1 << 16)
            assert data, f"EOF after {len(got)} of {len(payload)} bytes"
            got += data
    return got, time.monotonic() - t0


async def test_bytes_arrive_complete_in_order_and_slowed_only_during_a_fault() -> None:
    with trio.fail_after(60):
        async with _cluster(STEADY) as (relays, port):
            stream = await trio.open_tcp_stream("127.0.0.1", port["a"])
            payload = os.urandom(3 << 20)  # far more than a pipe holds: back-pressure
            got, fast = await _round_trip(stream, payload)
            assert got == payload and fast < 2.0
            await trio.to_thread.run_sync(relays.fault, "a", 0)
            got, slow = await _round_trip(stream, b"ping")
            assert got == b"ping" and slow >= 0.3  # 150 ms each way
            got, _ = await _round_trip(stream, payload)
            assert got == payload
            await trio.to_thread.run_sync(relays.clear, "a")
            got, fast = await _round_trip(stream, b"ping")
            assert got == b"ping" and fast < 0.1
            await stream.aclose()
            stats = relays.to_json()["nodes"]
            assert stats["a"]["connections"] == 1 and stats["a"]["delayed"] > 0
            assert stats["a"]["bytes"] == 4 * len(payload) + 16
            assert stats["b"]["chunks"] == 0


async def test_loss_holds_chunks_back_without_losing_a_byte() -> None:
    lossy = LinkFault(delay=(0.05, 0.05), jitter=0.04, loss=0.3, rto=0.05, rto_cap=0.4, cut=0.0)
    with trio.fail_after(60):
        async with _cluster(lossy) as (relays, port):
            stream = await trio.open_tcp_stream("127.0.0.1", port["a"])
            await trio.to_thread.run_sync(relays.fault, "a", 0)
            payload = os.urandom(1 << 20)
            got, _ = await _round_trip(stream, payload)
            assert got == payload
            await stream.aclose()
            assert relays.to_json()["nodes"]["a"]["lost"] > 0


async def test_a_link_the_faulted_process_dialed_elsewhere_is_slowed_too() -> None:
    with trio.fail_after(60):
        async with _cluster(STEADY) as (relays, port):
            # this process plays node a: it dials node b through b's relay
            before = await trio.open_tcp_stream("127.0.0.1", port["b"])
            await _round_trip(before, b"warm")  # accepted and piped
            await trio.to_thread.run_sync(relays.fault, "a", os.getpid())
            during = await trio.open_tcp_stream("127.0.0.1", port["b"])
            for stream in (before, during):
                got, slow = await _round_trip(stream, b"ping")
                assert got == b"ping" and slow >= 0.3
            await trio.to_thread.run_sync(relays.clear, "a")
            got, fast = await _round_trip(before, b"ping")
            assert fast < 0.1
            for stream in (before, during):
                await stream.aclose()


async def test_a_fault_on_some_links_slows_only_those() -> None:
    other = subprocess.Popen(["sleep", "60"])  # a node's process that dials nothing here
    try:
        with trio.fail_after(60):
            async with _cluster(STEADY) as (relays, port):
                # this process plays node b and dials node a through a's relay
                stream = await trio.open_tcp_stream("127.0.0.1", port["a"])
                await _round_trip(stream, b"warm")
                # a's links to another node only: this connection is not one of them
                await trio.to_thread.run_sync(relays.fault, "a", 0, {"c": other.pid})
                got, _ = await _round_trip(stream, b"ping")
                assert got == b"ping" and relays.to_json()["nodes"]["a"]["delayed"] == 0
                await trio.to_thread.run_sync(relays.clear, "a")
                # a's link to b: this connection, and one b dials during the fault
                await trio.to_thread.run_sync(relays.fault, "a", 0, {"b": os.getpid()})
                during = await trio.open_tcp_stream("127.0.0.1", port["a"])
                for s in (stream, during):
                    got, slow = await _round_trip(s, b"ping")
                    assert got == b"ping" and slow >= 0.3  # 150 ms each way
                    await s.aclose()
                assert relays.to_json()["nodes"]["a"]["delayed"] > 0
    finally:
        other.kill()
        other.wait()


async def test_close_ends_the_relayed_connections() -> None:
    with trio.fail_after(30):
        async with _cluster(STEADY) as (relays, port):
            stream = await trio.open_tcp_stream("127.0.0.1", port["a"])
            await _round_trip(stream, b"hello")
            await trio.to_thread.run_sync(relays.close)
            # closed by the relay: an end of stream, or a reset
            with contextlib.suppress(trio.BrokenResourceError):
                assert await stream.receive_some(10) == b""
            with pytest.raises(OSError):
                await trio.open_tcp_stream("127.0.0.1", port["a"])
            await stream.aclose()
