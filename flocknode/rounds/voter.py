"""The voter's I/O (docs/protocol.md, "Behaviour of the node", Voter): fetch, open,
check, aggregate, score, commit, reveal.

Thin loops around ``voter_machine``: ``run_voter`` around ``decide`` (the vote's
life), ``_collect_seat`` around ``decide_seat`` (one proposer's update). The
vote and its salt are journaled (fsynced) before ``commitVote`` is sent; a
voter restarted at any point commits or reveals exactly what it journaled.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch
import trio
from libp2p.peer.id import ID
from nacl.public import PublicKey

from flocknode import malloc
from flocknode.aggregation import AggregationInputError, aggregate
from flocknode.aggregation.core import Flat, Layout, apply_update, layout_of
from flocknode.chain.errors import ContractRevert
from flocknode.chain.types import Phase, RoundView, TaskParams, UpdateView
from flocknode.crypto import EnvelopeError, open_update
from flocknode.crypto import KeyWrap as EnvelopeWrap
from flocknode.crypto.envelope import unwrap_key, wrap_key
from flocknode.logs import PeerLog
from flocknode.p2p.content import FileSink
from flocknode.p2p.fetch import FetchFailed, fetch
from flocknode.p2p.framing import PROTOCOL_BLOB
from flocknode.p2p.host import P2PHost
from flocknode.p2p.messages import KeyWraps, WireKeyWrap
from flocknode.rounds import unservable
from flocknode.rounds import voter_machine as m
from flocknode.rounds.context import RoleReads
from flocknode.rounds.inbox import Inbox
from flocknode.rounds.update_form import UpdateForm, round_scale, update_form
from flocknode.store.journal import VoteRecord, noted_seconds
from flocknode.store.spill import SpillDir, SpilledUpdate

log = logging.getLogger(__name__)
peer_log = PeerLog(log)

State = dict[str, torch.Tensor]
RETRY_SECONDS = m.RETRY_SECONDS
Candidate = tuple[ID, bytes, bytes]  # (origin, sender box key, wrapped content key)


@dataclass
class SeatInput:
    seat: int
    proposer: str
    update: Flat | None = None  # opened: on disk (flocknode.store.spill), or packed top-k
    failed: str = ""  # a final reason to leave the seat out
    wrong_size: bool = False  # the size claimed on chain is not the model's envelope size
    open_seconds: float = 0.0  # decrypting, parsing and decoding its blob
    # monotonic times of its first fetch's start and its blob's arrival (None: never fetched)
    fetch_started: float | None = None
    fetched_at: float | None = None


class VoterDeps(RoleReads, Protocol):
    """What the voter reads: what both roles read, and these."""

    @property
    def inbox(self) -> Inbox: ...
    @property
    def p2p(self) -> P2PHost: ...
    @property
    def wallet(self) -> str: ...
    @property
    def params(self) -> TaskParams: ...
    @property
    def spill(self) -> SpillDir: ...


def facts(
    ctx: VoterDeps,
    view: RoundView,
    seat: int,
    refused: tuple[str, str] = ("", ""),
    sent_at: float | None = None,
) -> m.VoterFacts:
    """What the voter knows now; ``refused``: the commit's and the reveal's refusal."""
    r = view.round
    rec = ctx.journal.get(r)
    v = ctx.feed.rounds.get(r, view)
    on_chain = v.votes[seat] if seat < len(v.votes) else None  # none: a reorg took the election
    return m.VoterFacts(
        phase=v.phase,
        decided=rec.vote is not None,
        committed=rec.committed,
        revealed=rec.revealed,
        chain_committed=on_chain is not None and on_chain.committed,
        chain_revealed=on_chain is not None and on_chain.revealed,
        withhold_reveal=not ctx.behaviour.reveals,
        commit_refused=refused[0],
        reveal_refused=refused[1],
        fresh=_fresh(ctx, sent_at),
        reveal_over=v.reveal_end > 0 and ctx.feed.now() >= v.reveal_end,
    )


async def run_voter(ctx: VoterDeps, view: RoundView, seat: int) -> None:
    """Act as the voter of ``seat`` in ``view.round`` until its vote is revealed or given up.

    An exception (a chain call that failed, a store error) leaves the journal
    as it was before the failed action; the caller retries the whole run.
    """
    r = view.round
    refused = ("", "")  # the last commitVote's and revealVote's refusal in this phase
    sent_at: float | None = None  # the feed's clock when this run's last commit/reveal returned
    while True:
        action = m.decide(facts(ctx, view, seat, refused, sent_at))
        if isinstance(action, m.Done):
            return
        if isinstance(action, m.GiveUp):
            log.warning("voter gave up round=%d seat=%d: %s", r, seat, action.reason)
            return
        if isinstance(action, m.Decide):
            try:
                decided = await _decide(ctx, ctx.feed.rounds.get(r, view), seat)
            except _PhaseOver as e:
                log.warning("voter gave up round=%d seat=%d: %s", r, seat, e)
                return
            if decided is None:
                return  # cut off from most of the round: abstains (logged, counted)
            vote, notes = decided
            await ctx.journal.update_async(r, role="voter", seat=seat, vote=vote, notes=notes)
        elif isinstance(action, m.Commit):
            refused = (await _commit(ctx, r, _journaled_vote(ctx, r)), refused[1])
            sent_at = ctx.feed.clock()
        elif isinstance(action, m.Reveal):
            reason = await _reveal(ctx, r, _journaled_vote(ctx, r))
            if reason and reason != refused[1]:  # once per reason, not per attempt
                log.info("revealVote refused round=%d, sent again at the next view: %s", r, reason)
            refused = (refused[0], reason)
            sent_at = ctx.feed.clock()
        elif isinstance(action, m.Record):
            await ctx.journal.update_async(r, **{action.field: True})
        elif isinstance(action, m.WaitView):
            if _fresh(ctx, sent_at):  # nothing sent since this view: wait for the next
                sent_at = ctx.feed.latest.read_at
            phase = ctx.feed.rounds.get(r, view).phase
            await ctx.feed.wait_for(r, functools.partial(_news_since, ctx, sent_at, phase))
        else:
            await ctx.feed.wait_for(r, functools.partial(_moved_past, action.phase))
            refused = ("", "")  # a refusal in one phase says nothing about the next


class _PhaseOver(Exception):
    """The commit phase ended while the vote was being decided: no vote could be
    committed any more, so the rest of the work (aggregation, scoring) is skipped
    and its time and memory go to the round under way."""


# Phases after the commit phase. Seeding is not among them: a view that shows it
# again is a reorganisation the voter machine waits out (its election may come back).
_PAST_COMMIT = (Phase.REVEAL, Phase.FINALIZABLE, Phase.FINALIZED, Phase.VOIDED)


def _in_time(ctx: VoterDeps, view: RoundView) -> None:
    """Raise ``_PhaseOver`` once the round's view is past the commit phase."""
    phase = ctx.feed.rounds.get(view.round, view).phase
    if phase in _PAST_COMMIT:
        raise _PhaseOver(f"the commit phase ended while deciding (phase={phase.label})")


