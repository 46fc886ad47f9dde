"""The proposer's I/O (docs/protocol.md, "Behaviour of the node", Proposer): train, seal,
submit, announce, release key wraps.

A thin loop around ``proposer_machine.decide``: gather the facts, decide,
perform the action, repeat. Crash-safe through the journal: the sealed blob is
in the content store and its ids and key wraps are journaled before
``submitUpdate`` is sent, so a restarted proposer re-announces the same update
instead of training a different one. A task with compressed updates seals the
packed form of the update plus the error-feedback residual, after saving the
residual that leaves (``flocknode.store.residual``).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import time
from dataclasses import dataclass

import trio
from nacl.public import PublicKey

from flocknode import malloc
from flocknode.aggregation.compression import codec, encode
from flocknode.chain.errors import ContractRevert
from flocknode.chain.types import Phase, RoundView
from flocknode.crypto import KeyWrap as EnvelopeWrap
from flocknode.crypto import seal_update
from flocknode.p2p.messages import KeyWraps, UpdateAnnounce, WireKeyWrap
from flocknode.rounds import proposer_machine as m
from flocknode.rounds.context import RoleReads
from flocknode.rounds.update_form import EF_DECAY, State, send_cap
from flocknode.store.journal import noted_seconds

log = logging.getLogger(__name__)

REANNOUNCE_SECONDS = m.REANNOUNCE_SECONDS


ProposerDeps = RoleReads  # what the proposer reads: every collaborator it uses, nothing else


def train_seed(round_seed: bytes, seat: int) -> int:
    return int.from_bytes(hashlib.sha256(round_seed + seat.to_bytes(4, "big")).digest()[:8], "big")


@dataclass
class _Progress:
    """What this run of the proposer did that the journal does not record."""

    refused: str = ""
    published_phase: Phase | None = None
    published_at: float = 0.0
    seat: int = 0
    sent_at: float | None = None  # the feed's clock when the last submitUpdate returned
    # the refusal was WrongPhase: the view it was sent on was behind the chain
    # (a reorganisation took the round back); dropped once a newer view shows a
    # phase that takes the submission
    stale_refusal: bool = False


def facts(ctx: ProposerDeps, view: RoundView, progress: _Progress) -> m.ProposerFacts:
    r = view.round
    rec = ctx.journal.get(r)
    v = ctx.feed.rounds.get(r, view)
    sealed = bool(rec.blob_id) and ctx.store.has(bytes.fromhex(rec.blob_id))
    return m.ProposerFacts(
        phase=v.phase,
        now=ctx.feed.now(),
        sealed=sealed,
        submitted=rec.submitted,
        base_held=sealed or ctx.models.has(ctx.feed.global_model_hash),
        recipients=() if sealed else _recipients(ctx, v),
        refused=progress.refused,
        published_phase=progress.published_phase,
        published_at=progress.published_at,
        chain_submitted=progress.seat < len(v.updates) and v.updates[progress.seat].submitted,
        fresh=progress.sent_at is None or ctx.feed.latest.read_at > progress.sent_at,
    )


async def run_proposer(ctx: ProposerDeps, view: RoundView, seat: int) -> None:
    """Act as the proposer of ``seat`` in ``view.round`` until its work is over or given up.

    An exception (a chain call that failed, a store error) leaves the journal
    as it was before the failed action; the caller retries the whole run.
    """
    r = view.round
    progress = _Progress(seat=seat)
    while True:
        if progress.stale_refusal:
            # WrongPhase on a train-phase view: a reorganisation took the round
            # back to seeding if a view shows it soon; then the refusal is void
            back = await ctx.feed.wait_for(r, _seeding, timeout=REANNOUNCE_SECONDS)
            if back is not None:
                progress.refused = ""
            progress.stale_refusal = False
        known = facts(ctx, view, progress)
        action = m.decide(known)
        if isinstance(action, m.Done):
            return
        if isinstance(action, m.GiveUp):
            log.warning("proposer gave up round=%d seat=%d: %s", r, seat, action.reason)
            return
        if isinstance(action, m.Train):
            await _train_and_seal(ctx, view, seat, action.recipients)
        elif isinstance(action, m.Submit):
            progress.refused, progress.stale_refusal = await _submit(ctx, r, seat)
            progress.sent_at = ctx.feed.clock()
        elif isinstance(action, m.Publish):
            await _announce(ctx, r, action.wraps)
            # the phase it was published for: a phase that began meanwhile publishes at once
            progress.published_phase = known.phase
            progress.published_at = ctx.feed.now()
        else:
            with trio.move_on_after(max(0.0, action.until - ctx.feed.now())):
                await ctx.feed.changed()


def _seeding(v: RoundView) -> bool:
    return v.phase is Phase.SEEDING


def _recipients(ctx: ProposerDeps, v: RoundView) -> tuple[bytes, ...]:
    recipients: list[bytes] = []
    for w in v.voters:
        member = ctx.membership.member_by_wallet(w)
        if member is None:
            log.warning("voter without a valid registration round=%d voter=%s", v.round, w)
            continue
        recipients.append(member.box_public_key)
    return tuple(dict.fromkeys(recipients))


async def _submit(ctx: ProposerDeps, r: int, seat: int) -> tuple[str, bool]:
    """Send submitUpdate for the journaled update; the refusal reason ("" on success)
    and whether it was WrongPhase."""
    rec = ctx.journal.get(r)
    t0 = time.monotonic()
    try:
        await ctx.client.submit_update(
            r, bytes.fromhex(rec.update_hash), bytes.fromhex(rec.blob_id), rec.blob_size
        )
    except ContractRevert as e:
        if e.name != "AlreadySubmitted":
            return str(e), e.name == "WrongPhase"
    noted = noted_seconds(rec.notes, "submit_seconds", t0)
    await ctx.journal.update_async(r, submitted=True, notes=noted)
    log.info("update submitted round=%d seat=%d blob=%s", r, seat, rec.blob_id[:12])
    return "", False


async def _announce(ctx: ProposerDeps, r: int, release_wraps: bool) -> None:
    """Gossip the update's announcement; with ``release_wraps`` its key wraps first
    (the voters wait on these), journaling ``wraps_sent`` the first time."""
    rec = ctx.journal.get(r)
    blob_id = bytes.fromhex(rec.blob_id)
    if release_wraps:
        rows = ctx.behaviour.wraps(list(rec.notes.get("wraps", [])))
        wraps = KeyWraps(r, blob_id, tuple(_wire_wraps(rows)))
        await _publish(ctx, wraps)
    await _publish(ctx, UpdateAnnounce(r, blob_id, rec.blob_size, bytes.fromhex(rec.update_hash)))
    if release_wraps and not rec.wraps_sent:
        await ctx.journal.update_async(r, wraps_sent=True)
        log.info("key wraps released round=%d voters=%d", r, len(wraps.wraps))


async def _train_and_seal(
    ctx: ProposerDeps, view: RoundView, seat: int, recipients: tuple[bytes, ...]
) -> None:
    r = view.round
    base = ctx.feed.global_model_hash
    # the training works on the model's tensors themselves, not on a copy of
    # the cached ones, and reads the model again for the update (Learner.train)
    state = await ctx.models.take_async(base)
    cap = send_cap(ctx.settings, r, state)
    seed = train_seed(view.seed, seat)
    label_flip = ctx.behaviour.flips_labels
    reread = functools.partial(ctx.models.read, base)
    res = await ctx.learner.train_async(
        state, seed=seed, label_flip=label_flip, round_no=r, reread=reread
    )
    del state
    ctx.metrics.train_seconds.observe(res.seconds)
    c = codec(ctx.settings.aggregation)

    def seal(update: State) -> tuple[bytes, bytes, int, list[EnvelopeWrap]]:
        sent = update
        if c is not None:
            # the residual of the newest earlier round: the same one if this round is retrained
            sent, left = encode(update, ctx.residuals.load(r), c, cap, EF_DECAY)
            ctx.residuals.save(r, left)
        sent = ctx.behaviour.update(sent, seed)  # a cheater changes what it sends
        with ctx.store.writer() as w:
            sealed = seal_update(
                sent,
                w,
                sender=ctx.box_key.private,
                recipients=[PublicKey(b) for b in recipients],
            )
            blob_id = w.commit()
        if blob_id != sealed.blob_id:  # the store hashed what the envelope wrote
            raise RuntimeError("sealed blob id mismatch")
        return sealed.update_hash, sealed.blob_id, sealed.size, list(sealed.wraps)

    t0 = time.monotonic()
    update_hash, blob_id, size, env_wraps = await trio.to_thread.run_sync(seal, res.update)
    seal_seconds = time.monotonic() - t0
    train_seconds = res.seconds
    del res  # the update: sealed and stored; its pages go back (flocknode.malloc)
    await trio.to_thread.run_sync(malloc.trim)
    await ctx.journal.update_async(
        r,
        role="proposer",
        seat=seat,
        update_hash=update_hash.hex(),
        blob_id=blob_id.hex(),
        blob_size=size,
        notes={
            "wraps": [[wr.recipient.hex(), wr.sealed.hex()] for wr in env_wraps],
            "train_seconds": train_seconds,
            "seal_seconds": seal_seconds,
            "behaviour": ctx.behaviour.name,
        },
    )
    log.info(
        "update trained and sealed round=%d seat=%d seconds=%.2f bytes=%d",
        r,
        seat,
        train_seconds,
        size,
    )


def _wire_wraps(rows: list[list[str]]) -> list[WireKeyWrap]:
    return [WireKeyWrap(bytes.fromhex(rcpt), bytes.fromhex(wrapped)) for rcpt, wrapped in rows]


async def _publish(ctx: ProposerDeps, msg: UpdateAnnounce | KeyWraps) -> None:
    try:
        await ctx.gossip.publish(msg)
        ctx.metrics.inc("gossip_published")
    except Exception as e:  # a full mesh, a stale round: the next tick retries
        ctx.metrics.inc("gossip_publish_failed")
        log.debug("publish failed msg=%s error=%r", type(msg).__name__, e)
