"""The voter path (PROTOCOL.md steps 4-7): fetch, open, check, aggregate, score, vote.

The vote and its salt are journaled (fsynced) before ``commitVote`` is sent; a
voter restarted at any point commits or reveals exactly what it journaled.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

import torch
import trio
from libp2p.peer.id import ID
from nacl.public import PublicKey

from flocknode.aggregation import aggregate
from flocknode.aggregation.core import apply_update
from flocknode.chain.errors import ContractRevert
from flocknode.chain.types import Phase, RoundView
from flocknode.crypto import EnvelopeError, open_update
from flocknode.crypto import KeyWrap as EnvelopeWrap
from flocknode.p2p.content import FileSink
from flocknode.p2p.framing import PROTOCOL_BLOB
from flocknode.p2p.streams import FetchFailed, fetch
from flocknode.rounds import unservable
from flocknode.rounds.byzantine import Behaviour, tamper_hash
from flocknode.rounds.context import RoundContext
from flocknode.store.journal import VoteRecord

log = logging.getLogger(__name__)

State = dict[str, torch.Tensor]
MAX_BLOB_BYTES = 2 << 30
RETRY_SECONDS = 0.5


@dataclass
class SeatInput:
    seat: int
    proposer: str
    update: State | None = None
    failed: str = ""  # a final reason to leave the seat out


async def run_voter(ctx: RoundContext, view: RoundView, seat: int) -> None:
    r = view.round
    rec = ctx.journal.get(r)
    if rec.vote is None:
        if view.phase not in (Phase.TRAIN, Phase.COMMIT):
            log.warning("missed the commit phase round=%d phase=%s", r, view.phase.label)
            return
        decided = await _decide(ctx, view, seat)
        if decided is None:
            return
        ctx.journal.update(r, role="voter", seat=seat, vote=decided[0], notes=decided[1])
        rec = ctx.journal.get(r)
    vote = rec.vote
    assert vote is not None
    v = ctx.chain.rounds.get(r, view)
    if not rec.committed and not v.votes[seat].committed:
        if v.phase is not Phase.COMMIT:
            log.warning("vote ready after the commit phase round=%d", r)
            return
        if not await _commit(ctx, r, vote):
            return
    if not ctx.journal.get(r).committed:
        ctx.journal.update(r, committed=True)
    if ctx.behaviour is Behaviour.NO_REVEAL:
        log.warning("byzantine no_reveal: not revealing round=%d", r)
        return
    v2 = await ctx.chain.wait_for(r, lambda x: x.phase is not Phase.COMMIT)
    if v2 is None or v2.votes[seat].revealed:
        ctx.journal.update(r, revealed=True)
        return
    if v2.phase is not Phase.REVEAL:
        log.warning("missed the reveal phase round=%d phase=%s", r, v2.phase.label)
        return
    await _reveal(ctx, r, vote)


async def _commit(ctx: RoundContext, r: int, vote: VoteRecord) -> bool:
    try:
        c = await ctx.client.vote_commitment(
            r,
            ctx.wallet,
            bytes.fromhex(vote.aggregate_hash),
            vote.included_bits,
            vote.rejected_bits,
            vote.flag_bits,
            vote.score,
            bytes.fromhex(vote.salt),
        )
        await ctx.client.commit_vote(r, c)
    except ContractRevert as e:
        if e.name != "AlreadyCommitted":
            log.warning("commitVote refused round=%d reason=%s", r, e)
            return False
    ctx.journal.update(r, committed=True)
    log.info("vote committed round=%d hash=%s", r, vote.aggregate_hash[:12])
    return True


async def _reveal(ctx: RoundContext, r: int, vote: VoteRecord) -> None:
    try:
        await ctx.client.reveal_vote(
            r,
            bytes.fromhex(vote.aggregate_hash),
            vote.included_bits,
            vote.rejected_bits,
            vote.flag_bits,
            vote.score,
            bytes.fromhex(vote.salt),
        )
    except ContractRevert as e:
        if e.name != "AlreadyRevealed":
            log.warning("revealVote refused round=%d reason=%s", r, e)
            return
    ctx.journal.update(r, revealed=True)
    log.info("vote revealed round=%d", r)


async def _decide(
    ctx: RoundContext, view: RoundView, seat: int
) -> tuple[VoteRecord, dict[str, float]] | None:
    r = view.round
    base_hash = await unservable.base_model(ctx, view, _collect_deadline, _news)
    if base_hash is None:
        return unservable.unavailable_vote(), {}
    base = await ctx.models.load_async(base_hash)
    shapes = {k: tuple(v.shape) for k, v in base.items()}
    seats = [SeatInput(i, p) for i, p in enumerate(view.proposers)]
    # Prefetch ciphertext while the proposers train; open once the train phase closed.
    async with trio.open_nursery() as nursery:
        for s in seats:
            nursery.start_soon(_collect_seat, ctx, r, s, shapes)
    included = [s for s in seats if s.update is not None]
    updates: list[State] = [s.update for s in included if s.update is not None]
    for s in seats:
        if s.update is None:
            log.info("seat left out round=%d seat=%d reason=%s", r, s.seat, s.failed or "timeout")
    t_collected = time.monotonic()
    result = await trio.to_thread.run_sync(
        lambda: aggregate(base, updates, ctx.settings.aggregation, seats=[s.seat for s in included])
    )
    agg_hash = await ctx.models.put_async(result.model)
    t_aggregated = time.monotonic()
    score, flags = await _score(ctx, base, result.model, included)
    timings = {
        "aggregate_seconds": t_aggregated - t_collected,
        "eval_seconds": time.monotonic() - t_aggregated,
        "collected_at": time.time() - (time.monotonic() - t_collected),
    }
    vote = VoteRecord(
        aggregate_hash=tamper_hash(ctx.behaviour, agg_hash).hex(),
        included_bits=_bits(s.seat for s in included),
        rejected_bits=_bits(result.rejected),
        flag_bits=_bits(flags),
        score=score,
        salt=os.urandom(32).hex(),
    )
    vote = unservable.collude(ctx.behaviour, r, vote)
    log.info(
        "aggregated round=%d rule=%s included=%s rejected=%s flagged=%s score_ppm=%d hash=%s",
        r,
        result.rule,
        [s.seat for s in included],
        list(result.rejected),
        flags,
        score,
        agg_hash.hex()[:12],
    )
    return vote, timings


async def _collect_seat(
    ctx: RoundContext, r: int, s: SeatInput, shapes: dict[str, tuple[int, ...]]
) -> None:
    """Fetch and open one proposer's update, retrying until the collection deadline."""
    member = ctx.membership.member_by_wallet(s.proposer)
    if member is None:
        s.failed = "proposer_not_member"
        return
    proposer_peer: ID = member.peer_id
    blob_ready = False
    while True:
        v = ctx.chain.rounds[r]
        late = ctx.chain.now() >= _collect_deadline(ctx, v)
        if v.phase not in (Phase.TRAIN, Phase.COMMIT) or late:
            return
        up = v.updates[s.seat]
        if v.phase is Phase.COMMIT and not up.submitted:
            s.failed = "not_submitted"
            return
        if up.submitted and not blob_ready:
            blob_ready = await _fetch_blob(ctx, r, up.blob_id, up.size, proposer_peer)
        if blob_ready and v.phase is Phase.COMMIT:
            wrapped = ctx.inbox.wrap_for(r, up.blob_id, proposer_peer)
            if wrapped is not None:
                try:
                    s.update = await trio.to_thread.run_sync(
                        _open,
                        ctx,
                        up.blob_id,
                        up.update_hash,
                        wrapped,
                        member.box_public_key,
                        shapes,
                    )
                except EnvelopeError as e:
                    s.failed = f"envelope: {e}"
                except (KeyError, FileNotFoundError):
                    # the blob left the store since the fetch (pruned: an old blob id
                    # replayed): fetch it again, as for any blob not held
                    blob_ready = False
                    await _news(ctx, RETRY_SECONDS)
                    continue
                return
        await _news(ctx, RETRY_SECONDS)