def _fresh(ctx: VoterDeps, sent_at: float | None) -> bool:
    """The latest view was read after this run's last commit or reveal returned."""
    return sent_at is None or ctx.feed.latest.read_at > sent_at


def _news_since(ctx: VoterDeps, sent_at: float | None, phase: Phase, v: RoundView) -> bool:
    """A view read after ``sent_at``, or one past ``phase``."""
    return _fresh(ctx, sent_at) or v.phase is not phase


def _moved_past(phase: Phase, v: RoundView) -> bool:
    return v.phase is not phase


def _journaled_vote(ctx: VoterDeps, r: int) -> VoteRecord:
    vote = ctx.journal.get(r).vote
    if vote is None:
        raise RuntimeError(f"round {r}: no journaled vote to send")
    return vote


def _vote_args(vote: VoteRecord) -> tuple[bytes, int, int, int, int, bytes]:
    """A vote as the contract takes it: the commitment's preimage and the reveal's arguments."""
    return (
        bytes.fromhex(vote.aggregate_hash),
        vote.included_bits,
        vote.rejected_bits,
        vote.flag_bits,
        vote.score,
        bytes.fromhex(vote.salt),
    )


async def _commit(ctx: VoterDeps, r: int, vote: VoteRecord) -> str:
    """Send commitVote; the refusal reason, or "" once committed (journaled)."""
    t0 = time.monotonic()
    try:
        c = await ctx.client.vote_commitment(r, ctx.wallet, *_vote_args(vote))
        await ctx.client.commit_vote(r, c)
    except ContractRevert as e:
        if e.name != "AlreadyCommitted":
            return str(e)
    noted = noted_seconds(ctx.journal.get(r).notes, "commit_seconds", t0)
    await ctx.journal.update_async(r, committed=True, notes=noted)
    log.info("vote committed round=%d hash=%s", r, vote.aggregate_hash[:12])
    return ""


