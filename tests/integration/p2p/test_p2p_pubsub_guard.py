"""Raw bytes on /meshsub/... streams must never end the node
(docs/protocol.md, "Implementation notes", "Raising inside pubsub").

An attacker that is a member (so the membership gate lets it in) opens raw
streams on every protocol id the GossipSub router registered and writes
garbage, truncated, oversized and badly-prefixed frames, and a well-formed RPC
whose message carries a key that is not a key. Afterwards the victim must still
relay gossip both ways.
"""

from __future__ import annotations

import pytest
import trio
from libp2p.custom_types import TProtocol
from libp2p.peer.peerinfo import PeerInfo
from libp2p.pubsub.pb import rpc_pb2
from libp2p.utils.varint import encode_uvarint

from flocknode.identity.keys import PeerKey
from flocknode.p2p.host import build_host
from flocknode.p2p.membership import StaticMembership
from flocknode.p2p.messages import UpdateAnnounce
from flocknode.p2p.metrics import PUBSUB_STREAM_REJECTED, PUBSUB_TASK_ERROR
from tests.integration.p2p.p2p_helpers import (
    LOOPBACK,
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


def _frame(payload: bytes) -> bytes:
    return encode_uvarint(len(payload)) + payload


def _bad_key_rpc() -> bytes:
    msg = rpc_pb2.Message(
        data=b"x",
        topicIDs=[TOPIC],
        from_id=b"\x01\x02 not a peer id",
        seqno=b"\x00" * 8,
        signature=b"sig",
        key=b"not a protobuf public key",
    )
    return _frame(rpc_pb2.RPC(publish=[msg]).SerializeToString())


def _blob_ids(node: Node) -> set[bytes]:
    return {r.message.blob_id for r in drain(node) if isinstance(r.message, UpdateAnnounce)}


ATTACKS = {
    "garbage": _frame(GARBAGE),
    "oversized": encode_uvarint(8 << 20) + b"\x00" * 1024,  # claims 8 MiB
    "bad_varint": b"\xff" * 11,
    "truncated": encode_uvarint(500) + b"\x0a\x02" + b"\x00" * 20,  # then EOF
    "bad_key": _bad_key_rpc(),
}


async def test_malformed_pubsub_frames_do_not_kill_the_node() -> None:
    membership = StaticMembership(round_number=1)
    attacker_key = PeerKey.generate()
    membership.add(attacker_key.peer_id, [])
    async with running_nodes(2, membership) as (victim, other):
        await wait_connected([victim, other])
        await wait_mesh([victim, other])
        protocols = victim.p2p.router.get_protocols()
        assert len(protocols) >= 2
        attacker = build_host(attacker_key, LOOPBACK)
        async with attacker.run([]):
            await attacker.connect(PeerInfo(victim.peer_id, membership.addrs(victim.peer_id)))
            for protocol in protocols:
                for name, payload in ATTACKS.items():
                    stream = await attacker.new_stream(victim.peer_id, [TProtocol(protocol)])
                    await stream.write(payload)
                    if name == "truncated":
                        await stream.close()
                    await trio.sleep(0.05)
            metrics = victim.p2p.metrics

            def all_counted() -> bool:
                rejected = metrics.reasons(PUBSUB_STREAM_REJECTED)
                return (
                    rejected.get("malformed_frame", 0) >= len(protocols)  # garbage, per protocol
                    and rejected.get("bad_frame", 0) >= len(protocols)  # oversized / bad varint
                    and metrics.total(PUBSUB_TASK_ERROR) >= 1  # the key that is not a key
                )

            await wait_until(all_counted, 10)
            await attacker.close()

        # the victim still gossips, in both directions
        await wait_mesh([victim, other])
        await victim.gossip.publish(UpdateAnnounce(1, b"\x11" * 32, 1))
        await other.gossip.publish(UpdateAnnounce(1, b"\x22" * 32, 2))
        seen_by_victim: set[bytes] = set()
        seen_by_other: set[bytes] = set()

        def both_ways() -> bool:
            seen_by_victim.update(_blob_ids(victim))
            seen_by_other.update(_blob_ids(other))
            return b"\x22" * 32 in seen_by_victim and b"\x11" * 32 in seen_by_other

        await wait_until(both_ways, timeout=10)


async def test_non_member_pubsub_stream_is_reset() -> None:
    membership = StaticMembership(round_number=1)
    async with running_nodes(1, membership) as (victim,):
        outsider = build_host(PeerKey.generate(), LOOPBACK)
        async with outsider.run([]):
            await outsider.connect(PeerInfo(victim.peer_id, membership.addrs(victim.peer_id)))
            try:
                stream = await outsider.new_stream(
                    victim.peer_id, [TProtocol(victim.p2p.router.get_protocols()[0])]
                )
                await stream.write(_frame(GARBAGE))
            except Exception:
                pass  # the connection may already be closed by the membership gate
            # once the victim closed the connection nothing more of it can arrive
            await wait_until(lambda: victim.p2p.metrics.total("conn_refused") >= 1, 10)
            await wait_until(lambda: outsider.get_id() not in victim.p2p.connected_peers(), 10)
            await outsider.close()
        assert victim.p2p.metrics.get(PUBSUB_STREAM_REJECTED, "malformed_frame") == 0
        assert victim.p2p.started.is_set() and not victim.p2p.stopped.is_set()
