"""The host's gates on loopback: py-libp2p's own dials and streams, its identify/ping handlers."""

from __future__ import annotations

import os
import socket
from dataclasses import replace

import pytest
import trio
from libp2p.custom_types import TProtocol
from libp2p.host.exceptions import StreamFailure
from libp2p.host.ping import ID as PING
from libp2p.identity.identify.identify import ID as IDENTIFY
from libp2p.identity.identify.identify import parse_identify_response
from libp2p.network.exceptions import SwarmException
from libp2p.network.stream.exceptions import StreamError
from libp2p.peer.id import ID

from flocknode.identity.keys import PeerKey
from flocknode.p2p import compat
from flocknode.p2p.host import MEMBERS_ONLY_BUILTINS, P2PHost
from flocknode.p2p.membership import StaticMembership
from flocknode.p2p.metrics import BUILTIN_REFUSED, CONN_REFUSED, DIAL_REFUSED, OUTBOUND_REFUSED
from tests.integration.p2p.p2p_helpers import LOOPBACK, TOPIC, start_node, wait_until

pytestmark = pytest.mark.integration

# no sweep and no periodic redial during a test: only what the test does happens
QUIET = replace(LOOPBACK, discovery_interval=600.0)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _identified(p2p: P2PHost, other: P2PHost) -> bool:
    """``p2p``'s peerstore holds what ``other`` answered to identify."""
    peerstore = p2p.host.get_peerstore()
    return peerstore.has_peer(other.peer_id) and bool(peerstore.get_protocols(other.peer_id))


async def _read_all(p2p: P2PHost, peer: ID, protocol: str, send: bytes = b"") -> bytes:
    """What ``peer`` answers on a new ``protocol`` stream until it closes or resets it.

    A reset that lands before the multistream reply was read fails the open itself:
    that is no answer either."""
    try:
        stream = await p2p.host.new_stream(peer, [TProtocol(protocol)])
    except StreamFailure:
        return b""
    data = b""
    with trio.fail_after(10):  # guards a hang only; the answer comes at once
        try:
            if send:
                await stream.write(send)
            while len(data) < len(send) or not send:
                chunk = await stream.read()
                if not chunk:
                    break
                data += chunk
        except StreamError:  # EOF or reset
            pass
    with trio.move_on_after(1):
        await stream.reset()
    return data


async def test_libp2p_does_not_dial_a_non_member_by_itself() -> None:
    membership = StaticMembership()
    async with trio.open_nursery() as nursery:
        a = await start_node(nursery, membership, config=QUIET)
        x = await start_node(nursery, StaticMembership(), member=False, config=QUIET)
        # every gate is still in force on a running host with its gossip subscribed
        compat.verify_installed(a.p2p.host, a.p2p.pubsub, MEMBERS_ONLY_BUILTINS)
        assert a.p2p.pubsub.allowed_topics == frozenset({TOPIC})
        a.p2p.host.get_peerstore().add_addrs(x.peer_id, x.p2p.host.get_transport_addrs(), 60)
        # host.new_stream is how pubsub and identify open streams (and redial, not
        # through our dialer): the stream gate refuses a non-member at once ...
        with pytest.raises(StreamFailure, match="stream gate"):
            await a.p2p.host.new_stream(x.peer_id, [PING])
        assert a.p2p.metrics.get(OUTBOUND_REFUSED, "ping") == 1
        # ... and the swarm's new_stream underneath it, which dials, meets the dial gate
        with pytest.raises(SwarmException, match="dial gate"):
            await a.p2p.host.get_network().new_stream(x.peer_id)
        assert a.p2p.metrics.get(DIAL_REFUSED, "not_member") == 1
        assert x.p2p.metrics.total(CONN_REFUSED) == 0  # nothing reached x
        assert a.p2p.connected_peers() == [] and x.p2p.connected_peers() == []
        for node in (a, x):
            node.gossip.stop()
            node.p2p.stop()


async def test_libp2p_does_not_dial_a_member_we_back_off_from_but_we_still_do() -> None:
    membership = StaticMembership()
    slow = replace(QUIET, redial_base=300.0, redial_cap=600.0)
    gone = PeerKey.generate().peer_id  # a member whose registered address refuses
    membership.add(gone, [f"/ip4/127.0.0.1/tcp/{_closed_port()}"])
    async with trio.open_nursery() as nursery:
        # a dials it once at start, fails, and backs off for 240-360 s
        a = await start_node(nursery, membership, config=slow)
        await wait_until(lambda: a.p2p.dialer.failures(gone) >= 1, 10)
        assert a.p2p.dialer.backing_off(gone)
        with pytest.raises(SwarmException, match="dial gate"):
            await a.p2p.host.new_stream(gone, [PING])
        assert a.p2p.metrics.get(DIAL_REFUSED, "backoff") == 1
        # our own explicit stream is let through the gate (and then fails to connect)
        with pytest.raises(Exception) as failed:
            await a.p2p.open_stream(gone, [PING])
        assert "dial gate" not in str(failed.value)
        assert a.p2p.metrics.get(DIAL_REFUSED, "backoff") == 1
        # the permit ended with the call: libp2p's own dial is refused again
        with pytest.raises(SwarmException, match="dial gate"):
            await a.p2p.host.new_stream(gone, [PING])
        assert a.p2p.metrics.get(DIAL_REFUSED, "backoff") == 2
        a.gossip.stop()
        a.p2p.stop()


async def test_identify_and_ping_answer_members_only() -> None:
    membership = StaticMembership()
    async with trio.open_nursery() as nursery:
        a = await start_node(nursery, membership, config=QUIET)
        b = await start_node(nursery, membership, config=QUIET)
        # the outsider is a member while it connects, then its membership ends; the
        # sweep that would close its connection is not due yet: that is the window
        outsider_view = StaticMembership()
        outsider_view.add(a.peer_id, membership.addrs(a.peer_id))
        outsider = P2PHost(PeerKey.generate(), outsider_view, QUIET)
        membership.add(outsider.peer_id)
        await nursery.start(outsider.run)
        await wait_until(lambda: outsider.peer_id in a.p2p.connected_peers(), 10)
        # identify has run both ways while it was a member (else py-libp2p asks again later)
        await wait_until(lambda: _identified(a.p2p, outsider) and _identified(outsider, a.p2p), 10)
        membership.remove(outsider.peer_id)

        answer = await _read_all(b.p2p, a.peer_id, IDENTIFY)
        assert parse_identify_response(answer).public_key == a.key.keypair.public_key.serialize()
        nonce = os.urandom(32)
        assert await _read_all(b.p2p, a.peer_id, PING, send=nonce) == nonce

        assert outsider.peer_id in a.p2p.connected_peers()  # still connected: the window
        assert await _read_all(outsider, a.peer_id, IDENTIFY) == b""
        assert await _read_all(outsider, a.peer_id, PING, send=nonce) == b""
        assert a.p2p.metrics.get(BUILTIN_REFUSED, "identify") == 1
        assert a.p2p.metrics.get(BUILTIN_REFUSED, "ping") == 1
        assert a.p2p.metrics.total(BUILTIN_REFUSED) == 2  # b was answered
        outsider.stop()
        for node in (a, b):
            node.gossip.stop()
            node.p2p.stop()