async def _reveal(ctx: VoterDeps, r: int, vote: VoteRecord) -> str:
    """Send revealVote; the refusal reason, or "" once revealed (journaled)."""
    t0 = time.monotonic()
    try:
        await ctx.client.reveal_vote(r, *_vote_args(vote))
    except ContractRevert as e:
        if e.name != "AlreadyRevealed":
            return str(e)
    noted = noted_seconds(ctx.journal.get(r).notes, "reveal_seconds", t0)
    await ctx.journal.update_async(r, revealed=True, notes=noted)
    log.info("vote revealed round=%d", r)
    return ""


async def _decide(
    ctx: VoterDeps, view: RoundView, seat: int
) -> tuple[VoteRecord, dict[str, float]] | None:
    """The vote: the base model (or "unavailable"), every seat collected, aggregated,
    scored; None to abstain (no base model, and cut off from most of the round)."""
    r = view.round
    base_hash = await unservable.base_model(
        ctx, view, _collect_deadline, _news, functools.partial(_reach, ctx)
    )
    if base_hash is unservable.Missing.CUT_OFF:
        return None
    if base_hash is unservable.Missing.UNAVAILABLE:
        return unservable.unavailable_vote(), {}
    ctx.spill.clear(r)  # a restarted voter opens every update again
    try:
        return await _decide_on(ctx, view, await ctx.models.load_async(base_hash))
    finally:
        ctx.spill.clear(r)
        # the round's models but the cached new one are freed: give their pages back
        await trio.to_thread.run_sync(malloc.trim)


async def _decide_on(
    ctx: VoterDeps, view: RoundView, base: State
) -> tuple[VoteRecord, dict[str, float]]:
    """The vote on ``base``: every seat collected (opened to disk), aggregated, scored."""
    r = view.round
    form = update_form(base, ctx.settings.aggregation)
    layout = layout_of(base)
    size = form.blob_size
    scale = round_scale(ctx.settings, r, base)  # at the round's learning rate
    seats = [SeatInput(i, p) for i, p in enumerate(view.proposers)]
    opening = Opening(form, layout, size)
    # Prefetch ciphertext while the proposers train; open once the train phase closed.
    async with trio.open_nursery() as nursery:
        for s in seats:
            nursery.start_soon(_collect_seat, ctx, r, s, opening)
    included = [s for s in seats if s.update is not None]
    updates = [s.update for s in included if s.update is not None]
    # A size claim other than the envelope size is on chain for every voter to see:
    # the seat is included and rejected (slashed like a norm rejection), never fetched.
    wrong_size = [s.seat for s in seats if s.wrong_size]
    for s in seats:
        if s.update is None:
            log.info("seat left out round=%d seat=%d reason=%s", r, s.seat, s.failed or "timeout")
    t_collected = time.monotonic()
    _in_time(ctx, view)
    result = await trio.to_thread.run_sync(
        lambda: aggregate(
            base,
            updates,
            ctx.settings.aggregation,
            seats=[s.seat for s in included],
            scale=scale,
            scratch=ctx.spill.scratch(r),
        )
    )
    _in_time(ctx, view)
    # the new model is held here only until it is scored: stored, not cached (a
    # node reads it from the store once it is the global model), so that each
    # seat's "alone" model takes its place in memory rather than its side
    new, result = result.model, dataclasses.replace(result, model={})
    agg_hash = await ctx.models.put_async(new, cache=False)
    t_aggregated = time.monotonic()
    in_time = functools.partial(_in_time, ctx, view)
    in_time()
    before = (await ctx.learner.evaluate_async(base, "val")).ppm
    in_time()
    after = (await ctx.learner.evaluate_async(new, "val")).ppm
    del new
    flags = await _flags(ctx, base, before, included, set(result.no_work), in_time)
    score = after - before
    ctx.metrics.eval_seconds.observe(time.monotonic() - t_aggregated)
    timings = {
        "transfer_seconds": transfer_seconds(seats),
        "open_seconds": sum(s.open_seconds for s in seats),
        "aggregate_seconds": t_aggregated - t_collected,
        "eval_seconds": time.monotonic() - t_aggregated,
        "collected_at": time.time() - (time.monotonic() - t_collected),
    }
    vote = VoteRecord(
        aggregate_hash=ctx.behaviour.aggregate_hash(agg_hash).hex(),
        included_bits=_bits([*(s.seat for s in included), *wrong_size]),
        rejected_bits=_bits([*result.rejected, *wrong_size]),
        flag_bits=_bits(flags),
        score=score,
        salt=os.urandom(32).hex(),
    )
    vote = ctx.behaviour.vote(r, vote)
    log.info(
        "aggregated round=%d rule=%s included=%s rejected=%s no_work=%s flagged=%s "
        "score_ppm=%d hash=%s",
        r,
        result.rule,
        sorted([*(s.seat for s in included), *wrong_size]),
        sorted([*result.rejected, *wrong_size]),
        list(result.no_work),
        sorted(flags),
        score,
        agg_hash.hex()[:12],
    )
    return vote, timings


