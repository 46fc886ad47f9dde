"""Finding 10: who may fetch what from the content server (real hosts on loopback).

The server is wired as the node wires it: one content store holding models and
update blobs, the round journal naming the blob this node sealed for a round.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import trio

from flocknode.crypto.canonical import MAGIC as MODEL_MAGIC
from flocknode.crypto.canonical import canonical_bytes
from flocknode.p2p.content import MemorySink, PrefixedSource, SealedBlobs
from flocknode.p2p.fetch import FetchFailed, fetch
from flocknode.p2p.framing import PROTOCOL_BLOB, PROTOCOL_MODEL
from flocknode.p2p.membership import StaticMembership
from flocknode.p2p.metrics import STREAM_REFUSED
from flocknode.p2p.serve import ContentServer
from flocknode.p2p.stream_io import StreamLimits
from flocknode.store import ContentStore, Journal
from tests.integration.p2p.p2p_helpers import LOOPBACK, Node, running_nodes, wait_connected

pytestmark = pytest.mark.integration

FAST = StreamLimits(
    read_timeout=2.0, open_timeout=5.0, request_timeout=2.0, write_timeout=5.0, min_rate=1e5
)
QUIET = replace(LOOPBACK, discovery_interval=60.0)  # no membership sweep mid-test


def node_server(
    node: Node, root: Path, limits: StreamLimits | None = None
) -> tuple[ContentStore, Journal]:
    store, journal = ContentStore(root / "objects"), Journal(root / "journal")
    ContentServer(
        node.p2p,
        SealedBlobs(store, lambda cid, r: journal.get(r).blob_id == cid.hex()),
        PrefixedSource(store, MODEL_MAGIC),
        limits,
    ).install()
    return store, journal


def seal_blob(store: ContentStore, journal: Journal, round: int, size: int = 200_000) -> bytes:
    """An update blob (envelope magic, then ciphertext-like bytes) journaled for ``round``."""
    data = b"FLKE" + hashlib.sha256(round.to_bytes(8, "big")).digest() * (size // 32)
    cid = store.put_bytes(data)
    journal.update(round, role="proposer", blob_id=cid.hex(), blob_size=len(data))
    return cid


async def attempt(
    node: Node, server: Node, protocol: str, cid: bytes, rnd: int = 0, limits: StreamLimits = FAST
) -> str:
    try:
        await fetch(
            node.p2p,
            protocol,
            cid,
            [server.peer_id],
            MemorySink(),
            max_size=8 << 20,
            round_number=rnd,
            limits=limits,
        )
    except FetchFailed as e:
        return e.attempts[0].reason
    return "ok"


async def test_finding10_model_protocol_serves_models_never_update_blobs(tmp_path: Path) -> None:
    membership = StaticMembership(round_number=2)
    async with running_nodes(2, membership, config=QUIET) as (server, member):
        await wait_connected([server, member])
        store, journal = node_server(server, tmp_path)
        model = store.put_bytes(canonical_bytes({"w": torch.arange(1000, dtype=torch.float32)}))
        blob = seal_blob(store, journal, 2)
        assert await attempt(member, server, PROTOCOL_MODEL, model) == "ok"
        assert await attempt(member, server, PROTOCOL_MODEL, blob) == "not_found"
        # and the blob protocol serves blobs only: a model is no round's blob
        membership.set_voters(2, [member.peer_id])
        assert await attempt(member, server, PROTOCOL_BLOB, model, rnd=2) == "not_found"
        assert await attempt(member, server, PROTOCOL_BLOB, blob, rnd=2) == "ok"


async def test_finding10_blob_only_to_voters_of_the_round_it_was_sealed_for(
    tmp_path: Path,
) -> None:
    membership = StaticMembership(round_number=3)
    async with running_nodes(3, membership, config=QUIET) as (server, old_voter, voter):
        await wait_connected([server, old_voter, voter])
        membership.set_voters(2, [old_voter.peer_id])
        membership.set_voters(3, [voter.peer_id])
        store, journal = node_server(server, tmp_path)
        blob3 = seal_blob(store, journal, 3)
        # a voter of round 2 naming its own round gets nothing of round 3
        assert await attempt(old_voter, server, PROTOCOL_BLOB, blob3, rnd=2) == "not_found"
        assert await attempt(old_voter, server, PROTOCOL_BLOB, blob3, rnd=3) == "refused_not_voter"
        assert await attempt(voter, server, PROTOCOL_BLOB, blob3, rnd=3) == "ok"
        assert server.p2p.metrics.reasons(STREAM_REFUSED) == {"not_found": 1, "not_voter": 1}


async def test_finding10_silent_members_cannot_take_the_slots_of_a_voter(tmp_path: Path) -> None:
    limits = StreamLimits(max_streams_per_peer=2, max_streams_total=4, request_timeout=30.0)
    membership = StaticMembership(round_number=1)
    async with running_nodes(4, membership, config=QUIET) as nodes:
        server, voter, greedy = nodes[0], nodes[1], nodes[2:]
        await wait_connected(nodes)
        membership.set_voters(1, [voter.peer_id])
        store, journal = node_server(server, tmp_path, limits)
        blob = seal_blob(store, journal, 1)
        # members open streams and never send their request: each holds at most its
        # own two pending places, the rest are refused at once
        held = []
        for g in greedy:
            for _ in range(3):
                held.append(await g.p2p.open_stream(server.peer_id, [PROTOCOL_BLOB]))
        with trio.fail_after(10):
            while server.p2p.metrics.get(STREAM_REFUSED, "busy") < len(greedy):
                await trio.sleep(0.05)
        # the voter is served at once (well before the silent ones time out)
        with trio.fail_after(limits.request_timeout / 2):
            assert await attempt(voter, server, PROTOCOL_BLOB, blob, rnd=1) == "ok"
        for s in held:
            await s.reset()
