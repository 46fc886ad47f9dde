"""A long-running host keeps nothing about peers that are not members.

Real hosts on loopback: many fresh non-member peer ids connect (stock py-libp2p
hosts that answer identify to anyone, and full nodes with pubsub), members
leave; afterwards nothing reachable from the victim's ``P2PHost`` (py-libp2p's
peerstore, swarm, pubsub and router tables, our dialer) holds their peer ids,
and the victim still gossips with the members.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

import pytest
import trio
from libp2p.host.exceptions import StreamFailure
from libp2p.identity.identify.identify import ID as IDENTIFY
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from multiaddr import Multiaddr

from flocknode.identity.keys import PeerKey
from flocknode.p2p.host import HostConfig, P2PHost, build_host
from flocknode.p2p.membership import StaticMembership
from flocknode.p2p.messages import UpdateAnnounce
from flocknode.p2p.metrics import CONN_REFUSED, OUTBOUND_REFUSED
from tests.integration.p2p.p2p_helpers import (
    LOOPBACK,
    Node,
    drain,
    start_node,
    wait_mesh,
    wait_until,
)

pytestmark = pytest.mark.integration

QUIET = replace(LOOPBACK, discovery_interval=600.0)  # for the outsiders: dial once
STOCK = HostConfig(listen_addrs=("/ip4/127.0.0.1/tcp/0",))
N_STOCK = 100
N_PUBSUB = 5

_ATOMS = (str, bytes, int, float, bool, type(None), type)
_SKIP_MODULES = ("trio", "multiaddr", "google", "cryptography", "logging")


def holders(root: Any, peers: Iterable[ID], max_depth: int = 14) -> dict[str, int]:
    """Where, in the object graph under ``root``, a container holds one of ``peers``
    (as an ID, its base58 string or its bytes) as a key, element or attribute.

    Paths are attribute chains (``p2p.host.peerstore.peer_data_map{key}``)."""
    needles: set[Any] = set()
    for p in peers:
        needles |= {p, str(p), p.to_bytes()}
    found: dict[str, int] = {}

    def hit(path: str) -> None:
        found[path] = found.get(path, 0) + 1

    def is_needle(x: Any) -> bool:
        try:
            return x in needles
        except TypeError:  # unhashable
            return False

    seen: set[int] = set()
    stack: list[tuple[Any, str, int]] = [(root, "p2p", 0)]
    while stack:
        obj, path, depth = stack.pop()
        if depth > max_depth or id(obj) in seen or isinstance(obj, _ATOMS):
            continue
        seen.add(id(obj))
        if type(obj).__module__.startswith(_SKIP_MODULES):
            continue
        if isinstance(obj, dict):
            for k, v in list(obj.items()):
                if is_needle(k) or (isinstance(k, tuple) and any(map(is_needle, k))):
                    hit(path + "{key}")
                stack.append((v, path + "[]", depth + 1))
        elif isinstance(obj, (list, tuple, set, frozenset)):
            for v in list(obj):
                if is_needle(v):
                    hit(path + "{elem}")
                else:
                    stack.append((v, path + "[]", depth + 1))
        else:
            attrs = getattr(obj, "__dict__", None)
            for k, v in list(attrs.items()) if isinstance(attrs, dict) else ():
                if is_needle(v):
                    hit(f"{path}.{k}")
                else:
                    stack.append((v, f"{path}.{k}", depth + 1))
    return found


def _identified(p2p: P2PHost, other: P2PHost) -> bool:
    """``p2p``'s peerstore holds what ``other`` answered to identify."""
    peerstore = p2p.host.get_peerstore()
    return peerstore.has_peer(other.peer_id) and bool(peerstore.get_protocols(other.peer_id))


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _stock_peer_connects(victim: ID, addrs: list[Multiaddr]) -> ID:
    """A stock py-libp2p host (answers identify to anyone) with a fresh id connects
    once, stays until the victim closes the connection, and goes away."""
    key = PeerKey.generate()
    host = build_host(key, STOCK)
    async with host.run([Multiaddr(a) for a in STOCK.listen_addrs]):
        try:
            with trio.move_on_after(5):
                await host.connect(PeerInfo(victim, addrs))
                while victim in host.get_connected_peers():
                    await trio.sleep(0.02)
        except Exception:  # the victim may close during the handshake already
            pass
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(3):
                await host.close()
    return key.peer_id


async def _pubsub_peer_connects(nursery: trio.Nursery, victim: Node, addrs: list[Multiaddr]) -> ID:
    """A full node (pubsub, identify) that takes the victim for a member and dials it."""
    view = StaticMembership()
    view.add(victim.peer_id, addrs)
    outsider = P2PHost(PeerKey.generate(), view, QUIET)
    await nursery.start(outsider.run)
    await wait_until(lambda: outsider.dialer.failures(victim.peer_id) >= 1, 10)
    outsider.stop()
    await outsider.stopped.wait()
    return outsider.peer_id


async def _gossip(src: Node, dst: Node, tag: int) -> None:
    msg = UpdateAnnounce(round=1, blob_id=bytes([tag]) * 32, size=tag)
    await src.gossip.publish(msg)
    await wait_until(lambda: any(r.message == msg for r in drain(dst)), 10)


async def _gossip_both_ways(a: Node, b: Node, tag: int) -> None:
    await _gossip(a, b, tag)
    await _gossip(b, a, tag + 1)


