"""The dialer's backoff when a peer closes each connection at once.

A small fake host stands in for py-libp2p: these tests pin down the order of
the swarm's notifications, which a real host leaves to its scheduler.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import trio
import trio.testing
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo

from flocknode.identity.keys import PeerKey
from flocknode.p2p.discovery import Backoff, PeerDialer
from flocknode.p2p.membership import StaticMembership
from flocknode.p2p.metrics import DIAL, P2PMetrics


class _Peerstore:
    def add_addrs(self, peer: ID, addrs: object, ttl: int) -> None:
        return None


class _Network:
    pass


class ClosingHost:
    """Every dial succeeds and the remote closes the connection at once.

    ``order`` says how the swarm reports it: ``"connect-first"`` (connected,
    then disconnected) or ``"disconnect-first"`` (the disconnect notification
    runs before the connect one, when the peer is already gone).
    """

    def __init__(self, me: ID, order: str) -> None:
        self._me = me
        self.order = order
        self.dialer: PeerDialer | None = None
        self.dial_times: list[float] = []
        self.live: set[ID] = set()
        self.fading: dict[ID, int] = {}

    def get_id(self) -> ID:
        return self._me

    def get_connected_peers(self) -> list[ID]:
        for peer, looks in list(self.fading.items()):
            self.fading[peer] = looks - 1
            if looks <= 0:
                del self.fading[peer]
        return list(self.live | set(self.fading))

    def get_peerstore(self) -> _Peerstore:
        return _Peerstore()

    def get_network(self) -> _Network:
        return _Network()

    async def connect(self, info: PeerInfo) -> None:
        assert self.dialer is not None
        self.dial_times.append(trio.current_time())
        peer = info.peer_id
        if self.order == "connect-first":
            self.live.add(peer)
            self.dialer.connected(peer)
            self.live.discard(peer)
            self.dialer.disconnected(peer)
        elif self.order == "no-disconnect":
            # up for the connect notice and the dialer's own look after the dial,
            # then closed with no disconnect notice at all
            self.fading[peer] = 2
            self.dialer.connected(peer)
        else:
            self.dialer.disconnected(peer)  # nothing to judge yet
            self.dialer.connected(peer)  # reported after the end


@pytest.fixture(autouse=True)
def _no_swarm_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    from flocknode.p2p import compat

    monkeypatch.setattr(compat, "forget_failed_dial", lambda network, peer: None)


async def _dial_gaps(
    order: str, enough: Callable[[ClosingHost], bool]
) -> tuple[ClosingHost, P2PMetrics]:
    membership = StaticMembership()
    peer = PeerKey.generate().peer_id
    membership.add(peer, ["/ip4/127.0.0.1/tcp/4001"])
    host = ClosingHost(PeerKey.generate().peer_id, order)
    metrics = P2PMetrics()
    dialer = PeerDialer(
        host,  # type: ignore[arg-type]
        membership,
        metrics,
        backoff=Backoff(base=0.2, cap=2.0, jitter=0.0),
        interval=1.0,
    )
    host.dialer = dialer
    async with trio.open_nursery() as nursery:
        nursery.start_soon(dialer.run)
        with trio.fail_after(120):
            while not enough(host):
                await trio.sleep(0.05)
        nursery.cancel_scope.cancel()
    return host, metrics


@pytest.mark.parametrize("order", ["connect-first", "disconnect-first", "no-disconnect"])
async def test_connections_that_end_at_once_back_off_whatever_the_notification_order(
    order: str, autojump_clock: trio.testing.MockClock
) -> None:
    host, metrics = await _dial_gaps(order, lambda h: len(h.dial_times) >= 8)
    gaps = [b - a for a, b in zip(host.dial_times, host.dial_times[1:], strict=False)]
    # 0.2, 0.4, 0.8, 1.6, then the 2 s cap: without backoff every gap is ~0.2 s
    assert min(gaps[4:]) >= 2.0
    assert metrics.get(DIAL, "failed") + metrics.get(DIAL, "ok") == len(host.dial_times)
    if order == "disconnect-first":
        assert metrics.get(DIAL, "failed") == len(host.dial_times)


class StayingHost(ClosingHost):
    """Connections stay up until the test ends them (``live``)."""


async def test_connected_for_counts_members_whose_connection_lasted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # what a voter's reach counts (docs/protocol.md, "Unservable models")
    membership = StaticMembership()
    a, b = PeerKey.generate().peer_id, PeerKey.generate().peer_id
    for p in (a, b):
        membership.add(p, ["/ip4/127.0.0.1/tcp/4001"])
    host = StayingHost(PeerKey.generate().peer_id, "stay")
    dialer = PeerDialer(host, membership, P2PMetrics())  # type: ignore[arg-type]
    host.live |= {a, b}
    dialer.connected(a)
    await trio.sleep(6)
    dialer.connected(b)
    assert dialer.connected_for(0) == {a, b}
    assert dialer.connected_for(5) == {a}
    await trio.sleep(5)
    assert dialer.connected_for(5) == {a, b}
    host.live.discard(a)  # gone, whether or not its disconnect notice came yet
    assert dialer.connected_for(5) == {b}
    dialer.disconnected(b)
    host.live.discard(b)
    host.live.add(b)
    dialer.connected(b)  # back: a new connection, counted from now
    assert dialer.connected_for(5) == set()