def transfer_seconds(seats: Iterable[SeatInput]) -> float:
    """The longest fetch of the round's blobs, from its first attempt to the blob
    held (fetches run side by side, each starting once its update is on chain;
    0 if none was fetched)."""
    spans = [
        s.fetched_at - s.fetch_started
        for s in seats
        if s.fetch_started is not None and s.fetched_at is not None
    ]
    return max(spans, default=0.0)


@dataclass(frozen=True)
class Opening:
    """What every seat's update of the round must be: its form, layout and blob size."""

    form: UpdateForm
    layout: Layout
    size: int
    # one update decoded in memory at a time (each is written to disk, then dropped)
    open_lock: trio.Lock = field(default_factory=trio.Lock)


async def _collect_seat(ctx: VoterDeps, r: int, s: SeatInput, expect: Opening) -> None:
    """Fetch and open one proposer's update (``voter_machine.decide_seat``), until the
    collection deadline; ``s`` ends with the update, or with why it has none."""
    member = ctx.membership.member_by_wallet(s.proposer)
    blob_ready = False  # the fetch (or the store) has the ciphertext
    fetch_failed = False
    tried: set[Candidate] = set()  # wraps that did not open the blob
    while True:
        v = ctx.feed.rounds[r]
        up = v.updates[s.seat]
        untried: tuple[Candidate, ...] = ()
        if member is not None and blob_ready and v.phase is Phase.COMMIT:
            found = _wraps_for(ctx, v, up.blob_id, member.peer_id, member.box_public_key)
            untried = tuple(c for c in found if c not in tried)
        action = m.decide_seat(
            m.SeatFacts(
                phase=v.phase,
                now=ctx.feed.now(),
                deadline=_collect_deadline(ctx, v),
                member=member is not None,
                submitted=up.submitted,
                claimed_size=up.size,
                expected_size=expect.size,
                blob_held=blob_ready,
                fetch_failed=fetch_failed,
                untried=untried,
                opened=s.update is not None,
            )
        )
        if isinstance(action, m.Stop):
            return
        if isinstance(action, m.LeaveOut):
            s.failed = action.reason
            if action.wrong_size:
                s.wrong_size = True
                _count_wrong_size(ctx, r, s.seat, up.size, expect.size)
            return
        assert member is not None  # decide_seat left out a seat without one
        if isinstance(action, m.Fetch):
            fetch_one = functools.partial(
                _fetch_blob, ctx, r, up.blob_id, expect.size, member.peer_id
            )
            if s.fetch_started is None:
                s.fetch_started = time.monotonic()
            blob_ready = await _until_collect_deadline(ctx, r, fetch_one)
            fetch_failed = not blob_ready
            if blob_ready:
                s.fetched_at = time.monotonic()
        elif isinstance(action, m.Open):
            _origin, sender_box, wrapped = action.wrap
            spill_to = ctx.spill.seat(r, s.seat)
            async with expect.open_lock:
                t0 = time.monotonic()
                try:
                    s.update, key = await trio.to_thread.run_sync(
                        _open, ctx, up, wrapped, sender_box, expect, spill_to
                    )
                except EnvelopeError as e:
                    # another wrap (a relay) may still open it: not final before the deadline
                    s.failed = f"envelope: {e}"
                    tried.add(action.wrap)
                    continue
                except (KeyError, FileNotFoundError):
                    # the blob left the store since the fetch (pruned: an old blob id
                    # replayed): fetch it again, as for any blob not held
                    blob_ready = False
                    continue
                finally:
                    s.open_seconds += time.monotonic() - t0
            await _relay(ctx, v, up.blob_id, key)
            return
        else:
            await _news(ctx, max(0.0, action.until - ctx.feed.now()))
            fetch_failed = False


