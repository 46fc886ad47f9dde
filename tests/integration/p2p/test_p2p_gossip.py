"""Task gossip between real hosts on loopback: delivery, validation, non-members."""

from __future__ import annotations

import contextlib

import pytest
import trio
from libp2p.peer.id import ID
from libp2p.pubsub.pb import rpc_pb2

from flocknode.identity.keys import PeerKey
from flocknode.p2p.codec import encode_message
from flocknode.p2p.gossip import Received
from flocknode.p2p.membership import StaticMembership
from flocknode.p2p.messages import KeyWraps, ModelAvailable, UpdateAnnounce, WireKeyWrap
from flocknode.p2p.metrics import CONN_REFUSED, GOSSIP_DROPPED
from tests.integration.p2p.p2p_helpers import (
    Node,
    drain,
    running_nodes,
    start_node,
    wait_connected,
    wait_mesh,
    wait_until,
)

pytestmark = pytest.mark.integration


async def test_five_nodes_all_receive_each_others_announcements() -> None:
    membership = StaticMembership(round_number=1)
    async with running_nodes(5, membership) as nodes:
        await wait_connected(nodes)
        await wait_mesh(nodes)
        sent = {}
        for i, node in enumerate(nodes):
            msg = UpdateAnnounce(round=1, blob_id=bytes([i]) * 32, size=1000 + i)
            sent[node.peer_id] = msg
            await node.gossip.publish(msg)
        got: list[dict[ID, object]] = [{} for _ in nodes]

        def complete() -> bool:
            for i, node in enumerate(nodes):
                for r in drain(node):
                    assert isinstance(r, Received)
                    got[i][r.origin] = r.message
            return all(len(g) == len(nodes) for g in got)

        await wait_until(complete, timeout=10)
        for g in got:
            assert g == sent
        for node in nodes:
            assert node.p2p.metrics.total(GOSSIP_DROPPED) == 0


async def test_validator_drops_and_counts_stale_future_and_malformed() -> None:
    membership = StaticMembership(round_number=5)
    async with running_nodes(2, membership) as (a, b):
        await wait_connected([a, b])
        await wait_mesh([a, b])
        # publish() refuses what the validator would drop ...
        for bad_round in (4, 7):
            try:
                await a.gossip.publish(ModelAvailable(bad_round, b"\x01" * 32, 10))
            except ValueError:
                pass
            else:
                raise AssertionError("publish accepted an out-of-window round")
        # ... so push invalid payloads past it, signed by a member, straight into pubsub
        await a.p2p.pubsub.publish(
            a.gossip.topic, encode_message(ModelAvailable(4, b"\x01" * 32, 9))
        )
        await a.p2p.pubsub.publish(
            a.gossip.topic, encode_message(ModelAvailable(9, b"\x01" * 32, 9))
        )
        await a.p2p.pubsub.publish(a.gossip.topic, b"\xc1 not msgpack")
        wraps = KeyWraps(6, b"\x02" * 32, (WireKeyWrap(b"\x03" * 32, b"\x04" * 72),))
        await a.gossip.publish(wraps)  # next round: accepted
        await wait_until(lambda: any(r.message == wraps for r in drain(b)), timeout=10)
        dropped = a.p2p.metrics.reasons(GOSSIP_DROPPED)  # dropped at the origin already
        assert dropped == {"stale_round": 1, "future_round": 1, "malformed": 1}
        assert not [r for r in drain(a) if r.message != wraps]


async def test_validator_rejects_message_signed_by_non_member_and_never_raises() -> None:
    membership = StaticMembership(round_number=1)
    async with running_nodes(1, membership) as (a,):
        membership.remove(a.peer_id)
        with pytest.raises(ValueError, match="not a member"):
            await a.gossip.publish(UpdateAnnounce(1, b"\x05" * 32, 3))
        membership.add(a.peer_id, [])
        outsider = PeerKey.generate()
        data = encode_message(UpdateAnnounce(1, b"\x05" * 32, 3))
        forged = rpc_pb2.Message(
            data=data, topicIDs=[a.gossip.topic], from_id=outsider.peer_id.to_bytes()
        )
        assert a.gossip.validate(a.peer_id, forged) is False
        assert a.gossip.validate(outsider.peer_id, forged) is False
        garbage = rpc_pb2.Message(data=b"\x00", from_id=b"\xff\xfe junk id")
        assert a.gossip.validate(a.peer_id, garbage) is False
        assert a.p2p.metrics.reasons(GOSSIP_DROPPED) == {
            "not_member": 2,
            "forwarder_not_member": 1,
        }


async def test_unregistered_peer_is_disconnected_and_its_gossip_not_delivered() -> None:
    membership = StaticMembership(round_number=1)
    async with running_nodes(2, membership) as (a, b):
        await wait_connected([a, b])
        await wait_mesh([a, b])
        # the outsider believes a and b are members and dials them; they do not know it
        outsider_view = StaticMembership(round_number=1)
        for n in (a, b):
            outsider_view.add(n.peer_id, membership.addrs(n.peer_id))
        received: dict[str, list[Received]] = {"a": [], "b": [], "outsider": []}

        def collect(name: str, node: Node) -> list[Received]:
            received[name].extend(drain(node))
            return received[name]

        async with trio.open_nursery() as nursery:
            outsider = await start_node(nursery, outsider_view, member=False)
            outsider_view.add(outsider.peer_id, [])
            await wait_until(lambda: a.p2p.metrics.get(CONN_REFUSED, "not_member") >= 1, 10)
            for i in range(3):
                with contextlib.suppress(Exception):
                    await outsider.gossip.publish(UpdateAnnounce(1, b"\x06" * 32, 7))
                # delivered to itself: published and handed to every peer it sends to
                await wait_until(lambda k=i + 1: len(collect("outsider", outsider)) >= k, 10)
            # a and b closed the outsider and never took a pubsub stream from it: the
            # guard resets a non-member's stream before reading a frame
            for node in (a, b):
                await wait_until(
                    lambda node=node: outsider.peer_id not in node.p2p.connected_peers(), 10
                )
                assert outsider.peer_id not in node.p2p.pubsub.peers
            await a.gossip.publish(UpdateAnnounce(1, b"\x07" * 32, 8))
            await wait_until(lambda: any(r.origin == a.peer_id for r in collect("b", b)), 10)
            collect("a", a)
            for name in ("a", "b"):
                assert all(r.origin != outsider.peer_id for r in received[name])
            for n in (a, b):
                assert n.p2p.metrics.total(CONN_REFUSED) >= 1
            outsider.gossip.stop()
            outsider.p2p.stop()