async def _forgotten(root: P2PHost, peers: set[ID], timeout: float = 10.0) -> dict[str, int]:
    """``holders(root, peers)`` once it is empty, or as it is after ``timeout``
    (disconnects settle asynchronously: pubsub's dead-peer queue, the sweep)."""
    with trio.move_on_after(timeout):
        while holders(root, peers):
            await trio.sleep(0.05)
    return holders(root, peers)


def _peerstore_ids(node: Node) -> set[ID]:
    return set(node.p2p.host.get_peerstore().peer_ids())


async def test_fresh_non_members_leave_nothing_behind() -> None:
    membership = StaticMembership(round_number=1)
    async with trio.open_nursery() as nursery:
        a = await start_node(nursery, membership)
        b = await start_node(nursery, membership)
        await wait_mesh([a, b])
        addrs = membership.addrs(a.peer_id)
        strangers: set[ID] = set()
        limiter = trio.CapacityLimiter(8)

        async def stock() -> None:
            async with limiter:
                strangers.add(await _stock_peer_connects(a.peer_id, addrs))

        async def pubsub() -> None:
            async with limiter:
                strangers.add(await _pubsub_peer_connects(nursery, a, addrs))

        async with trio.open_nursery() as attack:
            for _ in range(N_STOCK):
                attack.start_soon(stock)
            for _ in range(N_PUBSUB):
                attack.start_soon(pubsub)
        assert len(strangers) == N_STOCK + N_PUBSUB
        # one refusal per connection: a stranger whose dial is retried under load
        # (a second connection before the first was closed) is refused twice
        assert a.p2p.metrics.get(CONN_REFUSED, "not_member") >= N_STOCK + N_PUBSUB

        left_behind = await _forgotten(a.p2p, strangers)
        assert not left_behind, left_behind
        assert _peerstore_ids(a) == {a.peer_id, b.peer_id}
        assert not (a.p2p.dialer.tracked_peers() & strangers)
        # what is left is counters by reason
        assert all(str(p) not in key for p in strangers for key in a.p2p.metrics.snapshot())
        assert a.p2p.connected_peers() == [b.peer_id]
        await _gossip_both_ways(a, b, 1)
        for node in (a, b):
            node.gossip.stop()
            node.p2p.stop()


async def test_no_identify_or_pubsub_stream_to_a_non_member() -> None:
    membership = StaticMembership()
    async with trio.open_nursery() as nursery:
        a = await start_node(nursery, membership, config=QUIET)
        # the outsider is a member while it connects, then its membership ends; the
        # sweep that would close its connection is not due yet: that is the window
        view = StaticMembership()
        view.add(a.peer_id, membership.addrs(a.peer_id))
        outsider = P2PHost(PeerKey.generate(), view, QUIET)
        membership.add(outsider.peer_id)
        await nursery.start(outsider.run)
        await wait_until(lambda: outsider.peer_id in a.p2p.connected_peers(), 10)
        # identify has run both ways while it was a member (else py-libp2p asks again later)
        await wait_until(lambda: _identified(a.p2p, outsider) and _identified(outsider, a.p2p), 10)
        membership.remove(outsider.peer_id)
        refused = a.p2p.metrics.get(OUTBOUND_REFUSED, "identify")
        # py-libp2p's identify (and pubsub) open streams through host.new_stream
        with pytest.raises(StreamFailure, match="stream gate"):
            await a.p2p.host.new_stream(outsider.peer_id, [IDENTIFY])
        assert a.p2p.metrics.get(OUTBOUND_REFUSED, "identify") == refused + 1
        assert outsider.peer_id in a.p2p.connected_peers()  # refused on an open connection
        outsider.stop()
        a.gossip.stop()
        a.p2p.stop()


async def test_members_that_left_are_forgotten() -> None:
    membership = StaticMembership(round_number=1)
    async with trio.open_nursery() as nursery:
        a = await start_node(nursery, membership)  # sweeps every 0.5 s
        b = await start_node(nursery, membership)
        # c: a connected member, identify runs both ways and fills a's peerstore
        c = await start_node(nursery, membership)
        # d: a member a cannot reach, so a's dialer tracks failures and backs off
        d = PeerKey.generate().peer_id
        membership.add(d, [f"/ip4/127.0.0.1/tcp/{_closed_port()}"])
        await wait_mesh([a, b, c])
        peerstore = a.p2p.host.get_peerstore()
        await wait_until(
            lambda: peerstore.has_peer(c.peer_id) and bool(peerstore.get_protocols(c.peer_id)), 10
        )
        await wait_until(lambda: a.p2p.dialer.failures(d) >= 1, 10)
        assert {c.peer_id, d} <= a.p2p.dialer.tracked_peers() and d in _peerstore_ids(a)

        membership.remove(c.peer_id)
        membership.remove(d)
        gone = {c.peer_id, d}
        # a's sweep closes c's connection (c, still taking a for a member, redials
        # and is closed at once: it stops now)
        await wait_until(lambda: a.p2p.metrics.get(CONN_REFUSED, "membership_ended") >= 1, 10)
        c.gossip.stop()
        c.p2p.stop()
        await c.p2p.stopped.wait()
        left_behind = await _forgotten(a.p2p, gone)
        assert not left_behind, left_behind
        assert _peerstore_ids(a) == {a.peer_id, b.peer_id}
        assert a.p2p.dialer.tracked_peers() == {b.peer_id}
        await _gossip_both_ways(a, b, 10)
        for node in (a, b):
            node.gossip.stop()
            node.p2p.stop()