def _count_wrong_size(ctx: VoterDeps, r: int, seat: int, claimed: int, size: int) -> None:
    ctx.metrics.inc("seat_wrong_size")
    peer_log.warning(
        "wrong_size",
        "seat rejected: claimed size is not the envelope size round=%d seat=%d "
        "claimed=%d expected=%d",
        r,
        seat,
        claimed,
        size,
    )


def _wraps_for(
    ctx: VoterDeps, v: RoundView, blob_id: bytes, proposer: ID, proposer_box: bytes
) -> list[Candidate]:
    """``(origin, sender box key, wrapped key)`` for ``blob_id``: the proposer's, then relays.

    A relay is the same content key wrapped by another voter of the round
    (``_relay``); wraps from anyone else are not looked at.
    """
    out: list[Candidate] = []
    senders: list[tuple[ID, bytes]] = [(proposer, proposer_box)]
    for w in dict.fromkeys(v.voters):
        m = ctx.membership.member_by_wallet(w)
        if m is not None and m.peer_id != proposer and m.box_public_key != ctx.box_key.public_bytes:
            senders.append((m.peer_id, m.box_public_key))
    for origin, box in senders:
        wrapped = ctx.inbox.wrap_for(v.round, blob_id, origin)
        if wrapped is not None:
            out.append((origin, box, wrapped))
    return out


async def _relay(ctx: VoterDeps, v: RoundView, blob_id: bytes, key: bytes) -> None:
    """Wrap a seat's content key (verified: it opened the update) for the round's other voters.

    One honest voter that received the proposer's wrap is enough for every
    honest voter to open the seat, so a proposer cannot split the voters by
    wrapping for some of them only. Sent in the commit phase only (voters open
    nothing before it), so no key is released before the train phase ends.
    """
    me = ctx.box_key.public_bytes
    wraps: list[WireKeyWrap] = []
    for w in dict.fromkeys(v.voters):
        m = ctx.membership.member_by_wallet(w)
        if m is None or m.box_public_key == me:
            continue
        try:
            env = wrap_key(key, ctx.box_key.private, PublicKey(m.box_public_key))
        except Exception:  # a box key nacl refuses (low order): that voter gets no relay
            ctx.metrics.inc("relay_wrap_failed")
            continue
        wraps.append(WireKeyWrap(env.recipient, env.sealed))
    wraps = list({w.recipient: w for w in wraps}.values())
    if not wraps:
        return
    try:
        await ctx.gossip.publish(KeyWraps(v.round, blob_id, tuple(wraps)))
        ctx.metrics.inc("key_relays_published")
    except Exception as e:  # best effort, like the proposer's wraps
        ctx.metrics.inc("gossip_publish_failed")
        log.debug("relay publish failed round=%d error=%r", v.round, e)


async def _news(ctx: VoterDeps, timeout: float) -> None:
    """Wait for new gossip or a new view of the chain, at most ``timeout`` seconds."""
    with trio.move_on_after(timeout):
        async with trio.open_nursery() as nursery:

            async def first(wait: Callable[[], Awaitable[None]]) -> None:
                await wait()
                nursery.cancel_scope.cancel()

            nursery.start_soon(first, ctx.inbox.changed)
            nursery.start_soon(first, ctx.feed.changed)


async def _until_collect_deadline(
    ctx: VoterDeps, r: int, step: Callable[[], Awaitable[bool]]
) -> bool:
    """``step()``, cancelled (False) once the collection deadline passes or the phase ends.

    A fetch started in the train phase may still run when the commit phase
    begins: the deadline is checked on every new view of the chain.
    """
    done = False
    async with trio.open_nursery() as nursery:

        async def run() -> None:
            nonlocal done
            done = await step()
            nursery.cancel_scope.cancel()

        nursery.start_soon(run)
        while True:
            v = ctx.feed.rounds[r]
            left = _collect_deadline(ctx, v) - ctx.feed.now()
            if left <= 0 or v.phase not in (Phase.TRAIN, Phase.COMMIT):
                nursery.cancel_scope.cancel()
                break
            with trio.move_on_after(min(left, RETRY_SECONDS)):
                await ctx.feed.changed()
    return done


