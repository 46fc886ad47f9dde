"""Finding 14: a bad pubsub frame from a member costs that frame, not the member's gossip.

Real hosts on loopback. A member's node with a transient bug writes one frame
that is not a protobuf RPC into its own pubsub stream (the one py-libp2p uses
for its gossip), or opens a second pubsub stream and ends it in the middle of a
frame. The victim must count and log the frame, keep the member's
subscriptions, and gossip must go on both ways on the same streams.
"""

from __future__ import annotations

import logging

import pytest
import trio
from libp2p.custom_types import TProtocol
from libp2p.utils.varint import encode_uvarint

from flocknode.p2p.membership import StaticMembership
from flocknode.p2p.messages import UpdateAnnounce
from flocknode.p2p.metrics import PUBSUB_STREAM_REJECTED
from tests.integration.p2p.p2p_helpers import (
    TOPIC,
    Node,
    drain,
    running_nodes,
    wait_connected,
    wait_mesh,
    wait_until,
)

pytestmark = pytest.mark.integration

GARBAGE = b"\xff\xff\xff\xff\x0f this is not protobuf \x00\x01"


def frame(payload: bytes) -> bytes:
    return encode_uvarint(len(payload)) + payload


async def gossip_both_ways(a: Node, b: Node, tag: int) -> None:
    """``a`` and ``b`` each publish one announcement; each must receive the other's."""
    from_a, from_b = bytes([tag]) * 32, bytes([tag + 1]) * 32
    seen_a: set[bytes] = set()
    seen_b: set[bytes] = set()

    def both() -> bool:
        seen_a.update(r.message.blob_id for r in drain(a) if isinstance(r.message, UpdateAnnounce))
        seen_b.update(r.message.blob_id for r in drain(b) if isinstance(r.message, UpdateAnnounce))
        return from_b in seen_a and from_a in seen_b

    await a.gossip.publish(UpdateAnnounce(1, from_a, 1))
    await b.gossip.publish(UpdateAnnounce(1, from_b, 1))
    await wait_until(both, timeout=10)


def subscribed(node: Node, peer: Node) -> bool:
    return peer.peer_id in node.p2p.pubsub.peer_topics.get(TOPIC, set())


async def test_finding14_malformed_frame_is_skipped_and_the_member_keeps_its_gossip(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="flocknode.p2p.pubsub_guard")
    membership = StaticMembership(round_number=1)
    async with running_nodes(2, membership) as (victim, member):
        await wait_connected([victim, member])
        await wait_mesh([victim, member])
        streams = (
            member.p2p.pubsub.peers[victim.peer_id],
            victim.p2p.pubsub.peers[member.peer_id],
        )
        await streams[0].write(frame(GARBAGE))  # the member's transient bug
        metrics = victim.p2p.metrics
        await wait_until(lambda: metrics.get(PUBSUB_STREAM_REJECTED, "malformed_frame") == 1)
        await gossip_both_ways(victim, member, tag=0x10)
        # nothing was reset or forgotten: the same streams carry the gossip
        assert member.p2p.pubsub.peers.get(victim.peer_id) is streams[0]
        assert victim.p2p.pubsub.peers.get(member.peer_id) is streams[1]
        assert subscribed(victim, member) and subscribed(member, victim)
        assert any("malformed_frame" in r.getMessage() for r in caplog.records)


async def test_finding14_truncated_frame_is_counted_and_logged_and_nothing_is_forgotten(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="flocknode.p2p.pubsub_guard")
    membership = StaticMembership(round_number=1)
    async with running_nodes(2, membership) as (victim, member):
        await wait_connected([victim, member])
        await wait_mesh([victim, member])
        main = member.p2p.pubsub.peers[victim.peer_id]
        protocol = TProtocol(victim.p2p.router.get_protocols()[0])
        extra = await member.p2p.open_stream(victim.peer_id, [protocol])
        await extra.write(encode_uvarint(500) + b"\x0a\x02" + b"\x00" * 20)  # then its end
        await extra.close()
        metrics = victim.p2p.metrics
        await wait_until(lambda: metrics.get(PUBSUB_STREAM_REJECTED, "truncated_frame") == 1)
        assert any("truncated_frame" in r.getMessage() for r in caplog.records)
        await gossip_both_ways(victim, member, tag=0x20)
        assert member.p2p.pubsub.peers.get(victim.peer_id) is main
        assert subscribed(victim, member) and subscribed(member, victim)


async def test_finding14_a_reset_stream_leaves_both_sides_subscribed() -> None:
    """A frame that breaks the framing ends the stream; subscriptions come back on both sides."""
    membership = StaticMembership(round_number=1)
    async with running_nodes(2, membership) as (victim, member):
        await wait_connected([victim, member])
        await wait_mesh([victim, member])
        await member.p2p.pubsub.peers[victim.peer_id].write(b"\xff" * 11)  # no varint ends
        metrics = victim.p2p.metrics
        await wait_until(lambda: metrics.get(PUBSUB_STREAM_REJECTED, "bad_frame") == 1)
        with trio.fail_after(15):
            await gossip_both_ways(victim, member, tag=0x30)
        await wait_until(lambda: subscribed(victim, member) and subscribed(member, victim))