async def _news(ctx: RoundContext, timeout: float) -> None:
    """Wait for new gossip or a new view of the chain, at most ``timeout`` seconds."""
    with trio.move_on_after(timeout):
        async with trio.open_nursery() as nursery:

            async def first(wait: Callable[[], Awaitable[None]]) -> None:
                await wait()
                nursery.cancel_scope.cancel()

            nursery.start_soon(first, ctx.inbox.changed)
            nursery.start_soon(first, ctx.chain.changed)


def _collect_deadline(ctx: RoundContext, v: RoundView) -> float:
    """Stop collecting early enough to aggregate, score and commit in time."""
    if v.phase is Phase.TRAIN or not v.commit_end:
        return float("inf")
    margin = max(4.0, 0.4 * ctx.params.commit_seconds)
    return v.commit_end - margin


async def _fetch_blob(ctx: RoundContext, r: int, blob_id: bytes, size: int, proposer: ID) -> bool:
    if ctx.store.has(blob_id):
        return True
    holders = [proposer, *sorted(ctx.inbox.holders(r, blob_id) - {proposer}, key=str)]
    sink = FileSink(ctx.store.object_path(blob_id))
    try:
        await fetch(
            ctx.p2p,
            PROTOCOL_BLOB,
            blob_id,
            holders,
            sink,
            max_size=MAX_BLOB_BYTES,
            expected_size=size,
            round_number=r,
        )
    except FetchFailed as e:
        log.debug("blob fetch failed round=%d blob=%s %s", r, blob_id.hex()[:12], e)
        return False
    return True


def _open(
    ctx: RoundContext,
    blob_id: bytes,
    update_hash: bytes,
    wrapped: bytes,
    sender_box: bytes,
    shapes: dict[str, tuple[int, ...]],
) -> State:
    wrap = EnvelopeWrap(ctx.box_key.public_bytes, wrapped)
    with ctx.store.open(blob_id) as f:
        return open_update(
            f,
            wrap,
            recipient=ctx.box_key.private,
            sender=PublicKey(sender_box),
            update_hash=update_hash,
            expected_shapes=shapes,
            blob_id=blob_id,
        )


async def _score(
    ctx: RoundContext, base: State, new: State, included: list[SeatInput]
) -> tuple[int, list[int]]:
    """Accuracy change (ppm) of the new model on private validation data, and flags."""
    t0 = time.monotonic()
    before = (await ctx.learner.evaluate_async(base, "val")).ppm
    after = (await ctx.learner.evaluate_async(new, "val")).ppm
    flags = []
    for s in included:  # every included update is judged, rejected ones too
        if s.update is None:
            continue
        alone = await trio.to_thread.run_sync(apply_update, base, s.update)
        gain = (await ctx.learner.evaluate_async(alone, "val")).ppm - before
        if gain < ctx.settings.flag_threshold_ppm:
            flags.append(s.seat)
    ctx.metrics.eval_seconds.observe(time.monotonic() - t0)
    return after - before, flags


def _bits(seats: Iterable[int]) -> int:
    return sum(1 << s for s in set(seats))