def _reach(ctx: VoterDeps, v: RoundView) -> unservable.Reach:
    stable = ctx.p2p.peers_connected_for(unservable.REACH_SECONDS)
    return unservable.reach(v, ctx.wallet, ctx.membership.peer_of, stable)


def _collect_deadline(ctx: VoterDeps, v: RoundView) -> float:
    """Stop collecting early enough to aggregate, score and commit in time."""
    if v.phase is Phase.TRAIN or not v.commit_end:
        return float("inf")
    margin = max(4.0, 0.4 * ctx.params.commit_seconds)
    return v.commit_end - margin


async def _fetch_blob(ctx: VoterDeps, r: int, blob_id: bytes, size: int, proposer: ID) -> bool:
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
            max_size=size,
            expected_size=size,
            round_number=r,
        )
    except FetchFailed as e:
        log.debug("blob fetch failed round=%d blob=%s %s", r, blob_id.hex()[:12], e)
        return False
    return True


def _open(
    ctx: VoterDeps,
    up: UpdateView,
    wrapped: bytes,
    sender_box: bytes,
    expect: Opening,
    spill_to: Path,
) -> tuple[Flat, bytes]:
    """The update, written to ``spill_to`` (a top-k one kept packed in memory), and
    its content key (for ``_relay``);
    EnvelopeError if it does not open, or is not an update of the layout."""
    wrap = EnvelopeWrap(ctx.box_key.public_bytes, wrapped)
    try:
        sender = PublicKey(sender_box)
        key = unwrap_key(wrap, ctx.box_key.private, sender)
    except EnvelopeError:
        raise
    except Exception as e:  # a box key nacl refuses
        raise EnvelopeError(f"bad sender key: {type(e).__name__}") from None
    with ctx.store.open(up.blob_id) as f:
        update = open_update(
            f,
            wrap,
            recipient=ctx.box_key.private,
            sender=sender,
            update_hash=up.update_hash,
            expected_shapes=expect.form.shapes,
            blob_id=up.blob_id,
        )
    packed = expect.form.packed(update, expect.layout)  # top-k: read as sent
    if packed is not None:
        return packed, key
    try:
        # dense updates: the canonical bytes fix names and shapes, not dtypes
        spilled = SpilledUpdate.write(spill_to, expect.form.dense(update), expect.layout, "update")
    except AggregationInputError as e:
        raise EnvelopeError(f"not an update of the model: {e}") from None
    finally:
        # the decoded update's tensors under glibc's mmap threshold (every layer
        # of deep-mlp) would stay resident, freed, through the aggregation
        del update
        malloc.trim()
    return spilled, key


async def _flags(
    ctx: VoterDeps,
    base: State,
    before: int,
    included: list[SeatInput],
    no_work: set[int],
    in_time: Callable[[], None],
) -> list[int]:
    """The seats to flag: those whose update alone changes the accuracy on private
    validation data (``before``, in ppm) by less than the flag threshold.

    "No work" seats (below the norm floor) are flagged without an evaluation:
    every honest voter flags them, so they are not paid, and not slashed.
    ``in_time`` is called before each evaluation (``_in_time``: it raises once
    the vote can no longer be committed).
    """
    flags = sorted(no_work)

    def alone_with(update: Flat) -> State:
        # the previous seat's model, freed after its scoring's own trim, goes back
        # first: its blocks under glibc's mmap threshold (every layer of
        # deep-mlp) may sit in a heap this thread would not reuse
        malloc.trim()
        return apply_update(base, update)

    for s in included:  # every included update is judged, rejected ones too
        if s.update is None or s.seat in no_work:
            continue
        in_time()
        alone = await trio.to_thread.run_sync(alone_with, s.update)
        gain = (await ctx.learner.evaluate_async(alone, "val")).ppm - before
        del alone  # before the next seat's is built: one such model at a time
        if gain < ctx.settings.flag_threshold_ppm:
            flags.append(s.seat)
    return flags


def _bits(seats: Iterable[int]) -> int:
    return sum(1 << s for s in set(seats))
