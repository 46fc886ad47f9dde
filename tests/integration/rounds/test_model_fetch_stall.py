"""Issue finding 3: a member cannot stall a node's global-model fetch (real hosts on loopback).

A member announces the global model's hash (``ModelAvailable``) and, asked for
it, answers with a huge size or the right size and then dribbles. The node
tries the round's winning voters first, refuses any size but the canonical
size of the task's model, drops a slow holder after a budget derived from the
model's size and the time left, and stops at the deadline it serves.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
import trio
from libp2p.abc import INetStream
from libp2p.peer.id import ID

from flocknode.chain.types import TaskParams
from flocknode.crypto import canonical_bytes
from flocknode.p2p.framing import MAX_FRAME, PROTOCOL_MODEL, REQUEST, encode_frame_header, encode_ok
from flocknode.p2p.gossip import Received
from flocknode.p2p.membership import StaticMembership
from flocknode.p2p.messages import ModelAvailable
from flocknode.p2p.metrics import FETCH_ATTEMPT_FAILED
from flocknode.p2p.serve import ContentServer
from flocknode.rounds.inbox import Inbox
from flocknode.rounds.metrics import RoundMetrics
from flocknode.rounds.model_keeper import ModelKeeper
from flocknode.rounds.models import ModelBook, attempt_budget
from flocknode.rounds.snapshot import ChainFeed
from flocknode.store import ContentStore
from tests.integration.p2p.p2p_helpers import Node, running_nodes, wait_connected

pytestmark = pytest.mark.integration

SHAPE = (512, 512)  # a 1 MiB model: the old 1 MiB/s floor over a claimed size does not apply
HUGE = 1 << 30  # a size the attacker claims (under the old 2 GiB cap)
PARAMS = TaskParams(
    token="0x" + "11" * 20,
    model_spec_hash=bytes(32),
    config_hash=bytes(32),
    initial_model_hash=bytes(32),
    total_rounds=5,
    train_seconds=60,
)


def model(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"layer.weight": torch.randn(SHAPE, generator=g), "layer.bias": torch.zeros(512)}


def attacker(node: Node, claimed: int | None) -> None:
    """Answer every model request with ``claimed`` bytes (None: the true size) and dribble."""

    async def handler(stream: INetStream) -> None:
        try:
            request = await stream.read(REQUEST.size)
            cid = bytes(request[1:33]) if len(request) >= 33 else bytes(32)
            size = claimed if claimed is not None else model_bytes_size
            await stream.write(encode_ok(size, cid))
            await stream.write(encode_frame_header(min(size, MAX_FRAME)))
            while True:  # progress every 0.2 s, so no read timeout ever fires
                await stream.write(b"\0" * 1024)
                await trio.sleep(0.2)
        except Exception:
            pass  # the requester gave up on us: the stream was reset

    node.p2p.set_stream_handler(PROTOCOL_MODEL, handler)


model_bytes_size = len(canonical_bytes(model(0)))


def honest_server(node: Node, root: Path) -> bytes:
    """A winning voter holding the global model and serving it; returns its hash."""
    store = ContentStore(root)
    h = ModelBook(store, None).put(model(1))
    ContentServer(node.p2p, store, store).install()
    return h


def fetcher_book(node: Node, root: Path) -> ModelBook:
    book = ModelBook(ContentStore(root), node.p2p)
    book.put(model(0))  # the initial model: fixes the task's model size
    return book


def engine_for(book: ModelBook, winners: list[ID]) -> ModelKeeper:
    engine = ModelKeeper(
        client=SimpleNamespace(),  # type: ignore[arg-type]
        feed=ChainFeed(),
        models=book,
        inbox=Inbox(bytes(32)),
        gossip=SimpleNamespace(),  # type: ignore[arg-type]
        learner=None,
        params=PARAMS,
        wallet="0x" + "ab" * 20,
        metrics=RoundMetrics(),
    )

    async def winning_voters(h: bytes) -> list[Any]:  # what the chain's revealed votes say
        return list(winners)

    engine._winning_voters = winning_voters  # type: ignore[method-assign]
    return engine


async def test_finding3_announcer_claiming_a_huge_size_does_not_stall_the_model_fetch(
    tmp_path: Path,
) -> None:
    membership = StaticMembership(round_number=1)
    async with running_nodes(3, membership) as (bad, winner, node):
        await wait_connected([bad, winner, node])
        attacker(bad, claimed=HUGE)
        h = honest_server(winner, tmp_path / "winner")
        book = fetcher_book(node, tmp_path / "node")
        engine = engine_for(book, [winner.peer_id])
        # the attacker announced the model first, as any member can
        engine.inbox.on_message(Received(bad.peer_id, ModelAvailable(1, h, HUGE)))
        t0 = trio.current_time()
        with trio.fail_after(20):  # 599c82c: the announcer first, 10 s + 1 GiB at 1 MiB/s
            await engine._fetch_model(h)
        assert book.has(h)
        assert trio.current_time() - t0 < 10


async def test_finding3_slow_and_lying_holders_are_dropped_within_a_budget(
    tmp_path: Path,
) -> None:
    membership = StaticMembership(round_number=1)
    async with running_nodes(4, membership) as (slow, liar, winner, node):
        await wait_connected([slow, liar, winner, node])
        attacker(slow, claimed=None)  # the right size, one KiB per 0.2 s
        attacker(liar, claimed=HUGE)
        h = honest_server(winner, tmp_path / "winner")
        book = fetcher_book(node, tmp_path / "node")
        assert book.model_size == model_bytes_size
        t0 = trio.current_time()
        deadline = t0 + 60
        # colluding winners ahead of the honest one (the worst order)
        ok = await book.fetch(h, [slow.peer_id, liar.peer_id, winner.peer_id], deadline=deadline)
        took = trio.current_time() - t0
        assert ok and book.has(h)
        budget = attempt_budget(model_bytes_size, 60)
        assert budget < 7  # 5 s to answer + 1 MiB at 1 MiB/s
        # the dribbler was cut at its budget, not at the 60 s deadline (a wide
        # margin: the rest is quick, but this machine may be loaded)
        assert took < 30, took
        reasons = node.p2p.metrics.reasons(FETCH_ATTEMPT_FAILED)
        assert reasons.get("too_slow") == 1 and reasons.get("wrong_size") == 1


async def test_finding3_a_model_fetch_ends_at_the_deadline_it_serves(tmp_path: Path) -> None:
    membership = StaticMembership(round_number=1)
    async with running_nodes(4, membership) as (s1, s2, s3, node):
        await wait_connected([s1, s2, s3, node])
        for s in (s1, s2, s3):
            attacker(s, claimed=None)
        book = fetcher_book(node, tmp_path / "node")
        h = ModelBook(ContentStore(tmp_path / "ref"), None).put(model(1))
        t0 = trio.current_time()
        ok = await book.fetch(h, [s1.peer_id, s2.peer_id, s3.peer_id], deadline=t0 + 8)
        took = trio.current_time() - t0
        assert not ok and not book.has(h)
        assert took < 8 + 4, took  # the deadline, plus a shielded stream reset at most
